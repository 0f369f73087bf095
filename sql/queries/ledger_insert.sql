-- A new global transaction (the coordinator's ledger): $1 gtid, $2 protocol, $3-$5 its legs,
-- $6 the amount that moves, $7 the hold timeout in microseconds. The decision deadline is half
-- the timeout: a confirm decided then still finds every hold in place. No row: the gtid exists.
INSERT INTO wallet.global_transactions (gtid, protocol, leg_nodes, leg_account_ids, leg_amounts,
                                        amount, hold_timeout, decide_by)
VALUES ($1, $2, $3, $4, $5, $6, $7 * interval '1 microsecond',
        clock_timestamp() + $7 * interval '1 microsecond' / 2)
    ON CONFLICT (gtid) DO NOTHING
RETURNING gtid
