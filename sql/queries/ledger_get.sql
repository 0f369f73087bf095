-- Global transaction $1, locked for the step that reads it. Columns as coordinator::ledger.
SELECT protocol, phase, outcome, currency,
       (extract(epoch FROM hold_timeout) * 1000000)::bigint,
       clock_timestamp() > decide_by, finished_at IS NOT NULL,
       leg_nodes, leg_account_ids, leg_amounts, error_sqlstate, error_message
  FROM wallet.global_transactions
 WHERE gtid = $1
   FOR UPDATE
