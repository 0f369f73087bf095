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
    last_hash     bytea NOT NULL DEFAULT '\x',
    posted_seq    bigint NOT NULL DEFAULT 0,  -- wallet.postings holds the money events up to here
    pending_seq   bigint,                     -- the next posted_seq, once the frontier passes
    pending_xid   xid8,                       -- pending_xid (see "Postings" below)
    -- The first chain position hashed with every column of its event (event_text()); the
    -- positions before it were sealed by wallet_ext 0.1.0-0.5.0, whose hash left pending_delta,
    -- debit_prev and credit_prev out (wallet._event_text_v1()). 1 on a fresh install.
    full_text_from bigint NOT NULL DEFAULT 1
);

-- Postings: every account's money events up to seal_state.posted_seq, written by wallet.seal():
-- one row per account and round, with the account's events of that round in an array (one row
-- per account and event cost seal() about 4.5 us per event; see bench/RESULTS.md). Together with the accounts' chains (the events
-- after posted_seq, see "History paths" in sql/schema.sql) they are the index of each account's
-- history that statement(), balance_at() and balance_at_time() read; transfers never write it.
--
-- posted_seq only moves over event numbers that can no longer be used by a transaction still
-- running. An event's number is drawn before its transaction commits, and by a transaction that
-- already has its id (every money event is written after its accounts' rows were locked, which
-- gives the transaction one; src/heap.rs draws it explicitly). So when a round reads the highest
-- number drawn so far, N, and then the next transaction id to be handed out, X, every transaction
-- that drew a number <= N has an id below X; once the snapshot xmin of a later round is >= X,
-- all of them have ended, and the events numbered up to N are all visible or never will be.
-- Writers never wait for this; the history lags by about two rounds of the sealer.
CREATE TABLE wallet.postings (
    account_id bigint NOT NULL,
    last_seq   bigint NOT NULL,    -- the newest of seqs
    seqs       bigint[] NOT NULL,  -- increasing; an account's rows never overlap
    PRIMARY KEY (account_id, last_seq)
);
COMMENT ON TABLE wallet.postings IS
    'Each account''s money events up to seal_state.posted_seq (the rest: the accounts'' chains); written by wallet.seal().';
SELECT pg_catalog.pg_extension_config_dump('wallet.postings', '');

-- How far wallet.postings reaches: seal_state.posted_seq, 0 before the first seal(). (A
-- SQL-standard body, like every SQL function's in this extension: its names were resolved when it
-- was created and never go through a caller's search_path; the hot ones carry no SET clause, so
-- that the planner can inline them.)
CREATE FUNCTION wallet._posted_seq() RETURNS bigint
LANGUAGE sql STABLE
RETURN coalesce((SELECT s.posted_seq FROM wallet.seal_state AS s), 0);

-- The next transaction id to be handed out (Postgres's counter, read under its lock).
CREATE FUNCTION wallet._next_xid() RETURNS xid8
LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wallet_next_xid';

-- An account's money events after posted_seq, newest first: its chain, walked from
-- accounts.last_seq through debit_prev / credit_prev. The walk goes on below an event only while
-- the event is after (above_seq, after_time), so it returns every such event not yet posted, plus
-- the first one at or before them if it is not posted either.
CREATE FUNCTION wallet._chain(account_id bigint, above_seq bigint,
                              after_time timestamptz DEFAULT '-infinity')
RETURNS SETOF wallet.events
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH RECURSIVE posted AS MATERIALIZED (
        SELECT wallet._posted_seq() AS seq
    ), walk AS (
        SELECT e.* FROM wallet.events AS e
         WHERE e.seq = (SELECT a.last_seq FROM wallet.accounts AS a WHERE a.id = $1)
           AND e.seq > (SELECT p.seq FROM posted AS p)
        UNION ALL
        SELECT e.* FROM walk AS w
          JOIN wallet.events AS e
            ON e.seq = CASE WHEN w.debit_account_id = $1 THEN w.debit_prev ELSE w.credit_prev END
         WHERE w.seq > $2 AND w.occurred_at > $3
           AND e.seq > (SELECT p.seq FROM posted AS p)
    )
    SELECT * FROM walk;
END;

CREATE TRIGGER chain_no_update_delete BEFORE UPDATE OR DELETE ON wallet.chain
    FOR EACH ROW EXECUTE FUNCTION wallet.refuse_event_change();
CREATE TRIGGER chain_no_truncate BEFORE TRUNCATE ON wallet.chain
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.refuse_event_change();

SELECT pg_catalog.pg_extension_config_dump('wallet.chain', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.seal_state', '');

-- The text an event is hashed as: every stored column of the wallet's own, by name, in a fixed
-- form (jsonb text; the time as microseconds since the epoch), so neither settings nor a column
-- a DBA adds change old hashes. An edit of any of them breaks the link (pg_test 07_chain).
CREATE FUNCTION wallet.event_text(e wallet.events) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object(
        'seq', e.seq, 'event_type', e.event_type,
        -- microseconds since the epoch: an exact JSON number for every finite time (no setting
        -- enters a hash), "infinity" or "-infinity" as strings (no stored time makes it fail)
        'occurred_at_us', CASE WHEN isfinite(e.occurred_at)
                               THEN to_jsonb(trunc(extract(epoch FROM e.occurred_at) * 1000000))
                               WHEN e.occurred_at > 'epoch'::timestamptz THEN to_jsonb('infinity'::text)
                               ELSE to_jsonb('-infinity'::text) END,
        'tx_id', e.tx_id::text, 'account_id', e.account_id,
        'debit_account_id', e.debit_account_id, 'credit_account_id', e.credit_account_id,
        'amount', e.amount, 'currency', e.currency,
        'debit_balance', e.debit_balance, 'credit_balance', e.credit_balance,
        'idempotency_key', e.idempotency_key, 'data', e.data,
        'pending_delta', e.pending_delta, 'debit_prev', e.debit_prev,
        'credit_prev', e.credit_prev)::text;

-- The text wallet_ext 0.1.0-0.5.0 hashed, for the chain positions sealed then
-- (seal_state.full_text_from): without pending_delta, debit_prev and credit_prev.
CREATE FUNCTION wallet._event_text_v1(e wallet.events) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object(
        'seq', e.seq, 'event_type', e.event_type,
        -- microseconds since the epoch: an exact JSON number for every finite time (no setting
        -- enters a hash), "infinity" or "-infinity" as strings (no stored time makes it fail)
        'occurred_at_us', CASE WHEN isfinite(e.occurred_at)
                               THEN to_jsonb(trunc(extract(epoch FROM e.occurred_at) * 1000000))
                               WHEN e.occurred_at > 'epoch'::timestamptz THEN to_jsonb('infinity'::text)
                               ELSE to_jsonb('-infinity'::text) END,
        'tx_id', e.tx_id::text, 'account_id', e.account_id,
        'debit_account_id', e.debit_account_id, 'credit_account_id', e.credit_account_id,
        'amount', e.amount, 'currency', e.currency,
        'debit_balance', e.debit_balance, 'credit_balance', e.credit_balance,
        'idempotency_key', e.idempotency_key, 'data', e.data)::text;

-- A chain link: sha256 of the previous link's hash followed by the event's text (event_text())
-- converted to UTF-8 (as it is, in a SQL_ASCII database, where text may hold any bytes and a
-- conversion could fail). seal() writes it, verify_chain() recomputes it: one definition for
-- both. In C: no name to resolve; called once per event.
CREATE FUNCTION wallet._link_hash(previous bytea, event_text text) RETURNS bytea
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'wallet_link_hash';

-- Work done in one call by seal() and refresh_read_side(): 1 to 1,000,000 events.
CREATE FUNCTION wallet._require_max_events(max_events integer) RETURNS void
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
RETURN wallet._require_range('max_events', $1, 1, 1000000);

-- Seals up to max_events events of finished transactions; returns how many. Then notifies
-- channel wallet_events with the new last position (delivered when the caller commits).
CREATE FUNCTION wallet.seal(max_events integer DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    state wallet.seal_state;
    frontier xid8;
    e wallet.events;
    sealed bigint := 0;
    posting boolean;
    upto bigint;
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
    -- Postings (see above): post up to the number read in an earlier round once every
    -- transaction that could still use a number up to it has ended, at most max_events numbers.
    -- A pending_xid ahead of this cluster's counter came in a dump from another cluster: the
    -- events up to pending_seq were all restored, and none can be running here.
    posting := state.pending_xid IS NOT NULL
               AND (frontier >= state.pending_xid OR state.pending_xid > wallet._next_xid());
    IF posting THEN
        upto := least(state.pending_seq, state.posted_seq + max_events);
        INSERT INTO wallet.postings (account_id, last_seq, seqs)
        SELECT v.account_id, max(ev.seq), array_agg(ev.seq ORDER BY ev.seq)
          FROM wallet.events AS ev
         CROSS JOIN LATERAL (VALUES (ev.debit_account_id), (ev.credit_account_id)) AS v (account_id)
         WHERE ev.seq > state.posted_seq AND ev.seq <= upto AND v.account_id IS NOT NULL
         GROUP BY v.account_id
         ORDER BY 1;
        state.posted_seq := upto;
        IF upto = state.pending_seq THEN
            state.pending_seq := NULL;
            state.pending_xid := NULL;
        END IF;
    END IF;
    IF state.pending_xid IS NULL THEN
        -- First the highest number drawn, then the next transaction id: in this order.
        SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO upto
          FROM wallet.events_seq_seq AS s;
        IF upto > state.posted_seq THEN
            state.pending_seq := upto;
            state.pending_xid := wallet._next_xid();
            posting := true;
        END IF;
    END IF;
    IF sealed > 0 OR posting THEN
        UPDATE wallet.seal_state
           SET last_position = state.last_position, last_tx_id = state.last_tx_id,
               last_seq = state.last_seq, last_hash = state.last_hash,
               posted_seq = state.posted_seq, pending_seq = state.pending_seq,
               pending_xid = state.pending_xid;
    END IF;
    IF sealed > 0 THEN
        PERFORM pg_notify('wallet_events', state.last_position::text);
    END IF;
    RETURN sealed;
END
$fn$;
COMMENT ON FUNCTION wallet.seal(integer) IS
    'Seals events of finished transactions into the hash chain, in (tx_id, seq) order, and posts account histories (wallet.postings); returns the count sealed; NOTIFY wallet_events with the last position.';

-- The chain's head: record it outside the database (an auditor's note, another system) to make
-- any later rewrite of history, of the events and the chain together, detectable.
CREATE FUNCTION wallet.chain_head(OUT last_position bigint, OUT last_hash text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(s.last_position, 0), encode(coalesce(s.last_hash, '\x'), 'hex')
      FROM (SELECT) AS one LEFT JOIN wallet.seal_state AS s ON true;
END;

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
    -- Before any seal() there is no row: an empty chain, hashed in full from position 1.
    last_position bigint := 0;
    last_hash bytea := '\x';
    full_text_from bigint := 1;
BEGIN
    SELECT * INTO state FROM wallet.seal_state;
    IF FOUND THEN
        last_position := state.last_position;
        last_hash := state.last_hash;
        full_text_from := state.full_text_from;
    END IF;
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
        h := wallet._link_hash(h, CASE WHEN link.position >= full_text_from
                                       THEN wallet.event_text(e) ELSE wallet._event_text_v1(e) END);
        IF h <> link.hash THEN
            RETURN QUERY SELECT link.position, link.seq, 'event changed (hash mismatch)'::text;
            RETURN;
        END IF;
    END LOOP;
    IF last_position <> expected OR last_hash <> h THEN
        RETURN QUERY SELECT expected, NULL::bigint, 'chain head does not match the chain'::text;
        RETURN;
    END IF;
    IF last_position = 0 THEN
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

-- Checks the account histories statements and point-in-time balances read against the log:
-- wallet.postings holds exactly the money events up to posted_seq, every event after it links to
-- its accounts' previous events, and each account's last_seq is its newest. One row per
-- difference; no rows = consistent. Reads the whole log, like verify().
CREATE FUNCTION wallet.verify_postings()
RETURNS TABLE (account_id bigint, seq bigint, problem text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH posted AS MATERIALIZED (
        SELECT wallet._posted_seq() AS seq
    ), sides AS MATERIALIZED (
        SELECT v.account_id, e.seq, v.prev,
               lag(e.seq) OVER (PARTITION BY v.account_id ORDER BY e.seq) AS previous
          FROM wallet.events AS e
         CROSS JOIN LATERAL (VALUES (e.debit_account_id, e.debit_prev),
                                    (e.credit_account_id, e.credit_prev)) AS v (account_id, prev)
         WHERE v.account_id IS NOT NULL
    )
    SELECT coalesce(s.account_id, p.account_id), coalesce(s.seq, p.seq),
           CASE WHEN p.seq IS NULL THEN 'event missing from wallet.postings'
                ELSE 'wallet.postings has an event the account does not have' END
      FROM (SELECT * FROM sides WHERE sides.seq <= (SELECT posted.seq FROM posted)) AS s
      FULL JOIN (SELECT r.account_id, u.seq FROM wallet.postings AS r, unnest(r.seqs) AS u (seq)) AS p
        ON p.account_id = s.account_id AND p.seq = s.seq
     WHERE s.seq IS NULL OR p.seq IS NULL
    UNION ALL
    SELECT r.account_id, r.last_seq, 'postings row out of order or overlapping another'
      FROM (SELECT p.*, lag(p.last_seq) OVER (PARTITION BY p.account_id ORDER BY p.last_seq) AS before
              FROM wallet.postings AS p) AS r
     WHERE r.seqs[cardinality(r.seqs)] IS DISTINCT FROM r.last_seq
        OR r.seqs[1] <= r.before
        OR r.seqs <> ARRAY(SELECT DISTINCT u.seq FROM unnest(r.seqs) AS u (seq) ORDER BY u.seq)
    UNION ALL
    SELECT s.account_id, s.seq,
           'links to event ' || coalesce(s.prev::text, 'none') || ', not to the account''s previous '
           || coalesce(s.previous::text, 'none')
      FROM sides AS s
     WHERE s.seq > (SELECT posted.seq FROM posted) AND s.prev IS DISTINCT FROM s.previous
    UNION ALL
    SELECT a.id, a.last_seq, 'last_seq is not the account''s newest money event '
           || coalesce(n.seq::text, 'none')
      FROM wallet.accounts AS a
      LEFT JOIN (SELECT sides.account_id, max(sides.seq) AS seq FROM sides GROUP BY 1) AS n
        ON n.account_id = a.id
     WHERE a.last_seq IS DISTINCT FROM n.seq
    ORDER BY 1, 2;
END;
COMMENT ON FUNCTION wallet.verify_postings() IS
    'Checks each account''s history index (wallet.postings, the chains of later events, last_seq) against the log; no rows = consistent.';

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
