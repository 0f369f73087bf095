#!/usr/bin/env bash
# ALTER EXTENSION UPDATE: a database created at 0.1.0 (its install script is kept in
# tests/upgrade/), with money moved, the log sealed, a snapshot taken and the read side built, is
# updated to the current version. Then its schema must be exactly a fresh install's (tables,
# columns, defaults, indexes, constraints, triggers, functions with their bodies, settings, security
# and privileges, extension membership, dump configuration), its data must survive (verify(),
# verify_chain(), trial balance, check_snapshot()), and the new functions must work on it.
# Usage: tests/upgrade.sh NAME PORT (a running cluster of scripts/lib.sh)
source "$(dirname "$0")/../scripts/lib.sh"
name="$1"; port="$2"
here="$REPO_ROOT/tests/upgrade"
extdir="$("$PG_CONFIG" --sharedir)/extension"
as_root install -m 644 "$here/wallet_ext--0.1.0.sql" "$extdir/wallet_ext--0.1.0.sql"
current="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -1)"
q() { local db="$1"; shift; psql_at "$name" "$port" "$db" -tA "$@"; }

for db in wallet_up wallet_fresh; do
    psql_at "$name" "$port" postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
done
q wallet_up -c "CREATE EXTENSION wallet_ext VERSION '0.1.0'" >/dev/null
# The installed library is the current one: it refuses to write on the old schema (55000)
# rather than write rows without the columns it needs. The 0.1.0 data is therefore written here
# the way 0.1.0 wrote it: a currency with its system account, accounts, and transfers (both rows
# locked, balances updated, one event with the balances after it).
for call in "wallet.create_currency('EUR')" "wallet.open_account('EUR')" "wallet.transfer(1, 2, 5)"; do
    refusal="$(q wallet_up -c "SELECT $call" 2>&1 || true)"
    [[ "$refusal" == *"older than the installed wallet_ext library"*"ALTER EXTENSION wallet_ext UPDATE"* ]] \
        || die "no clear refusal of $call on the 0.1.0 schema: $refusal"
done
q wallet_up >/dev/null <<'SQL'
CREATE FUNCTION pg_temp.old_currency(code text) RETURNS bigint LANGUAGE sql AS $$
    WITH created AS (
        INSERT INTO wallet.currencies (code, scale, system_account_id)
        VALUES (code, 2, nextval('wallet.accounts_id_seq'))
     RETURNING code, scale, system_account_id
    ), system_account AS (
        INSERT INTO wallet.accounts (id, currency, owner, allow_overdraft, is_system)
        SELECT system_account_id, code, 'system', true, true FROM created
     RETURNING id, currency
    ), recorded AS (
        INSERT INTO wallet.events (event_type, account_id, currency, data)
        SELECT 'currency_created', c.system_account_id, c.code,
               jsonb_build_object('scale', c.scale, 'system_account_id', c.system_account_id)
          FROM created AS c
        UNION ALL
        SELECT 'account_opened', s.id, s.currency,
               jsonb_build_object('owner', 'system', 'metadata', '{}'::jsonb,
                                  'allow_overdraft', true, 'is_system', true)
          FROM system_account AS s
    )
    SELECT system_account_id FROM created
$$;
CREATE FUNCTION pg_temp.old_account(currency text, owner text) RETURNS bigint LANGUAGE sql AS $$
    WITH opened AS (
        INSERT INTO wallet.accounts (currency, owner) VALUES (currency, owner)
     RETURNING id, currency, owner, metadata, allow_overdraft
    ), recorded AS (
        INSERT INTO wallet.events (event_type, account_id, currency, data)
        SELECT 'account_opened', id, currency,
               jsonb_build_object('owner', owner, 'metadata', metadata,
                                  'allow_overdraft', allow_overdraft, 'is_system', false)
          FROM opened
    )
    SELECT id FROM opened
$$;
SELECT pg_temp.old_currency('EUR');
SELECT pg_temp.old_account('EUR', NULL);
CREATE FUNCTION pg_temp.old_transfer(d bigint, c bigint, amount bigint, key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE db bigint; cb bigint; seq bigint;
BEGIN
    PERFORM 1 FROM wallet.accounts WHERE id IN (d, c) ORDER BY id FOR NO KEY UPDATE;
    UPDATE wallet.accounts SET balance = balance - amount WHERE id = d RETURNING balance INTO db;
    UPDATE wallet.accounts SET balance = balance + amount WHERE id = c RETURNING balance INTO cb;
    INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, idempotency_key)
    VALUES ('transfer', d, c, amount, 'EUR', db, cb, key) RETURNING events.seq INTO seq;
    RETURN seq;
