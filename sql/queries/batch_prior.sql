-- The stored events of a batch's idempotency keys. $1 keys. (Batch transfers carry no
-- metadata, so a stored transfer matches a retry only if it has none either.)
SELECT idempotency_key, seq, event_type, debit_account_id, credit_account_id, amount,
       data IS NULL AS same_metadata
  FROM wallet.events
 WHERE idempotency_key = ANY ($1)
