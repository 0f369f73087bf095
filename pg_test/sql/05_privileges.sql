-- Privileges: ordinary roles cannot write the tables; the functions are the only way money
-- moves. wallet_reader reads; wallet_operator also moves money.
\set VERBOSITY terse
SELECT wallet.create_currency('NOK') AS nok_system \gset
SELECT wallet.open_account('NOK', 'judy') AS judy \gset
SELECT wallet.open_account('NOK', 'karl') AS karl \gset
CREATE ROLE wallet_test_app LOGIN;
CREATE ROLE wallet_test_auditor LOGIN;
CREATE ROLE wallet_test_nobody LOGIN;
GRANT wallet_operator TO wallet_test_app;
GRANT wallet_reader TO wallet_test_auditor;

SET ROLE wallet_test_nobody;
SELECT wallet.balance(:judy);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM wallet.accounts;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SET ROLE wallet_test_app;
SELECT wallet.deposit(:judy, 1000) > 0 AS app_deposits;
SELECT wallet.transfer(:judy, :karl, 400) > 0 AS app_transfers;
UPDATE wallet.accounts SET balance = 1000000 WHERE id = :judy;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO wallet.events (event_type, account_id) VALUES ('account_opened', :judy);
\echo :LAST_ERROR_SQLSTATE
DELETE FROM wallet.events;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SET ROLE wallet_test_auditor;
SELECT wallet.balance(:judy) AS judy, wallet.balance(:karl) AS karl;
SELECT count(*) AS karl_events FROM wallet.statement(:karl);
SELECT count(*) AS differences FROM wallet.verify();
SELECT wallet.transfer(:karl, :judy, 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

DROP ROLE wallet_test_app, wallet_test_auditor, wallet_test_nobody;
