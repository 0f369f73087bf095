-- wallet_ext 0.2.0 -> 0.3.0: account histories leave the write path. The two per-account
-- indexes of wallet.events (events_debit_idx, events_credit_idx) are replaced by wallet.postings,
-- which wallet.seal() fills, and by each account's chain of events not posted yet
-- (accounts.last_seq, events.debit_prev / credit_prev); see "History paths" in sql/schema.sql.
-- Run by ALTER EXTENSION wallet_ext UPDATE TO '0.3.0'. tests/upgrade.sh checks that an updated
-- database has exactly the schema of a fresh 0.3.0 install, and that its data survives.
-- The definitions below are those of sql/*.sql at 0.3.0; later changes go to a later script.

-- No writer may run meanwhile: every event already written is posted below, and the events
-- written afterwards are linked from the accounts' last_seq set here.
LOCK TABLE wallet.accounts, wallet.events IN ACCESS EXCLUSIVE MODE;

-- ---- the accounts' chains (sql/schema.sql) ----------------------------------------------------
ALTER TABLE wallet.accounts ADD COLUMN last_seq bigint;
ALTER TABLE wallet.events ADD COLUMN debit_prev bigint, ADD COLUMN credit_prev bigint;

-- ---- postings (sql/chain.sql) -----------------------------------------------------------------
ALTER TABLE wallet.seal_state
    ADD COLUMN posted_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN pending_seq bigint,
    ADD COLUMN pending_xid xid8;

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

-- How far wallet.postings reaches: seal_state.posted_seq, 0 before the first seal().
CREATE FUNCTION wallet._posted_seq() RETURNS bigint
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce((SELECT s.posted_seq FROM wallet.seal_state AS s), 0)
$fn$;

-- The next transaction id to be handed out (Postgres's counter, read under its lock).
CREATE FUNCTION wallet._next_xid() RETURNS xid8
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'wallet_next_xid';

-- Every event written so far is posted, in rows of at most 100,000 event numbers (as seal()
-- posts them; the earlier events keep NULL links: a chain is only followed above posted_seq),
-- and each account's newest money event starts its chain.
INSERT INTO wallet.postings (account_id, last_seq, seqs)
SELECT v.account_id, max(e.seq), array_agg(e.seq ORDER BY e.seq)
  FROM wallet.events AS e
 CROSS JOIN LATERAL (VALUES (e.debit_account_id), (e.credit_account_id)) AS v (account_id)
 WHERE v.account_id IS NOT NULL
 GROUP BY v.account_id, (e.seq - 1) / 100000
 ORDER BY 1, 2;
UPDATE wallet.accounts AS a SET last_seq = p.seq
  FROM (SELECT account_id, max(last_seq) AS seq FROM wallet.postings GROUP BY account_id) AS p
 WHERE p.account_id = a.id;
INSERT INTO wallet.seal_state (posted_seq)
SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM wallet.events_seq_seq AS s
    ON CONFLICT (singleton) DO UPDATE SET posted_seq = excluded.posted_seq;
DROP INDEX wallet.events_debit_idx;
DROP INDEX wallet.events_credit_idx;


-- An account's money events after posted_seq, newest first: its chain, walked from
-- accounts.last_seq through debit_prev / credit_prev. The walk goes on below an event only while
-- the event is after (above_seq, after_time), so it returns every such event not yet posted, plus
-- the first one at or before them if it is not posted either.
CREATE FUNCTION wallet._chain(account_id bigint, above_seq bigint,
                              after_time timestamptz DEFAULT '-infinity')
RETURNS SETOF wallet.events
LANGUAGE sql STABLE AS $fn$
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
    SELECT * FROM walk
$fn$;

-- ---- functions whose body changed -------------------------------------------------------------
CREATE OR REPLACE FUNCTION wallet.seal(max_events integer DEFAULT 100000) RETURNS bigint
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

CREATE FUNCTION wallet.verify_postings()
RETURNS TABLE (account_id bigint, seq bigint, problem text)
LANGUAGE sql STABLE AS $fn$
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
    ORDER BY 1, 2
$fn$;
COMMENT ON FUNCTION wallet.verify_postings() IS
    'Checks each account''s history index (wallet.postings, the chains of later events, last_seq) against the log; no rows = consistent.';

CREATE OR REPLACE FUNCTION wallet.statement(account_id bigint, after_seq bigint DEFAULT 0,
                                 max_rows integer DEFAULT 100)
RETURNS TABLE (seq bigint, occurred_at timestamptz, event_type text,
               counterparty_account_id bigint, amount bigint, balance bigint,
               idempotency_key text, metadata jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    walk boolean;
BEGIN
    PERFORM wallet._require_account(account_id);
    PERFORM wallet._require_page(max_rows);
    -- Money events from the account's postings (cut at max_rows) and its chain (the events not
    -- posted yet; see "History paths" in sql/schema.sql), lifecycle events from their index.
    -- Every chain event comes after every posted one: when the postings fill the page, the chain
    -- is not walked at all (paging through older history costs a page, not the chain).
    SELECT count(*) < max_rows INTO walk
      FROM (SELECT FROM wallet.postings AS p CROSS JOIN LATERAL unnest(p.seqs) AS u (seq)
             WHERE p.account_id = statement.account_id
               AND p.last_seq > coalesce(after_seq, 0) AND u.seq > coalesce(after_seq, 0)
             LIMIT max_rows) AS page;
    RETURN QUERY
        SELECT s.* FROM (
            SELECT m.seq, m.occurred_at, m.event_type,
                   CASE WHEN m.debit_account_id = statement.account_id
                        THEN m.credit_account_id ELSE m.debit_account_id END,
                   CASE WHEN m.debit_account_id = statement.account_id
                        THEN -m.amount ELSE m.amount END,
                   CASE WHEN m.debit_account_id = statement.account_id
                        THEN m.debit_balance ELSE m.credit_balance END,
                   m.idempotency_key, m.data
              FROM ((SELECT e.* FROM wallet.postings AS p
                      CROSS JOIN LATERAL unnest(p.seqs) AS u (seq)
                      JOIN wallet.events AS e ON e.seq = u.seq
                     WHERE p.account_id = statement.account_id
                       AND p.last_seq > coalesce(after_seq, 0) AND u.seq > coalesce(after_seq, 0)
                     ORDER BY p.last_seq, u.seq LIMIT max_rows)
                    UNION ALL
                    SELECT c.* FROM wallet._chain(statement.account_id, coalesce(after_seq, 0)) AS c
                     WHERE walk AND c.seq > coalesce(after_seq, 0)) AS m
            UNION ALL
            (SELECT e.seq, e.occurred_at, e.event_type, NULL::bigint, NULL::bigint,
                    CASE WHEN e.event_type = 'account_opened' THEN 0::bigint
                         ELSE (e.data ->> 'balance')::bigint END,
                    e.idempotency_key, e.data
               FROM wallet.events AS e
              WHERE e.account_id = statement.account_id AND e.seq > coalesce(after_seq, 0)
                AND e.event_type <> 'currency_created'
              ORDER BY e.seq LIMIT max_rows)
        ) AS s (seq, occurred_at, event_type, counterparty_account_id, amount, balance,
                idempotency_key, metadata)
        ORDER BY s.seq
        LIMIT max_rows;
END
$fn$;
COMMENT ON FUNCTION wallet.statement(bigint, bigint, integer) IS
    'An account''s events in sequence with signed amount and running posted balance; page with after_seq.';

CREATE OR REPLACE FUNCTION wallet.balance_at(account_id bigint, at_seq bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    result bigint;
    walk boolean;
BEGIN
    PERFORM wallet._require_account(account_id);
    IF at_seq IS NULL THEN
        RAISE EXCEPTION 'invalid argument at_seq: must not be NULL' USING ERRCODE = 'WA016';
    END IF;
    -- The chain walk stops at the first event at or before at_seq; else the postings have it.
    -- Every chain event is above posted_seq: at or below it, the chain is not walked at all.
    walk := at_seq > wallet._posted_seq();
    SELECT CASE WHEN m.debit_account_id = balance_at.account_id
                THEN m.debit_balance ELSE m.credit_balance END INTO result
      FROM ((SELECT c.* FROM wallet._chain(balance_at.account_id, at_seq) AS c
              WHERE walk AND c.seq <= at_seq)
            UNION ALL
            (SELECT e.* FROM wallet.events AS e
              WHERE e.seq = (
                    -- the postings row holding the newest event at or before at_seq
                    SELECT max(u.seq)
                      FROM (SELECT p.seqs FROM wallet.postings AS p
                             WHERE p.account_id = balance_at.account_id AND p.seqs[1] <= at_seq
                             ORDER BY p.last_seq DESC LIMIT 1) AS p
                     CROSS JOIN LATERAL unnest(p.seqs) AS u (seq)
                     WHERE u.seq <= at_seq))) AS m
     ORDER BY m.seq DESC LIMIT 1;
    IF result IS NULL AND EXISTS (
        SELECT 1 FROM wallet.events AS e
         WHERE e.account_id = balance_at.account_id AND e.event_type = 'account_opened'
           AND e.seq <= at_seq) THEN
        result := 0;
    END IF;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION wallet.balance_at(bigint, bigint) IS
    'Posted balance after the account''s events up to a sequence number (NULL before it was opened).';

CREATE OR REPLACE FUNCTION wallet.balance_at_time(account_id bigint, at_time timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    last_seq bigint;
BEGIN
    PERFORM wallet._require_account(account_id);
    IF at_time IS NULL THEN
        RAISE EXCEPTION 'invalid argument at_time: must not be NULL' USING ERRCODE = 'WA016';
    END IF;
    -- Per account, occurred_at grows with seq: the last event at or before at_time is found by
    -- walking the account's history backwards from its newest event.
    SELECT max(s.seq) INTO last_seq FROM (
        (SELECT c.seq FROM wallet._chain(balance_at_time.account_id, 0, at_time) AS c
          WHERE c.occurred_at <= at_time)
        UNION ALL
        (SELECT u.seq FROM wallet.postings AS p
          CROSS JOIN LATERAL unnest(p.seqs) AS u (seq)
          JOIN wallet.events AS e ON e.seq = u.seq
          WHERE p.account_id = balance_at_time.account_id AND e.occurred_at <= at_time
          ORDER BY p.last_seq DESC, u.seq DESC LIMIT 1)
        UNION ALL
        (SELECT e.seq FROM wallet.events AS e
          WHERE e.account_id = balance_at_time.account_id AND e.occurred_at <= at_time
          ORDER BY e.seq DESC LIMIT 1)
    ) AS s;
    IF last_seq IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN wallet.balance_at(account_id, last_seq);
END
$fn$;
COMMENT ON FUNCTION wallet.balance_at_time(bigint, timestamptz) IS
    'Posted balance after the account''s events at or before a time (NULL before it was opened).';

-- ---- privileges (sql/grants.sql) ----------------------------------------------------------------
REVOKE ALL ON TABLE wallet.postings FROM PUBLIC;
GRANT SELECT ON TABLE wallet.postings TO wallet_reader;
REVOKE ALL ON FUNCTION wallet._next_xid(), wallet._chain(bigint, bigint, timestamptz),
    wallet._posted_seq(), wallet.verify_postings() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wallet.verify_postings(), wallet._chain(bigint, bigint, timestamptz),
    wallet._posted_seq()
TO wallet_reader;
