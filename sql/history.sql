-- Point-in-time reading: an account's posted balance after any event sequence number or at any
-- time, and its statement between two points. Every event records the balances after it, so each
-- answer is found among the account's own events (its postings and its chain, see "History
-- paths" in sql/schema.sql), never by a log scan.

-- The posted balance after all of the account's events with seq <= at_seq; NULL before the
-- account was opened.
CREATE FUNCTION wallet.balance_at(account_id bigint, at_seq bigint) RETURNS bigint
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

-- The posted balance after all of the account's events that happened at or before a time.
CREATE FUNCTION wallet.balance_at_time(account_id bigint, at_time timestamptz) RETURNS bigint
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

-- The statement between two points: events with after_seq < seq <= up_to_seq.
CREATE FUNCTION wallet.statement_between(account_id bigint, after_seq bigint, up_to_seq bigint,
                                         max_rows integer DEFAULT 1000)
RETURNS TABLE (seq bigint, occurred_at timestamptz, event_type text,
               counterparty_account_id bigint, amount bigint, balance bigint,
               idempotency_key text, metadata jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT s.* FROM wallet.statement($1, $2, $4) AS s WHERE s.seq <= $3;
END;
COMMENT ON FUNCTION wallet.statement_between(bigint, bigint, bigint, integer) IS
    'An account''s events with after_seq < seq <= up_to_seq, in sequence, with running balance.';
