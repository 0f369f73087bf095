-- A participant's answer for branch $2 of global transaction $1: status $3, and the error $4
-- (SQLSTATE), $5 (message) when it refused or could not be reached (the last error stays).
UPDATE wallet.branches
   SET status = $3, attempts = attempts + 1, last_sqlstate = coalesce($4, last_sqlstate),
       last_error = coalesce($5, last_error), updated_at = clock_timestamp()
 WHERE gtid = $1 AND branch_no = $2
