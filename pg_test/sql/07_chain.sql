-- The sealed order, the hash chain and the consumer cursor: seal, chain_head, events_after,
-- verify_chain. Sealing takes events of finished transactions only, in (tx_id, seq) order.
\set VERBOSITY terse
SELECT wallet.create_currency('ISK') AS isk_system \gset
SELECT wallet.open_account('ISK', 'olga') AS olga \gset
SELECT wallet.open_account('ISK', 'petr') AS petr \gset
SELECT wallet.deposit(:olga, 900, 'isk-1') AS dep \gset
SELECT wallet.transfer(:olga, :petr, 400) AS tr \gset

-- Everything written so far (by this and the earlier test files) gets sealed.
SELECT wallet.seal() > 0 AS sealed_something;
SELECT wallet.seal() AS nothing_left;
SELECT (SELECT count(*) FROM wallet.chain) = (SELECT count(*) FROM wallet.events) AS every_event_sealed;
SELECT bool_and(ok) AS chain_in_tx_then_seq_order
  FROM (SELECT (tx_id, seq) > lag((tx_id, seq)) OVER (ORDER BY position) IS NOT FALSE AS ok
          FROM wallet.chain) s;
SELECT last_position = (SELECT count(*) FROM wallet.chain) AS head_is_last, length(last_hash) AS hex_length
  FROM wallet.chain_head();
SELECT count(*) AS broken_links FROM wallet.verify_chain();

-- The cursor: the events after the third-last position (the last two), then nothing after the head.

SELECT chain_position FROM wallet.events_after(0, 10000) ORDER BY chain_position DESC LIMIT 1 OFFSET 2 \gset
SELECT event_type, amount, idempotency_key
  FROM wallet.events_after(:chain_position, 10);
SELECT count(*) AS beyond_head FROM wallet.events_after((SELECT last_position FROM wallet.chain_head()));
SELECT * FROM wallet.events_after(0, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.seal(0);
\echo :LAST_ERROR_SQLSTATE

-- Inside an open transaction its own events are not sealed: it has not finished.
BEGIN;
SELECT wallet.transfer(:petr, :olga, 1) AS open_tr \gset
SELECT wallet.seal() AS sealed_while_open;
SELECT count(*) AS open_event_in_chain FROM wallet.chain WHERE seq = :open_tr;
COMMIT;
SELECT wallet.seal() AS sealed_after_commit;

-- The chain table refuses changes like the log does.
DELETE FROM wallet.chain;
\echo :LAST_ERROR_SQLSTATE

-- Tamper evidence: an event edited or deleted behind the triggers' back (superuser, triggers
-- disabled; rolled back) is named by verify_chain().
BEGIN;
ALTER TABLE wallet.events DISABLE TRIGGER events_no_update_delete;
UPDATE wallet.events SET amount = 4000 WHERE seq = :tr;
SELECT seq = :tr AS is_the_transfer, problem FROM wallet.verify_chain();
ROLLBACK;
BEGIN;
ALTER TABLE wallet.events DISABLE TRIGGER events_no_update_delete;
DELETE FROM wallet.events WHERE seq = :dep;
SELECT seq = :dep AS is_the_deposit, problem FROM wallet.verify_chain();
ROLLBACK;
SELECT count(*) AS broken_links FROM wallet.verify_chain();

-- From a head recorded earlier (outside the database): only the links after it are recomputed,
-- and the recorded hash must still be the chain's hash at that position.
SELECT last_position AS rec_pos, last_hash AS rec_hash FROM wallet.chain_head() \gset
SELECT wallet.transfer(:olga, :petr, 2) > 0 AS posted;
SELECT wallet.seal() AS sealed_after_recording;
SELECT count(*) AS broken_links FROM wallet.verify_chain(:rec_pos, :'rec_hash');
BEGIN;
ALTER TABLE wallet.events DISABLE TRIGGER events_no_update_delete;
UPDATE wallet.events SET amount = 3 WHERE seq = (SELECT max(seq) FROM wallet.events);
SELECT problem FROM wallet.verify_chain(:rec_pos, :'rec_hash');
ROLLBACK;
SELECT problem FROM wallet.verify_chain(:rec_pos, repeat('0', 64));
SELECT * FROM wallet.verify_chain(:rec_pos);
\echo :LAST_ERROR_SQLSTATE

-- Every stored column of a sealed event is covered by its link: each edited in turn (rolled
-- back) is named by verify_chain(). A hold event has them all set (pending_delta, both links,
-- data); the edits change NULLs too.
SELECT wallet.try_hold('chain-h', 'b', :olga, :petr, 7) > 0 AS held;
SELECT wallet.transfer(:olga, :petr, 3, 'chain-k', '{"memo": "m"}') > 0 AS keyed;
SELECT wallet.seal() > 0 AS sealed;
SELECT set_config('tamper.seq', max(seq)::text, false) IS NOT NULL AS noted
  FROM wallet.events WHERE event_type = 'hold_placed';
CREATE TEMP TABLE tamper (col text, detected boolean);
DO $tamper$
DECLARE
    c record;
    change text;
    found_problem boolean;
BEGIN
    FOR c IN SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
               FROM pg_attribute a
              WHERE a.attrelid = 'wallet.events'::regclass AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum LOOP
        change := CASE WHEN c.attname = 'seq' THEN '-seq' ELSE CASE c.type
            WHEN 'bigint' THEN format('coalesce(%I, 0) + 1', c.attname)
            WHEN 'text' THEN format('coalesce(%I, %L) || %L', c.attname, '', 'x')
            WHEN 'jsonb' THEN format('coalesce(%I, %L) || %L', c.attname, '{}', '{"t": 1}')
            WHEN 'timestamp with time zone' THEN format('%I + interval %L', c.attname, '1 microsecond')
            WHEN 'xid8' THEN format('(%I::text::numeric + 1)::text::xid8', c.attname)
        END END;
        BEGIN
            ALTER TABLE wallet.events DISABLE TRIGGER events_no_update_delete;
            EXECUTE format('UPDATE wallet.events SET %I = %s WHERE seq = %s', c.attname, change,
                           current_setting('tamper.seq'));
            found_problem := EXISTS (SELECT 1 FROM wallet.verify_chain());
            RAISE EXCEPTION USING ERRCODE = 'TA001', MESSAGE = found_problem::text;
        EXCEPTION WHEN SQLSTATE 'TA001' THEN
            INSERT INTO tamper VALUES (c.attname, SQLERRM::boolean);
        END;
    END LOOP;
END
$tamper$;
SELECT col, detected FROM tamper ORDER BY col;
SELECT count(*) AS broken_links FROM wallet.verify_chain();
SELECT wallet.cancel_hold('chain-h', 'b') > 0 AS released;
-- An event's time is hashed as microseconds since the epoch, exactly, whatever the time: an
-- infinite one, or one at the far end of the range (only a row written by hand holds such a
-- time), hashes too, and an ordinary one as before.
SELECT wallet.event_text(ROW(1, 'transfer', t, '1', NULL, 2, 3, 10, 'EUR', 0, 0, NULL, NULL, NULL, NULL, NULL)::wallet.events)::jsonb -> 'occurred_at_us' AS hashed
  FROM unnest(ARRAY['infinity', '-infinity', '294276-12-31 23:59:59+00', '4713-01-01 00:00:00+00 BC',
                    '2026-12-01 12:00:00.123456+00']::timestamptz[]) AS t;
