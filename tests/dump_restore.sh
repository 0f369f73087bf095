#!/usr/bin/env bash
# pg_dump / pg_restore of a database using wallet_ext, against a running cluster (NAME PORT):
# the restored copy has the same balances and events, verify() is empty, sequences continue where
# they were (no id is reused) and idempotency keys still answer with their first transfer; the
# coordinator's nodes (foreign servers, user mappings), its identity and ledger come along, and it
# goes on coordinating with them.
source "$(dirname "$0")/../scripts/lib.sh"
name="$1"; port="$2"
socket="$(cluster_socket "$name")"
q() { local db="$1"; shift; psql_at "$name" "$port" "$db" -tA "$@"; }

q postgres -c "DROP DATABASE IF EXISTS wallet_dump_src" -c "DROP DATABASE IF EXISTS wallet_dump_dst" \
           -c "DROP DATABASE IF EXISTS wallet_dump_peer" -c "CREATE DATABASE wallet_dump_peer" \
           -c "CREATE DATABASE wallet_dump_src" -c "CREATE DATABASE wallet_dump_dst" >/dev/null
q wallet_dump_peer -c "CREATE EXTENSION wallet_ext" -c "SELECT wallet.create_currency('EUR')" \
    -c "SELECT wallet.open_account('EUR', 'p')" >/dev/null
peer="host=$socket port=$port dbname=wallet_dump_peer user=postgres password=not-needed-here"
q wallet_dump_src >/dev/null <<'SQL'
CREATE EXTENSION wallet_ext;
SELECT wallet.create_currency('EUR');
SELECT wallet.open_account('EUR', 'a'), wallet.open_account('EUR', 'b');
SELECT wallet.deposit(2, 500, 'dump-key');
SELECT wallet.transfer(2, 3, 100);
SELECT wallet.freeze_account(3);
SELECT wallet.seal();
SELECT wallet.seal();  -- the second round posts the account histories
SELECT wallet.deposit(2, 10);  -- and this one stays in the chains
SQL
q wallet_dump_src -c "SELECT wallet.register_node('peer', '$peer')" >/dev/null
q wallet_dump_src -c "CALL wallet.transfer_across('dump-2pc', 'local', 2, 'peer', 2, 5, protocol => '2pc')" >/dev/null
"$PG_BIN/pg_dump" -h "$socket" -p "$port" -U postgres -Fc wallet_dump_src > "$WORK_DIR/wallet_dump.pgdump"
"$PG_BIN/pg_restore" -h "$socket" -p "$port" -U postgres -d wallet_dump_dst "$WORK_DIR/wallet_dump.pgdump"

state="SELECT string_agg(concat_ws(':', id, balance, status), ',' ORDER BY id) FROM wallet.accounts"
events="SELECT count(*) || '/' || max(seq) FROM wallet.events"
[ "$(q wallet_dump_src -c "$state")" = "$(q wallet_dump_dst -c "$state")" ] || die "accounts differ after restore"
[ "$(q wallet_dump_src -c "$events")" = "$(q wallet_dump_dst -c "$events")" ] || die "events differ after restore"
[ "$(q wallet_dump_dst -c "SELECT count(*) FROM wallet.verify()")" = 0 ] || die "verify() not empty after restore"
[ "$(q wallet_dump_src -c "SELECT last_hash FROM wallet.chain_head()")" = \
  "$(q wallet_dump_dst -c "SELECT last_hash FROM wallet.chain_head()")" ] || die "chain head differs after restore"
[ "$(q wallet_dump_dst -c "SELECT count(*) FROM wallet.verify_chain()")" = 0 ] || die "chain broken after restore"
first="$(q wallet_dump_src -c "SELECT seq FROM wallet.events WHERE idempotency_key = 'dump-key'")"
[ "$(q wallet_dump_dst -c "SELECT wallet.deposit(2, 500, 'dump-key')")" = "$first" ] || die "key lost its first answer"
max_seq="$(q wallet_dump_src -c "SELECT max(seq) FROM wallet.events")"
new_seq="$(q wallet_dump_dst -c "SELECT wallet.deposit(2, 1)")"
[ "$new_seq" -gt "$max_seq" ] || die "event sequence restarted: $new_seq <= $max_seq"
new_id="$(q wallet_dump_dst -c "SELECT wallet.open_account('EUR')")"
[ "$new_id" = 4 ] || die "account id sequence restarted: got $new_id"
[ "$(q wallet_dump_dst -c "SELECT has_table_privilege('wallet_reader', 'wallet.events', 'SELECT')")" = t ] \
    || die "grants lost"
[ "$(q wallet_dump_dst -c "SELECT wallet.seal()")" -ge 1 ] || die "sealing does not continue after restore"
[ "$(q wallet_dump_dst -c "SELECT count(*) FROM wallet.verify_chain()")" = 0 ] || die "chain broken after sealing on"
# Account histories: postings, links and last_seq came along, and posting goes on.
q wallet_dump_dst -c "SELECT wallet.seal()" -c "SELECT wallet.seal()" >/dev/null
[ "$(q wallet_dump_dst -c "SELECT count(*) FROM wallet.verify_postings()")" = 0 ] || die "account histories broken after restore"
[ "$(q wallet_dump_dst -c "SELECT count(*) FROM wallet.statement(2, 0, 1000)")" = \
  "$(q wallet_dump_src -c "SELECT count(*) + 1 FROM wallet.statement(2, 0, 1000)")" ] || die "statement of account 2 differs after restore"
# The coordinator: its node (server options, the owner's user mapping with the password), its
# identity (the prefix of its prepared transactions' gids) and ledger; and it goes on.
nodes="SELECT string_agg(n.name || ' ' || array_to_string(ARRAY(SELECT o FROM unnest(s.srvoptions) o ORDER BY o), ' ') || ' / '
                         || array_to_string(ARRAY(SELECT o FROM unnest(m.umoptions) o ORDER BY o), ' '), '; ')
         FROM wallet.nodes n JOIN pg_foreign_server s ON s.srvname = n.server JOIN pg_user_mapping m ON m.umserver = s.oid"
ledger="SELECT string_agg(g.gtid || ' ' || g.protocol || ' ' || g.outcome || ' ' || b.node || ':' || b.status || ':' || coalesce(b.gid, '-'), ', ' ORDER BY b.branch_no)
          FROM wallet.global_transactions g JOIN wallet.branches b USING (gtid)"
for check in "$nodes" "$ledger" "SELECT id FROM wallet.coordinator_identity"; do
    [ "$(q wallet_dump_src -c "$check")" = "$(q wallet_dump_dst -c "$check")" ] \
        || die "after restore, $(q wallet_dump_dst -c "$check") instead of $(q wallet_dump_src -c "$check")"
done
[ "$(q wallet_dump_dst -c "CALL wallet.transfer_across('dump-tcc', 'local', 2, 'peer', 2, 7)")" = confirmed ] \
    || die "the restored coordinator cannot reach its node"
[ "$(q wallet_dump_peer -c "SELECT balance FROM wallet.accounts WHERE id = 2")" = 12 ] \
    || die "the peer did not receive both global transactions"
log "dump/restore: state, events, keys, sequences, grants, the hash chain, account histories and the coordinator (nodes, identity, ledger) survive"
