"""Writes sql/wallet_ext--0.5.0--0.6.0.sql from the definitions of sql/*.sql: what changed since
0.5.0, each object as sql/ defines it now (until 0.6.0 is released, after any change to those
objects: python3 scripts/make_update_0.6.0.py). tests/upgrade.sh checks that an updated database
equals a fresh install, so a change this misses fails there."""
import os
import re, sys

def _end(text, i):
    """Index just past the statement starting at i."""
    n = len(text)
    j = i
    atomic = False
    while j < n:
        if text.startswith('--', j):
            j = text.index('\n', j) + 1
            continue
        c = text[j]
        if c == "'":
            j += 1
            while True:
                k = text.index("'", j)
                if text.startswith("''", k):
                    j = k + 2
                    continue
                j = k + 1
                break
            continue
        if c == '$':
            m = re.match(r'\$([A-Za-z_]*)\$', text[j:])
            if m:
                tag = m.group(0)
                k = text.index(tag, j + len(tag))
                j = k + len(tag)
                continue
        if text.startswith('BEGIN ATOMIC', j):
            atomic = True
        if atomic:
            m = re.compile(r'^END;', re.M).search(text, j)
            return m.end()
        if c == ';':
            return j + 1
        j += 1
    raise ValueError('no end')

def statement(path, prefix, replace=True):
    text = open(path).read()
    m = re.compile('^' + re.escape(prefix), re.M).search(text)
    if not m:
        raise SystemExit(f'not found in {path}: {prefix}')
    i = m.start()
    e = _end(text, i)
    s = text[i:e]
    if replace:
        s = s.replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION', 1)
    # a COMMENT right after it
    rest = text[e:]
    m2 = re.match(r'\s*\n(COMMENT ON (FUNCTION|PROCEDURE) [^\n]*\n(?:    [^\n]*\n)*)', rest)
    if m2:
        s += '\n' + m2.group(1).rstrip('\n')
    return s + '\n'

R = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'sql') + '/'
st = statement
out = []
w = out.append
w('''-- wallet_ext 0.5.0 -> 0.6.0, run by ALTER EXTENSION wallet_ext UPDATE TO '0.6.0'.
--   * every SQL function gets a SQL-standard body (its names resolved once, at creation) and the
--     ones that are not inlined a pinned search_path; wallet._link_hash moves to C;
--   * the chain hashes every column of an event from now on: seal_state.full_text_from marks
--     where (positions sealed before the update keep their 0.1.0-0.5.0 text, _event_text_v1);
--   * DROP EXTENSION / SCHEMA / OWNED are refused while the ledger holds events (event trigger);
--   * wallet.write_paths();
--   * wallet.spread_settlement() and wallet.currencies.settlement_accounts: a currency's
--     cross-node settlement spread over several system accounts;
--   * the read side's daily totals are numeric (a day's flows may pass the bigint range), and a
--     refresh computes each account's change in numeric;
--   * the coordinator: TC/C, 2PC and Saga in the library, nodes as foreign servers of wrapper
--     wallet_nodes (credentials in user mappings), legs instead of from/to. The ledger is carried
--     over: a global transaction from/to becomes two legs (one branch per node, as before, with
--     the same branch names, so that an unfinished one is driven on by the new recovery), and
--     every registered node is registered again from its connection string.
-- Every node a coordinator talks to must run 0.6.0 too: until a node is updated, the global
-- transactions that need it wait (recovery retries them), none is lost.
-- tests/upgrade.sh checks that an updated database has exactly the schema of a fresh install.
-- The definitions below are those of sql/*.sql at 0.6.0; later changes go to a later script.

-- ---- schema.sql ----------------------------------------------------------------------------------
ALTER FUNCTION wallet.refuse_event_change() SET search_path = pg_catalog, pg_temp;
''')
w("""-- Further system accounts a currency's cross-node settlement is spread over
-- (wallet.spread_settlement).
ALTER TABLE wallet.currencies ADD COLUMN settlement_accounts bigint[] NOT NULL DEFAULT '{}'::bigint[];
""")
w(re.search(r"^COMMENT ON TABLE wallet\.currencies IS\n.*?';\n", open(R+'schema.sql').read(), re.M | re.S).group(0))
w(st(R+'schema.sql', 'CREATE FUNCTION wallet._guard_drop()', replace=False))
w(st(R+'schema.sql', 'CREATE EVENT TRIGGER wallet_guard_drop', replace=False))
w('\n-- ---- api.sql -------------------------------------------------------------------------------------\n')
w(st(R+'api.sql', 'CREATE FUNCTION wallet.write_paths()', replace=False))
w(st(R+'api.sql', 'CREATE FUNCTION wallet.spread_settlement(', replace=False))
for p in ['CREATE FUNCTION wallet._require_page(', 'CREATE FUNCTION wallet.get_transfer(',
          'CREATE FUNCTION wallet.trial_balance(']:
    w(st(R+'api.sql', p))
