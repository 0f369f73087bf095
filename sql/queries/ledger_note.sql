-- What global transaction $1 learnt: its currency $2 (from the first branch tried), and a reason
-- to cancel ($3 SQLSTATE, $4 message), each kept once recorded.
UPDATE wallet.global_transactions
   SET currency = coalesce(currency, $2),
       error_sqlstate = coalesce(error_sqlstate, $3), error_message = coalesce(error_message, $4)
 WHERE gtid = $1
