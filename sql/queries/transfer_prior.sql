-- The event that first used an idempotency key, if any, and whether its metadata equals the
-- retry's. $1 key, $2 metadata of the retry.
SELECT seq, event_type, debit_account_id, credit_account_id, amount,
       data IS NOT DISTINCT FROM $2 AS same_metadata
  FROM wallet.events
 WHERE idempotency_key = $1
