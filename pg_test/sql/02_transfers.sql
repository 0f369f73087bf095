-- Money movement: deposit, transfer, withdraw, get_transfer, statement; every rejection.
\set VERBOSITY terse
SELECT wallet.create_currency('USD') AS usd_system \gset
SELECT wallet.create_currency('GBP') AS gbp_system \gset
SELECT wallet.open_account('USD', 'carol') AS carol \gset
SELECT wallet.open_account('USD', 'dave') AS dave \gset
SELECT wallet.open_account('GBP', 'erin') AS erin \gset
SELECT wallet.open_account('USD', 'frozen') AS frozen \gset
SELECT wallet.open_account('USD', 'closed') AS closed \gset
SELECT wallet.open_account('USD', 'overdraft', allow_overdraft => true) AS overdraft \gset
SELECT wallet.freeze_account(:frozen), wallet.close_account(:closed);

SELECT wallet.deposit(:carol, 10000) AS deposit_id \gset
SELECT wallet.transfer(:carol, :dave, 2500, metadata => '{"memo": "rent"}') AS transfer_id \gset
SELECT wallet.withdraw(:dave, 500) AS withdraw_id \gset
SELECT wallet.balance(:carol) AS carol, wallet.balance(:dave) AS dave, wallet.balance(:usd_system) AS usd_system;
SELECT debit_account_id = :carol AS from_carol, credit_account_id = :dave AS to_dave, amount,
       currency, idempotency_key, metadata
  FROM wallet.get_transfer(:transfer_id);
SELECT count(*) AS no_such_transfer FROM wallet.get_transfer(-1);

-- Dave's statement: signed amounts and the running balance, paged by sequence number.
SELECT event_type, counterparty_account_id = :carol AS from_carol, amount, balance, metadata
  FROM wallet.statement(:dave);
SELECT seq = :withdraw_id AS is_withdrawal, amount, balance
  FROM wallet.statement(:dave, after_seq => :transfer_id);
SELECT count(*) FROM wallet.statement(:dave, max_rows => 1);

-- An account with overdraft permission may go negative.
SELECT wallet.transfer(:overdraft, :carol, 700) > 0 AS posted;
SELECT wallet.balance(:overdraft) AS overdraft_balance;

-- Rejections, in the order of precedence; each writes nothing.
SELECT count(*) AS events_before FROM wallet.events \gset
SELECT wallet.transfer(NULL, :dave, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :dave, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :dave, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :dave, -5);
\echo :LAST_ERROR_SQLSTATE
-- An amount beyond bigint never reaches the wallet: Postgres's cast refuses it (22003).
SELECT wallet.transfer(:carol, :dave, '99999999999999999999'::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :carol, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, 424242, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(424242, :carol, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :erin, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :closed, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:frozen, :carol, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :frozen, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:dave, :carol, 2001);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.withdraw(:dave, 2001);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.deposit(424242, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.deposit(:carol, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:carol, :dave, 5, metadata => '"just a string"');
\echo :LAST_ERROR_SQLSTATE
-- Overflow: the credit side would pass the bigint maximum.
SELECT wallet.deposit(:carol, 9223372036854775807);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) - :events_before AS events_written_by_rejections FROM wallet.events;
SELECT wallet.balance(:carol) AS carol, wallet.balance(:dave) AS dave;

-- A rejection inside a larger transaction rolls back with it; a savepoint keeps the rest.
BEGIN;
SELECT wallet.transfer(:carol, :dave, 100) > 0 AS first_ok;
SAVEPOINT before_bad;
SELECT wallet.transfer(:dave, :carol, 1000000);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT before_bad;
SELECT wallet.transfer(:carol, :dave, 100) > 0 AS second_ok;
COMMIT;
SELECT wallet.balance(:carol) AS carol, wallet.balance(:dave) AS dave;

SELECT * FROM wallet.verify();
SELECT * FROM wallet.trial_balance();
