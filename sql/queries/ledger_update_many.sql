-- What one step changed of global transactions $1[i], in one statement: the currency learnt
-- ($2[i], kept once recorded), a reason to cancel ($3[i] SQLSTATE, $4[i] message, kept once
-- recorded), the decision ($5[i]: confirm or cancel; NULL: none in this step), the end ($6[i]:
-- confirmed, cancelled, or stuck: an operator is needed, and it stays unfinished; NULL: none),
-- by $7 (coordinator or recovery), with the error of a stuck branch ($8[i], $9[i]). The rows are
-- found by `gtid = ANY ($1)`, an index condition whatever the table's statistics: planned while the
-- table was small, a join alone scanned the whole primary key at every step.
UPDATE wallet.global_transactions AS g
   SET currency = coalesce(g.currency, u.currency),
       phase = coalesce(u.phase, g.phase),
       decided_at = CASE WHEN u.phase IS NULL THEN g.decided_at ELSE clock_timestamp() END,
       outcome = coalesce(u.outcome, g.outcome),
       finished_at = CASE WHEN u.outcome IS NULL OR u.outcome = 'stuck' THEN g.finished_at
                          ELSE clock_timestamp() END,
       finished_by = CASE WHEN u.outcome IS NULL THEN g.finished_by ELSE $7 END,
       error_sqlstate = CASE WHEN u.outcome = 'stuck' THEN u.stuck_sqlstate
                             ELSE coalesce(g.error_sqlstate, u.sqlstate) END,
       error_message = CASE WHEN u.outcome = 'stuck' THEN u.stuck_message
                            ELSE coalesce(g.error_message, u.message) END
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[],
              $9::text[])
       AS u (gtid, currency, sqlstate, message, phase, outcome, stuck_sqlstate, stuck_message)
 WHERE g.gtid = ANY ($1) AND g.gtid = u.gtid
