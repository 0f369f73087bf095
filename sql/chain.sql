-- The sealed order of the event log, its hash chain, and the cursor consumers follow.
--
-- seq is drawn when an event is written, not when its transaction commits, so a transaction that
-- commits late can add an event below a seq that others already read. A consumer, a snapshot or a
-- hash chain that followed seq would miss it. The sealer fixes one order that never changes:
-- wallet.seal() takes the events of transactions that have finished, those whose id is below the
-- xmin of its snapshot (none of them can add anything any more), in (tx_id, seq) order, gives each
-- a chain position and a hash that chains it to the one before. Writers never wait for it; one
-- sealer runs at a time. An open transaction holds the frontier back until it ends.

CREATE INDEX events_tx_idx ON wallet.events (tx_id, seq);

CREATE TABLE wallet.chain (
    position  bigint PRIMARY KEY,            -- 1, 2, 3, ... in sealed order
    seq       bigint NOT NULL UNIQUE,        -- the event
    tx_id     xid8 NOT NULL,
    hash      bytea NOT NULL,                -- sha256(previous hash || wallet.event_text(event))
    sealed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wallet.chain IS
    'Sealed order of the events with a sha256 hash chain; append-only, written by wallet.seal().';

-- Where the sealer stopped: the last sealed event and the chain's head. One row, created by the
-- first wallet.seal() (not by this script: pg_dump carries the row, and a restore runs this script
-- before it loads the data).
CREATE TABLE wallet.seal_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_position bigint NOT NULL DEFAULT 0,
    last_tx_id    xid8 NOT NULL DEFAULT '0',
    last_seq      bigint NOT NULL DEFAULT 0,
    last_hash     bytea NOT NULL DEFAULT '\x'
);

CREATE TRIGGER chain_no_update_delete BEFORE UPDATE OR DELETE ON wallet.chain
    FOR EACH ROW EXECUTE FUNCTION wallet.refuse_event_change();
CREATE TRIGGER chain_no_truncate BEFORE TRUNCATE ON wallet.chain
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.refuse_event_change();

