-- The event that holds idempotency key $1, if any.
SELECT seq, event_type, debit_account_id, credit_account_id, amount
  FROM wallet.events
 WHERE idempotency_key = $1