w('''
-- ---- chain.sql -----------------------------------------------------------------------------------
-- Positions sealed so far were hashed with the 0.1.0-0.5.0 text.
ALTER TABLE wallet.seal_state ADD COLUMN full_text_from bigint NOT NULL DEFAULT 1;
UPDATE wallet.seal_state SET full_text_from = last_position + 1;
''')
for p in ['CREATE FUNCTION wallet._posted_seq(', 'CREATE FUNCTION wallet._next_xid(',
          'CREATE FUNCTION wallet._chain(', 'CREATE FUNCTION wallet.event_text(']:
    w(st(R+'chain.sql', p))
w(st(R+'chain.sql', 'CREATE FUNCTION wallet._event_text_v1(', replace=False))
for p in ['CREATE FUNCTION wallet._link_hash(', 'CREATE FUNCTION wallet._require_max_events(',
          'CREATE FUNCTION wallet.chain_head(', 'CREATE FUNCTION wallet.verify_chain(',
          'CREATE FUNCTION wallet.verify_postings(']:
    w(st(R+'chain.sql', p))
w('\n-- ---- history.sql ---------------------------------------------------------------------------------\n')
w(st(R+'history.sql', 'CREATE FUNCTION wallet.statement_between('))
w('\n-- ---- readside.sql --------------------------------------------------------------------------------\n')
w("""-- A day's flows through an account may pass the bigint range while its balance never does.
DROP VIEW wallet.read_daily;
ALTER TABLE wallet.read_daily_totals ALTER COLUMN debits TYPE numeric, ALTER COLUMN credits TYPE numeric;
""")
w(st(R+'readside.sql', 'CREATE VIEW wallet.read_daily AS', replace=False))
w(st(R+'readside.sql', 'CREATE FUNCTION wallet.refresh_read_side('))
for p in ['CREATE FUNCTION wallet._moves_money(', 'CREATE FUNCTION wallet._tail_after(',
          'CREATE FUNCTION wallet._key_of_position(', 'CREATE FUNCTION wallet._replayed_balances(',
          'CREATE FUNCTION wallet.verify_read_side(', 'CREATE FUNCTION wallet.verify(']:
    w(st(R+'readside.sql', p))
