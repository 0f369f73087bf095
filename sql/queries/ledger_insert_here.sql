-- A global transaction whose every leg is on this node (engine.rs, run_here), recorded as
-- confirmed in the local transaction that then posts it, before the posting (a refusal updates it,
-- ledger_cancel_here.sql): $1 gtid, $2 protocol, $3-$5 its legs, $6 the amount that moves, $7 the
-- hold timeout in microseconds, $8 the paying account (its currency is the transfer's). It has no
-- branch rows: its one branch is its legs, posted under the keys gtx:<hash>:b1.<n>. No row: the
-- gtid exists. Its columns are catalog.rs's LEDGER_COLUMNS, which ledger_row.rs writes directly
-- for a single posting that took effect (this statement then runs only for a refused one, or
-- when the table's shape asks for the executor).
INSERT INTO wallet.global_transactions (gtid, protocol, phase, outcome, leg_nodes, leg_account_ids,
                                        leg_amounts, amount, currency, hold_timeout, created_at,
                                        decide_by, decided_at, finished_at, finished_by)
VALUES ($1, $2, 'confirm', 'confirmed', $3, $4, $5, $6,
        (SELECT a.currency FROM wallet.accounts AS a WHERE a.id = $8),
        $7 * interval '1 microsecond', clock_timestamp(),
        clock_timestamp() + $7 * interval '1 microsecond' / 2,
        clock_timestamp(), clock_timestamp(), 'coordinator')
    ON CONFLICT (gtid) DO NOTHING
RETURNING gtid
