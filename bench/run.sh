#!/usr/bin/env bash
# The benchmark suite. Starts its own cluster (port 54363), builds wallet_ext in release mode,
# loads bench/setup.sql, then runs pgbench workloads for
#   A  wallet.transfer, one per transaction, no idempotency key
#   K  wallet.transfer with a fresh idempotency key every call
#   F  the plain-SQL floor (floor.transfer in setup.sql)
# alternately (A K F, K F A, F A K, ...) for each workload, REPEAT times, and prints medians and
# ratios to F. Workloads: uniform pairs over 10,000 accounts with 8 clients, 10 hot accounts with
# 8 clients, uniform with 1 client; each with synchronous_commit on and off. Then the batch API
# by batch size, and Try-Confirm/Cancel against A (workload tcc8, synchronous_commit off):
#   H  wallet.try_hold then wallet.confirm_hold (two transactions), local
#   L  CALL wallet.transfer_across with both accounts here (coordinator, one branch)
#   X  CALL wallet.transfer_across to node n2 (a second database of the same cluster, dblink)
# Last, seal() over everything written (no worker runs during the runs): its CPU per event, the work
# transfers leave to the sealer (hash chain and account histories).
#   BENCH_SECONDS (default 10)  BENCH_REPEAT (default 3)  BENCH_ONLY="uniform8:off batch tcc" (subset)
# Raw rows go to $WALLET_WORK_DIR/bench-results/runs.tsv; the summary to stdout and summary.md there.
source "$(dirname "$0")/../scripts/lib.sh"

PORT="${BENCH_PORT:-54363}"
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
REPEAT="${BENCH_REPEAT:-3}"
OUT="$WORK_DIR/bench-results"
HERE="$REPO_ROOT/bench"

ensure_toolchain
WALLET_RELEASE=1 install_extension
log "starting the bench cluster on port $PORT"
cluster_start bench "$PORT" shared_buffers=1GB max_wal_size=8GB min_wal_size=4GB checkpoint_timeout=30min \
    wal_buffers=64MB fsync=on
psql_at bench "$PORT" postgres -c "CREATE DATABASE bench"
log "loading accounts"
psql_at bench "$PORT" bench -f "$HERE/setup.sql" >/dev/null
# Node n2 for cross-node transfers: the same accounts in a second database.
psql_at bench "$PORT" postgres -c "CREATE DATABASE bench_n2"
psql_at bench "$PORT" bench_n2 -f "$HERE/setup.sql" >/dev/null
psql_at bench "$PORT" bench -c "CREATE EXTENSION dblink" \
    -c "SELECT wallet.register_node('n2', 'host=$(cluster_socket bench) port=$PORT dbname=bench_n2 user=postgres')" >/dev/null
# Settle the freshly loaded tables before measuring (autovacuum would otherwise run during the
# first runs).
psql_at bench "$PORT" bench -c "VACUUM ANALYZE" >/dev/null
psql_at bench "$PORT" bench_n2 -c "VACUUM ANALYZE" >/dev/null
rm -rf "$OUT" && mkdir -p "$OUT" && chmod 777 "$OUT"

postmaster_pid() { as_root head -1 "$WORK_DIR/bench/data/postmaster.pid"; }
# CPU time of the whole cluster in clock ticks: the postmaster with its reaped children
# (cutime, cstime hold the backends that exited) plus every live child.
cluster_ticks() {
    local pm total=0 pid
    pm="$(postmaster_pid)"
    total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
    for pid in $(pgrep -P "$pm"); do
        [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
TICKS_PER_SECOND="$(getconf CLK_TCK)"

# run SYSTEM WORKLOAD CLIENTS SYNC REP
run() {
    local system="$1" workload="$2" clients="$3" sync="$4" rep="$5" script accounts per_tx=1
    case "$workload" in hot*) accounts=hot ;; *) accounts=uniform ;; esac
    case "$system" in
        A) script="wallet_$accounts" ;; K) script="wallet_keyed_$accounts" ;; F) script="floor_$accounts" ;;
        B*) per_tx="${system#B}"; script="batch_$per_tx" ;;
        H) script=hold_pair ;; L) script=across_local ;; X) script=across_remote ;;
    esac
    local tag="$system-$workload-$sync-$rep" before after
    rm -f "$OUT"/log.*
    # Every run starts just after a checkpoint, with the WAL segments the previous runs filled
    # recycled for it: none of it pays for a checkpoint begun by another run, or for creating
    # (zero-filling) new segments, which a server in steady state does not do (measured at 6-12%
    # of a batch run's samples without it, bench/RESULTS.md section 3).
    psql_at bench "$PORT" bench -qc "CHECKPOINT"
    before="$(cluster_ticks)"
    PGOPTIONS="-c synchronous_commit=$sync" "$PG_BIN/pgbench" -n -M prepared \
        -h "$(cluster_socket bench)" -p "$PORT" -U postgres -c "$clients" -j "$clients" \
        -T "$SECONDS_PER_RUN" -l --log-prefix="$OUT/log" -f "$HERE/$script.pgbench" \
        bench > "$OUT/$tag.out" 2>&1 || { cat "$OUT/$tag.out"; die "pgbench $tag failed"; }
    sleep 0.3   # let the postmaster reap the backends, so their CPU shows in cutime/cstime
    after="$(cluster_ticks)"
    local tps count p99 avg
    tps="$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/$tag.out")"
    count="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/$tag.out")"
    read -r avg p99 < <(cat "$OUT"/log.* | awk '{print $3}' | sort -n |
        awk '{v[NR]=$1; s+=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f %.3f\n", s/NR/1000, v[i]/1000}')
    # per transfer: a batch transaction carries per_tx transfers
    tps="$(awk -v t="$tps" -v n="$per_tx" 'BEGIN {printf "%.1f", t * n}')"
    local cpu_us
    cpu_us="$(awk -v t="$((after - before))" -v hz="$TICKS_PER_SECOND" -v c="$count" -v n="$per_tx" \
        'BEGIN {printf "%.2f", t * 1000000 / hz / c / n}')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$workload" "$sync" "$rep" "$tps" "$avg" "$p99" "$cpu_us" \
        | tee -a "$OUT/runs.tsv"
}

