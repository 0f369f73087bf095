-- The decision for global transaction $1: phase $2 (confirm or cancel), and for a cancel why
-- ($3 SQLSTATE, $4 message; a reason recorded before is kept).
UPDATE wallet.global_transactions
   SET phase = $2, decided_at = clock_timestamp(),
       error_sqlstate = coalesce(error_sqlstate, $3), error_message = coalesce(error_message, $4)
 WHERE gtid = $1
