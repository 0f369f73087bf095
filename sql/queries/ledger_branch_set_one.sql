-- ledger_branch_set_many.sql for one branch: $1 gtid, $2 branch number, the other parameters as
-- there but scalars (ledger.rs, ROWS_ONE_BY_ONE).
UPDATE wallet.branches AS b
   SET status = $3, attempts = b.attempts + $6, last_sqlstate = coalesce($4, b.last_sqlstate),
       last_error = coalesce($5, b.last_error), updated_at = clock_timestamp()
 WHERE b.gtid = $1 AND b.branch_no = $2
