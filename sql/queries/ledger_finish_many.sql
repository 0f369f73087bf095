-- The ends of one step: global transaction $1[i] has outcome $2[i] (confirmed, cancelled, or
-- stuck: an operator is needed, and it stays unfinished), by $3 (coordinator or recovery);
-- $4[i], $5[i] the error of a stuck branch.
UPDATE wallet.global_transactions AS g
   SET outcome = u.outcome,
       finished_at = CASE WHEN u.outcome = 'stuck' THEN NULL ELSE clock_timestamp() END,
       finished_by = $3,
       error_sqlstate = CASE WHEN u.outcome = 'stuck' THEN u.sqlstate ELSE g.error_sqlstate END,
       error_message = CASE WHEN u.outcome = 'stuck' THEN u.message ELSE g.error_message END
  FROM unnest($1::text[], $2::text[], $4::text[], $5::text[]) AS u (gtid, outcome, sqlstate, message)
 WHERE g.gtid = u.gtid
