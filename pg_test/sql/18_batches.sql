-- Batches of transfers between databases: wallet.transfer_across_batch runs many two-leg global
-- transactions in one call (one drive, one call per node and participant function for all of
-- them), each keeping its own gtid, outcome and recovery. Per item, in input order: an outcome
-- (confirmed, cancelled, pending, stuck, or rejected before anything was recorded), the SQLSTATE
-- and message of a refusal or cancel. The call itself raises only for what every item shares.
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT 'host=' || split_part(current_setting('unix_socket_directories'), ',', 1)
       || ' port=' || current_setting('port') || ' user=' || current_user AS server \gset
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE IF EXISTS wallet_regress_b2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'CREATE DATABASE wallet_regress_b2');
SELECT :'server' || ' dbname=wallet_regress_b2' AS b2 \gset
SELECT dblink_exec(:'b2', 'CREATE EXTENSION wallet_ext');
-- Here and on b2: a currency NOK (system account 1 on b2), two customers with 1,000 each, and a
-- closed account.
SELECT wallet.create_currency('NOK') AS nok_system \gset
SELECT wallet.open_account('NOK', 'ada') AS ada \gset
SELECT wallet.open_account('NOK', 'bo') AS bo \gset
SELECT wallet.deposit(:ada, 1000) > 0 AS funded, wallet.deposit(:bo, 1000) > 0 AS funded;
SELECT t.* FROM dblink(:'b2', $$SELECT wallet.create_currency('NOK'), wallet.open_account('NOK', 'cy'),
                                       wallet.open_account('NOK', 'di'), wallet.open_account('NOK', 'shut'),
                                       wallet.deposit(2, 1000), wallet.deposit(3, 1000), wallet.close_account(4)$$)
    AS t (system bigint, cy bigint, di bigint, shut bigint, d1 bigint, d2 bigint, closed boolean);
SELECT wallet.register_node('b2', :'b2');
CREATE FUNCTION pg_temp.money(b2 text) RETURNS TABLE (here bigint, b2 bigint, total bigint) LANGUAGE sql AS $$
    SELECT h, r.s, h + r.s
      FROM (SELECT sum(balance)::bigint AS h FROM wallet.accounts WHERE NOT is_system AND currency = 'NOK') AS x,
           dblink($1, $q$SELECT sum(balance)::bigint FROM wallet.accounts WHERE NOT is_system$q$) AS r (s bigint)
$$;
SELECT * FROM pg_temp.money(:'b2');

-- TC/C: out to b2, in from b2, one refused for funds there, one into a closed account; and
-- items refused before anything is recorded: an unknown node, the same account twice, no gtid,
-- a gtid not printable ASCII, a gtid twice in the batch, an amount of 0.
CALL wallet.transfer_across_batch(
    ARRAY['bt-1', 'bt-2', 'bt-3', 'bt-4', 'bt-5', 'bt-6', NULL, 'bt-é', 'bt-1', 'bt-8'],
    ARRAY['local', 'b2', 'b2', 'local', 'local', 'local', 'local', 'local', 'local', 'local'],
    ARRAY[:ada, 2, 3, :bo, :ada, :ada, :ada, :ada, :ada, :ada]::bigint[],
    ARRAY['b2', 'local', 'local', 'b2', 'nowhere', 'local', 'b2', 'b2', 'b2', 'b2'],
    ARRAY[3, :bo, :ada, 4, 2, :ada, 2, 2, 2, 2]::bigint[],
    ARRAY[100, 50, 5000, 10, 1, 1, 1, 1, 1, 0]::bigint[]);
SELECT gtid, protocol, outcome, error_sqlstate, batch IS NOT NULL AS in_a_batch
  FROM wallet.global_transactions WHERE gtid LIKE 'bt-%' ORDER BY gtid;
