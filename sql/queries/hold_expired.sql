-- Up to $1 pending holds past their timeout, locked; holds being confirmed or cancelled right now
-- are skipped (they are judged by that call). Columns as hold_lookup.sql.
SELECT hold_id, status, debit_account_id, credit_account_id, reserved, confirmed_amount,
       true AS timed_out, confirm_seq, currency, gtid, branch
  FROM wallet.holds
 WHERE status = 'pending' AND expires_at <= pg_catalog.clock_timestamp()
 ORDER BY expires_at
 LIMIT $1
   FOR UPDATE SKIP LOCKED