END $$;
SELECT pg_temp.old_account('EUR', 'u' || i) FROM generate_series(2, 20) i;
SELECT pg_temp.old_transfer(1, id, 10000, 'dep-' || id) FROM wallet.accounts WHERE NOT is_system;
SELECT pg_temp.old_transfer(2 + i % 20, 2 + (i * 7 + 1) % 20, 1 + i % 50, 'k-' || i)
  FROM generate_series(1, 500) i WHERE i % 20 <> (i * 7 + 1) % 20;
SELECT wallet.seal();
SELECT wallet.take_snapshot();
SELECT pg_temp.old_transfer(2, 3, 5);
SQL
before="$(q wallet_up -c "SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM wallet.accounts")"
# Every account's history, as statement() and balance_at() give it (0.3.0 reads them elsewhere).
histories="SELECT md5(string_agg(concat_ws(':', a.id, s.seq, s.amount, s.balance,
                                           wallet.balance_at(a.id, s.seq)), ',' ORDER BY a.id, s.seq))
             FROM wallet.accounts AS a CROSS JOIN LATERAL wallet.statement(a.id, 0, 1000) AS s"
histories_before="$(q wallet_up -c "$histories")"
head_before="$(q wallet_up -c "SELECT last_position || '/' || last_hash FROM wallet.chain_head()")"
# At 0.5.0, the coordinator's ledger in its old form (dblink, from/to): a registered node, a
# finished TC/C global transaction and one decided to confirm whose coordinator stopped.
q wallet_up -c "ALTER EXTENSION wallet_ext UPDATE TO '0.5.0'" >/dev/null
q wallet_up >/dev/null <<SQL
INSERT INTO wallet.nodes (name, conninfo)
VALUES ('v5node', 'host=$(cluster_socket "$name") port=$port dbname=wallet_up_node user=postgres connect_timeout=3');
INSERT INTO wallet.global_transactions (gtid, phase, outcome, from_node, from_account_id, to_node,
                                        to_account_id, amount, currency, hold_timeout, decide_by,
                                        decided_at, finished_at, finished_by)
VALUES ('v5-done', 'confirm', 'confirmed', 'local', 6, 'v5node', 2, 3, 'EUR', '1 hour',
        now() + interval '30 minutes', now(), now(), 'coordinator'),
       ('v5-open', 'confirm', NULL, 'local', 4, 'local', 5, 7, 'EUR', '1 hour',
        now() + interval '30 minutes', now(), NULL, NULL);
INSERT INTO wallet.branches (gtid, branch_no, branch, node, debit_account_id, credit_account_id, status)
VALUES ('v5-done', 1, 'debit', 'local', 6, NULL, 'confirmed'),
       ('v5-done', 2, 'credit', 'v5node', NULL, 2, 'confirmed'),
       ('v5-open', 1, 'transfer', 'local', 4, 5, 'tried');
SQL
q wallet_up -c "ALTER EXTENSION wallet_ext UPDATE TO '$current'" >/dev/null
[ "$(q wallet_up -c "SELECT extversion FROM pg_extension WHERE extname = 'wallet_ext'")" = "$current" ] \
    || die "not at $current after ALTER EXTENSION UPDATE"
q wallet_fresh -c "CREATE EXTENSION wallet_ext" >/dev/null

# A canonical description of everything in schema wallet, one line per fact.
describe() {
    q "$1" <<'SQL'
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'wallet' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'S', 'c')
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' options=' || coalesce(c.reloptions::text, '')
       || ' acl=' || coalesce(c.relacl::text, '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'wallet' AND c.relkind IN ('r', 'v', 'S', 'i')
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'wallet'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'wallet'::regnamespace
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'wallet'::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid)) FROM pg_class c
 WHERE c.relnamespace = 'wallet'::regnamespace AND c.relkind = 'v'
