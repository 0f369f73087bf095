-- Cross-database transfers: the coordinator (wallet.transfer_across, a procedure that commits
-- each step), the phase-status ledger (wallet.global_transactions, wallet.branches), nodes
-- reached with dblink, and recovery (CALL wallet.recover()).
\set VERBOSITY terse
CREATE EXTENSION dblink;
SELECT 'host=' || split_part(current_setting('unix_socket_directories'), ',', 1)
       || ' port=' || current_setting('port') || ' user=' || current_user AS server \gset
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE IF EXISTS wallet_regress_n2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'CREATE DATABASE wallet_regress_n2');
SELECT :'server' || ' dbname=wallet_regress_n2' AS n2 \gset
SELECT dblink_exec(:'n2', 'CREATE EXTENSION wallet_ext');
-- Node n2: an AUD account (xena) and a JPY one; here: AUD accounts yuri (with money) and zoe.
SELECT t.id AS xena FROM dblink(:'n2', $$SELECT wallet.create_currency('AUD'), wallet.open_account('AUD', 'xena')$$)
    AS t (system bigint, id bigint) \gset
SELECT t.id AS yen FROM dblink(:'n2', $$SELECT wallet.create_currency('JPY', 0), wallet.open_account('JPY')$$)
    AS t (system bigint, id bigint) \gset
SELECT wallet.create_currency('AUD') AS aud_system \gset
SELECT wallet.open_account('AUD', 'yuri') AS yuri \gset
SELECT wallet.open_account('AUD', 'zoe') AS zoe \gset
SELECT wallet.deposit(:yuri, 10000) > 0 AS posted;
SELECT wallet.register_node('n2', :'n2');

-- A transfer from yuri (here) to xena (on n2): both branches tried, confirm decided, confirmed.
CALL wallet.transfer_across('pay-1', 'local', :yuri, 'n2', :xena, 2500);
SELECT * FROM wallet.account_balances(:yuri);
SELECT * FROM dblink(:'n2', format('SELECT * FROM wallet.account_balances(%s)', :xena))
    AS t (posted bigint, pending_out bigint, pending_in bigint, available numeric);
-- Each node stays balanced on its own: its system account carries its net position.
SELECT balance AS local_system FROM wallet.accounts WHERE id = :aud_system;
SELECT * FROM dblink(:'n2', $$SELECT total_balance FROM wallet.trial_balance() WHERE currency = 'AUD'$$)
    AS t (n2_total numeric);
-- The ledger: decision and outcome, and one branch per node.
SELECT gtid, phase, outcome, currency, amount, decided_at IS NOT NULL AS decided,
       finished_at IS NOT NULL AS finished
  FROM wallet.global_transactions WHERE gtid = 'pay-1';
SELECT branch_no, branch, node, debit_account_id = :yuri AS from_yuri, credit_account_id = :xena AS to_xena, status
  FROM wallet.branches WHERE gtid = 'pay-1' ORDER BY branch_no;
-- A repeat of the same call answers the same outcome and moves nothing; other parameters under
-- the same global transaction id are refused.
CALL wallet.transfer_across('pay-1', 'local', :yuri, 'n2', :xena, 2500);
SELECT balance FROM wallet.accounts WHERE id = :yuri;
CALL wallet.transfer_across('pay-1', 'local', :yuri, 'n2', :xena, 2600);
\echo :LAST_ERROR_SQLSTATE

-- The other way: n2 pays, this database receives. And both branches here: one hold, account to account.
CALL wallet.transfer_across('pay-2', 'n2', :xena, 'local', :zoe, 500);
CALL wallet.transfer_across('pay-3', 'local', :yuri, 'local', :zoe, 100);
SELECT count(*) AS branches FROM wallet.branches WHERE gtid = 'pay-3';
SELECT wallet.balance(:zoe) AS zoe;

-- A refused try cancels the whole transfer with the participant's SQLSTATE and message; the
-- other branch's cancel is recorded there even though its try never ran (null compensation).
CALL wallet.transfer_across('pay-4', 'local', :yuri, 'n2', :xena, 999999);
\echo :LAST_ERROR_SQLSTATE
SELECT phase, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid = 'pay-4';
SELECT branch, status FROM wallet.branches WHERE gtid = 'pay-4' ORDER BY branch_no;
SELECT * FROM dblink(:'n2', $$SELECT status, reserved FROM wallet.get_hold('pay-4', 'credit')$$)
    AS t (status text, reserved bigint);
