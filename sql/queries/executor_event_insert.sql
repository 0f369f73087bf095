-- The executor path of a money event (src/events.rs): every column a money event writes, in the
-- order of the direct path's column list (catalog.rs, EVENT_COLUMNS). No row comes back when
-- the idempotency key $11 is taken already (the caller answers 40001, whose ERROR takes the
-- event's balances back); any other unique or exclusion constraint raises its own error.
INSERT INTO wallet.events (seq, event_type, occurred_at, tx_id, debit_account_id,
                           credit_account_id, amount, currency, debit_balance, credit_balance,
                           idempotency_key, data, pending_delta, debit_prev, credit_prev)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq
