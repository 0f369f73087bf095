-- The demonstration run by scripts/setup.sh: the main job of wallet_ext, end to end.
\pset footer off
\set ECHO queries

CREATE EXTENSION wallet_ext;

-- A currency (scale 2: amounts are cents) and its system account, which issues money.
SELECT wallet.create_currency('EUR', 2) AS eur_system_account \gset

-- Two customer accounts.
SELECT wallet.open_account('EUR', 'alice', '{"tier": "gold"}') AS alice \gset
SELECT wallet.open_account('EUR', 'bob') AS bob \gset

-- Money enters through a deposit (a transfer from the system account) ...
SELECT wallet.deposit(:alice, 10000, 'topup-1') AS deposit_id;
-- ... and moves between accounts in one atomic double-entry transfer.
SELECT wallet.transfer(:alice, :bob, 2500, 'order-42', '{"memo": "dinner"}') AS transfer_id;

-- A retry with the same idempotency key returns the first answer and moves nothing.
SELECT wallet.transfer(:alice, :bob, 2500, 'order-42', '{"memo": "dinner"}') AS same_transfer_id;
SELECT wallet.balance(:alice) AS alice_balance, wallet.balance(:bob) AS bob_balance;

-- Bob cannot spend what he does not have: SQLSTATE WA008, and nothing is written.
\set ON_ERROR_STOP 0
SELECT wallet.transfer(:bob, :alice, 999999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\set ON_ERROR_STOP 1

-- Bob's statement: every event with its signed amount and running balance.
SELECT seq, event_type, counterparty_account_id, amount, balance, idempotency_key, metadata
  FROM wallet.statement(:bob);

-- The event log: every state change, append-only.
SELECT seq, event_type, account_id, debit_account_id, credit_account_id, amount,
       debit_balance, credit_balance, idempotency_key
  FROM wallet.events ORDER BY seq;

-- Replaying the log reproduces every balance: no rows means consistent.
SELECT * FROM wallet.verify();
-- Per currency the balances sum to 0 and nobody is below zero without permission.
SELECT * FROM wallet.trial_balance();
