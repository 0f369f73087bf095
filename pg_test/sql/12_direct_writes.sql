-- wallet.transfer (and deposit, withdraw) write the account rows and the event with the table
-- access methods directly, not through SQL statements (src/accounts.rs, src/events.rs). What a statement would
-- have guaranteed must still hold: visibility within a statement and a transaction, savepoints,
-- index entries when an update is not HOT, TOAST, read-only transactions, REPEATABLE READ
-- conflicts, idempotency keys first used concurrently, and no silent bypass of a trigger
-- someone added. Batches (wallet.transfer_batch) write through the same path.
\set VERBOSITY terse
SELECT wallet.create_currency('THB') AS thb_system \gset
SELECT wallet.open_account('THB', 'hana') AS hana \gset
SELECT wallet.open_account('THB', 'ivo') AS ivo \gset
SELECT wallet.deposit(:hana, 1000) > 0 AS posted;

-- Several transfers in one statement: each sees the one before it.
SELECT count(wallet.transfer(:hana, :ivo, 10)) AS posted FROM generate_series(1, 5);
SELECT wallet.transfer(:hana, :ivo, 100) < wallet.transfer(:ivo, :hana, 30) AS in_order;
SELECT wallet.balance(:hana) AS hana, wallet.balance(:ivo) AS ivo;
SELECT amount, balance FROM wallet.statement(:ivo) ORDER BY seq;

-- Funds are judged on the state the earlier calls of the same statement left.
SELECT wallet.transfer(:hana, :ivo, 500), wallet.transfer(:hana, :ivo, 500);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.balance(:hana) AS hana_unchanged;

-- A savepoint rolled back takes its transfers with it.
BEGIN;
SELECT wallet.transfer(:hana, :ivo, 1) > 0 AS posted;
SAVEPOINT s;
SELECT wallet.transfer(:hana, :ivo, 200) > 0 AS posted;
ROLLBACK TO SAVEPOINT s;
SELECT wallet.transfer(:hana, :ivo, 2) > 0 AS posted;
COMMIT;
SELECT wallet.balance(:hana) AS hana, wallet.balance(:ivo) AS ivo;
SELECT count(*) AS events_for_ivo FROM wallet.statement(:ivo);

-- Hundreds of updates of two rows in one transaction fill their page (no old version can be
-- pruned while it is open), so later updates are not HOT and need new index entries: the rows
-- must still be found through every index afterwards.
BEGIN;
SELECT count(wallet.transfer(CASE WHEN i % 2 = 0 THEN :hana ELSE :ivo END,
                             CASE WHEN i % 2 = 0 THEN :ivo ELSE :hana END, 1))
  FROM generate_series(1, 600) AS i;
SELECT n_tup_upd - n_tup_hot_upd > 0 AS some_updates_were_not_hot
  FROM pg_stat_xact_user_tables WHERE relid = 'wallet.accounts'::regclass;
COMMIT;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT balance FROM wallet.accounts WHERE id = :hana;
SELECT count(*) AS found_by_owner FROM wallet.accounts WHERE owner = 'ivo' AND id = :ivo;
SELECT count(*) AS found_by_currency FROM wallet.accounts WHERE currency = 'THB';
RESET enable_seqscan;
RESET enable_bitmapscan;
SELECT wallet.balance(:hana) AS hana, wallet.balance(:ivo) AS ivo;

-- Metadata near its 4 kB limit (hard to compress) goes through TOAST like any inserted value
-- and comes back intact.
SELECT string_agg(md5(i::text), '') AS memo FROM generate_series(1, 120) AS i \gset
SELECT reltoastrelid::regclass AS toast FROM pg_class WHERE oid = 'wallet.events'::regclass \gset
SELECT count(*) AS toast_rows FROM :toast \gset
SELECT wallet.transfer(:hana, :ivo, 1, metadata => jsonb_build_object('memo', :'memo')) AS big_id \gset
SELECT count(*) > :toast_rows AS stored_out_of_line FROM :toast;
SELECT metadata ->> 'memo' = :'memo' AS intact FROM wallet.get_transfer(:big_id);

