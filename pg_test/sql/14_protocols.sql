-- Two-phase commit and Saga beside TC/C, on one engine, one ledger and one recovery; and global
-- transactions of more than two legs. Three databases: this one and n2, n3 on the same server.
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT 'host=' || split_part(current_setting('unix_socket_directories'), ',', 1)
       || ' port=' || current_setting('port') || ' user=' || current_user AS server \gset
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE IF EXISTS wallet_regress_p2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE IF EXISTS wallet_regress_p3');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'CREATE DATABASE wallet_regress_p2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'CREATE DATABASE wallet_regress_p3');
SELECT :'server' || ' dbname=wallet_regress_p2' AS p2, :'server' || ' dbname=wallet_regress_p3' AS p3 \gset
SELECT dblink_exec(:'p2', 'CREATE EXTENSION wallet_ext'), dblink_exec(:'p3', 'CREATE EXTENSION wallet_ext');
-- The same accounts on each node: a currency (its system account is 1), a customer (2) with
-- 10,000 and a merchant (3); here a fee account too.
SELECT wallet.create_currency('CHF') AS chf_system \gset
SELECT wallet.open_account('CHF', 'customer') AS customer \gset
SELECT wallet.open_account('CHF', 'merchant') AS merchant \gset
SELECT wallet.open_account('CHF', 'fees') AS fees \gset
SELECT wallet.deposit(:customer, 10000) > 0 AS posted;
SELECT t.* FROM dblink(:'p2', $$SELECT wallet.create_currency('CHF'), wallet.open_account('CHF', 'customer'),
                                       wallet.open_account('CHF', 'merchant'), wallet.deposit(2, 10000)$$)
    AS t (system bigint, customer bigint, merchant bigint, deposit bigint);
SELECT t.* FROM dblink(:'p3', $$SELECT wallet.create_currency('CHF'), wallet.open_account('CHF', 'customer'),
                                       wallet.open_account('CHF', 'merchant'), wallet.deposit(2, 10000)$$)
    AS t (system bigint, customer bigint, merchant bigint, deposit bigint);
SELECT wallet.register_node('p2', :'p2'), wallet.register_node('p3', :'p3');
-- The money on the three nodes, summed (it only moves between nodes).
CREATE FUNCTION pg_temp.money(p2 text, p3 text) RETURNS TABLE (here bigint, p2 bigint, p3 bigint, total bigint) LANGUAGE sql AS $$
    SELECT h, a.s, b.s, h + a.s + b.s
      FROM (SELECT sum(balance)::bigint AS h FROM wallet.accounts WHERE NOT is_system) AS x,
           dblink($1, 'SELECT sum(balance)::bigint FROM wallet.accounts WHERE NOT is_system') AS a (s bigint),
           dblink($2, 'SELECT sum(balance)::bigint FROM wallet.accounts WHERE NOT is_system') AS b (s bigint)
$$;
CREATE FUNCTION pg_temp.prepared() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'wallet:%'
$$;
SELECT * FROM pg_temp.money(:'p2', :'p3');

-- ---- 2PC: each node's part runs in a transaction that is prepared; the decision to commit is
-- recorded here before any COMMIT PREPARED. This node's own branch is posted in the very
-- transaction that records the decision (it needs no prepared transaction).
CALL wallet.transfer_across('2pc-1', 'local', :customer, 'p2', 3, 100, protocol => '2pc');
CALL wallet.transfer_across('2pc-2', 'p2', 2, 'p3', 3, 200, protocol => '2pc');
SELECT gtid, protocol, phase, outcome, (SELECT string_agg(node || ':' || status || ':' || (gid IS NOT NULL), ',' ORDER BY branch_no)
                                          FROM wallet.branches b WHERE b.gtid = g.gtid) AS branches
  FROM wallet.global_transactions g WHERE gtid LIKE '2pc-%' ORDER BY gtid;