SELECT * FROM pg_temp.money(:'b2');
SELECT wallet.balance(:ada) AS ada, wallet.balance(:bo) AS bo;
-- The same batch again: every item answers as before, nothing moves twice.
CALL wallet.transfer_across_batch(
    ARRAY['bt-1', 'bt-2', 'bt-3', 'bt-4'], ARRAY['local', 'b2', 'b2', 'local'],
    ARRAY[:ada, 2, 3, :bo]::bigint[], ARRAY['b2', 'local', 'local', 'b2'],
    ARRAY[3, :bo, :ada, 4]::bigint[], ARRAY[100, 50, 5000, 10]::bigint[]);
SELECT wallet.balance(:ada) AS ada, wallet.balance(:bo) AS bo;
-- A gtid of the batch with other parameters: refused for that item (WA027), the others go on.
CALL wallet.transfer_across_batch(ARRAY['bt-1', 'bt-9'], ARRAY['local', 'local'], ARRAY[:ada, :ada]::bigint[],
                                  ARRAY['b2', 'b2'], ARRAY[3, 3]::bigint[], ARRAY[101, 7]::bigint[]);
-- A single call with a batch item's gtid answers its outcome.
CALL wallet.transfer_across('bt-2', 'b2', 2, 'local', :bo, 50);

-- Saga: the postings go one branch after the other, paying node first; into a closed account
-- the credit is refused and the debit compensated (its reverse transfer).
CALL wallet.transfer_across_batch(
    ARRAY['bs-1', 'bs-2', 'bs-3'], ARRAY['local', 'b2', 'local'], ARRAY[:ada, 3, :bo]::bigint[],
    ARRAY['b2', 'local', 'b2'], ARRAY[2, :ada, 4]::bigint[], ARRAY[20, 30, 40]::bigint[], protocol => 'saga');
SELECT gtid, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid LIKE 'bs-%' ORDER BY gtid;
SELECT count(*) FILTER (WHERE event_type = 'transfer') AS transfers_here
  FROM wallet.events WHERE idempotency_key LIKE 'gtx:%';
SELECT * FROM pg_temp.money(:'b2');

