-- Every function of the API called with random, NULL, extreme and malformed arguments. Each call
-- runs in its own subtransaction; every error must carry a documented SQLSTATE (class WA, or a
-- standard one Postgres raises before the wallet is reached), never XX000, and the backend must
-- survive. Afterwards the invariants must hold. Run by scripts/test.sh; raises on failure.
CREATE EXTENSION IF NOT EXISTS wallet_ext;
SELECT setseed(0.42);
SELECT wallet.create_currency('FZA'), wallet.create_currency('FZB');
SELECT count(wallet.open_account(CASE WHEN i % 2 = 0 THEN 'FZA' ELSE 'FZB' END, 'fuzz',
                                 '{}', i % 7 = 0)) FROM generate_series(1, 20) i;
SELECT count(wallet.deposit(id, 1000)) FROM wallet.accounts WHERE NOT is_system AND currency = 'FZA';

CREATE TEMP TABLE outcomes (fn text, sqlstate text, message text);

DO $fuzz$
DECLARE
    -- Interesting bigints: ids that exist, do not exist, extremes, NULL.
    ids bigint[] := ARRAY[NULL, 0, -1, 1, 2, 3, 5, 8, 13, 21, 22, 999999, 9223372036854775807,
                          -9223372036854775808];
    amounts bigint[] := ARRAY[NULL, 0, -1, 1, 2, 999, 1000, 1001, 9223372036854775807,
                              -9223372036854775808, 4611686018427387904];
    texts text[] := ARRAY[NULL, '', 'k', repeat('x', 128), repeat('x', 129), 'FZA', 'fza', 'ZZZ',
                          E'\u00e9\u00e9', repeat('long', 5000)];
    intervals text[] := ARRAY[NULL, '1 hour', '0', '-1 second', '100 years', '1 microsecond', '2 days'];
    metas jsonb[] := ARRAY[NULL, '{}', '[]', '1', '"s"', 'null', '{"a": [1, {"b": null}]}',
                           jsonb_build_object('big', repeat('b', 5000))];
    pick_id bigint; pick_id2 bigint; pick_amount bigint; pick_text text; pick_meta jsonb;
    statement text;
    i int;
