-- Second leg and event of a transfer, in one statement: applies the amount to the account with
-- the higher id (the lower one was updated by transfer_leg.sql just before, so every transfer
-- locks its accounts in ascending id order) and records the event with both balances after.
-- $1 the higher account, $2 debit account, $3 amount, $4 the currency (from the first leg),
-- $5 the first leg's balance after, $6 credit account, $7 idempotency key or NULL,
-- $8 metadata. Returns the transfer id; no row when the guard refuses (see transfer_leg.sql) or,
-- for a keyed call, when a batch committed the same key meanwhile (see storage::transfer).
--
-- With a key, the caller holds a transaction-level advisory lock on the key's hash, taken
-- before it looked the key up (transfer_prior.sql), so under READ COMMITTED a concurrent first
-- use of the key has committed (and was found) or rolled back. Under REPEATABLE READ /
-- SERIALIZABLE an invisible conflicting row makes ON CONFLICT raise 40001, the normal
-- retryable answer at those levels. Without a key the plan is prepared without the line marked
-- "keyed only" (speculative insertion costs a WAL record per insert).
WITH leg AS (
    UPDATE wallet.accounts
       SET balance = balance + CASE WHEN id = $2 THEN -$3 ELSE $3 END
     WHERE id = $1
       AND status = 'active'
       AND currency = $4
       AND CASE WHEN id = $2
                THEN CASE WHEN allow_overdraft THEN balance >= (-9223372036854775807 - 1) + $3
                          ELSE balance - pending_debit >= $3 END
                ELSE balance <= 9223372036854775807 - $3 END
    RETURNING id, balance
)
INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                           debit_balance, credit_balance, idempotency_key, data)
SELECT 'transfer', $2, $6, $3, $4,
       CASE WHEN leg.id = $2 THEN leg.balance ELSE $5 END,
       CASE WHEN leg.id = $2 THEN $5 ELSE leg.balance END,
       $7, $8
  FROM leg
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING -- keyed only
RETURNING seq