SELECT * FROM pg_temp.money(:'p2', :'p3');
SELECT pg_temp.prepared() AS prepared_left;
-- Refused by a node (insufficient funds there): nothing committed anywhere, nothing left prepared.
CALL wallet.transfer_across('2pc-3', 'p2', 2, 'local', :merchant, 999999, protocol => '2pc');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.prepared() AS prepared_left;
-- The coordinator stops after the first node prepared (2PC prepares one node after the other,
-- in the order of their names), before deciding: the prepared transaction holds its locks until
-- recovery rolls it back (presumed abort).
SET wallet.fault = 'after_remote_try';
CALL wallet.transfer_across('2pc-4', 'p2', 2, 'p3', 3, 50, protocol => '2pc');
RESET wallet.fault;
SELECT pg_temp.prepared() AS prepared_while_undecided;
-- ... a transfer on the same account waits on the prepared transaction's row locks (at most a
-- lock_timeout here, instead of for good):
SELECT * FROM dblink(:'p2', $$SET lock_timeout = '200ms'; SELECT wallet.transfer(2, 3, 1)$$) AS t (id bigint);
CALL wallet.recover();
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid = '2pc-4';
SELECT pg_temp.prepared() AS prepared_left;
-- Stopped right after the decision to commit: recovery commits what is prepared.
SET wallet.fault = 'after_decide';
CALL wallet.transfer_across('2pc-5', 'p2', 2, 'p3', 3, 60, protocol => '2pc');
RESET wallet.fault;
SELECT pg_temp.prepared() AS prepared_while_decided;
CALL wallet.recover();
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid = '2pc-5';
SELECT pg_temp.prepared() AS prepared_left;
-- A prepared transaction of this coordinator that no unfinished global transaction holds (a
-- PREPARE that arrived after its branch was rolled back) is rolled back by recovery's sweep.
SELECT dblink_exec(:'p2', format($$BEGIN; PREPARE TRANSACTION 'wallet:%s:00000000000000000000000000000000:1'$$,
                                  (SELECT id FROM wallet.coordinator_identity)));
SELECT pg_temp.prepared() AS orphan;
CALL wallet.recover();
SELECT pg_temp.prepared() AS prepared_left;
SELECT * FROM pg_temp.money(:'p2', :'p3');

