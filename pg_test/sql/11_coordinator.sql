-- Transfers between databases by TC/C (the default protocol): nodes (foreign servers with the
-- owner's user mapping), the coordinator (wallet.transfer_across, a procedure that commits each
-- step), the phase-status ledger (wallet.global_transactions, wallet.branches) and recovery
-- (CALL wallet.recover()). 14_protocols covers 2PC and Saga.
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

-- Registering a node: its address goes to a foreign server of the wallet's own wrapper, the
-- credentials (user, password) to the user mapping of the extension's owner. Nothing secret is in
-- the wallet's tables.
SELECT wallet.register_node('n2', :'n2' || ' password=not-a-real-secret');
SELECT name, server FROM wallet.nodes;
SELECT srvname, array_to_string(srvoptions, ' ') LIKE '%password%' AS password_on_server
  FROM pg_foreign_server WHERE srvname = 'wallet_node_n2';
SELECT count(*) AS mappings_with_password
  FROM pg_user_mappings WHERE srvname = 'wallet_node_n2' AND array_to_string(umoptions, ' ') LIKE '%password=not-a-real-secret%';
-- Re-pointing keeps one server and one mapping (the secret replaced, not added).
SELECT wallet.register_node('n2', :'n2');
SELECT count(*) AS mappings, bool_and(array_to_string(umoptions, ' ') NOT LIKE '%password%') AS no_password
  FROM pg_user_mappings WHERE srvname = 'wallet_node_n2';
