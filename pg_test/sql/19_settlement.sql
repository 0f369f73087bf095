-- Cross-node settlement spread over several system accounts (wallet.spread_settlement): every
-- branch of a global transaction settles against its node's side of the currency, which is one
-- row, locked by every cross-node call until its commit, unless the currency's settlement is
-- spread: then each key (a hold's gtid, a posting's key) lands on one of them, the same one for
-- the same key, and the books still balance.
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT 'host=' || split_part(current_setting('unix_socket_directories'), ',', 1)
       || ' port=' || current_setting('port') || ' user=' || current_user AS server \gset
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE IF EXISTS wallet_regress_s2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'CREATE DATABASE wallet_regress_s2');
SELECT :'server' || ' dbname=wallet_regress_s2' AS s2 \gset
SELECT dblink_exec(:'s2', 'CREATE EXTENSION wallet_ext');
SELECT t.id AS payee FROM dblink(:'s2', $$SELECT wallet.create_currency('SPRD'), wallet.open_account('SPRD', 'payee')$$)
    AS t (system bigint, id bigint) \gset
SELECT wallet.create_currency('SPRD') AS spread_system \gset
SELECT wallet.open_account('SPRD', 'payer') AS payer \gset
SELECT wallet.deposit(:payer, 100000) > 0 AS posted;
SELECT wallet.register_node('s2', :'s2');

