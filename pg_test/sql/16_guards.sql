-- Guards no role and no careless DBA gets around: the ledger survives DROP EXTENSION; the wallet's
-- own locks cannot be taken by anyone else; errors carry no Rust backtrace to the client.
\set VERBOSITY terse
SELECT wallet.create_currency('PLN') AS pln_system \gset
SELECT wallet.open_account('PLN', 'ula') AS ula \gset
SELECT wallet.open_account('PLN', 'wit') AS wit \gset
SELECT wallet.deposit(:ula, 1000) > 0 AS posted;

-- DROP EXTENSION, DROP SCHEMA wallet and DROP OWNED BY its owner are refused while the wallet
-- holds events (WA029), CASCADE or not; nothing is dropped.
DROP EXTENSION wallet_ext;
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION wallet_ext CASCADE;
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION IF EXISTS dblink, wallet_ext;
\echo :LAST_ERROR_SQLSTATE
DROP SCHEMA wallet CASCADE;
\echo :LAST_ERROR_SQLSTATE
DROP OWNED BY CURRENT_USER;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) > 0 AS ledger_still_here FROM wallet.events;
-- Other drops are not its business.
CREATE SCHEMA scratch;
DROP SCHEMA scratch;
-- A superuser who means it, and says so: allowed (here rolled back).
BEGIN;
SET LOCAL wallet.allow_drop = on;
DROP EXTENSION wallet_ext CASCADE;
SELECT count(*) AS extension_rows FROM pg_extension WHERE extname = 'wallet_ext';
ROLLBACK;
SELECT extname FROM pg_extension WHERE extname = 'wallet_ext';
-- Nobody else may say so.
CREATE ROLE guard_app;
GRANT wallet_operator TO guard_app;
SET ROLE guard_app;
SET wallet.allow_drop = on;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- The wallet serialises calls on one idempotency key, one (gtid, branch) and one global
-- transaction with locks of its own, which no role can take: advisory locks (every role may take
-- any of them) held on the keys, namespaces and hashes the wallet used before do not block it.
SELECT current_setting('unix_socket_directories') AS sock, current_setting('port') AS port \gset
SELECT format('host=%s port=%s dbname=%s user=guard_app', split_part(:'sock', ',', 1), :'port', current_database()) AS app \gset
ALTER ROLE guard_app LOGIN;
SELECT dblink_connect('blocker', :'app');
SELECT dblink_exec('blocker', 'BEGIN');
-- 0x57414C54 ("WALT") with the folded FNV-1a hashes 0.5.0 locked for the key 'guard-key' and for
-- the hold ('guard-g', 'b'), and the coordinator's namespace with hashtext(gtid).
SELECT * FROM dblink('blocker', $$SELECT pg_advisory_xact_lock(1463897172, -1882467966)::text,
                                         pg_advisory_xact_lock(1463897172, 628113596)::text,
                                         pg_advisory_xact_lock(1463898964, hashtext('guard-g'))::text$$) AS t (a text, b text, c text);
SET lock_timeout = '2s';
SELECT wallet.transfer(:ula, :wit, 5, 'guard-key') > 0 AS keyed_transfer_not_blocked;
SELECT wallet.try_hold('guard-g', 'b', :ula, :wit, 5) > 0 AS hold_not_blocked;
SELECT wallet.cancel_hold('guard-g', 'b') > 0 AS cancel_not_blocked;
CALL wallet.transfer_across('guard-g', 'local', :ula, 'local', :wit, 5);
RESET lock_timeout;
SELECT dblink_exec('blocker', 'ROLLBACK');
SELECT dblink_disconnect('blocker');
-- The locks the wallet does take are object locks whose class is a wallet table.
BEGIN;
SELECT wallet.transfer(:ula, :wit, 1, 'guard-key-2') > 0 AS posted;
SELECT locktype, classid = 'wallet.events'::regclass AS class_is_the_log, mode
  FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'object';
ROLLBACK;

-- Errors raised inside the wallet (here Postgres's own, from a constraint a DBA added) reach the
-- client without a Rust backtrace, though the test server runs with RUST_BACKTRACE=1.
\set VERBOSITY verbose
SELECT wallet.deposit(:ula, 10000) > 0 AS posted;
CREATE UNIQUE INDEX guard_one_amount ON wallet.events (amount) WHERE amount = 777;
SELECT wallet.transfer(:ula, :wit, 777) > 0 AS first;
SELECT wallet.transfer(:ula, :wit, 777);
DROP INDEX wallet.guard_one_amount;
SELECT wallet.transfer(:ula, :wit, 999999);
\set VERBOSITY terse

DROP ROLE guard_app;
SELECT count(*) AS differences FROM wallet.verify();
