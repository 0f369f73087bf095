-- The holds stored under keys ($1[i] gtid, $2[i] branch) of a participant call with many items
-- (distinct keys), locked for this transaction in hold id order, as every call with many locks
-- them. Columns as hold_lookup.sql, then i (the key's place in the arrays, from 1); no row for a
-- key without a hold. Found by `gtid = ANY ($1)`, an index condition (see ledger_update_many.sql).
SELECT h.hold_id, h.status, h.debit_account_id, h.credit_account_id, h.reserved,
       h.confirmed_amount, h.expires_at <= pg_catalog.clock_timestamp() AS timed_out,
       h.confirm_seq, h.currency, h.gtid, h.branch, u.i
  FROM wallet.holds AS h
  JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS u (gtid, branch, i)
    ON h.gtid = u.gtid AND h.branch = u.branch
 WHERE h.gtid = ANY ($1)
 ORDER BY h.hold_id
   FOR UPDATE OF h