-- A read-only transaction is refused before anything is touched (Postgres's own 25006).
BEGIN READ ONLY;
SELECT wallet.transfer(:hana, :ivo, 1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT wallet.deposit(:hana, 1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- REPEATABLE READ: an account changed by a transaction committed after this one's snapshot is a
-- serialization failure (40001), as an UPDATE would report; nothing is written.
SELECT 'host=' || split_part(current_setting('unix_socket_directories'), ',', 1)
       || ' port=' || current_setting('port') || ' user=' || current_user
       || ' dbname=' || current_database() AS here \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT wallet.balance(:hana) AS hana_in_snapshot;
SELECT * FROM dblink(:'here', format('SELECT wallet.transfer(%s, %s, 5) > 0', :hana, :ivo)) AS t (posted boolean);
SELECT wallet.transfer(:hana, :ivo, 1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- READ COMMITTED: the same transfer waits for nothing and sees the newest balance.
BEGIN;
SELECT wallet.balance(:hana) AS hana_before;
SELECT * FROM dblink(:'here', format('SELECT wallet.transfer(%s, %s, 5) > 0', :hana, :ivo)) AS t (posted boolean);
SELECT wallet.transfer(:hana, :ivo, 1) > 0 AS posted;
SELECT wallet.balance(:hana) AS hana_after;
COMMIT;

-- A batch writes through the same path: under REPEATABLE READ an account changed after the
-- snapshot is 40001 too, naming a transfer on that account; nothing is written.
SELECT count(*) AS events_before FROM wallet.events \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT wallet.balance(:hana) AS hana_in_snapshot;
SELECT * FROM dblink(:'here', format('SELECT wallet.transfer(%s, %s, 5) > 0', :ivo, :hana)) AS t (posted boolean);
SELECT * FROM wallet.transfer_batch(ARRAY[:ivo, :hana]::bigint[], ARRAY[:hana, :ivo]::bigint[], ARRAY[1, 2]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- An idempotency key first used by a transaction that committed after this one's snapshot:
-- the look-up cannot see it, the unique index does. Single transfer and batch both answer 40001.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT wallet.balance(:hana) AS hana_in_snapshot;
SELECT * FROM dblink(:'here', format('SELECT wallet.transfer(%s, %s, 1, %L) > 0', :hana, :ivo, 'rr-key')) AS t (posted boolean);
SELECT wallet.transfer(:hana, :ivo, 1, 'rr-key');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT wallet.balance(:ivo) AS ivo_in_snapshot;
SELECT * FROM dblink(:'here', format('SELECT count(*) FROM wallet.transfer_batch(ARRAY[%s]::bigint[], ARRAY[%s]::bigint[], ARRAY[1]::bigint[], ARRAY[%L])', :hana, :ivo, 'rr-batch-key')) AS t (n bigint);
SELECT * FROM wallet.transfer_batch(ARRAY[:ivo, :hana]::bigint[], ARRAY[:hana, :ivo]::bigint[],
                                    ARRAY[1, 1]::bigint[], ARRAY[NULL, 'rr-batch-key']);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- The refused calls wrote nothing: only the three calls over dblink did.
SELECT count(*) - :events_before AS events_written FROM wallet.events;
-- READ COMMITTED, a key being written by a batch still open elsewhere (on other accounts): the
-- batch here does not wait for it, it answers 40001 at once; after the other commits, the
-- first call's retry finds its key.
SELECT wallet.open_account('THB', 'jun') AS jun \gset
SELECT wallet.open_account('THB', 'kai') AS kai \gset
SELECT wallet.deposit(:jun, 10) > 0 AS posted;
SELECT count(*) AS events_before FROM wallet.events \gset
SELECT dblink_connect('other', :'here');
SELECT dblink_exec('other', 'BEGIN');
SELECT * FROM dblink('other', format('SELECT count(*) FROM wallet.transfer_batch(ARRAY[%s]::bigint[], ARRAY[%s]::bigint[], ARRAY[1]::bigint[], ARRAY[%L])', :hana, :ivo, 'open-key')) AS t (n bigint);
SELECT * FROM wallet.transfer_batch(ARRAY[:jun]::bigint[], ARRAY[:kai]::bigint[], ARRAY[1]::bigint[], ARRAY['open-key']);
\echo :LAST_ERROR_SQLSTATE
SELECT dblink_exec('other', 'COMMIT');
SELECT dblink_disconnect('other');
SELECT result FROM wallet.transfer_batch(ARRAY[:hana]::bigint[], ARRAY[:ivo]::bigint[], ARRAY[1]::bigint[], ARRAY['open-key']);
-- The refused call and the retry wrote nothing (the batch over dblink wrote one event); each
-- key is in the log once.
SELECT count(*) - :events_before AS events_written,
       count(*) FILTER (WHERE idempotency_key IN ('rr-key', 'rr-batch-key', 'open-key')) AS keyed
  FROM wallet.events;
SELECT wallet.balance(:jun) AS jun, wallet.balance(:kai) AS kai;

SELECT wallet.transfer(:hana, :ivo, 1) > 0 AS posted_again;

SELECT wallet.balance(:hana) + wallet.balance(:ivo) + wallet.balance(:jun) + wallet.balance(:kai) AS thb_customers,
       wallet.balance(:thb_system) AS thb_system;
SELECT count(*) AS thb_events, sum(amount) AS thb_moved FROM wallet.events WHERE currency = 'THB';
SELECT count(*) AS verify_differences FROM wallet.verify();
SELECT currency, total_balance, forbidden_negative_accounts FROM wallet.trial_balance() WHERE currency = 'THB';

-- A batch with at least three accounts per page of wallet.accounts finds them by one pass over
-- the table instead of an index descent each (not at SERIALIZABLE, whose predicate locks stay on
-- the index). The answers are the same: under REPEATABLE READ an account changed after the
-- snapshot is 40001 and nothing is written; under READ COMMITTED the newest balance is used.
SELECT wallet.create_currency('ZAR') > 0 AS zar;
SELECT array_agg(wallet.open_account('ZAR', 'row-' || i) ORDER BY i) AS many
  FROM generate_series(1, 100) AS i \gset
-- The 40001 below names the first transfer on row 50 (row 49 -> row 50).
SELECT (:'many'::bigint[])[49] AS row_49, (:'many'::bigint[])[50] AS row_50;
SELECT count(wallet.deposit(a, 100)) AS deposits FROM unnest(:'many'::bigint[]) AS a;
SELECT 100 >= 3 * pg_relation_size('wallet.accounts') / 8192 AS found_by_one_pass;
SELECT count(*) AS events_before FROM wallet.events \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT wallet.balance((:'many'::bigint[])[50]) AS row_50_in_snapshot;
SELECT * FROM dblink(:'here', format('SELECT wallet.deposit(%s, 7) > 0', (:'many'::bigint[])[50]))
    AS t (posted boolean);
SELECT count(*) FROM wallet.transfer_batch((:'many'::bigint[])[1:99], (:'many'::bigint[])[2:100],
                                           array_fill(1::bigint, ARRAY[99]));
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT * FROM dblink(:'here', format('SELECT wallet.deposit(%s, 7) > 0', (:'many'::bigint[])[50]))
    AS t (posted boolean);
SELECT result, count(*) FROM wallet.transfer_batch((:'many'::bigint[])[1:99], (:'many'::bigint[])[2:100],
                                                   array_fill(1::bigint, ARRAY[99])) GROUP BY result;
COMMIT;
-- Row 50 got both deposits (100 + 7 + 7), then paid 1 and received 1; row 1 only paid, row 100
-- only received.
SELECT wallet.balance((:'many'::bigint[])[1]) AS row_1, wallet.balance((:'many'::bigint[])[50]) AS row_50,
       wallet.balance((:'many'::bigint[])[100]) AS row_100;
SELECT count(*) - :events_before AS events_written FROM wallet.events;
SELECT count(*) AS verify_differences FROM wallet.verify();