w('''
-- ---- the coordinator: sql/tcc.sql gives way to sql/coordinator.sql --------------------------------
-- The ledger and the nodes, kept aside while the old objects go.
CREATE TABLE wallet._v5_nodes AS SELECT name, conninfo, created_at FROM wallet.nodes;
CREATE TABLE wallet._v5_global_transactions AS SELECT * FROM wallet.global_transactions;
CREATE TABLE wallet._v5_branches AS SELECT * FROM wallet.branches;
DROP PROCEDURE wallet.transfer_across(text, text, bigint, text, bigint, bigint, interval, text);
DROP PROCEDURE wallet.recover(integer, integer);
DROP FUNCTION wallet._gtx_unfinished();
DROP FUNCTION wallet._gtx_get(text);
DROP FUNCTION wallet._gtx_begin(text, text, bigint, text, bigint, bigint, interval);
DROP FUNCTION wallet._gtx_step(text, boolean);
DROP FUNCTION wallet._branch_command(text, wallet.global_transactions, wallet.branches);
DROP FUNCTION wallet._recovery_candidates();
DROP FUNCTION wallet._gtx_release(text);
DROP FUNCTION wallet._gtx_claim(text, boolean);
DROP FUNCTION wallet._node_call(text, text);
DROP FUNCTION wallet._require_node(text);
DROP FUNCTION wallet.register_node(text, text);
DROP FUNCTION wallet._dblink_schema();
DROP FUNCTION wallet._tcc_transient(text);
DROP FUNCTION wallet._tcc_next_step(text, text[], boolean);
-- Out of the extension first: that also takes them off its list of tables pg_dump must carry
-- (a DROP TABLE alone would leave their oids there).
ALTER EXTENSION wallet_ext DROP TABLE wallet.branches;
ALTER EXTENSION wallet_ext DROP TABLE wallet.global_transactions;
ALTER EXTENSION wallet_ext DROP TABLE wallet.nodes;
DROP TABLE wallet.branches;
DROP TABLE wallet.global_transactions;
DROP TABLE wallet.nodes;

-- sql/coordinator.sql as it is at 0.6.0:
''')
coord = open(R+'coordinator.sql').read()
w(coord)
w('''
-- The ledger carried over: from/to become two legs; each branch keeps its name (the holds on the
-- nodes carry it) and gets its posting as one-element arrays (NULL: the node's system account).
INSERT INTO wallet.global_transactions
       (gtid, protocol, phase, outcome, leg_nodes, leg_account_ids, leg_amounts, amount, currency,
        hold_timeout, created_at, decide_by, decided_at, finished_at, finished_by, error_sqlstate,
        error_message)
SELECT g.gtid, 'tcc', g.phase, g.outcome, ARRAY[g.from_node, g.to_node],
       ARRAY[g.from_account_id, g.to_account_id], ARRAY[-g.amount, g.amount], g.amount, g.currency,
       g.hold_timeout, g.created_at, g.decide_by, g.decided_at, g.finished_at, g.finished_by,
       g.error_sqlstate, g.error_message
  FROM wallet._v5_global_transactions AS g;
INSERT INTO wallet.branches
       (gtid, branch_no, branch, node, debit_account_ids, credit_account_ids, amounts, status,
        attempts, last_sqlstate, last_error, updated_at)
SELECT b.gtid, b.branch_no, b.branch, b.node, ARRAY[b.debit_account_id], ARRAY[b.credit_account_id],
       ARRAY[g.amount], b.status, b.attempts, b.last_sqlstate, b.last_error, b.updated_at
  FROM wallet._v5_branches AS b JOIN wallet._v5_global_transactions AS g ON g.gtid = b.gtid;
-- Each node again, from its connection string: its address to a foreign server, its credentials
-- to the owner's user mapping (a connection string wallet.register_node refuses stops the update,
-- naming the node: correct it in the 0.5.0 wallet.nodes and update again).
SELECT wallet.register_node(n.name, n.conninfo) FROM wallet._v5_nodes AS n ORDER BY n.name;
UPDATE wallet.nodes AS n SET created_at = v.created_at FROM wallet._v5_nodes AS v WHERE v.name = n.name;
-- register_node ran inside the update, so Postgres made its servers and user mappings members of
-- the extension; they are the owner's data, as when register_node runs at any other time (pg_dump
-- must carry them, DROP EXTENSION must not take them). What ALTER EXTENSION ... DROP would do,
-- which has no form for a user mapping:
DELETE FROM pg_catalog.pg_depend AS d
 USING pg_catalog.pg_extension AS e
 WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.refobjid = e.oid
   AND e.extname = 'wallet_ext' AND d.deptype = 'e'
   AND d.classid IN ('pg_catalog.pg_foreign_server'::pg_catalog.regclass,
                     'pg_catalog.pg_user_mapping'::pg_catalog.regclass);
DROP TABLE wallet._v5_nodes, wallet._v5_global_transactions, wallet._v5_branches;

-- ---- grants.sql, as at 0.6.0 ---------------------------------------------------------------------
''')
w(open(R+'grants.sql').read())
open(R + 'wallet_ext--0.5.0--0.6.0.sql', 'w').write(''.join(out))
