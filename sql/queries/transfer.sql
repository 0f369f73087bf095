-- One transfer, one statement. $1 debit account, $2 credit account, $3 amount (> 0, checked
-- before), $4 idempotency key or NULL, $5 metadata jsonb or NULL.
--
-- Lock order: the lower account id is updated first (first_leg); the higher one (second_leg)
-- joins first_leg's output, so it cannot be locked before the lower one is. Every transfer
-- locks its two rows in ascending id order, so two transfers never deadlock each other.
--
-- The guards repeat domain::check_transfer_against in SQL: status, currency, overflow, funds
-- (available = balance - pending_debit; accounts with overdraft permission skip the funds check
-- but not the bigint bound). Under READ COMMITTED a concurrently updated row is re-checked on its
-- newest version (EvalPlanQual). When a guard refuses, no event is inserted and the Rust caller
-- raises the precise rejection, which rolls back a first leg that was already applied.
--
-- Idempotency: with a key, the caller first takes a transaction-level advisory lock on the key's
-- hash, before this statement's snapshot. Under READ COMMITTED a concurrent first use of the key
-- has therefore committed (and shows in "prior", which stops both legs) or rolled back. Under
-- REPEATABLE READ / SERIALIZABLE an invisible conflicting row makes ON CONFLICT raise 40001, the
-- normal retryable answer at those levels. Without a key "prior" is empty, and the plan for that
-- case is prepared without the line marked "keyed only" (speculative insertion costs a WAL
-- record per insert).
WITH prior AS (
    SELECT seq, event_type, debit_account_id, credit_account_id, amount,
           data IS NOT DISTINCT FROM $5 AS same_metadata
      FROM wallet.events
     WHERE idempotency_key = $4
), first_leg AS (
    UPDATE wallet.accounts
       SET balance = balance + CASE WHEN id = $1 THEN -$3 ELSE $3 END
     WHERE id = LEAST($1, $2)
       AND NOT EXISTS (SELECT FROM prior)
       AND status = 'active'
       AND CASE WHEN id = $1
                THEN CASE WHEN allow_overdraft THEN balance >= (-9223372036854775807 - 1) + $3
                          ELSE balance - pending_debit >= $3 END
                ELSE balance <= 9223372036854775807 - $3 END
 RETURNING id, currency, balance
), second_leg AS (
    UPDATE wallet.accounts AS a
       SET balance = a.balance + CASE WHEN a.id = $1 THEN -$3 ELSE $3 END
      FROM first_leg AS f
     WHERE a.id = GREATEST($1, $2)
       AND a.currency = f.currency
       AND a.status = 'active'
       AND CASE WHEN a.id = $1
                THEN CASE WHEN a.allow_overdraft THEN a.balance >= (-9223372036854775807 - 1) + $3
                          ELSE a.balance - a.pending_debit >= $3 END
                ELSE a.balance <= 9223372036854775807 - $3 END
 RETURNING a.id, a.currency, a.balance
), posted AS (
    INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, idempotency_key, data)
    SELECT 'transfer', $1, $2, $3, s.currency,
           CASE WHEN f.id = $1 THEN f.balance ELSE s.balance END,
           CASE WHEN f.id = $1 THEN s.balance ELSE f.balance END,
           $4, $5
      FROM first_leg AS f, second_leg AS s
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING -- keyed only
 RETURNING seq
)
SELECT (SELECT seq FROM posted) AS transfer_id,
       (SELECT id FROM first_leg) AS first_leg_id,
       p.seq, p.event_type, p.debit_account_id, p.credit_account_id, p.amount, p.same_metadata
  FROM (SELECT) AS one
  LEFT JOIN prior AS p ON true
