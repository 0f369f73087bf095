-- The event of a transfer with an idempotency key (transfers without one are written by
-- src/heap.rs directly). $1 debit account, $2 credit account, $3 amount, $4 currency, $5 / $6
-- posted balances after, $7 idempotency key, $8 metadata, $9 its seq (drawn by the caller),
-- $10 / $11 the accounts' previous money events. Returns the transfer id; no row when a
-- batch committed the same key after the caller looked it up (see storage::transfer).
--
-- The caller holds a transaction-level advisory lock on the key's hash, taken before it looked
-- the key up (transfer_prior.sql), so under READ COMMITTED a concurrent first use of the key by
-- a single transfer has committed (and was found) or rolled back; batches take no such lock.
-- Under REPEATABLE READ / SERIALIZABLE an invisible conflicting row makes ON CONFLICT raise
-- 40001, the normal retryable answer at those levels.
INSERT INTO wallet.events (seq, event_type, debit_account_id, credit_account_id, amount, currency,
                           debit_balance, credit_balance, idempotency_key, data, debit_prev,
                           credit_prev)
VALUES ($9, 'transfer', $1, $2, $3, $4, $5, $6, $7, $8, $10, $11)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq
