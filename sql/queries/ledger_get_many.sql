-- Global transactions $1, locked for the step that reads them (in gtid order, the order every
-- step locks them in). Columns as ledger::load_many.
SELECT gtid, protocol, phase, outcome, currency,
       (extract(epoch FROM hold_timeout) * 1000000)::bigint,
       (extract(epoch FROM decide_by) * 1000000)::bigint, finished_at IS NOT NULL,
       leg_nodes, leg_account_ids, leg_amounts, error_sqlstate, error_message, batch
  FROM wallet.global_transactions
 WHERE gtid = ANY ($1)
 ORDER BY gtid
   FOR UPDATE
