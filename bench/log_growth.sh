#!/usr/bin/env bash
# The log at scale: loads >= 5 million events with batches into database bench, then measures
# transfer throughput on the full log against an empty one (database bench_empty, same accounts, same
# cluster; runs alternated E F F E E F ...), sealing and read-side rebuild rates, verify()
# with and without a recent snapshot, and point-in-time lookups. Own cluster on port 54363.
#   LOG_EVENTS (default 5,000,000)
source "$(dirname "$0")/../scripts/lib.sh"
PORT="${BENCH_PORT:-54363}"
EVENTS="${LOG_EVENTS:-5000000}"
HERE="$REPO_ROOT/bench"
OUT="$WORK_DIR/log-growth"

ensure_toolchain
WALLET_RELEASE=1 install_extension
cluster_start bench "$PORT" shared_buffers=2GB max_wal_size=16GB checkpoint_timeout=30min fsync=on
psql_at bench "$PORT" postgres -c "CREATE DATABASE bench" >/dev/null
psql_at bench "$PORT" bench -f "$HERE/setup.sql" >/dev/null
psql_at bench "$PORT" postgres -c "CREATE DATABASE bench_empty" >/dev/null
psql_at bench "$PORT" bench_empty -f "$HERE/setup.sql" >/dev/null
rm -rf "$OUT" && mkdir -p "$OUT"
q() { psql_at bench "$PORT" bench -tA "$@"; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
tps() { # tps SCRIPT SECONDS CLIENTS [DATABASE]
    PGOPTIONS="-c synchronous_commit=off" "$PG_BIN/pgbench" -n -M prepared -h "$(cluster_socket bench)" \
        -p "$PORT" -U postgres -c "$3" -j "$3" -T "$2" -f "$1" "${4:-bench}" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
report() { printf '| %s | %s |\n' "$1" "$2" | tee -a "$OUT/results.md"; }

printf '| measure | value |\n|---|---|\n' > "$OUT/results.md"
log "loading $EVENTS events with transfer_batch (8,000 per call)"
calls=$(( (EVENTS + 7999) / 8000 ))
load_s=$(seconds "$PG_BIN/pgbench" -n -M prepared -h "$(cluster_socket bench)" -p "$PORT" -U postgres \
    -c 2 -j 2 -t $(( (calls + 1) / 2 )) -f "$HERE/batch_8000.pgbench" bench)
q -c "VACUUM ANALYZE wallet.events" >/dev/null
q -c "CHECKPOINT" >/dev/null   # measure the full log without the load's checkpoint still running
total=$(q -c "SELECT count(*) FROM wallet.events")
report "events in the log" "$total"
report "loading with transfer_batch, 2 clients (events/s)" "$(echo "scale=0; ($total - 10001) / $load_s" | bc)"
q -c "VACUUM ANALYZE" >/dev/null
psql_at bench "$PORT" bench_empty -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
empty=() full=()
for order in "E F" "F E" "E F" "F E" "E F"; do
    for db in $order; do
        if [ "$db" = E ]; then empty+=("$(tps "$HERE/wallet_uniform.pgbench" 8 8 bench_empty)")
        else full+=("$(tps "$HERE/wallet_uniform.pgbench" 8 8 bench)"); fi
    done
done
report "A transfers/s, empty log (5 runs, alternated)" "${empty[*]}"
report "A transfers/s, full log (5 runs, alternated)" "${full[*]}"
report "full / empty (medians)" "$(python3 -c "import statistics as s; print(round(s.median([$(IFS=,; echo "${full[*]}")]) / s.median([$(IFS=,; echo "${empty[*]}")]), 2))")"

log "sealing"
seal_s=$(seconds q -c "DO \$\$ BEGIN WHILE wallet.seal(1000000) > 0 LOOP COMMIT; END LOOP; END \$\$")
sealed=$(q -c "SELECT last_position FROM wallet.chain_head()")
report "seal(): events sealed" "$sealed"
report "seal() rate (events/s)" "$(echo "scale=0; $sealed / $seal_s" | bc)"
log "rebuilding the read side from zero"
rebuild_s=$(seconds q -c "SELECT wallet.rebuild_read_side()")
report "rebuild_read_side() rate (events/s)" "$(echo "scale=0; $sealed / $rebuild_s" | bc)"
report "verify(from_snapshot => false), no snapshot (s)" "$(seconds q -c "SELECT count(*) FROM wallet.verify(false)")"
q -c "SELECT wallet.take_snapshot()" >/dev/null
tps "$HERE/wallet_uniform.pgbench" 3 8 >/dev/null   # a tail of fresh transfers after the snapshot
report "tail after the snapshot (events)" "$(q -c "SELECT count(*) FROM wallet.events e, (SELECT * FROM wallet.snapshots ORDER BY snapshot_id DESC LIMIT 1) s WHERE (e.tx_id, e.seq) > (s.last_tx_id, s.last_seq)")"
report "verify() from the snapshot (s)" "$(seconds q -c "SELECT count(*) FROM wallet.verify()")"
report "verify(from_snapshot => false) (s)" "$(seconds q -c "SELECT count(*) FROM wallet.verify(false)")"
report "check_snapshot() (s)" "$(seconds q -c "SELECT count(*) FROM wallet.check_snapshot((SELECT max(snapshot_id) FROM wallet.snapshots))")"
report "verify_chain() over the whole chain (s)" "$(seconds q -c "SELECT count(*) FROM wallet.verify_chain()")"

log "point-in-time lookups"
load_from=$(q -c "SELECT min(occurred_at) FROM wallet.events WHERE seq > 10001")
cat > "$OUT/at_time.pgbench" <<PGB
\set a random(2, 10001)
\set back random(0, 100)
SELECT wallet.balance_at_time(:a, timestamptz '$load_from' + (:back || ' seconds')::interval);
PGB
cat > "$OUT/at_seq.pgbench" <<PGB
\set a random(2, 10001)
\set s random(10001, $total)
SELECT wallet.balance_at(:a, :s);
PGB
for f in at_time at_seq; do
    lat=$("$PG_BIN/pgbench" -n -M prepared -h "$(cluster_socket bench)" -p "$PORT" -U postgres -c 1 -T 5 \
        -f "$OUT/$f.pgbench" bench 2>&1 | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    report "balance_$f average latency, 1 client (ms)" "$lat"
done
cluster_stop bench
log "results in $OUT/results.md"