-- The validator refuses a credential on the server and an address in the mapping.
CREATE SERVER wallet_node_bad FOREIGN DATA WRAPPER wallet_nodes OPTIONS (password 'x');
\echo :LAST_ERROR_SQLSTATE
CREATE SERVER wallet_node_bad FOREIGN DATA WRAPPER wallet_nodes OPTIONS (nosuchkeyword 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.register_node('bad', 'host= = =');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.register_node('local', 'dbname=x');
\echo :LAST_ERROR_SQLSTATE

-- A transfer from yuri (here) to xena (on n2): both branches tried at once, confirm decided and
-- committed, then both confirmed.
CALL wallet.transfer_across('pay-1', 'local', :yuri, 'n2', :xena, 2500);
SELECT * FROM wallet.account_balances(:yuri);
SELECT * FROM dblink(:'n2', format('SELECT * FROM wallet.account_balances(%s)', :xena))
    AS t (posted bigint, pending_out bigint, pending_in bigint, available numeric);
-- Each node stays balanced on its own: its system account carries its net position.
SELECT balance AS local_system FROM wallet.accounts WHERE id = :aud_system;
SELECT * FROM dblink(:'n2', $$SELECT total_balance FROM wallet.trial_balance() WHERE currency = 'AUD'$$)
    AS t (n2_total numeric);
-- The ledger: decision and outcome, the legs, one branch per node with its postings (a NULL
-- account is the node's system account).
SELECT gtid, protocol, phase, outcome, currency, amount, leg_nodes, leg_amounts,
       decided_at IS NOT NULL AS decided, finished_at IS NOT NULL AS finished, finished_by
  FROM wallet.global_transactions WHERE gtid = 'pay-1';
SELECT branch_no, branch, node, debit_account_ids = ARRAY[:yuri]::bigint[] AS from_yuri,
       credit_account_ids = ARRAY[:xena]::bigint[] AS to_xena, debit_account_ids, credit_account_ids, amounts, status
  FROM wallet.branches WHERE gtid = 'pay-1' ORDER BY branch_no;
-- A repeat of the same call answers the same outcome and moves nothing; other parameters under
-- the same global transaction id are refused.
CALL wallet.transfer_across('pay-1', 'local', :yuri, 'n2', :xena, 2500);
SELECT balance FROM wallet.accounts WHERE id = :yuri;
CALL wallet.transfer_across('pay-1', 'local', :yuri, 'n2', :xena, 2600);
\echo :LAST_ERROR_SQLSTATE

-- The other way: n2 pays, this database receives.
CALL wallet.transfer_across('pay-2', 'n2', :xena, 'local', :zoe, 500);
-- Both accounts here: one local transaction, whatever the protocol. The transfer is posted (no
-- hold: its event's data names the global transaction) and the global transaction recorded as
-- confirmed, in one commit; it has no branch rows.
CALL wallet.transfer_across('pay-3', 'local', :yuri, 'local', :zoe, 100);
SELECT phase, outcome, currency, decided_at IS NOT NULL AS decided, finished_by,
       (SELECT count(*) FROM wallet.branches AS b WHERE b.gtid = g.gtid) AS branches
  FROM wallet.global_transactions AS g WHERE gtid = 'pay-3';
SELECT event_type, debit_account_id = :yuri AS from_yuri, credit_account_id = :zoe AS to_zoe,
       amount, idempotency_key, data
  FROM wallet.events WHERE data ->> 'gtid' = 'pay-3';
SELECT wallet.balance(:zoe) AS zoe;
-- A repeat answers the same and moves nothing; a refusal is recorded as a cancel with the reason
-- (WA008, naming the account and amount), and a repeat of it answers the same refusal.
CALL wallet.transfer_across('pay-3', 'local', :yuri, 'local', :zoe, 100);
SELECT wallet.balance(:zoe) AS zoe_unchanged;
CALL wallet.transfer_across('pay-3x', 'local', :yuri, 'local', :zoe, 999999999);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-3x', 'local', :yuri, 'local', :zoe, 999999999, protocol => 'tcc');
\echo :LAST_ERROR_SQLSTATE
SELECT phase, outcome, currency, error_sqlstate, finished_at IS NOT NULL AS finished
  FROM wallet.global_transactions WHERE gtid = 'pay-3x';
SELECT count(*) AS events_of_the_refusal FROM wallet.events WHERE data ->> 'gtid' = 'pay-3x';

-- A refused try cancels the whole transfer with the participant's SQLSTATE and message. This
-- node's branch is tried in the step, before the others are sent theirs: refused here, the other
-- branch is not tried at all, only cancelled (its cancel recorded there, so that a late try finds
-- it barred: reserved 0).
CALL wallet.transfer_across('pay-4', 'local', :yuri, 'n2', :xena, 999999);
\echo :LAST_ERROR_SQLSTATE
SELECT phase, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid = 'pay-4';
SELECT branch, status, last_sqlstate FROM wallet.branches WHERE gtid = 'pay-4' ORDER BY branch_no;
SELECT * FROM dblink(:'n2', $$SELECT status, reserved FROM wallet.get_hold('pay-4', 'b2')$$)
    AS t (status text, reserved bigint);
-- A currency mismatch across nodes: both nodes reserve, the coordinator sees two currencies and
-- cancels (WA005); nothing stays reserved.
CALL wallet.transfer_across('pay-5', 'local', :yuri, 'n2', :yen, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.account_balances(:yuri);
SELECT * FROM dblink(:'n2', format('SELECT pending_in FROM wallet.account_balances(%s)', :yen)) AS t (yen_pending_in bigint);

-- Refused before anything is recorded: unknown node (WA024, whatever the protocol); bad amount,
-- gtid (empty, or not printable ASCII: it travels to every node, whatever their encodings),
-- timeout (above wallet.hold_timeout_max, or not positive) and protocol; a node name that is not
-- one; inside a transaction block, where the procedure could not commit (2D000).
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'nowhere', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'nowhere', :xena, 10, protocol => '2pc');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'nowhere', :xena, 10, protocol => 'saga');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6-café', 'local', :yuri, 'n2', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 0);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('', 'local', :yuri, 'n2', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 10, interval '100 years');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 10, interval '-1 second');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 10, protocol => 'xa');
\echo :LAST_ERROR_SQLSTATE
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'N2; DROP', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
BEGIN;
CALL wallet.transfer_across('pay-6', 'local', :yuri, 'n2', :xena, 10);
ROLLBACK;
SELECT count(*) AS recorded FROM wallet.global_transactions WHERE gtid LIKE 'pay-6%';

-- An unreachable node: the try fails, the transfer is cancelled (WA025), and the cancel that
-- could not be delivered stays pending until recovery reaches the node.
SELECT wallet.register_node('n3', 'host=/nonexistent port=1 dbname=nothing');
CALL wallet.transfer_across('pay-7', 'local', :yuri, 'n3', :xena, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT phase, outcome, error_sqlstate FROM wallet.global_transactions WHERE gtid = 'pay-7';
SELECT branch, node, status, last_sqlstate FROM wallet.branches WHERE gtid = 'pay-7' ORDER BY branch_no;
SELECT * FROM wallet.account_balances(:yuri);
CALL wallet.recover();
-- A node an unfinished global transaction needs cannot be removed (WA028).
SELECT wallet.remove_node('n3');
\echo :LAST_ERROR_SQLSTATE
-- The node comes back (here: re-pointed to n2); recovery finishes the cancel there, and then the
-- node may go.
SELECT wallet.register_node('n3', :'n2');
CALL wallet.recover();
SELECT phase, outcome FROM wallet.global_transactions WHERE gtid = 'pay-7';
SELECT * FROM dblink(:'n2', $$SELECT status, reserved FROM wallet.get_hold('pay-7', 'b2')$$)
    AS t (status text, reserved bigint);
SELECT wallet.remove_node('n3');
SELECT count(*) AS servers_left FROM pg_foreign_server WHERE srvname = 'wallet_node_n3';

-- Recovery after the coordinator stops between two steps (wallet.fault, superuser only: here it
-- raises an ERROR where a crash would stop the backend; the multinode test kills it for real).
-- (a) Stopped after recording (the local branch reserved, the remote not tried): recovery cancels.
-- The ledger still shows the local branch new: its step records the answer of this node's own
-- try with the remote's, and recovery cancels an untried branch as well (its hold is released).
SET wallet.fault = 'after_record';
CALL wallet.transfer_across('crash-1', 'local', :yuri, 'n2', :xena, 70);
\echo :LAST_ERROR_SQLSTATE
-- (b) Stopped after the remote try answered, before its answer was recorded: cancelled too.
SET wallet.fault = 'after_remote_try';
CALL wallet.transfer_across('crash-2', 'local', :yuri, 'n2', :xena, 80);
-- (c) Stopped right after the decision to confirm was committed: recovery confirms.
SET wallet.fault = 'after_decide';
CALL wallet.transfer_across('crash-3', 'local', :yuri, 'n2', :xena, 90);
-- (d) The remote confirm's answer lost: the decision stands, recovery repeats the confirm.
SET wallet.fault = 'lose_answers:confirm';
CALL wallet.transfer_across('crash-4', 'n2', :xena, 'local', :zoe, 11);
RESET wallet.fault;
SELECT gtid, phase, outcome, (SELECT string_agg(status, ',' ORDER BY branch_no) FROM wallet.branches b WHERE b.gtid = g.gtid) AS branches
  FROM wallet.global_transactions g WHERE gtid LIKE 'crash-%' ORDER BY gtid;
SELECT * FROM wallet.account_balances(:yuri);
CALL wallet.recover();
SELECT gtid, phase, outcome, finished_by FROM wallet.global_transactions WHERE gtid LIKE 'crash-%' ORDER BY gtid;
SELECT * FROM wallet.account_balances(:yuri);
SELECT * FROM dblink(:'n2', format('SELECT * FROM wallet.account_balances(%s)', :xena))
    AS t (posted bigint, pending_out bigint, pending_in bigint, available numeric);

-- An application role with wallet_operator coordinates too; it cannot register or remove nodes,
-- read the credentials, set faults, or use the coordinator's connections and servers.
CREATE ROLE tcc_app;
GRANT wallet_operator TO tcc_app;
GRANT EXECUTE ON FUNCTION dblink_connect(text, text), dblink_get_connections(), dblink_exec(text, text) TO tcc_app;
SET ROLE tcc_app;
CALL wallet.transfer_across('pay-8', 'local', :yuri, 'n2', :xena, 5);
CALL wallet.recover();
-- No named connection of the coordinator is left in the session for the caller to use.
SELECT dblink_get_connections() AS connections;
-- The node's server cannot be used to connect (no USAGE), and its credentials cannot be read.
SELECT dblink_connect('steal', 'wallet_node_n2');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS readable_options FROM pg_user_mappings WHERE srvname = 'wallet_node_n2' AND umoptions IS NOT NULL;
SELECT umoptions FROM pg_user_mapping;
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.register_node('n4', 'dbname=x');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.remove_node('n2');
\echo :LAST_ERROR_SQLSTATE
SET wallet.fault = 'after_decide';
\echo :LAST_ERROR_SQLSTATE
SET wallet.node_timeout = '1h';
\echo :LAST_ERROR_SQLSTATE
-- The participant functions are the batch forms of the hold calls an operator may make anyway;
-- the engine's own steps are not functions at all.
SELECT count(*) AS internal_step_functions FROM pg_proc
 WHERE pronamespace = 'wallet'::regnamespace AND proname IN ('_gtx_begin', '_gtx_step', '_node_call', '_gtx_claim');
RESET ROLE;
DROP OWNED BY tcc_app;
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
SELECT count(*) AS unfinished FROM wallet.global_transactions WHERE finished_at IS NULL;
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE wallet_regress_n2 WITH (FORCE)');
