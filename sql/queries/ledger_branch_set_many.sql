-- The participants' answers of one step, set-wise: for branch $2[i] of global transaction
-- $1[i], status $3[i], and the error $4[i] (SQLSTATE), $5[i] (message) when it refused or could
-- not be reached (the last error stays); $6[i] answers recorded for it in the step. Found by
-- `gtid = ANY ($1)`, an index condition (see ledger_update_many.sql).
UPDATE wallet.branches AS b
   SET status = u.status, attempts = b.attempts + u.answers,
       last_sqlstate = coalesce(u.sqlstate, b.last_sqlstate),
       last_error = coalesce(u.message, b.last_error), updated_at = clock_timestamp()
  FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::integer[])
       AS u (gtid, branch_no, status, sqlstate, message, answers)
 WHERE b.gtid = ANY ($1) AND b.gtid = u.gtid AND b.branch_no = u.branch_no