UNION ALL
SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
       || p.prokind::text || ' -> ' || coalesce(pg_get_function_result(p.oid), '') || ' ' || l.lanname
       || ' ' || p.provolatile::text || ' definer=' || p.prosecdef || ' config=' || coalesce(p.proconfig::text, '')
       || ' args=' || coalesce(pg_get_expr(p.proargdefaults, 0), '') || ' acl=' || coalesce(p.proacl::text, '')
       || ' definition=' || md5(pg_get_functiondef(p.oid)) || ' comment=' || md5(coalesce(obj_description(p.oid, 'pg_proc'), ''))
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = 'wallet'::regnamespace
UNION ALL
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'wallet_ext' AND d.deptype = 'e'
UNION ALL
SELECT 'dump config ' || x::regclass FROM pg_extension e, unnest(e.extconfig) x WHERE e.extname = 'wallet_ext'
UNION ALL
SELECT 'schema acl ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'wallet'
UNION ALL
SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc || ' ' || evtenabled::text
       || ' ' || coalesce(evttags::text, '') FROM pg_event_trigger
UNION ALL
SELECT 'foreign-data wrapper ' || fdwname || ' handler=' || fdwhandler::regproc || ' validator='
       || fdwvalidator::regproc || ' acl=' || coalesce(fdwacl::text, '') FROM pg_foreign_data_wrapper
ORDER BY 1
SQL
}
describe wallet_up > "$WORK_DIR/upgrade-upgraded.txt"
describe wallet_fresh > "$WORK_DIR/upgrade-fresh.txt"
if ! diff "$WORK_DIR/upgrade-fresh.txt" "$WORK_DIR/upgrade-upgraded.txt" > "$WORK_DIR/upgrade.diff"; then
    cat "$WORK_DIR/upgrade.diff"
    die "the upgraded schema differs from a fresh install (< fresh, > upgraded)"
fi
log "schema after 0.1.0 -> $current equals a fresh install: $(wc -l < "$WORK_DIR/upgrade-fresh.txt") facts compared"

# The data survived, and the new features work on it.
[ "$(q wallet_up -c "SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM wallet.accounts")" = "$before" ] \
    || die "balances changed by the update"
[ "$(q wallet_up -c "SELECT last_position || '/' || last_hash FROM wallet.chain_head()")" = "$head_before" ] \
    || die "chain head changed by the update"
[ "$(q wallet_up -c "$histories")" = "$histories_before" ] || die "account histories changed by the update"
q wallet_up >/dev/null <<'SQL'
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM wallet.verify()) OR EXISTS (SELECT 1 FROM wallet.verify(false)) THEN
        RAISE EXCEPTION 'verify() differs after the update';
    END IF;
    IF EXISTS (SELECT 1 FROM wallet.check_snapshot((SELECT min(snapshot_id) FROM wallet.snapshots))) THEN
        RAISE EXCEPTION 'the 0.1.0 snapshot does not check out after the update';
    END IF;
END $$;
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM wallet.verify_postings()) THEN
        RAISE EXCEPTION 'account histories inconsistent after the update';
    END IF;
END $$;
SELECT wallet.try_hold('up-1', 'b', 2, 3, 100);
SELECT wallet.confirm_hold('up-1', 'b', 60);
SELECT wallet.seal();
SELECT wallet.seal();  -- the second round posts what the first noted
SELECT wallet.take_snapshot();
CALL wallet.transfer_across('up-2', 'local', 4, 'local', 5, 7);
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM wallet.verify()) OR EXISTS (SELECT 1 FROM wallet.verify_chain())
       OR EXISTS (SELECT 1 FROM wallet.verify_read_side())
       OR EXISTS (SELECT 1 FROM wallet.verify_postings())
       OR EXISTS (SELECT 1 FROM wallet.trial_balance() WHERE total_balance <> 0 OR forbidden_negative_accounts <> 0)
       OR EXISTS (SELECT 1 FROM wallet.check_snapshot((SELECT max(snapshot_id) FROM wallet.snapshots))) THEN
        RAISE EXCEPTION 'inconsistent after using the new features on the updated database';
    END IF;
END $$;
SQL
log "data survived the update (balances, histories, chain head, verify, snapshot); holds, the coordinator and posting work on it"

