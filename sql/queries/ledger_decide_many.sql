-- The decisions of one step: for global transaction $1[i], phase $2[i] (confirm or cancel), and
-- for a cancel why ($3[i] SQLSTATE, $4[i] message; a reason recorded before is kept).
UPDATE wallet.global_transactions AS g
   SET phase = u.phase, decided_at = clock_timestamp(),
       error_sqlstate = coalesce(g.error_sqlstate, u.sqlstate),
       error_message = coalesce(g.error_message, u.message)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u (gtid, phase, sqlstate, message)
 WHERE g.gtid = u.gtid
