-- The end of global transaction $1: outcome $2 (confirmed, cancelled, or stuck: an operator is
-- needed, and it stays unfinished), by $3 (coordinator or recovery); $4, $5 the error of a stuck
-- branch.
UPDATE wallet.global_transactions
   SET outcome = $2,
       finished_at = CASE WHEN $2 = 'stuck' THEN NULL ELSE clock_timestamp() END,
       finished_by = $3,
       error_sqlstate = CASE WHEN $2 = 'stuck' THEN $4 ELSE error_sqlstate END,
       error_message = CASE WHEN $2 = 'stuck' THEN $5 ELSE error_message END
 WHERE gtid = $1
