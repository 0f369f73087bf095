-- What global transactions $1[i] learnt in one step: their currency $2[i] (from the first branch
-- tried), and a reason to cancel ($3[i] SQLSTATE, $4[i] message), each kept once recorded.
UPDATE wallet.global_transactions AS g
   SET currency = coalesce(g.currency, u.currency),
       error_sqlstate = coalesce(g.error_sqlstate, u.sqlstate),
       error_message = coalesce(g.error_message, u.message)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u (gtid, currency, sqlstate, message)
 WHERE g.gtid = u.gtid
