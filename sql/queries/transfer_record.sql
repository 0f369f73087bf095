-- Records a posted transfer. $1 debit account, $2 credit account, $3 amount, $4 currency,
-- $5 / $6 posted balances of the debit / credit account after it, $7 idempotency key or NULL,
-- $8 metadata. Returns the transfer id (the event's sequence number).
--
-- With a key, the caller holds a transaction-level advisory lock on the key's hash, taken
-- before it looked the key up (transfer_prior.sql), so under READ COMMITTED a concurrent first
-- use of the key has committed (and was found) or rolled back. Under REPEATABLE READ /
-- SERIALIZABLE an invisible conflicting row makes ON CONFLICT raise 40001, the normal
-- retryable answer at those levels. Without a key the plan is prepared without the line marked
-- "keyed only" (speculative insertion costs a WAL record per insert).
INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                           debit_balance, credit_balance, idempotency_key, data)
VALUES ('transfer', $1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING -- keyed only
RETURNING seq