-- Refused: an unknown currency (WA011), a count out of 1-64 or NULL (WA016); nothing opened.
SELECT wallet.spread_settlement('XYZ', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.spread_settlement('SPRD', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.spread_settlement('SPRD', 65);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.spread_settlement('SPRD', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS system_accounts FROM wallet.accounts WHERE currency = 'SPRD' AND is_system;

-- Spread over 4 here and on s2: three further system accounts each, opened (with their
-- account_opened events) and kept on the currency; the system account first.
SELECT cardinality(s) AS accounts, s[1] = :spread_system AS system_first
  FROM wallet.spread_settlement('SPRD', 4) AS s;
SELECT * FROM dblink(:'s2', $$SELECT cardinality(wallet.spread_settlement('SPRD', 4))$$) AS t (accounts int);
SELECT id - :spread_system AS after_system, owner, is_system, allow_overdraft, status
  FROM wallet.accounts WHERE currency = 'SPRD' AND is_system ORDER BY id;
SELECT event_type, count(*) FROM wallet.events
 WHERE currency = 'SPRD' AND event_type = 'account_opened' AND account_id <> :payer GROUP BY 1;
-- Asking again for as many changes nothing; fewer is refused (an account is never taken away).
SELECT wallet.spread_settlement('SPRD', 4) = (SELECT ARRAY[c.system_account_id] || c.settlement_accounts
                                               FROM wallet.currencies AS c WHERE c.code = 'SPRD') AS same;
SELECT wallet.spread_settlement('SPRD', 2);
\echo :LAST_ERROR_SQLSTATE

-- Twelve TC/C transfers and twelve sagas from payer (here) to payee (on s2): each branch
-- settled against one of the four on its node, chosen by its key, the same on every run.
CALL wallet.transfer_across('st-1', 'local', :payer, 's2', :payee, 10);
CALL wallet.transfer_across('st-2', 'local', :payer, 's2', :payee, 10);
CALL wallet.transfer_across('st-3', 'local', :payer, 's2', :payee, 10);
CALL wallet.transfer_across('st-4', 'local', :payer, 's2', :payee, 10);
CALL wallet.transfer_across('st-5', 'local', :payer, 's2', :payee, 10);
CALL wallet.transfer_across('st-6', 'local', :payer, 's2', :payee, 10);
CALL wallet.transfer_across_batch(ARRAY['st-7', 'st-8', 'st-9', 'st-10', 'st-11', 'st-12'],
     array_fill('local'::text, ARRAY[6]), array_fill(:payer::bigint, ARRAY[6]),
     array_fill('s2'::text, ARRAY[6]), array_fill(:payee::bigint, ARRAY[6]),
     array_fill(10::bigint, ARRAY[6]));
CALL wallet.transfer_across_batch(ARRAY['ss-1', 'ss-2', 'ss-3', 'ss-4', 'ss-5', 'ss-6', 'ss-7',
                                        'ss-8', 'ss-9', 'ss-10', 'ss-11', 'ss-12'],
     array_fill('local'::text, ARRAY[12]), array_fill(:payer::bigint, ARRAY[12]),
     array_fill('s2'::text, ARRAY[12]), array_fill(:payee::bigint, ARRAY[12]),
     array_fill(5::bigint, ARRAY[12]), 'saga');
SELECT outcome, count(*) FROM wallet.global_transactions
 WHERE gtid LIKE 'st-%' OR gtid LIKE 'ss-%' GROUP BY 1 ORDER BY 1;
-- Here: which system account (counted from the first) each TC/C hold and saga posting credited.
SELECT h.gtid, h.credit_account_id - :spread_system AS settled_on
  FROM wallet.holds AS h WHERE h.gtid LIKE 'st-%' ORDER BY length(h.gtid), h.gtid;
SELECT count(DISTINCT h.credit_account_id) AS accounts_used FROM wallet.holds AS h WHERE h.gtid LIKE 'st-%';
SELECT count(DISTINCT e.credit_account_id) AS saga_accounts_used
  FROM wallet.events AS e
 WHERE e.event_type = 'transfer' AND e.debit_account_id = :payer AND e.idempotency_key LIKE 'gtx:%';
-- On s2 the same: spread, and the payee credited with all of it.
SELECT * FROM dblink(:'s2', $$SELECT count(DISTINCT debit_account_id) FROM wallet.holds$$) AS t (accounts_used bigint);
SELECT * FROM dblink(:'s2', format('SELECT * FROM wallet.account_balances(%s)', :payee))
    AS t (posted bigint, pending_out bigint, pending_in bigint, available numeric);
-- Both books balance, each account replays to its row, nothing pending.
SELECT currency, total_balance FROM wallet.trial_balance() WHERE currency = 'SPRD';
SELECT * FROM dblink(:'s2', $$SELECT currency, total_balance FROM wallet.trial_balance()$$)
    AS t (currency text, total_balance numeric);
SELECT count(*) AS differences FROM wallet.verify();
SELECT * FROM dblink(:'s2', $$SELECT count(*) FROM wallet.verify()$$) AS t (differences bigint);
SELECT sum(balance) AS settled_here FROM wallet.accounts WHERE currency = 'SPRD' AND is_system;
-- A deposit still settles against the system account itself.
SELECT balance AS system_before FROM wallet.accounts WHERE id = :spread_system \gset
SELECT wallet.deposit(:payer, 7) > 0 AS posted;
SELECT balance - :system_before AS system_moved FROM wallet.accounts WHERE id = :spread_system;

-- A repeat after the currency was spread over more accounts answers from what was stored: a
-- keyed posting keeps the account it settled against (by its key's hash it would now land on
-- another, and the repeat would be refused as a key reused), a hold too.
SELECT sqlstate, value FROM wallet.post_branch(ARRAY['gtx:rep1:b1'], ARRAY[NULL]::bigint[],
       ARRAY[:payer]::bigint[], ARRAY[3]::bigint[], ARRAY[false]);
SELECT sqlstate, value FROM wallet.tcc_try(ARRAY['rep-h'], ARRAY['b'], ARRAY[:payer]::bigint[],
       ARRAY[NULL]::bigint[], ARRAY[3]::bigint[], '1 hour');
SELECT debit_account_id AS first_settled FROM wallet.events WHERE idempotency_key = 'gtx:rep1:b1' \gset
SELECT cardinality(wallet.spread_settlement('SPRD', 9)) AS accounts;
SELECT sqlstate, value FROM wallet.post_branch(ARRAY['gtx:rep1:b1'], ARRAY[NULL]::bigint[],
       ARRAY[:payer]::bigint[], ARRAY[3]::bigint[], ARRAY[false]);
SELECT sqlstate, value FROM wallet.tcc_try(ARRAY['rep-h'], ARRAY['b'], ARRAY[:payer]::bigint[],
       ARRAY[NULL]::bigint[], ARRAY[3]::bigint[], '1 hour');
SELECT count(*) AS postings, bool_and(debit_account_id = :first_settled) AS same_account
  FROM wallet.events WHERE idempotency_key = 'gtx:rep1:b1';
SELECT count(*) AS holds FROM wallet.holds WHERE gtid = 'rep-h';
SELECT wallet.cancel_hold('rep-h', 'b') > 0 AS released;

-- Only the currency's own system accounts count: an account a superuser wrote into the list by
-- hand (a customer's, another currency's system account) is never settled against.
SELECT wallet.create_currency('SPRX') AS other_system \gset
UPDATE wallet.currencies SET settlement_accounts = ARRAY[:payer, :other_system]::bigint[] WHERE code = 'SPRD';
SELECT sqlstate FROM wallet.post_branch(
       ARRAY['gtx:h1:b1', 'gtx:h2:b1', 'gtx:h3:b1', 'gtx:h4:b1', 'gtx:h5:b1', 'gtx:h6:b1'],
       array_fill(NULL::bigint, ARRAY[6]), array_fill(:payer::bigint, ARRAY[6]),
       array_fill(1::bigint, ARRAY[6]), array_fill(false, ARRAY[6]));
SELECT count(*) AS postings, bool_and(debit_account_id = :spread_system) AS on_the_system_account
  FROM wallet.events WHERE idempotency_key LIKE 'gtx:h_:b1';
SELECT count(*) AS differences FROM wallet.verify();
SELECT currency, total_balance FROM wallet.trial_balance() WHERE currency IN ('SPRD', 'SPRX') ORDER BY 1;

SELECT wallet.remove_node('s2');
SELECT dblink_exec(:'server' || ' dbname=postgres', 'DROP DATABASE wallet_regress_s2 WITH (FORCE)');