-- A currency mismatch across nodes is refused by the receiving node.
CALL wallet.transfer_across('pay-5', 'local', :yuri, 'n2', :yen, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.account_balances(:yuri);

-- Unknown node; bad arguments; inside a transaction block (the procedure must commit).
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'nowhere', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 0);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('', 'local', :yuri, 'n2', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
BEGIN;
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 10);
ROLLBACK;
SELECT count(*) AS recorded FROM wallet.global_transactions WHERE gtid = 'pay-6';
SELECT wallet.register_node('local', 'dbname=x');
\echo :LAST_ERROR_SQLSTATE

-- An unreachable node: the try fails, the transfer is cancelled (WA025), and the cancel that
-- could not be delivered stays pending until recovery reaches the node.
SELECT wallet.register_node('n3', 'host=/nonexistent port=1 dbname=nothing connect_timeout=1');
CALL wallet.transfer_across('pay-7', 'local', :yuri, 'n3', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT phase, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid = 'pay-7';
SELECT branch, node, status, last_sqlstate FROM wallet.branches WHERE gtid = 'pay-7' ORDER BY branch_no;
SELECT * FROM wallet.account_balances(:yuri);
CALL wallet.recover();
-- The node comes back (here: re-pointed to n2); recovery finishes the cancel there.
SELECT wallet.register_node('n3', :'n2');
CALL wallet.recover();
SELECT phase, outcome FROM wallet.global_transactions WHERE gtid = 'pay-7';
SELECT * FROM dblink(:'n2', $$SELECT status, reserved FROM wallet.get_hold('pay-7', 'credit')$$)
    AS t (status text, reserved bigint);

-- Recovery after a coordinator crash, simulated by stopping between steps.
-- (a) Stopped while trying (the paying branch reserved, no decision): recovery cancels.
SELECT wallet._gtx_begin('crash-1', 'local', :yuri, 'n2', :xena, 70, interval '1 hour');
SELECT wallet._gtx_step('crash-1', recovering => false) AS step;
SELECT * FROM wallet.account_balances(:yuri);
-- (b) Stopped right after the decision to confirm (recorded with the last try's answer):
-- recovery confirms.
SELECT wallet._gtx_begin('crash-2', 'local', :yuri, 'n2', :xena, 80, interval '1 hour');
SELECT wallet._gtx_step('crash-2', recovering => false) AS step
  FROM generate_series(1, 2);
SELECT phase FROM wallet.global_transactions WHERE gtid = 'crash-2';
CALL wallet.recover();
SELECT gtid, phase, outcome FROM wallet.global_transactions WHERE gtid LIKE 'crash-%' ORDER BY gtid;
SELECT * FROM wallet.account_balances(:yuri);
SELECT * FROM dblink(:'n2', format('SELECT * FROM wallet.account_balances(%s)', :xena))
    AS t (posted bigint, pending_out bigint, pending_in bigint, available numeric);

-- An application role with wallet_operator coordinates too; registering nodes is the owner's.
CREATE ROLE tcc_app;
GRANT wallet_operator TO tcc_app;
SET ROLE tcc_app;
CALL wallet.transfer_across('pay-8', 'local', :yuri, 'n2', :xena, 5);
CALL wallet.recover();
SELECT wallet.register_node('n4', 'dbname=x');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE tcc_app;

-- Afterwards, on both nodes: no pending hold, books balanced, replay = state; and money is
-- conserved across the nodes (what left here arrived there).
SELECT count(*) AS pending_here FROM wallet.holds WHERE status = 'pending' AND currency = 'AUD';
SELECT * FROM dblink(:'n2', $$SELECT count(*) FROM wallet.holds WHERE status = 'pending'$$) AS t (pending_n2 bigint);
SELECT count(*) AS differences_here FROM wallet.verify();
SELECT * FROM dblink(:'n2', $$SELECT count(*) FROM wallet.verify()$$) AS t (differences_n2 bigint);
SELECT (SELECT balance FROM wallet.accounts WHERE id = :aud_system)
     + t.n2_system AS systems_net
  FROM dblink(:'n2', $$SELECT a.balance FROM wallet.accounts a JOIN wallet.currencies c
                          ON c.system_account_id = a.id WHERE c.code = 'AUD'$$) AS t (n2_system bigint);
SELECT (SELECT sum(balance) FROM wallet.accounts WHERE NOT is_system AND currency = 'AUD') + t.n2_users
       AS users_total_is_the_deposit
  FROM dblink(:'n2', $$SELECT sum(balance) FROM wallet.accounts WHERE NOT is_system AND currency = 'AUD'$$)
    AS t (n2_users bigint);
SELECT dblink_disconnect(c) FROM unnest(dblink_get_connections()) AS c ORDER BY 1;
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE wallet_regress_n2 WITH (FORCE)');
