#!/usr/bin/env bash
# Global transactions of every protocol (TC/C, 2PC, Saga) while whole servers are killed: three
# databases (n1, n2 on cluster mnA, n3 on cluster mnB), both clusters with wallet_ext preloaded
# and its worker on. The load, the crashes and the checks are in tests/multinode.py (run with the
# venv's psycopg). Then: 2PC refused up front by a node that cannot prepare transactions (a third
# cluster, mnC), and the background worker's settings.
# Usage: tests/multinode.sh PYTHON [SECONDS]
source "$(dirname "$0")/../scripts/lib.sh"

PYTHON="$1"
SECONDS_OF_LOAD="${2:-45}"
PORT_A=54366
PORT_B=54367
PORT_C=54371
common=("shared_preload_libraries=wallet_ext" "max_connections=60")
cluster_start mnA "$PORT_A" "${common[@]}" "wallet.worker_databases='n1,n2'"
cluster_start mnB "$PORT_B" "${common[@]}" "wallet.worker_databases='n3'"
trap 'cluster_stop mnA; cluster_stop mnB; cluster_stop mnC' EXIT
# Reloadable worker settings go to postgresql.auto.conf, not the command line (which would win
# over any later ALTER SYSTEM the checks at the end make).
psql_at mnA "$PORT_A" postgres -c "ALTER SYSTEM SET wallet.worker_interval = '200ms'" -c "SELECT pg_reload_conf()" >/dev/null
psql_at mnB "$PORT_B" postgres -c "ALTER SYSTEM SET wallet.worker_interval = '200ms'" -c "SELECT pg_reload_conf()" >/dev/null
psql_at mnA "$PORT_A" postgres -c "CREATE DATABASE n1" -c "CREATE DATABASE n2"
psql_at mnB "$PORT_B" postgres -c "CREATE DATABASE n3"

"$PYTHON" "$REPO_ROOT/tests/multinode.py" "$(cluster_socket mnA)" "$PORT_A" \
    "$(cluster_socket mnB)" "$PORT_B" "$REPO_ROOT" "$SECONDS_OF_LOAD"
# The workers were there all along: each one logged its start after every crash.
for name in mnA mnB; do
    n=$(grep -c "wallet_ext worker started" "$WORK_DIR/$name/server.log" || true)
    log "$name: the wallet_ext worker logged $n starts"
    [ "$n" -ge 1 ] || die "no wallet_ext worker ran on $name"
done

# The worker recovers by itself: a 2PC global transaction whose coordinator stopped after the
# nodes prepared is rolled back by n1's worker (no CALL wallet.recover() here), and a TC/C one
# stopped after its decision is confirmed by it.
psql_at mnA "$PORT_A" n1 -v ON_ERROR_STOP=0 -c "SET wallet.fault = 'after_remote_try'" \
    -c "CALL wallet.transfer_across('by-worker-2pc', 'local', 2, 'n3', 3, 7, protocol => '2pc')" \
    -c "SET wallet.fault = 'after_decide'" \
    -c "CALL wallet.transfer_across('by-worker-tcc', 'local', 2, 'n3', 3, 7)" >/dev/null 2>&1 || true