BEGIN
    FOR i IN 1 .. 4000 LOOP
        pick_id := ids[1 + floor(random() * array_length(ids, 1))::int];
        pick_id2 := ids[1 + floor(random() * array_length(ids, 1))::int];
        pick_amount := amounts[1 + floor(random() * array_length(amounts, 1))::int];
        pick_text := texts[1 + floor(random() * array_length(texts, 1))::int];
        pick_meta := metas[1 + floor(random() * array_length(metas, 1))::int];
        statement := CASE i % 25
            WHEN 0 THEN format('SELECT wallet.transfer(%L, %L, %L, %L, %L)', pick_id, pick_id2, pick_amount, pick_text, pick_meta)
            WHEN 1 THEN format('SELECT wallet.deposit(%L, %L, %L, %L)', pick_id, pick_amount, pick_text, pick_meta)
            WHEN 2 THEN format('SELECT wallet.withdraw(%L, %L, %L, %L)', pick_id, pick_amount, pick_text, pick_meta)
            WHEN 3 THEN format('SELECT wallet.open_account(%L, %L, %L, %L)', pick_text, pick_text, pick_meta, random() < 0.5)
            WHEN 4 THEN format('SELECT wallet.create_currency(%L, %L)', pick_text, (pick_amount % 40)::int)
            WHEN 5 THEN format('SELECT wallet.freeze_account(%L)', pick_id)
            WHEN 6 THEN format('SELECT wallet.unfreeze_account(%L)', pick_id)
            WHEN 7 THEN format('SELECT wallet.close_account(%L)', pick_id)
            WHEN 8 THEN format('SELECT wallet.balance(%L)', pick_id)
            WHEN 9 THEN format('SELECT * FROM wallet.statement(%L, %L, %L)', pick_id, pick_amount, (pick_id2 % 20000)::int)
            WHEN 10 THEN format('SELECT * FROM wallet.list_accounts(%L, %L, %L, %L)', pick_text, pick_text, pick_id, (pick_amount % 20000)::int)
            WHEN 11 THEN format('SELECT * FROM wallet.get_account(%L)', pick_id)
            WHEN 12 THEN format('SELECT * FROM wallet.get_transfer(%L)', pick_id)
            WHEN 14 THEN format('SELECT wallet.try_hold(%L, %L, %L, %L, %L, %L::interval, %L)', pick_text,
                                texts[1 + floor(random() * 4)::int], pick_id, pick_id2, pick_amount,
                                intervals[1 + floor(random() * array_length(intervals, 1))::int],
                                CASE WHEN random() < 0.3 THEN pick_text END)
            WHEN 15 THEN format('SELECT wallet.confirm_hold(%L, %L, %L)', pick_text, texts[1 + floor(random() * 4)::int],
                                CASE WHEN random() < 0.5 THEN pick_amount END)
            WHEN 16 THEN format('SELECT wallet.cancel_hold(%L, %L)', pick_text, texts[1 + floor(random() * 4)::int])
            WHEN 17 THEN format('SELECT wallet.expire_holds(%L)', (pick_amount % 20000)::int)
            WHEN 18 THEN format('SELECT * FROM wallet.account_balances(%L), wallet.open_holds(%L)', pick_id, pick_id2)
            WHEN 19 THEN format('SELECT * FROM wallet.get_hold(%L, %L)', pick_text, texts[1 + floor(random() * 4)::int])
            WHEN 20 THEN format('CALL wallet.transfer_across(%L, %L, %L, %L, %L, %L, %L::interval)', pick_text,
                                (ARRAY['local', 'nowhere', NULL])[1 + floor(random() * 3)::int], pick_id,
                                (ARRAY['local', 'nowhere', NULL])[1 + floor(random() * 3)::int], pick_id2,
                                pick_amount, intervals[1 + floor(random() * array_length(intervals, 1))::int])
            WHEN 21 THEN format('SELECT wallet.balance_at(%L, %L)', pick_id, pick_amount)
            WHEN 22 THEN format('SELECT wallet.balance_at_time(%L, %L::timestamptz)', pick_id,
                                (ARRAY[NULL, 'now', '-infinity', 'infinity', '2000-01-01', '294276-12-31'])[1 + floor(random() * 6)::int])
            WHEN 23 THEN format('SELECT * FROM wallet.statement_between(%L, %L, %L, %L)', pick_id, pick_amount,
                                pick_id2, (pick_amount % 20000)::int)
            WHEN 24 THEN format('SELECT wallet.seal(%L)', (pick_amount % 2000000)::int)
            ELSE format('SELECT * FROM wallet.transfer_batch(%L::bigint[], %L::bigint[], %L::bigint[], %L::text[], %L::boolean[])',
                        ARRAY[pick_id, pick_id2, 2, 4], ARRAY[pick_id2, pick_id, 4, 2],
                        ARRAY[pick_amount, 1, pick_amount, 5],
                        CASE WHEN random() < 0.5 THEN ARRAY[pick_text, pick_text, NULL, 'b'] END,
                        CASE WHEN random() < 0.5 THEN ARRAY[random() < 0.5, random() < 0.5, false, random() < 0.5] END)
        END;
        BEGIN
            EXECUTE statement;
            INSERT INTO outcomes VALUES (split_part(statement, '(', 1), 'ok', NULL);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO outcomes VALUES (split_part(statement, '(', 1), SQLSTATE, SQLERRM);
        END;
    END LOOP;
END
$fuzz$;

SELECT sqlstate, count(*) FROM outcomes GROUP BY 1 ORDER BY 1;
DO $check$
DECLARE
    bad record;
BEGIN
    -- Allowed: our WA codes, 22003 (a value out of range before the call, e.g. the % casts above),
    -- 22008 (an interval literal out of range, before the call), 40001 (concurrent change; none
    -- here), 'ok', and for the coordinator 2D000: arguments that pass its checks reach its first
    -- COMMIT, which a procedure cannot do inside this DO block's subtransaction.
    FOR bad IN SELECT * FROM outcomes
                WHERE sqlstate !~ '^(WA0[0-9][0-9]|22003|ok)$'
                  AND NOT (sqlstate = '2D000' AND fn = 'CALL wallet.transfer_across')
                  AND NOT (sqlstate = '22008' AND fn = 'SELECT wallet.try_hold')
                LIMIT 5 LOOP
        RAISE EXCEPTION 'undocumented outcome % from %: %', bad.sqlstate, bad.fn, bad.message;
    END LOOP;
    IF EXISTS (SELECT 1 FROM wallet.trial_balance() WHERE total_balance <> 0 OR forbidden_negative_accounts <> 0) THEN
        RAISE EXCEPTION 'trial balance broken after fuzzing';
    END IF;
    IF EXISTS (SELECT 1 FROM wallet.verify()) THEN
        RAISE EXCEPTION 'verify() not empty after fuzzing';
    END IF;
    IF EXISTS (SELECT 1 FROM wallet.verify_postings()) THEN
        RAISE EXCEPTION 'verify_postings() not empty after fuzzing';
    END IF;
    IF (SELECT count(*) FROM outcomes WHERE sqlstate = 'ok') < 100 THEN
        RAISE EXCEPTION 'the fuzzer hardly ever succeeded: it is not exercising the paths';
    END IF;
END
$check$;