-- What every item shares is checked once, and refuses the call: 2PC (its items would wait for
-- each other's prepared transactions on each node's system account), arrays of different
-- lengths, more than 10,000 items, a timeout above the maximum; inside a transaction block (2D000).
CALL wallet.transfer_across_batch(ARRAY['bp-1'], ARRAY['local'], ARRAY[:ada]::bigint[], ARRAY['b2'],
                                  ARRAY[2]::bigint[], ARRAY[1]::bigint[], protocol => '2pc');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across_batch(ARRAY['bp-1', 'bp-2'], ARRAY['local'], ARRAY[:ada]::bigint[], ARRAY['b2'],
                                  ARRAY[2]::bigint[], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT array_fill('x'::text, ARRAY[10001]) AS many_t, array_fill(1::bigint, ARRAY[10001]) AS many_i \gset
CALL wallet.transfer_across_batch(:'many_t', :'many_t', :'many_i', :'many_t', :'many_i', :'many_i');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across_batch(ARRAY['bp-1'], ARRAY['local'], ARRAY[:ada]::bigint[], ARRAY['b2'],
                                  ARRAY[2]::bigint[], ARRAY[1]::bigint[], timeout => interval '100 years');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
CALL wallet.transfer_across_batch(ARRAY['bp-1'], ARRAY['local'], ARRAY[:ada]::bigint[], ARRAY['b2'],
                                  ARRAY[2]::bigint[], ARRAY[1]::bigint[]);
ROLLBACK;
SELECT count(*) AS recorded FROM wallet.global_transactions WHERE gtid LIKE 'bp-%';

-- The coordinator stops after recording the batch (wallet.fault): its session's lock goes with
-- the call, and recovery drives every item to its end (TC/C, not decided: cancelled).
SET wallet.fault = 'after_record';
CALL wallet.transfer_across_batch(ARRAY['bf-1', 'bf-2'], ARRAY['local', 'b2'], ARRAY[:ada, 2]::bigint[],
                                  ARRAY['b2', 'local'], ARRAY[3, :bo]::bigint[], ARRAY[5, 6]::bigint[]);
RESET wallet.fault;
SELECT gtid, phase, outcome FROM wallet.global_transactions WHERE gtid LIKE 'bf-%' ORDER BY gtid;
CALL wallet.recover();
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid LIKE 'bf-%' ORDER BY gtid;
-- Stopped right after the decisions: recovery confirms them.
SET wallet.fault = 'after_decide';
CALL wallet.transfer_across_batch(ARRAY['bf-3', 'bf-4'], ARRAY['local', 'b2'], ARRAY[:ada, 2]::bigint[],
                                  ARRAY['b2', 'local'], ARRAY[3, :bo]::bigint[], ARRAY[7, 8]::bigint[]);
RESET wallet.fault;
CALL wallet.recover();
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid LIKE 'bf-%' ORDER BY gtid;

-- A Postgres ERROR in one item's part on a node (here a constraint a DBA added, which bo's
-- rows now fail whenever they change) rolls back that node's merged call; its items then run
-- one by one, so the ERROR is the answer of bo's item alone, as a node that did not answer:
-- TC/C cancels it; Saga repeats its step until the deadline (pending meanwhile), then
-- compensates it (its debit never took effect); the others are confirmed.
ALTER TABLE wallet.accounts ADD CONSTRAINT bo_frozen_by_dba CHECK (id <> :bo OR balance < 0) NOT VALID;
CALL wallet.transfer_across_batch(ARRAY['bc-1', 'bc-2', 'bc-3'], ARRAY['local', 'local', 'local'],
                                  ARRAY[:ada, :bo, :ada]::bigint[], ARRAY['b2', 'b2', 'b2'],
                                  ARRAY[3, 3, 3]::bigint[], ARRAY[9, 9, 11]::bigint[]);
CALL wallet.transfer_across_batch(ARRAY['bc-4', 'bc-5', 'bc-6'], ARRAY['local', 'local', 'b2'],
                                  ARRAY[:ada, :bo, 3]::bigint[], ARRAY['b2', 'b2', 'local'],
                                  ARRAY[3, 3, :ada]::bigint[], ARRAY[12, 13, 14]::bigint[], protocol => 'saga',
                                  timeout => interval '2 seconds');
SELECT pg_sleep(1.2);  -- past bc-5's deadline (half its timeout)
CALL wallet.recover();
ALTER TABLE wallet.accounts DROP CONSTRAINT bo_frozen_by_dba;
SELECT gtid, protocol, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid LIKE 'bc-%' ORDER BY gtid;
SELECT wallet.balance(:ada) AS ada, wallet.balance(:bo) AS bo;

-- The participant side with many items, as a batch calls it on a node: one command for all of
-- them. The tries are judged in input order against what the earlier ones reserved (pi has
-- 100: 60 and 30 fit, 20 then does not, 10 still does); a NULL account is the system account;
-- each account row is written once. A (gtid, branch) twice in one call goes item by item: the
-- second answers as a repeat of the first, one hold.
SELECT wallet.open_account('NOK', 'pi') AS pi \gset
SELECT wallet.deposit(:pi, 100) > 0 AS funded;
BEGIN;
SELECT n_tup_upd AS writes_before FROM pg_stat_xact_user_tables WHERE relid = 'wallet.accounts'::regclass \gset
SELECT item, sqlstate, message, value FROM wallet.tcc_try(
    ARRAY['pt-1', 'pt-2', 'pt-3', 'pt-4', 'pt-5'], ARRAY['b', 'b', 'b', 'b', 'b'],
    ARRAY[:pi, :pi, :pi, :pi, NULL]::bigint[], ARRAY[NULL, NULL, NULL, NULL, :pi]::bigint[],
    ARRAY[60, 30, 20, 10, 5]::bigint[], interval '1 hour');
-- Two account rows changed (pi and the system account), each written once for its four holds.
SELECT n_tup_upd - :writes_before AS account_row_writes
  FROM pg_stat_xact_user_tables WHERE relid = 'wallet.accounts'::regclass;
COMMIT;
SELECT balance, pending_debit, pending_credit, last_seq = (SELECT max(seq) FROM wallet.events) AS newest
  FROM wallet.accounts WHERE id = :pi;
SELECT item, sqlstate, value FROM wallet.tcc_try(ARRAY['pt-7', 'pt-7'], ARRAY['b', 'b'],
    ARRAY[NULL, NULL]::bigint[], ARRAY[:pi, :pi]::bigint[], ARRAY[7, 7]::bigint[], interval '1 hour');
SELECT count(*) AS holds_of_pt_7 FROM wallet.holds WHERE gtid = 'pt-7';
-- The holds of a call with many tries are written by one statement after their events: each
-- hold_placed event names its hold and the hold's expiry; all were created at one reading of
-- the clock, an hour before they expire.
SELECT count(*) AS placed,
       count(*) FILTER (WHERE (e.data->>'expires_at')::timestamptz = h.expires_at) AS same_expiry,
       count(DISTINCT h.created_at) AS created_at_readings,
       bool_and(h.expires_at = h.created_at + interval '1 hour') AS an_hour_later
  FROM wallet.holds AS h
  JOIN wallet.events AS e ON e.event_type = 'hold_placed' AND (e.data->>'hold_id')::bigint = h.hold_id
 WHERE h.gtid IN ('pt-1', 'pt-2', 'pt-4', 'pt-5');
-- Every row must be written: when something added to wallet.holds skips one (here a trigger; a
-- racing call that took the key does the same), the whole call fails, 40001 naming that try's
-- accounts and amount, and nothing of it stays; a confirm whose hold update is skipped fails as
-- a whole too.
CREATE FUNCTION pg_temp.skip_some() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'INSERT' AND NEW.gtid = 'pt-s2') OR (TG_OP = 'UPDATE' AND NEW.gtid = 'pt-s3') THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END$$;
CREATE TRIGGER skip_some BEFORE INSERT OR UPDATE ON wallet.holds
    FOR EACH ROW EXECUTE FUNCTION pg_temp.skip_some();
SELECT last_seq AS pi_seq FROM wallet.accounts WHERE id = :pi \gset
SELECT * FROM wallet.tcc_try(ARRAY['pt-s1', 'pt-s2'], ARRAY['b', 'b'], ARRAY[NULL, NULL]::bigint[],
    ARRAY[:pi, :pi]::bigint[], ARRAY[1, 2]::bigint[], interval '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS holds_of_pt_s FROM wallet.holds WHERE gtid LIKE 'pt-s%';
SELECT last_seq = :pi_seq AS pi_untouched FROM wallet.accounts WHERE id = :pi;
SELECT item, sqlstate FROM wallet.tcc_try(ARRAY['pt-s1', 'pt-s3'], ARRAY['b', 'b'],
    ARRAY[NULL, NULL]::bigint[], ARRAY[:pi, :pi]::bigint[], ARRAY[1, 2]::bigint[], interval '1 hour');
SELECT last_seq AS pi_seq FROM wallet.accounts WHERE id = :pi \gset
SELECT * FROM wallet.tcc_confirm(ARRAY['pt-s1', 'pt-s3'], ARRAY['b', 'b']);
\echo :LAST_ERROR_SQLSTATE
SELECT gtid, status FROM wallet.holds WHERE gtid LIKE 'pt-s%' ORDER BY gtid;
SELECT last_seq = :pi_seq AS pi_untouched FROM wallet.accounts WHERE id = :pi;
DROP TRIGGER skip_some ON wallet.holds;
SELECT item, sqlstate FROM wallet.tcc_cancel(ARRAY['pt-s1', 'pt-s3'], ARRAY['b', 'b']);
-- At REPEATABLE READ, an account that another session changed after the call's snapshot: the
-- whole call is a 40001 naming the first try on that account and its amount, and writes nothing.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) > 0 AS snapshot_taken FROM wallet.accounts;
SELECT t.ok AS changed_elsewhere
  FROM dblink(:'server' || ' dbname=' || current_database(),
              'SELECT wallet.deposit(' || :pi || ', 1) > 0') AS t (ok boolean);