# The 0.5.0 ledger carried over: the node is a foreign server with the owner's user mapping (the
# user there, nothing in wallet.nodes), neither a member of the extension; the finished global
# transaction is as it was, now as legs; the one left decided is confirmed by recovery, from its
# hold (placed here as the 0.5.0 try had placed it).
[ "$(q wallet_up -c "SELECT n.server || ' ' || array_to_string(s.srvoptions, ' ') || ' / ' || array_to_string(m.umoptions, ' ')
                       FROM wallet.nodes n JOIN pg_foreign_server s ON s.srvname = n.server
                       JOIN pg_user_mapping m ON m.umserver = s.oid WHERE n.name = 'v5node'")" \
  = "wallet_node_v5node connect_timeout=3 dbname=wallet_up_node host=$(cluster_socket "$name") port=$port / user=postgres" ] \
    || die "the 0.5.0 node was not carried over as a foreign server and user mapping"
[ "$(q wallet_up -c "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                       WHERE e.extname = 'wallet_ext' AND d.deptype = 'e'
                         AND d.classid IN ('pg_foreign_server'::regclass, 'pg_user_mapping'::regclass)")" = 0 ] \
    || die "the carried-over node's server or user mapping became a member of the extension"
[ "$(q wallet_up -c "SELECT string_agg(gtid || ' ' || protocol || ' ' || outcome || ' ' || leg_nodes::text || leg_account_ids::text || leg_amounts::text, '; ' ORDER BY gtid)
                       FROM wallet.global_transactions WHERE gtid = 'v5-done'")" = "v5-done tcc confirmed {local,v5node}{6,2}{-3,3}" ] \
    || die "the finished 0.5.0 global transaction was not carried over as legs"
q wallet_up -c "SELECT wallet.try_hold('v5-open', 'transfer', 4, 5, 7, interval '1 hour')" -c "CALL wallet.recover()" >/dev/null
[ "$(q wallet_up -c "SELECT outcome || ' ' || finished_by FROM wallet.global_transactions WHERE gtid = 'v5-open'")" = "confirmed recovery" ] \
    && [ "$(q wallet_up -c "SELECT status FROM wallet.holds WHERE gtid = 'v5-open'")" = confirmed ] \
    || die "the unfinished 0.5.0 global transaction was not confirmed by the new recovery"
log "the 0.5.0 coordinator ledger carried over: its node as a server and user mapping, its transactions as legs; recovery finished the open one"

# The current library on a schema one version behind (0.3.0), before its update: batches (with a
# rejection, whose id the 0.3.0 wrapper gives as NULL) and keyed transfers work, and the update
# that follows changes nothing but the wrapper.
psql_at "$name" "$port" postgres -c "DROP DATABASE IF EXISTS wallet_mid" -c "CREATE DATABASE wallet_mid" >/dev/null
q wallet_mid -c "CREATE EXTENSION wallet_ext VERSION '0.1.0'" >/dev/null
q wallet_mid -c "ALTER EXTENSION wallet_ext UPDATE TO '0.3.0'" >/dev/null
mid_batch="SELECT string_agg(result || ':' || (transfer_id IS NOT NULL), ',' ORDER BY index)
             FROM wallet.transfer_batch(ARRAY[2, 2, 3]::bigint[], ARRAY[3, 3, 2]::bigint[],
                                        ARRAY[40, 100, 5]::bigint[], ARRAY['m-1', NULL, NULL])"
q wallet_mid -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT wallet.create_currency('EUR');
SELECT wallet.open_account('EUR', 'a'), wallet.open_account('EUR', 'b');
SELECT wallet.deposit(2, 50, 'm-dep');
SELECT wallet.deposit(2, 50, 'm-dep');
SQL
[ "$(q wallet_mid -c "$mid_batch")" = "ok:true,insufficient_funds:false,ok:true" ] \
    || die "a batch on a 0.3.0 schema with the $current library: $(q wallet_mid -c "$mid_batch")"
q wallet_mid -c "ALTER EXTENSION wallet_ext UPDATE" >/dev/null
[ "$(q wallet_mid -c "$mid_batch")" = "exists:true,insufficient_funds:false,ok:true" ] \
    || die "a batch after updating 0.3.0 -> $current: $(q wallet_mid -c "$mid_batch")"
[ "$(q wallet_mid -c "SELECT wallet.balance(2) || '/' || wallet.balance(3) || '/' || (SELECT count(*) FROM wallet.verify())")" = "20/30/0" ] \
    || die "balances on the 0.3.0 -> $current database"
log "the $current library on a 0.3.0 schema: batches and keyed transfers work; the update keeps them"