SELECT pg_catalog.pg_extension_config_dump('wallet.chain', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.seal_state', '');

-- The text an event is hashed as: every column, by name, in a fixed form (jsonb text; the time as
-- microseconds since the epoch), so neither settings nor a future column change old hashes.
CREATE FUNCTION wallet.event_text(e wallet.events) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT jsonb_build_object(
        'seq', e.seq, 'event_type', e.event_type,
        'occurred_at_us', (extract(epoch FROM e.occurred_at) * 1000000)::bigint,
        'tx_id', e.tx_id::text, 'account_id', e.account_id,
        'debit_account_id', e.debit_account_id, 'credit_account_id', e.credit_account_id,
        'amount', e.amount, 'currency', e.currency,
        'debit_balance', e.debit_balance, 'credit_balance', e.credit_balance,
        'idempotency_key', e.idempotency_key, 'data', e.data)::text
$fn$;

-- A chain link: the hash of the previous link followed by the event's text (event_text()).
-- seal() writes it, verify_chain() recomputes it: one definition for both. It takes the text, not
-- the event row: with a row argument the call was not inlined and sealing ran 3 times slower.
CREATE FUNCTION wallet._link_hash(previous bytea, event_text text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT sha256($1 || convert_to($2, 'UTF8'))
$fn$;

-- Work done in one call by seal() and refresh_read_side(): 1 to 1,000,000 events.
CREATE FUNCTION wallet._require_max_events(max_events integer) RETURNS void
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT wallet._require_range('max_events', $1, 1, 1000000)
$fn$;

-- Seals up to max_events events of finished transactions; returns how many. Then notifies
-- channel wallet_events with the new last position (delivered when the caller commits).
CREATE FUNCTION wallet.seal(max_events integer DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state wallet.seal_state;
    frontier xid8;
    e wallet.events;
    sealed bigint := 0;
BEGIN
    PERFORM wallet._require_max_events(max_events);
    -- One sealer at a time; the frontier is taken after the lock, from a fresh snapshot.
    INSERT INTO wallet.seal_state DEFAULT VALUES ON CONFLICT DO NOTHING;
    SELECT * INTO state FROM wallet.seal_state FOR UPDATE;
    frontier := pg_snapshot_xmin(pg_current_snapshot());
    FOR e IN
        SELECT * FROM wallet.events AS ev
         WHERE (ev.tx_id, ev.seq) > (state.last_tx_id, state.last_seq)
           AND ev.tx_id < frontier
         ORDER BY ev.tx_id, ev.seq
         LIMIT max_events
    LOOP
        state.last_position := state.last_position + 1;
        state.last_hash := wallet._link_hash(state.last_hash, wallet.event_text(e));
        INSERT INTO wallet.chain (position, seq, tx_id, hash)
        VALUES (state.last_position, e.seq, e.tx_id, state.last_hash);
        state.last_tx_id := e.tx_id;
        state.last_seq := e.seq;
        sealed := sealed + 1;
    END LOOP;
    IF sealed > 0 THEN
        UPDATE wallet.seal_state
           SET last_position = state.last_position, last_tx_id = state.last_tx_id,
               last_seq = state.last_seq, last_hash = state.last_hash;
        PERFORM pg_notify('wallet_events', state.last_position::text);
    END IF;
    RETURN sealed;
END
$fn$;
COMMENT ON FUNCTION wallet.seal(integer) IS
    'Seals events of finished transactions into the hash chain, in (tx_id, seq) order; returns the count; NOTIFY wallet_events with the last position.';

-- The chain's head: record it outside the database (an auditor's note, another system) to make
-- any later rewrite of history, of the events and the chain together, detectable.
CREATE FUNCTION wallet.chain_head(OUT last_position bigint, OUT last_hash text)
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(s.last_position, 0), encode(coalesce(s.last_hash, '\x'), 'hex')
      FROM (SELECT) AS one LEFT JOIN wallet.seal_state AS s ON true
$fn$;

-- Recomputes the chain and returns its first broken link, if any: a position missing, an event
-- deleted, an event changed, a head that does not match, or an event of a sealed transaction left
-- out of the chain. No rows = intact. From the start by default; or from a head recorded earlier
-- outside the database (chain_head()), which is then the trust anchor: the recorded hash must
-- still be the one at that position, and only the links after it are recomputed.
CREATE FUNCTION wallet.verify_chain(after_position bigint DEFAULT 0, after_hash text DEFAULT NULL)
RETURNS TABLE (chain_position bigint, seq bigint, problem text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    link wallet.chain;
    e wallet.events;
    h bytea := '\x';
    expected bigint := 0;
    state wallet.seal_state;
    anchor_tx xid8 := '0';
    anchor_seq bigint := 0;
BEGIN
    IF coalesce(after_position, 0) > 0 THEN
        IF after_hash IS NULL OR after_hash !~ '^[0-9a-f]{64}$' THEN
            RAISE EXCEPTION 'invalid argument after_hash: 64 hex digits from chain_head() are needed with after_position %',
                after_position USING ERRCODE = 'WA016';
        END IF;
        SELECT * INTO link FROM wallet.chain AS c WHERE c.position = after_position;
        IF NOT FOUND OR link.hash <> decode(after_hash, 'hex') THEN
            RETURN QUERY SELECT after_position, link.seq, 'chain differs from the recorded head'::text;
            RETURN;
        END IF;
        h := link.hash;
        expected := after_position;
        anchor_tx := link.tx_id;
        anchor_seq := link.seq;
    END IF;
    FOR link IN SELECT * FROM wallet.chain AS c WHERE c.position > expected ORDER BY c.position LOOP
        expected := expected + 1;
        IF link.position <> expected THEN
            RETURN QUERY SELECT expected, NULL::bigint, 'chain position missing'::text;
            RETURN;
        END IF;
        SELECT * INTO e FROM wallet.events AS ev WHERE ev.seq = link.seq;
        IF NOT FOUND THEN
            RETURN QUERY SELECT link.position, link.seq, 'event deleted'::text;
            RETURN;
        END IF;
        h := wallet._link_hash(h, wallet.event_text(e));
        IF h <> link.hash THEN
            RETURN QUERY SELECT link.position, link.seq, 'event changed (hash mismatch)'::text;
            RETURN;
        END IF;
    END LOOP;
    SELECT * INTO state FROM wallet.seal_state;
    IF NOT FOUND THEN
        state := ROW(true, 0, '0', 0, '\x')::wallet.seal_state;
    END IF;
    IF state.last_position <> expected OR state.last_hash <> h THEN
        RETURN QUERY SELECT expected, NULL::bigint, 'chain head does not match the chain'::text;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT NULL::bigint, ev.seq, 'event of a sealed transaction missing from the chain'::text
          FROM wallet.events AS ev
         WHERE (ev.tx_id, ev.seq) <= (state.last_tx_id, state.last_seq)
           AND (ev.tx_id, ev.seq) > (anchor_tx, anchor_seq)
           AND NOT EXISTS (SELECT 1 FROM wallet.chain AS c WHERE c.seq = ev.seq)
         ORDER BY ev.tx_id, ev.seq
         LIMIT 1;
END
$fn$;
COMMENT ON FUNCTION wallet.verify_chain(bigint, text) IS
    'Recomputes the hash chain (from the start, or from a head recorded earlier); returns its first broken link (no rows = intact).';

-- The cursor consumers follow: sealed events after a chain position, in sealed order. Nothing
-- ever appears behind a position once it has been returned.
CREATE FUNCTION wallet.events_after(after_position bigint DEFAULT 0, max_rows integer DEFAULT 1000)
RETURNS TABLE (chain_position bigint, seq bigint, event_type text, occurred_at timestamptz,
               tx_id xid8, account_id bigint, debit_account_id bigint, credit_account_id bigint,
               amount bigint, currency text, debit_balance bigint, credit_balance bigint,
               idempotency_key text, data jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM wallet._require_page(max_rows);
    RETURN QUERY
        SELECT c.position, e.seq, e.event_type, e.occurred_at, e.tx_id, e.account_id,
               e.debit_account_id, e.credit_account_id, e.amount, e.currency, e.debit_balance,
               e.credit_balance, e.idempotency_key, e.data
          FROM wallet.chain AS c
          JOIN wallet.events AS e ON e.seq = c.seq
         WHERE c.position > coalesce(after_position, 0)
         ORDER BY c.position
         LIMIT max_rows;
END
$fn$;
COMMENT ON FUNCTION wallet.events_after(bigint, integer) IS
    'Sealed events after a chain position, in sealed order, paged; follow it with LISTEN wallet_events.';
