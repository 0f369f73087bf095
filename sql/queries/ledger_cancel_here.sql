-- A global transaction of this node alone whose posting was refused (see ledger_insert_here.sql):
-- $1 gtid, cancelled for the refusal's $2 SQLSTATE and $3 message, in the same local transaction.
UPDATE wallet.global_transactions
   SET phase = 'cancel', outcome = 'cancelled', currency = NULL, error_sqlstate = $2,
       error_message = $3
 WHERE gtid = $1