SELECT * FROM wallet.tcc_try(ARRAY['pt-r1', 'pt-r2'], ARRAY['b', 'b'], ARRAY[NULL, NULL]::bigint[],
    ARRAY[:pi, :pi]::bigint[], ARRAY[3, 4]::bigint[], interval '1 hour');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT count(*) AS holds_of_pt_r FROM wallet.holds WHERE gtid LIKE 'pt-r%';
SELECT wallet.withdraw(:pi, 1) > 0 AS deposit_taken_back;
-- Confirms: each posts what its hold reserved; one never placed (pt-3) and one unknown answer
-- 'hold_not_found' alone. Cancels: pending holds released, a confirmed one refused, one whose
-- try never came recorded (it bars that try).
SELECT item, sqlstate, message, value IS NOT NULL AS posted FROM wallet.tcc_confirm(
    ARRAY['pt-1', 'pt-3', 'pt-4', 'pt-x', 'pt-7'], ARRAY['b', 'b', 'b', 'b', 'b']);
SELECT item, sqlstate, message, value IS NOT NULL AS answered FROM wallet.tcc_cancel(
    ARRAY['pt-2', 'pt-5', 'pt-1', 'pt-new'], ARRAY['b', 'b', 'b', 'b']);
SELECT item, sqlstate FROM wallet.tcc_try(ARRAY['pt-new', 'pt-8'], ARRAY['b', 'b'],
    ARRAY[:pi, :pi]::bigint[], ARRAY[NULL, NULL]::bigint[], ARRAY[1, 1]::bigint[], interval '1 hour');
SELECT item, sqlstate FROM wallet.tcc_cancel(ARRAY['pt-8', 'pt-9'], ARRAY['b', 'b']);
-- pi: 100 - 60 - 10 + 7 posted, nothing pending; its events chained, the replay equal. What pi
-- holds goes back to the system account, for the count of the customers' money below.
SELECT balance, pending_debit, pending_credit FROM wallet.accounts WHERE id = :pi;
SELECT count(*) AS verify_differences FROM wallet.verify();
SELECT wallet.withdraw(:pi, 37) > 0 AS withdrawn;

-- Both nodes: books balanced, replay = state, no pending hold; money conserved across them.
SELECT * FROM pg_temp.money(:'b2');
SELECT count(*) AS unfinished FROM wallet.global_transactions WHERE finished_at IS NULL;
SELECT (SELECT count(*) FROM wallet.verify()) AS here, t.n AS b2
  FROM dblink(:'b2', 'SELECT count(*) FROM wallet.verify()') AS t (n bigint);
SELECT (SELECT count(*) FROM wallet.holds WHERE status = 'pending') AS pending_here, t.n AS pending_b2
  FROM dblink(:'b2', $$SELECT count(*) FROM wallet.holds WHERE status = 'pending'$$) AS t (n bigint);
SELECT (SELECT bool_and(total_balance = 0) FROM wallet.trial_balance()) AS balanced_here, t.ok AS balanced_b2
  FROM dblink(:'b2', 'SELECT bool_and(total_balance = 0) FROM wallet.trial_balance()') AS t (ok boolean);
SELECT wallet.remove_node('b2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE wallet_regress_b2 WITH (FORCE)');
