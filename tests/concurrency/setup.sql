-- Concurrency scenario: 200 accounts of 100,000 each in currency CON, and a helper that performs
-- one random step and records every effect it saw, so the checks can compare effects with events.
CREATE EXTENSION wallet_ext;
CREATE SCHEMA conc;
SELECT wallet.create_currency('CON') AS system_account \gset
CREATE TABLE conc.acct (i int PRIMARY KEY, id bigint NOT NULL);
INSERT INTO conc.acct SELECT i, wallet.open_account('CON', 'conc-' || i) FROM generate_series(1, 200) i;
SELECT count(wallet.deposit(id, 100000)) FROM conc.acct;
-- Every successful call, as the client saw it (rolled back with the client's transaction).
CREATE TABLE conc.effects (transfer_id bigint NOT NULL, idempotency_key text, client int);
CREATE TABLE conc.baseline AS
    SELECT (SELECT max(seq) FROM wallet.events) AS last_seq,
           (SELECT sum(balance) FROM wallet.accounts WHERE NOT is_system) AS customer_total;

-- One step: r in 1..6 plain transfer, 7..9 keyed transfer (parameters derived from the key, so
-- every call with key k asks for the same transfer), 10 reads. Only insufficient funds (WA008)
-- is expected and swallowed; any other error fails the pgbench client, and thus the test.
CREATE FUNCTION conc.step(a int, b int, amount bigint, k int, r int, client int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    debit bigint; credit bigint; key text; id bigint;
BEGIN
    IF r <= 9 THEN
        IF r <= 6 THEN
            IF a = b THEN b := a % 200 + 1; END IF;
            key := NULL;
        ELSE
            a := k % 200 + 1;
            b := (k * 7 + 3) % 200 + 1;
            IF a = b THEN b := a % 200 + 1; END IF;
            amount := k % 500 + 1;
            key := 'conc-' || k;
        END IF;
        SELECT x.id INTO debit FROM conc.acct x WHERE x.i = a;
        SELECT x.id INTO credit FROM conc.acct x WHERE x.i = b;
        BEGIN
            id := wallet.transfer(debit, credit, amount, key);
        EXCEPTION WHEN SQLSTATE 'WA008' THEN
            RETURN 'WA008';
        END;
        INSERT INTO conc.effects VALUES (id, key, client);
        RETURN 'ok';
    END IF;
    SELECT x.id INTO debit FROM conc.acct x WHERE x.i = a;
    PERFORM wallet.balance(debit);
    PERFORM count(*) FROM wallet.statement(debit, 0, 20);
    RETURN 'read';
END
$$;

-- A batch of 40 random transfers; every fifth one keyed from the same key space as conc.step
-- (same parameters per key), so batches race single calls on keys. Records the effects seen.
CREATE FUNCTION conc.batch(seed int, client int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d bigint[]; c bigint[]; a bigint[]; k text[];
BEGIN
    SELECT array_agg(x.debit ORDER BY g), array_agg(x.credit ORDER BY g),
           array_agg(x.amount ORDER BY g), array_agg(x.key ORDER BY g)
      INTO d, c, a, k
      FROM generate_series(1, 40) g,
           LATERAL (SELECT (seed * 40 + g) % 3000 + 1 AS kn, (random() * 199)::int + 1 AS i,
                           (random() * 198)::int + 1 AS j) r,
           LATERAL (SELECT
               CASE WHEN g % 5 = 0 THEN (SELECT id FROM conc.acct WHERE conc.acct.i = r.kn % 200 + 1)
                    ELSE (SELECT id FROM conc.acct WHERE conc.acct.i = r.i) END AS debit,
               CASE WHEN g % 5 = 0 THEN (SELECT id FROM conc.acct WHERE conc.acct.i =
                        CASE WHEN (r.kn * 7 + 3) % 200 + 1 = r.kn % 200 + 1 THEN (r.kn % 200 + 1) % 200 + 1
                             ELSE (r.kn * 7 + 3) % 200 + 1 END)
                    ELSE (SELECT id FROM conc.acct WHERE conc.acct.i = (r.i + r.j - 1) % 200 + 1) END AS credit,
               CASE WHEN g % 5 = 0 THEN (r.kn % 500 + 1)::bigint ELSE (random() * 3000)::bigint + 1 END AS amount,
               CASE WHEN g % 5 = 0 THEN 'conc-' || r.kn END AS key) x;
    INSERT INTO conc.effects
    SELECT b.transfer_id, k[b.index], client
      FROM wallet.transfer_batch(d, c, a, k) b
     WHERE b.result IN ('ok', 'exists');
    IF EXISTS (SELECT 1 FROM conc.effects WHERE transfer_id IS NULL) THEN
        RAISE EXCEPTION 'a batch answered ok or exists without a transfer id';
    END IF;
END
$$;

-- Raises if the read side plus its tail disagrees with the write side, checked while others write.
CREATE FUNCTION conc.check_read_side() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    FOR bad IN SELECT * FROM wallet.verify_read_side() LIMIT 1 LOOP
        RAISE EXCEPTION 'read side differs under concurrency: %', bad;
    END LOOP;
END
$$;

-- One step on holds, keys shared by every client: k picks the hold (its parameters derive from
-- k, so every try with key k asks for the same hold; one in ten has a 20 ms timeout), op the
-- call: 1-4 try, 5 confirm all, 6 confirm half, 7-8 cancel, 9 expiry, 10 a plain transfer
-- competing for the same funds. The answers the hold rules allow (insufficient funds, not
-- found, confirmed, cancelled, expired, try after cancel) are recorded; anything else fails the
-- client and thus the test.
CREATE TABLE conc.hold_answers (k int, op int, answer text, client int);
CREATE FUNCTION conc.hold_step(k int, op int, a int, b int, client int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    debit bigint; credit bigint; amount bigint := k % 300 + 1; answer text := 'ok';
    gtid text := 'h-' || k;
BEGIN
    SELECT x.id INTO debit FROM conc.acct x WHERE x.i = k % 200 + 1;
    SELECT x.id INTO credit FROM conc.acct x WHERE x.i = (k * 7 + 3) % 200 + 1;
    IF debit = credit THEN
        SELECT x.id INTO credit FROM conc.acct x WHERE x.i = (k % 200 + 1) % 200 + 1;
    END IF;
    BEGIN
        CASE
            WHEN op <= 4 THEN
                PERFORM wallet.try_hold(gtid, 'b', debit, credit, amount,
                                        CASE WHEN k % 10 = 0 THEN interval '20 milliseconds' ELSE interval '1 hour' END);
            WHEN op = 5 THEN PERFORM wallet.confirm_hold(gtid, 'b');
            WHEN op = 6 THEN PERFORM wallet.confirm_hold(gtid, 'b', amount / 2 + 1);
            WHEN op <= 8 THEN PERFORM wallet.cancel_hold(gtid, 'b');
            WHEN op = 9 THEN PERFORM wallet.expire_holds(50);
            ELSE
                SELECT x.id INTO debit FROM conc.acct x WHERE x.i = a;
                SELECT x.id INTO credit FROM conc.acct x WHERE x.i = b;
                IF debit <> credit THEN
                    INSERT INTO conc.effects VALUES (wallet.transfer(debit, credit, 2000), NULL, client);
                END IF;
        END CASE;
    EXCEPTION WHEN SQLSTATE 'WA008' OR SQLSTATE 'WA018' OR SQLSTATE 'WA019' OR SQLSTATE 'WA020'
                   OR SQLSTATE 'WA021' OR SQLSTATE 'WA023' THEN
        answer := SQLSTATE;
    END;
    INSERT INTO conc.hold_answers VALUES (k, op, answer, client);
    RETURN answer;
END
$$;

-- Global transactions of this node alone (transfer_across with both accounts here), racing on
-- 300 shared gtids, singly and in batches (which take no claim per item): key k always asks for
-- the same transfer, small enough that funds never run out. check_here.sql compares the balances
-- with the confirmed ledger rows.
CREATE FUNCTION conc.here_a(k int) RETURNS bigint LANGUAGE sql STABLE AS
    $$ SELECT id FROM conc.acct WHERE i = k % 200 + 1 $$;
CREATE FUNCTION conc.here_b(k int) RETURNS bigint LANGUAGE sql STABLE AS
    $$ SELECT id FROM conc.acct WHERE i = CASE WHEN (k * 7 + 3) % 200 = k % 200 THEN (k + 1) % 200 ELSE (k * 7 + 3) % 200 END + 1 $$;
CREATE FUNCTION conc.here_amount(k int) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT (k % 5 + 1)::bigint $$;
-- The 20 keys of a batch starting at key s.
CREATE FUNCTION conc.here_keys(s int) RETURNS int[] LANGUAGE sql IMMUTABLE AS
    $$ SELECT array_agg((s + 13 * j) % 300 + 1 ORDER BY j) FROM generate_series(0, 19) j $$;
CREATE FUNCTION conc.here_gtids(s int) RETURNS text[] LANGUAGE sql IMMUTABLE AS
    $$ SELECT array_agg('here-' || k ORDER BY o) FROM unnest(conc.here_keys(s)) WITH ORDINALITY AS u(k, o) $$;
CREATE FUNCTION conc.here_from(s int) RETURNS bigint[] LANGUAGE sql STABLE AS
    $$ SELECT array_agg(conc.here_a(k) ORDER BY o) FROM unnest(conc.here_keys(s)) WITH ORDINALITY AS u(k, o) $$;
CREATE FUNCTION conc.here_to(s int) RETURNS bigint[] LANGUAGE sql STABLE AS
    $$ SELECT array_agg(conc.here_b(k) ORDER BY o) FROM unnest(conc.here_keys(s)) WITH ORDINALITY AS u(k, o) $$;
CREATE FUNCTION conc.here_amounts(s int) RETURNS bigint[] LANGUAGE sql IMMUTABLE AS
    $$ SELECT array_agg(conc.here_amount(k) ORDER BY o) FROM unnest(conc.here_keys(s)) WITH ORDINALITY AS u(k, o) $$;
CREATE FUNCTION conc.locals(n int) RETURNS text[] LANGUAGE sql IMMUTABLE AS
    $$ SELECT array_fill('local'::text, ARRAY[n]) $$;
