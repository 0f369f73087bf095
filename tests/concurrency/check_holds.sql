-- The holds phase's own invariants, after expiring what ran out. Each check raises on failure.
SELECT pg_sleep(1.1);
SELECT wallet.expire_holds(10000);
DO $$
DECLARE
    n bigint;
BEGIN
    -- pending amounts on the accounts are exactly the open holds
    SELECT count(*) INTO n FROM wallet.accounts a
      LEFT JOIN (SELECT debit_account_id AS id, sum(reserved) AS s FROM wallet.holds
                  WHERE status = 'pending' GROUP BY 1) d ON d.id = a.id
      LEFT JOIN (SELECT credit_account_id AS id, sum(reserved) AS s FROM wallet.holds
                  WHERE status = 'pending' GROUP BY 1) c ON c.id = a.id
     WHERE a.pending_debit <> coalesce(d.s, 0) OR a.pending_credit <> coalesce(c.s, 0);
    IF n <> 0 THEN RAISE EXCEPTION '% accounts whose pending amounts differ from their open holds', n; END IF;
    -- each hold placed at most once and ended at most once, by the event its status says
    SELECT count(*) INTO n FROM wallet.holds h
     WHERE (SELECT count(*) FROM wallet.events e WHERE e.event_type = 'hold_placed'
              AND (e.data->>'hold_id')::bigint = h.hold_id) > 1
        OR (SELECT count(*) FROM wallet.events e
             WHERE e.event_type IN ('hold_confirmed', 'hold_cancelled', 'hold_expired')
               AND (e.data->>'hold_id')::bigint = h.hold_id) <> CASE WHEN h.status = 'pending' THEN 0 ELSE 1 END
        OR (h.status = 'confirmed') <> EXISTS (SELECT 1 FROM wallet.events e WHERE e.event_type = 'hold_confirmed'
                                                 AND e.seq = h.confirm_seq);
    IF n <> 0 THEN RAISE EXCEPTION '% holds whose events do not match their status', n; END IF;
    -- no hold outlived its timeout; a confirmed hold posted at most what it reserved
    SELECT count(*) INTO n FROM wallet.holds WHERE status = 'pending' AND expires_at < clock_timestamp();
    IF n <> 0 THEN RAISE EXCEPTION '% pending holds past their timeout', n; END IF;
    SELECT count(*) INTO n FROM wallet.holds WHERE status = 'confirmed' AND NOT confirmed_amount BETWEEN 1 AND reserved;
    IF n <> 0 THEN RAISE EXCEPTION '% holds confirmed above what they reserved', n; END IF;
    -- every kind of answer happened (the test exercised the races it claims)
    SELECT count(DISTINCT answer) INTO n FROM conc.hold_answers;
    IF n < 7 THEN RAISE EXCEPTION 'only % kinds of answers: %', n,
        (SELECT string_agg(DISTINCT answer, ',') FROM conc.hold_answers); END IF;
    RAISE NOTICE 'holds: % calls, answers %', (SELECT count(*) FROM conc.hold_answers),
        (SELECT string_agg(answer || '=' || c, ' ' ORDER BY answer)
           FROM (SELECT answer, count(*) c FROM conc.hold_answers GROUP BY 1) s);
END
$$;
