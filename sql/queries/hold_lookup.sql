-- The hold stored under (gtid, branch), locked for this transaction (a confirm, a cancel and the
-- expiry of one hold run one after the other). $1 gtid, $2 branch. Columns as storage::hold_row.
SELECT hold_id, status, debit_account_id, credit_account_id, reserved, confirmed_amount,
       expires_at <= pg_catalog.clock_timestamp() AS timed_out, confirm_seq, currency,
       gtid, branch
  FROM wallet.holds
 WHERE gtid = $1 AND branch = $2
   FOR UPDATE
