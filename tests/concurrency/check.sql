-- The invariants of MISSION.md after the concurrent runs. Each check raises on failure.
-- First seal whatever the clients' sealing (in the batches phase) left.
DO $$ BEGIN WHILE wallet.seal(100000) > 0 LOOP END LOOP; END $$;
DO $$
DECLARE
    bad record;
    n bigint; m bigint;
BEGIN
    -- 1. per currency the balances sum to 0; 2. nobody below zero without permission
    FOR bad IN SELECT * FROM wallet.trial_balance() WHERE total_balance <> 0 OR forbidden_negative_accounts <> 0 LOOP
        RAISE EXCEPTION 'invariant 1/2 broken: %', bad;
    END LOOP;
    -- money only moved between customers, so their total is unchanged
    SELECT sum(balance) INTO n FROM wallet.accounts WHERE NOT is_system;
    SELECT customer_total INTO m FROM conc.baseline;
    IF n <> m THEN RAISE EXCEPTION 'customer total changed: % -> %', m, n; END IF;
    -- 3. replay reproduces every balance
    SELECT count(*) INTO n FROM wallet.verify();
    IF n <> 0 THEN RAISE EXCEPTION 'verify() found % differences', n; END IF;
    -- transfer events count equals effects: every effect a client saw is one event, and nothing
    -- else is (the holds phase checks its own events in check_holds.sql)
    SELECT count(*) INTO n FROM wallet.events e, conc.baseline b
     WHERE e.seq > b.last_seq AND e.event_type = 'transfer';
    SELECT count(DISTINCT transfer_id) INTO m FROM conc.effects;
    IF n <> m THEN RAISE EXCEPTION 'events written % <> distinct effects seen %', n, m; END IF;
    IF EXISTS (SELECT 1 FROM conc.effects f LEFT JOIN wallet.events e ON e.seq = f.transfer_id
                WHERE e.seq IS NULL OR e.event_type <> 'transfer') THEN
        RAISE EXCEPTION 'a client saw a transfer id that is not a transfer event';
    END IF;
    -- account histories: what seal() posted while clients wrote, and every account's chain of
    -- later events, agree with the log
    SELECT count(*) INTO n FROM wallet.verify_postings();
    IF n <> 0 THEN RAISE EXCEPTION 'verify_postings() found % problems', n; END IF;
    IF NOT EXISTS (SELECT 1 FROM wallet.postings) THEN
        RAISE EXCEPTION 'nothing was posted by the sealing clients';
    END IF;
    -- the sealed order: every event sealed exactly once, in (tx_id, seq) order, chain intact,
    -- although sealing ran while transactions were writing
    IF (SELECT count(*) FROM wallet.chain) <> (SELECT count(*) FROM wallet.events) THEN
        RAISE EXCEPTION 'chain has % links for % events', (SELECT count(*) FROM wallet.chain),
            (SELECT count(*) FROM wallet.events);
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT (tx_id, seq) <= lag((tx_id, seq)) OVER (ORDER BY position) AS back
                                FROM wallet.chain) s WHERE back) THEN
        RAISE EXCEPTION 'the chain is not in (tx_id, seq) order';
    END IF;
    IF EXISTS (SELECT 1 FROM wallet.verify_chain()) THEN
        RAISE EXCEPTION 'verify_chain(): %', (SELECT problem FROM wallet.verify_chain());
    END IF;
    -- the read side, refreshed while clients wrote, plus its tail equals the write side; a
    -- snapshot plus its tail equals a replay from zero
    IF EXISTS (SELECT 1 FROM wallet.verify_read_side()) THEN
        RAISE EXCEPTION 'verify_read_side() found differences';
    END IF;
    n := wallet.take_snapshot();   -- its own statement: check_snapshot must see it
    IF EXISTS (SELECT 1 FROM wallet.check_snapshot(n)) THEN
        RAISE EXCEPTION 'a snapshot plus its tail differs from the replay from zero';
    END IF;
    IF EXISTS (SELECT 1 FROM wallet.verify_read_side()) OR EXISTS (SELECT 1 FROM wallet.verify()) THEN
        RAISE EXCEPTION 'inconsistent after the snapshot';
    END IF;
    -- 5. a key took effect at most once, and every caller with that key got the same answer
    SELECT count(*) INTO n FROM (SELECT idempotency_key FROM conc.effects WHERE idempotency_key IS NOT NULL
                                  GROUP BY 1 HAVING count(DISTINCT transfer_id) > 1) s;
    IF n <> 0 THEN RAISE EXCEPTION '% keys were answered with different transfers', n; END IF;
    SELECT count(*) INTO n FROM conc.effects f JOIN wallet.events e ON e.seq = f.transfer_id
     WHERE f.idempotency_key IS DISTINCT FROM e.idempotency_key;
    IF n <> 0 THEN RAISE EXCEPTION '% effects carry a key other than their event''s', n; END IF;
END
$$;
SELECT count(*) AS transfer_events,
       count(*) FILTER (WHERE idempotency_key IS NOT NULL) AS keyed,
       (SELECT count(*) FROM conc.effects WHERE idempotency_key IS NOT NULL) AS keyed_calls_answered
  FROM wallet.events e, conc.baseline b WHERE e.seq > b.last_seq;