for _ in $(seq 100); do
    done_by=$(psql_at mnA "$PORT_A" n1 -tA -c "SELECT string_agg(gtid || '=' || coalesce(outcome, '-') || '/' || coalesce(finished_by, '-'), ' ' ORDER BY gtid)
                                                 FROM wallet.global_transactions WHERE gtid LIKE 'by-worker-%'")
    [ "$done_by" = "by-worker-2pc=cancelled/recovery by-worker-tcc=confirmed/recovery" ] && break
    sleep 0.2
done
[ "$done_by" = "by-worker-2pc=cancelled/recovery by-worker-tcc=confirmed/recovery" ] \
    || die "the worker did not finish the interrupted global transactions: $done_by"
[ "$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM pg_prepared_xacts")" = 0 ] \
    || die "the worker left a prepared transaction on n3"
for name in mnA mnB; do
    ! grep -E "wallet_ext worker: recovery:.*(INTERNAL|internal)" "$WORK_DIR/$name/server.log" \
        || die "$name: the worker's recovery met an internal error"
done
log "worker: finished a stopped 2PC (rolled back) and a stopped TC/C (confirmed) by itself; its recovery never failed"

# A node whose max_prepared_transactions is 0 cannot take part in 2PC: refused with WA030
# before anything is recorded or moved; TC/C and Saga with the same node go through.
cluster_start mnC "$PORT_C" "max_prepared_transactions=0"
psql_at mnC "$PORT_C" postgres -c "CREATE DATABASE n4"
psql_at mnC "$PORT_C" n4 -c "CREATE EXTENSION wallet_ext" -c "SELECT wallet.create_currency('EUR')" \
    -c "SELECT wallet.open_account('EUR')" >/dev/null
psql_at mnA "$PORT_A" n1 -c "SELECT wallet.register_node('n4', 'host=$(cluster_socket mnC) port=$PORT_C dbname=n4 user=postgres')" >/dev/null
money_n1() { psql_at mnA "$PORT_A" n1 -tA -c "SELECT balance FROM wallet.accounts WHERE id = 2"; }
before=$(money_n1)
state=$(psql_at mnA "$PORT_A" n1 -tA -v ON_ERROR_STOP=0 2>/dev/null <<'SQL'
CALL wallet.transfer_across('no-2pc', 'local', 2, 'n4', 2, 5, protocol => '2pc');
\echo :LAST_ERROR_SQLSTATE
SQL
)
[ "$state" = WA030 ] || die "2PC to a node without prepared transactions: '$state', not WA030"
[ "$(psql_at mnA "$PORT_A" n1 -tA -c "SELECT count(*) FROM wallet.global_transactions WHERE gtid = 'no-2pc'")" = 0 ] \
    || die "the refused 2PC global transaction was recorded"
[ "$(money_n1)" = "$before" ] || die "the refused 2PC global transaction moved money"
for protocol in tcc saga; do
    outcome=$(psql_at mnA "$PORT_A" n1 -tA -c "CALL wallet.transfer_across('to-n4-$protocol', 'local', 2, 'n4', 2, 5, protocol => '$protocol')")
    [ "$outcome" = confirmed ] || die "$protocol to n4: $outcome"
done
[ "$(psql_at mnC "$PORT_C" n4 -tA -c "SELECT balance FROM wallet.accounts WHERE id = 2")" = 10 ] \
    || die "n4 did not receive the TC/C and Saga transfers"
cluster_stop mnC
log "2PC to a node with max_prepared_transactions = 0: WA030, nothing recorded or moved; TC/C and Saga to it confirmed"

# The worker's settings: with wallet.worker_enabled off (reload) an expired hold stays pending;
# switched on again, the worker releases it within a few rounds.
psql_at mnB "$PORT_B" n3 -c "ALTER SYSTEM SET wallet.worker_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
psql_at mnB "$PORT_B" n3 -c "SELECT wallet.try_hold('worker-check', 'b', 2, 3, 1, interval '1 second')" >/dev/null
sleep 2
status=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT status FROM wallet.holds WHERE gtid = 'worker-check'")
[ "$status" = pending ] || die "worker off, yet the hold is $status"
psql_at mnB "$PORT_B" n3 -c "ALTER SYSTEM SET wallet.worker_enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 50); do
    status=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT status FROM wallet.holds WHERE gtid = 'worker-check'")
    [ "$status" = expired ] && break
    sleep 0.2
done
[ "$status" = expired ] || die "worker on, yet the expired hold is $status"
log "worker: off -> expired hold left pending; on -> released by the worker"

# A prepared transaction that outlived its global transaction (a PREPARE that reached n2 after
# its coordinator gave up on it) holds n2's system account row; a TC/C transfer decided to
# confirm needs that row on n2. One CALL wallet.recover() must sweep the first before it drives
# the second: driven first, the confirm would wait for the lock until it timed out, and a hold
# could run out meanwhile (the CI failure of 2026-12-01). The worker is off, so that the call
# below is the only recovery.
psql_at mnA "$PORT_A" n1 -c "ALTER SYSTEM SET wallet.worker_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
psql_at mnA "$PORT_A" n1 -v ON_ERROR_STOP=0 -c "SET wallet.fault = 'after_decide'" \
    -c "CALL wallet.transfer_across('behind-orphan', 'local', 2, 'n2', 3, 7)" >/dev/null 2>&1 || true
[ "$(psql_at mnA "$PORT_A" n1 -tA -c "SELECT phase || '/' || (finished_at IS NULL) FROM wallet.global_transactions WHERE gtid = 'behind-orphan'")" = confirm/true ] \
    || die "behind-orphan did not stop after its decision to confirm"
coordinator_id=$(psql_at mnA "$PORT_A" n1 -tA -c "SELECT id FROM wallet.coordinator_identity")
psql_at mnA "$PORT_A" n2 -v ON_ERROR_STOP=1 >/dev/null <<SQL
BEGIN;
SELECT * FROM wallet.post_branch(ARRAY['orphan-posting'], ARRAY[2::bigint], ARRAY[NULL::bigint], ARRAY[5::bigint], ARRAY[false]);
PREPARE TRANSACTION 'wallet:$coordinator_id:00000000000000000000000000000000:2';
SQL
read -r finished unfinished < <(psql_at mnA "$PORT_A" n1 -tA -F ' ' -c "CALL wallet.recover()")
outcome=$(psql_at mnA "$PORT_A" n1 -tA -c "SELECT coalesce(outcome, '-') FROM wallet.global_transactions WHERE gtid = 'behind-orphan'")
[ "$outcome" = confirmed ] && [ "$unfinished" = 0 ] \
    || die "one recover() behind an orphan prepared transaction: behind-orphan $outcome, $finished finished, $unfinished unfinished"
[ "$(psql_at mnA "$PORT_A" n2 -tA -c "SELECT count(*) FROM pg_prepared_xacts")" = 0 ] \
    || die "recover() left the orphan prepared transaction on n2"
[ "$(psql_at mnA "$PORT_A" n2 -tA -c "SELECT count(*) FROM wallet.events WHERE idempotency_key = 'orphan-posting'")" = 0 ] \
    || die "the orphan's posting was committed"
psql_at mnA "$PORT_A" n1 -c "ALTER SYSTEM SET wallet.worker_enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
log "recover(): an orphan prepared transaction holding n2's system account rolled back first, then the confirm behind it delivered, in one call"

# The worker's upkeep in every database it serves: it sealed the log, refreshed the read side and
# took snapshots on its schedule (the first at once; then every wallet.snapshot_interval).
for target in "mnA $PORT_A n1" "mnA $PORT_A n2" "mnB $PORT_B n3"; do
    read -r name port db <<<"$target"
    read -r snapshots sealed applied < <(psql_at "$name" "$port" "$db" -tA -F ' ' -c \
        "SELECT (SELECT count(*) FROM wallet.snapshots), (SELECT count(*) FROM wallet.chain),
                (SELECT coalesce(max(last_position), 0) FROM wallet.read_state)")
    [ "$snapshots" -ge 1 ] && [ "$sealed" -gt 0 ] && [ "$applied" -gt 0 ] \
        || die "$db: worker upkeep missing (snapshots $snapshots, sealed $sealed, read side at $applied)"
    log "$db: worker took $snapshots snapshot(s), sealed $sealed events, read side at position $applied"
done
before=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.snapshots")
psql_at mnB "$PORT_B" n3 -c "ALTER SYSTEM SET wallet.snapshot_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 3.5
after=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.snapshots")
[ "$after" -ge $((before + 2)) ] || die "snapshot_interval 1s: $before -> $after snapshots in 3.5 s"
[ "$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.check_snapshot((SELECT max(snapshot_id) FROM wallet.snapshots))")" = 0 ] \
    || die "the worker's latest snapshot plus its tail differs from a replay from zero"
log "worker snapshots: $before -> $after in 3.5 s with wallet.snapshot_interval = 1s; the latest checks out"

# wallet.worker_interval: with 3 s between rounds, a snapshot due every second is taken at most
# once a round (at most 4 in 7 s; with the 200 ms of this test it would be about 7).
before=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.snapshots")
psql_at mnB "$PORT_B" n3 -c "ALTER SYSTEM SET wallet.worker_interval = '3s'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 7
after=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.snapshots")
[ $((after - before)) -ge 1 ] && [ $((after - before)) -le 4 ] \
    || die "worker_interval 3s: $((after - before)) snapshots in 7 s (expected 1 to 4)"
log "worker_interval 3s: $((after - before)) rounds with a snapshot in 7 s"

# wallet.worker_read_side: off, the worker seals nothing (snapshots off too, since a snapshot
# seals); on again, it seals what was written meanwhile.
psql_at mnB "$PORT_B" n3 -c "ALTER SYSTEM SET wallet.worker_interval = '200ms'" \
    -c "ALTER SYSTEM SET wallet.snapshot_interval = 0" -c "ALTER SYSTEM SET wallet.worker_read_side = off" \
    -c "SELECT pg_reload_conf()" >/dev/null
sleep 3.5   # the round under way (up to 3 s) ends, the next ones run with the new settings
sealed=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.chain")
psql_at mnB "$PORT_B" n3 -c "SELECT wallet.transfer(2, 3, 1)" >/dev/null
sleep 1.5
[ "$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.chain")" = "$sealed" ] \
    || die "worker_read_side off, yet the worker sealed"
psql_at mnB "$PORT_B" n3 -c "ALTER SYSTEM SET wallet.worker_read_side = on" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 50); do
    now=$(psql_at mnB "$PORT_B" n3 -tA -c "SELECT count(*) FROM wallet.chain")
    [ "$now" -gt "$sealed" ] && break
    sleep 0.2
done
[ "$now" -gt "$sealed" ] || die "worker_read_side on again, yet nothing sealed"
log "worker_read_side: off -> nothing sealed in 1.5 s; on -> sealed"