printf 'system\tworkload\tsync\trep\ttps\tavg_ms\tp99_ms\tcpu_us\n' > "$OUT/runs.tsv"
orders=("A K F" "K F A" "F A K")
for rep in $(seq 1 "$REPEAT"); do
    for workload in uniform8 hot8 uniform1; do
        clients=8; [ "$workload" = uniform1 ] && clients=1
        for sync in off on; do
            [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $workload:$sync "* ]] && continue
            for system in ${orders[$(( (rep - 1) % 3 ))]}; do
                run "$system" "$workload" "$clients" "$sync" "$rep"
            done
        done
    done
done

# The batch API: batches of 1 .. 8,000 transfers, 2 clients, synchronous_commit on, alternating
# sizes in each repetition. transfers/s = transactions/s x batch size.
if [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" batch "* ]]; then
    for rep in $(seq 1 "$REPEAT"); do
        for size in 8000 1 1000 10 100; do
            run "B$size" batch2 2 on "$rep"
        done
    done
fi

# Try-Confirm/Cancel against a plain local transfer (A), alternated.
if [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" tcc "* ]]; then
    tcc_orders=("A H L X" "H L X A" "L X A H" "X A H L")
    for rep in $(seq 1 "$REPEAT"); do
        for system in ${tcc_orders[$(( (rep - 1) % 4 ))]}; do
            run "$system" tcc8 8 off "$rep"
        done
    done
fi

# The work transfers leave to the sealer (hash chain and account histories, wallet.seal()):
# its CPU time per event, on everything the runs above wrote.
before="$(cluster_ticks)"
sealed=0
for _ in $(seq 1 200); do   # each call seals and posts up to 1,000,000 events
    n="$(psql_at bench "$PORT" bench -tA -c "SELECT wallet.seal(1000000)")"
    done_posting="$(psql_at bench "$PORT" bench -tA -c "SELECT posted_seq >= (SELECT max(seq) FROM wallet.events) FROM wallet.seal_state")"
    sealed=$((sealed + n))
    [ "$n" = 0 ] && [ "$done_posting" = t ] && break
done
after="$(cluster_ticks)"
awk -v t="$((after - before))" -v hz="$TICKS_PER_SECOND" -v n="$sealed" -v p="$done_posting" \
    'BEGIN {printf "seal(): %d events sealed and posted (all posted: %s), %.2f us CPU per event\n", n, p, t * 1000000 / hz / n}' \
    | tee "$OUT/seal.txt"
psql_at bench "$PORT" bench -tA -c "SELECT 'verify_postings() problems: ' || count(*) FROM wallet.verify_postings()"

log "consistency after the runs"
psql_at bench "$PORT" bench_n2 -tA -c "SELECT 'n2 verify() differences: ' || count(*) FROM wallet.verify()"
psql_at bench "$PORT" bench -tA -c "SELECT 'unfinished global transactions: ' || count(*) FROM wallet.global_transactions WHERE finished_at IS NULL" \
    -c "SELECT 'verify() differences: ' || count(*) FROM wallet.verify()" \
    -c "SELECT 'trial balance: ' || string_agg(currency || ' ' || total_balance || ' / ' || forbidden_negative_accounts, ', ') FROM wallet.trial_balance()"
python3 "$HERE/summarize.py" "$OUT/runs.tsv" | tee "$OUT/summary.md"
cluster_stop bench
