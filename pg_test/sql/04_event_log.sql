-- The event log: append-only for every role; verify() replays it and names any difference.
\set VERBOSITY terse
SELECT wallet.create_currency('SEK') AS sek_system \gset
SELECT wallet.open_account('SEK', 'ivan') AS ivan \gset
SELECT wallet.deposit(:ivan, 500) AS dep \gset
-- Strictly increasing sequence numbers, one transaction id per event, the balances after.
SELECT event_type, amount, currency, debit_balance, credit_balance,
       tx_id = pg_current_xact_id() AS this_tx_is_not_the_events_tx
  FROM wallet.events WHERE seq = :dep;
SELECT bool_and(seq > prev) AS strictly_increasing
  FROM (SELECT seq, lag(seq, 1, 0::bigint) OVER (ORDER BY seq) AS prev FROM wallet.events) s;

-- UPDATE, DELETE, TRUNCATE are refused, even to the superuser who owns the table.
UPDATE wallet.events SET amount = 1 WHERE seq = :dep;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM wallet.events WHERE seq = :dep;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE wallet.events;
\echo :LAST_ERROR_SQLSTATE

-- verify() catches a stored balance that no event explains, and an event edited behind the
-- triggers' back (both done here as superuser, then rolled back).
BEGIN;
UPDATE wallet.accounts SET balance = balance + 1 WHERE id = :ivan;
SELECT account_id = :ivan AS is_ivan, stored_balance, replayed_balance FROM wallet.verify();
ROLLBACK;
BEGIN;
ALTER TABLE wallet.events DISABLE TRIGGER events_no_update_delete;
UPDATE wallet.events SET amount = 400 WHERE seq = :dep;
SELECT account_id, stored_balance, replayed_balance FROM wallet.verify()
 ORDER BY account_id;
ROLLBACK;
BEGIN;
UPDATE wallet.accounts SET status = 'frozen' WHERE id = :ivan;
SELECT account_id = :ivan AS is_ivan, stored_status, replayed_status FROM wallet.verify();
ROLLBACK;
SELECT count(*) AS differences FROM wallet.verify();
