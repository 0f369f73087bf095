#!/usr/bin/env bash
# Concurrency test: many pgbench clients at once against a running cluster (NAME PORT of
# scripts/lib.sh), at READ COMMITTED and at SERIALIZABLE (serialization failures retried, as a
# client should), mixing transfers, idempotent retries racing on shared keys, batches, and reads;
# then the invariants of MISSION.md (tests/concurrency/check.sql). Exit status 0 only if all hold.
source "$(dirname "$0")/../scripts/lib.sh"
name="$1"; port="$2"
here="$REPO_ROOT/tests/concurrency"
clients="${WALLET_CONC_CLIENTS:-8}"
transactions="${WALLET_CONC_TRANSACTIONS:-1500}"

psql_at "$name" "$port" postgres -c "DROP DATABASE IF EXISTS wallet_conc" -c "CREATE DATABASE wallet_conc"
psql_at "$name" "$port" wallet_conc -f "$here/setup.sql" >/dev/null

pgbench() {
    "$PG_BIN/pgbench" -n -h "$(cluster_socket "$name")" -p "$port" -U postgres \
        -c "$clients" -j 2 -t "$transactions" -M prepared --max-tries=100 "$@" wallet_conc
}
# run NAME [pgbench options, e.g. another -t]
run() {
    local script="$1"; shift
    log "pgbench: $clients clients, $script ${*:-x $transactions transactions}"
    pgbench -f "$here/$script.pgbench" "$@" > "$WORK_DIR/conc-$script.log" 2>&1 || {
        cat "$WORK_DIR/conc-$script.log"; die "pgbench ($script) failed"; }
    grep -E "processed|failed|retried|tps" "$WORK_DIR/conc-$script.log" | sed 's/^/  /'
}
deadlocks() {
    psql_at "$name" "$port" wallet_conc -tA -c \
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
}
# One wallet call per transaction: two transfers lock their accounts in ascending id order, so
# no deadlock may ever happen, at either isolation level. At SERIALIZABLE one transaction in ten
# is a batch of 40 (serialization failures retried).
run read_committed
run serializable
# Batches of 40 racing single calls (half the transactions each), keys shared with them.
# Batches lock their accounts in ascending id order too.
run batches
[ "$(deadlocks)" = 0 ] || die "$(deadlocks) deadlocks among single-call transactions"
# Two calls per transaction: the order across calls is the client's, so deadlocks (40P01) and
# serialization failures (40001) are possible and retried, as a client must.
run serializable_two_calls
# Holds: try / confirm / partial confirm / cancel / expiry racing on 400 shared keys, with plain
# transfers competing for the same funds. One call per transaction: no deadlock allowed.
before=$(deadlocks)
run holds -t 3000   # 20 ms holds expire while others act on them
[ "$(deadlocks)" = "$before" ] || die "deadlocks among hold calls: $before -> $(deadlocks)"
psql_at "$name" "$port" wallet_conc -f "$here/check_holds.sql"
log "invariants"
psql_at "$name" "$port" wallet_conc -f "$here/check.sql"
# Global transactions of this node alone: single calls (whose ledger row is written directly,
# looked up first) racing batches (which take no claim per item) on 300 shared gtids; a row
# recorded between the look-up and the insert is a 40001, retried.
psql_at "$name" "$port" wallet_conc -c "CREATE TABLE conc.here_base AS SELECT id, balance FROM wallet.accounts" >/dev/null
run here -t 300
psql_at "$name" "$port" wallet_conc -f "$here/check_here.sql"
# A DBA's lock on the ledger of global transactions holds up no plain transfer: only the ledger's
# own writer opens that table, so a new session (whose catalog is resolved afresh) transfers
# while another holds the table in ACCESS EXCLUSIVE mode.
psql_at "$name" "$port" wallet_conc -c "BEGIN" -c "LOCK TABLE wallet.global_transactions IN ACCESS EXCLUSIVE MODE" \
    -c "SELECT pg_sleep(6)" -c "COMMIT" >/dev/null &
locker=$!
sleep 2
PGOPTIONS="-c lock_timeout=3s" psql_at "$name" "$port" wallet_conc -tA \
    -c "SELECT wallet.transfer((SELECT id FROM conc.acct WHERE i = 1), (SELECT id FROM conc.acct WHERE i = 2), 1) > 0" \
    | grep -qx t || die "a transfer waited for a lock on wallet.global_transactions"
wait "$locker"
log "a lock on wallet.global_transactions held up no transfer"
