-- ledger_update_many.sql for one global transaction, $1 gtid, the other parameters as there but
-- scalars: a step that changes few rows writes them one by one (ledger.rs, ROWS_ONE_BY_ONE).
UPDATE wallet.global_transactions AS g
   SET currency = coalesce(g.currency, $2),
       phase = coalesce($5, g.phase),
       decided_at = CASE WHEN $5 IS NULL THEN g.decided_at ELSE clock_timestamp() END,
       outcome = coalesce($6, g.outcome),
       finished_at = CASE WHEN $6 IS NULL OR $6 = 'stuck' THEN g.finished_at
                          ELSE clock_timestamp() END,
       finished_by = CASE WHEN $6 IS NULL THEN g.finished_by ELSE $7 END,
       error_sqlstate = CASE WHEN $6 = 'stuck' THEN $8 ELSE coalesce(g.error_sqlstate, $3) END,
       error_message = CASE WHEN $6 = 'stuck' THEN $9 ELSE coalesce(g.error_message, $4) END
 WHERE g.gtid = $1