-- ---- Saga: each branch is posted and committed on its own node, the paying nodes first; a
-- failure runs the compensations of the done branches, last first, each a transfer of its own.
CALL wallet.transfer_across('saga-1', 'local', :customer, 'p2', 3, 300, protocol => 'saga');
SELECT branch_no, node, status FROM wallet.branches WHERE gtid = 'saga-1' ORDER BY branch_no;
-- A refused credit (the merchant's account on p3 is closed): the debit already committed here
-- is compensated by a reverse transfer, so the saga has no net effect.
SELECT t.* FROM dblink(:'p3', $$SELECT wallet.open_account('CHF', 'closed'), wallet.close_account(4)$$) AS t (id bigint, closed boolean);
CALL wallet.transfer_across('saga-2', 'local', :customer, 'p3', 4, 400, protocol => 'saga');
\echo :LAST_ERROR_SQLSTATE
SELECT branch_no, node, status, last_sqlstate FROM wallet.branches WHERE gtid = 'saga-2' ORDER BY branch_no;
SELECT event_type, amount, idempotency_key LIKE 'gtx:%:1.1:undo' AS is_the_compensation
  FROM wallet.statement(:customer) WHERE idempotency_key LIKE 'gtx:%' ORDER BY seq DESC LIMIT 2;
SELECT * FROM pg_temp.money(:'p2', :'p3');
-- A compensation that cannot run (the payer frozen meanwhile) does not vanish: the saga is
-- stuck, visible to an operator, until the cause is settled and it is resumed.
SET wallet.fault = 'after_remote_try';
CALL wallet.transfer_across('saga-3', 'local', :customer, 'p3', 4, 500, protocol => 'saga');
RESET wallet.fault;
SELECT wallet.freeze_account(:customer);
CALL wallet.recover();
SELECT gtid, phase, outcome, error_sqlstate, finished_at IS NULL AS unfinished
  FROM wallet.global_transactions WHERE gtid = 'saga-3';
SELECT branch_no, status, last_sqlstate FROM wallet.branches WHERE gtid = 'saga-3' ORDER BY branch_no;
CALL wallet.recover();
SELECT outcome FROM wallet.global_transactions WHERE gtid = 'saga-3';
SELECT wallet.unfreeze_account(:customer);
SELECT wallet.resume_global_transaction('saga-3');
CALL wallet.recover();
SELECT gtid, phase, outcome FROM wallet.global_transactions WHERE gtid = 'saga-3';
SELECT * FROM pg_temp.money(:'p2', :'p3');
-- Stopped after the first step committed: recovery goes on forwards (a saga holds nothing).
SET wallet.fault = 'after_record';
CALL wallet.transfer_across('saga-4', 'local', :customer, 'p2', 3, 25, protocol => 'saga');
RESET wallet.fault;
CALL wallet.recover();
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid = 'saga-4';
-- A step whose answer was lost is repeated: its postings are keyed, so it takes effect once.
SET wallet.fault = 'lose_answers:try';
CALL wallet.transfer_across('saga-5', 'local', :customer, 'p2', 3, 35, protocol => 'saga');
RESET wallet.fault;
CALL wallet.recover();
SELECT gtid, outcome FROM wallet.global_transactions WHERE gtid = 'saga-5';
SELECT * FROM dblink(:'p2', $$SELECT count(*) FROM wallet.events WHERE idempotency_key LIKE 'gtx:%' AND amount = 35$$) AS t (postings bigint);
-- A compensation that arrives before its step bars it: the step, arriving late, is refused.
SELECT sqlstate IS NULL AS barred, value FROM wallet.undo_branch(ARRAY['gtx:late:1'], ARRAY['gtx:late:1:undo']);
SELECT sqlstate FROM wallet.post_branch(ARRAY['gtx:late:1'], ARRAY[:customer]::bigint[], ARRAY[NULL]::bigint[], ARRAY[5]::bigint[], ARRAY[false]);
SELECT * FROM pg_temp.money(:'p2', :'p3');

-- ---- More than two legs: a customer here pays a merchant on p2 and a fee on p3, by each
-- protocol. Every node's books stay balanced; the money only moves.
CALL wallet.transfer_global('fee-tcc', ARRAY['local', 'p2', 'p3'], ARRAY[:customer, 3, 3]::bigint[], ARRAY[-100, 97, 3]::bigint[]);
CALL wallet.transfer_global('fee-2pc', ARRAY['local', 'p2', 'p3'], ARRAY[:customer, 3, 3]::bigint[], ARRAY[-100, 97, 3]::bigint[], '2pc');
CALL wallet.transfer_global('fee-saga', ARRAY['local', 'p2', 'p3'], ARRAY[:customer, 3, 3]::bigint[], ARRAY[-100, 97, 3]::bigint[], 'saga');
-- Within one node, two legs are one posting between the accounts.
CALL wallet.transfer_global('fee-local', ARRAY['local', 'local', 'p3'], ARRAY[:customer, :fees, 3]::bigint[], ARRAY[-50, 10, 40]::bigint[]);
SELECT gtid, protocol, outcome, (SELECT count(*) FROM wallet.branches b WHERE b.gtid = g.gtid) AS branches
  FROM wallet.global_transactions g WHERE gtid LIKE 'fee-%' ORDER BY gtid;
SELECT branch_no, node, debit_account_ids, credit_account_ids, amounts FROM wallet.branches WHERE gtid = 'fee-local' ORDER BY branch_no;
SELECT wallet.balance(:fees) AS fees_here;
-- Every leg here, by any protocol: one local transaction; more than one posting is posted as 2PC
-- and a saga post a branch, one linked chain of keyed transfers (all or nothing).
CALL wallet.transfer_global('fee-here', ARRAY['local', 'local', 'local'], ARRAY[:customer, :fees, :merchant]::bigint[], ARRAY[-30, 5, 25]::bigint[], 'saga');
SELECT protocol, phase, outcome, (SELECT count(*) FROM wallet.branches b WHERE b.gtid = g.gtid) AS branches
  FROM wallet.global_transactions g WHERE gtid = 'fee-here';
SELECT debit_account_id = :customer AS from_customer, credit_account_id = :fees AS to_fees, amount, right(idempotency_key, 5) AS key_end
  FROM wallet.events WHERE idempotency_key LIKE 'gtx:%' AND seq > (SELECT max(seq) - 2 FROM wallet.events) ORDER BY seq;
CALL wallet.transfer_global('fee-here-2', ARRAY['local', 'local', 'local'], ARRAY[:customer, :fees, :merchant]::bigint[], ARRAY[-999999999, 5, 999999994]::bigint[], '2pc');
\echo :LAST_ERROR_SQLSTATE
SELECT outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid = 'fee-here-2';
SELECT wallet.balance(:fees) AS fees_here_after;
-- Legs that do not sum to zero, an account twice, too many legs: refused before anything is recorded.
CALL wallet.transfer_global('bad-1', ARRAY['local', 'p2'], ARRAY[:customer, 3]::bigint[], ARRAY[-100, 99]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_global('bad-2', ARRAY['local', 'local'], ARRAY[:customer, :customer]::bigint[], ARRAY[-1, 1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT array_fill('p2'::text, ARRAY[17]) AS nodes17, ARRAY(SELECT g FROM generate_series(1, 17) g)::text AS accounts17 \gset
CALL wallet.transfer_global('bad-3', :'nodes17', :'accounts17', array_fill(1::bigint, ARRAY[17]));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS recorded FROM wallet.global_transactions WHERE gtid LIKE 'bad-%';

-- A node that posts in another currency than this one: each protocol cancels (WA005), and
-- nothing stays posted anywhere; 2PC included, whose own branch here is posted in the same
-- transaction that would have recorded the decision (rolled back with it).
SELECT t.id AS dollars FROM dblink(:'p2', $$SELECT wallet.create_currency('USD'), wallet.open_account('USD', 'dollars')$$)
    AS t (system bigint, id bigint) \gset
SELECT * FROM dblink(:'p2', format('SELECT wallet.deposit(%s, 1000) > 0', :dollars)) AS t (deposited boolean);
SELECT wallet.balance(:merchant) AS merchant_before \gset
CALL wallet.transfer_across('mixed-2pc', 'p2', :dollars, 'local', :merchant, 10, protocol => '2pc');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('mixed-tcc', 'p2', :dollars, 'local', :merchant, 10);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('mixed-saga', 'p2', :dollars, 'local', :merchant, 10, protocol => 'saga');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.recover();
SELECT gtid, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid LIKE 'mixed-%' ORDER BY gtid;
SELECT wallet.balance(:merchant) - :merchant_before AS merchant_moved,
       t.balance - 1000 AS dollars_moved, pg_temp.prepared() AS prepared_left
  FROM dblink(:'p2', format('SELECT balance FROM wallet.accounts WHERE id = %s', :dollars)) AS t (balance bigint);

-- Recovery does not stop at a global transaction it cannot finish now: a call on this node
-- whose account row another session holds waits at most wallet.node_timeout, then counts as a
-- call that was not answered (the global transaction's cancel is decided, its hold stays until
-- the call goes through), and recovery goes on with the others; a later round finishes it. (An
-- ERROR of recovery's own step is a WARNING naming the global transaction.) Both stop before
-- deciding, so recovery cancels them, releasing their holds on this node.
SET wallet.fault = 'after_remote_try';
CALL wallet.transfer_across('blocked-1', 'local', :customer, 'p2', 3, 5);
CALL wallet.transfer_across('blocked-2', 'local', :fees, 'p2', 3, 5);
RESET wallet.fault;
SELECT dblink_connect('blocker', :'server' || ' dbname=' || current_database());
SELECT dblink_exec('blocker', 'BEGIN');
SELECT * FROM dblink('blocker', format('SELECT id FROM wallet.accounts WHERE id = %s FOR UPDATE', :customer)) AS t (id bigint);
SET wallet.node_timeout = '300ms';
CALL wallet.recover();
SELECT gtid, phase, outcome FROM wallet.global_transactions WHERE gtid LIKE 'blocked-%' ORDER BY gtid;
SELECT dblink_exec('blocker', 'ROLLBACK'), dblink_disconnect('blocker');
CALL wallet.recover();
RESET wallet.node_timeout;
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid LIKE 'blocked-%' ORDER BY gtid;

-- A repeat whose recording step meets a Postgres ERROR (here its wait for the ledger row, which
-- another session holds, times out: 55P03) releases its claim on the gtid: recovery in any other
-- session can then finish the global transaction (a claim left behind would keep it from
-- recovery until this session ends).
SET wallet.fault = 'after_record';
CALL wallet.transfer_across('claimed-1', 'local', :customer, 'p2', 3, 4);
RESET wallet.fault;
SELECT dblink_connect('blocker', :'server' || ' dbname=' || current_database());
SELECT dblink_exec('blocker', 'BEGIN');
SELECT * FROM dblink('blocker', $$SELECT gtid FROM wallet.global_transactions WHERE gtid = 'claimed-1' FOR UPDATE$$) AS t (gtid text);
SET wallet.node_timeout = '300ms';
CALL wallet.transfer_across('claimed-1', 'local', :customer, 'p2', 3, 4);
\echo :LAST_ERROR_SQLSTATE
RESET wallet.node_timeout;
SELECT dblink_exec('blocker', 'ROLLBACK');
SELECT * FROM dblink('blocker', 'CALL wallet.recover()') AS t (finished int, unfinished int);
SELECT dblink_disconnect('blocker');
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid = 'claimed-1';

-- On every node: books balanced, replay = state, no pending hold, nothing prepared; the money
-- conserved over the nodes.
SELECT * FROM pg_temp.money(:'p2', :'p3');
SELECT pg_temp.prepared() AS prepared_left;
SELECT count(*) AS unfinished FROM wallet.global_transactions WHERE finished_at IS NULL;
SELECT (SELECT count(*) FROM wallet.verify()) AS here,
       t2.n AS p2, t3.n AS p3
  FROM dblink(:'p2', 'SELECT count(*) FROM wallet.verify()') AS t2 (n bigint),
       dblink(:'p3', 'SELECT count(*) FROM wallet.verify()') AS t3 (n bigint);
SELECT (SELECT bool_and(total_balance = 0) FROM wallet.trial_balance()) AS here,
       t2.ok AS p2, t3.ok AS p3
  FROM dblink(:'p2', 'SELECT bool_and(total_balance = 0) FROM wallet.trial_balance()') AS t2 (ok boolean),
       dblink(:'p3', 'SELECT bool_and(total_balance = 0) FROM wallet.trial_balance()') AS t3 (ok boolean);
SELECT (SELECT count(*) FROM wallet.holds WHERE status = 'pending') AS pending_here;
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE wallet_regress_p2 WITH (FORCE)');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE wallet_regress_p3 WITH (FORCE)');
