#!/usr/bin/env bash
# The three protocols side by side (README "Choosing a protocol"; figures in bench/RESULTS.md).
# One cluster (port 54363, as bench/run.sh's) with three databases: bench (the coordinator, node
# 'local'), bench_n2 and bench_n3, each with bench/setup.sql's 10,000 accounts. Then:
#  1. throughput, alternated in every repetition, 8 clients, synchronous_commit off:
#       A   a local wallet.transfer (the reference)
#       T2 P2 S2   TC/C, 2PC, Saga: 2 legs, from an account here to one on n2 (two nodes)
#       T3 P3 S3   the same, 3 legs: from here to n2 and n3 (three nodes)
#     transfers/s, average and p99 latency, server CPU per transfer (the whole cluster: every node
#     is on it), commits per transfer (pg_stat_database, the three databases) and participant
#     calls per transfer (pg_stat_user_functions on n2 and n3; a 2PC branch adds its COMMIT
#     PREPARED, counted as one more round trip);
#  2. unavailability of the payer's account: 4 clients move money out of ONE account of n2 to
#     accounts here by each protocol, while a probe on n2 transfers from that same account
#     locally, 1 client: the probe's latency shows how long the account is unavailable;
#  3. a participant's crash: a second cluster (port 54374) holds node m2; the coordinator stops
#     right after m2 answered its try (wallet.fault), m2's cluster is killed (kill -9) and started
#     again 2 s later; then what m2 holds (prepared transactions, pending holds, a probe on the
#     payer's account), and the time from m2's restart to the global transaction's end by recovery;
#  4. what a reader summing the customers' money over here and n2 sees while 2-leg transfers run:
#     the share of its samples that are off, and by how much at most;
#  5. batches (transfer_across_batch) of 1 to 8,000 transfers from here to n2, TC/C and Saga, 2
#     clients, synchronous_commit on: transfers/s by batch size.
#   BENCH_SECONDS (default 10)  BENCH_REPEAT (default 3)
#   PROTOCOLS_ONLY="batch" (or any of: throughput probe crash reader batch) runs just those parts,
#   and prints their raw rows instead of the summary
# Raw rows: $WALLET_WORK_DIR/bench-results/protocols.tsv; summary: protocols.md there.
source "$(dirname "$0")/../scripts/lib.sh"

PORT="${BENCH_PORT:-54363}"
PORT_P=54374
SECONDS_PER_RUN="${BENCH_SECONDS:-10}"
REPEAT="${BENCH_REPEAT:-3}"
OUT="$WORK_DIR/bench-results"
HERE="$REPO_ROOT/bench"
PYTHON="$(ensure_venv)"

ensure_toolchain
WALLET_RELEASE=1 install_extension
common=(shared_buffers=1GB max_wal_size=8GB min_wal_size=4GB checkpoint_timeout=30min wal_buffers=64MB
        fsync=on max_connections=100 track_functions=all)
log "starting the bench cluster on port $PORT"
cluster_start bench "$PORT" "${common[@]}"
cluster_start benchp "$PORT_P" "${common[@]}"
trap 'cluster_stop bench; cluster_stop benchp' EXIT
SOCK="$(cluster_socket bench)"
for db in bench bench_n2 bench_n3; do
    psql_at bench "$PORT" postgres -c "CREATE DATABASE $db" >/dev/null
    psql_at bench "$PORT" "$db" -f "$HERE/setup.sql" >/dev/null
done
psql_at benchp "$PORT_P" postgres -c "CREATE DATABASE bench_m2" >/dev/null
psql_at benchp "$PORT_P" bench_m2 -f "$HERE/setup.sql" >/dev/null
psql_at bench "$PORT" bench \
    -c "SELECT wallet.register_node('n2', 'host=$SOCK port=$PORT dbname=bench_n2 user=postgres')" \
    -c "SELECT wallet.register_node('n3', 'host=$SOCK port=$PORT dbname=bench_n3 user=postgres')" \
    -c "SELECT wallet.register_node('m2', 'host=$(cluster_socket benchp) port=$PORT_P dbname=bench_m2 user=postgres connect_timeout=2')" >/dev/null
for db in bench bench_n2 bench_n3; do psql_at bench "$PORT" "$db" -c "VACUUM ANALYZE" >/dev/null; done
mkdir -p "$OUT" && chmod 777 "$OUT"
SCRIPTS="$OUT/protocol-scripts"
rm -rf "$SCRIPTS" && mkdir -p "$SCRIPTS"

only() { [ -z "${PROTOCOLS_ONLY:-}" ] || [[ " $PROTOCOLS_ONLY " == *" $1 "* ]]; }

# The pgbench scripts. Accounts are ids 2..10001 on every node.
cat > "$SCRIPTS/A.pgbench" <<'EOF'
\set a random(0, 9999)
\set b (:a + random(1, 9999)) % 10000
\set amount random(1, 100)
SELECT wallet.transfer(:a + 2, :b + 2, :amount);
EOF
for p in tcc 2pc saga; do
    letter=$(case $p in tcc) echo T ;; 2pc) echo P ;; saga) echo S ;; esac)
    cat > "$SCRIPTS/${letter}2.pgbench" <<EOF
\\set a random(0, 9999)
\\set b random(0, 9999)
\\set amount random(1, 100)
\\set out -1 * :amount
\\set g random(1, 1000000000000)
CALL wallet.transfer_global('$p-2-' || :client_id || '-' || :g, ARRAY['local', 'n2'], ARRAY[:a + 2, :b + 2]::bigint[], ARRAY[:out, :amount]::bigint[], '$p');
EOF
    cat > "$SCRIPTS/${letter}3.pgbench" <<EOF
\\set a random(0, 9999)
\\set b random(0, 9999)
\\set c random(0, 9999)
\\set amount random(2, 100)
\\set out -1 * :amount
\\set in2 :amount - 1
\\set g random(1, 1000000000000)
CALL wallet.transfer_global('$p-3-' || :client_id || '-' || :g, ARRAY['local', 'n2', 'n3'], ARRAY[:a + 2, :b + 2, :c + 2]::bigint[], ARRAY[:out, :in2, 1]::bigint[], '$p');
EOF
    # Out of one account of n2 (id 7), into accounts here.
    cat > "$SCRIPTS/payer-$p.pgbench" <<EOF
\\set b random(0, 9999)
\\set g random(1, 1000000000000)
CALL wallet.transfer_global('$p-payer-' || :client_id || '-' || :g, ARRAY['n2', 'local'], ARRAY[7, :b + 2]::bigint[], ARRAY[-1, 1]::bigint[], '$p');
EOF
done
cat > "$SCRIPTS/probe.pgbench" <<'EOF'
SELECT wallet.transfer(7, 8, 1);
EOF

postmaster_pid() { as_root head -1 "$WORK_DIR/bench/data/postmaster.pid"; }
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
q() { psql_at bench "$PORT" "$@"; }
commits() {
    q postgres -tA -c "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname IN ('bench', 'bench_n2', 'bench_n3')"
}
participant_calls() {
    local total=0 db n
    for db in bench_n2 bench_n3; do
        n=$(q "$db" -tA -c "SELECT pg_stat_clear_snapshot(); SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
                            WHERE schemaname = 'wallet' AND funcname IN ('tcc_try', 'tcc_confirm', 'tcc_cancel', 'post_branch', 'undo_branch')" | tail -1)
        total=$((total + n))
    done
    echo "$total"
}
# The statistics collector's view lags by up to 500 ms (PGSTAT_MIN_INTERVAL) after a backend ends.
settle_stats() { sleep 1.2; }

# pgbench_run NAME SCRIPT CLIENTS DB: prints tps count avg_ms p99_ms
pgbench_run() {
    local name="$1" script="$2" clients="$3" db="$4"
    rm -f "$OUT/plog-$name".*
    PGOPTIONS="-c synchronous_commit=off" "$PG_BIN/pgbench" -n -M prepared -h "$SOCK" -p "$PORT" \
        -U postgres -c "$clients" -j "$clients" -T "$SECONDS_PER_RUN" -l --log-prefix="$OUT/plog-$name" \
        -f "$script" "$db" > "$OUT/p-$name.out" 2>&1 || { cat "$OUT/p-$name.out"; die "pgbench $name failed"; }
    local tps count
    tps="$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/p-$name.out")"
    count="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/p-$name.out")"
    read -r avg p50 p99 max < <(cat "$OUT/plog-$name".* | awk '{print $3}' | sort -n |
        awk '{v[NR]=$1; s+=$1} END {i=int(NR*0.99); if (i<1) i=1; j=int(NR*0.5); if (j<1) j=1;
              printf "%.3f %.3f %.3f %.3f\n", s/NR/1000, v[j]/1000, v[i]/1000, v[NR]/1000}')
    [ "${count:-0}" -gt 0 ] || { cat "$OUT/p-$name.out" >&2; die "pgbench $name did nothing"; }
    echo "$tps $count $avg $p50 $p99 $max"
}

# ---- 1. throughput ------------------------------------------------------------------------------
if only throughput; then
printf 'system\trep\ttps\tavg_ms\tp50_ms\tp99_ms\tcpu_us\tcommits\tcalls\n' > "$OUT/protocols.tsv"
systems=(A T2 P2 S2 T3 P3 S3)
for rep in $(seq 1 "$REPEAT"); do
    # rotate the order every repetition
    order=("${systems[@]:$(( (rep - 1) % 7 ))}" "${systems[@]:0:$(( (rep - 1) % 7 ))}")
    for system in "${order[@]}"; do
        q bench -qc "CHECKPOINT"
        settle_stats
        c0=$(commits); k0=$(participant_calls); t0=$(cluster_ticks)
        pgbench_run "$system-$rep" "$SCRIPTS/$system.pgbench" 8 bench > "$OUT/last-run.txt"
        read -r tps count avg p50 p99 max < "$OUT/last-run.txt"
        sleep 0.3
        t1=$(cluster_ticks)
        settle_stats
        c1=$(commits); k1=$(participant_calls)
        legs_remote=$(case $system in *2) echo 1 ;; *3) echo 2 ;; *) echo 0 ;; esac)
        awk -v s="$system" -v r="$rep" -v tps="$tps" -v n="$count" -v avg="$avg" -v p50="$p50" -v p99="$p99" \
            -v t="$((t1 - t0))" -v hz="$TICKS_PER_SECOND" -v c="$((c1 - c0))" -v k="$((k1 - k0))" \
            -v extra="$([[ $system == P* ]] && echo "$legs_remote" || echo 0)" \
            'BEGIN {printf "%s\t%s\t%.1f\t%s\t%s\t%s\t%.1f\t%.2f\t%.2f\n", s, r, tps, avg, p50, p99,
                    t * 1000000 / hz / n, c / n, k / n + extra}' | tee -a "$OUT/protocols.tsv"
    done
done
fi

# ---- 2. unavailability of the payer's account ---------------------------------------------------
if only probe; then
printf 'protocol\tload_tps\tprobe_tps\tprobe_p50_ms\tprobe_p99_ms\tprobe_max_ms\n' > "$OUT/protocols-probe.tsv"
for p in tcc 2pc saga; do
    q bench -qc "CHECKPOINT"
    pgbench_run "load-$p" "$SCRIPTS/payer-$p.pgbench" 4 bench > "$OUT/load-$p.txt" &
    load=$!
    sleep 0.5
    pgbench_run "probe-$p" "$SCRIPTS/probe.pgbench" 1 bench_n2 > "$OUT/last-run.txt"
    read -r ptps _ _ pp50 pp99 pmax < "$OUT/last-run.txt"
    wait "$load"
    read -r ltps _ < "$OUT/load-$p.txt"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$ltps" "$ptps" "$pp50" "$pp99" "$pmax" | tee -a "$OUT/protocols-probe.tsv"
done
# the probe alone, for reference
pgbench_run "probe-alone" "$SCRIPTS/probe.pgbench" 1 bench_n2 > "$OUT/last-run.txt"
read -r ptps _ _ pp50 pp99 pmax < "$OUT/last-run.txt"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "none" "0" "$ptps" "$pp50" "$pp99" "$pmax" | tee -a "$OUT/protocols-probe.tsv"
fi

# ---- 3. a participant's crash -------------------------------------------------------------------
if only crash; then
printf 'protocol\toutcome\tprepared_on_m2\tpending_holds_on_m2\tpayer_locked\tresolution_ms\n' > "$OUT/protocols-crash.tsv"
qm() { psql_at benchp "$PORT_P" bench_m2 "$@"; }
for p in tcc 2pc saga; do
    gtid="crash-$p-$(date +%s%N)"
    # m2 pays (its account 9), this database receives: the payer is on the node that crashes.
    q bench -v ON_ERROR_STOP=0 -c "SET wallet.fault = 'after_remote_try'" \
        -c "CALL wallet.transfer_global('$gtid', ARRAY['m2', 'local'], ARRAY[9, 9]::bigint[], ARRAY[-5, 5]::bigint[], '$p')" \
        >/dev/null 2>&1 || true
    cluster_crash benchp
    sleep 2
    cluster_restart benchp
    restarted=$(date +%s%N)
    prepared=$(qm -tA -c "SELECT count(*) FROM pg_prepared_xacts")
    holds=$(qm -tA -c "SELECT count(*) FROM wallet.holds WHERE status = 'pending'")
    locked=$( (qm -tA -v ON_ERROR_STOP=0 -c "SET lock_timeout = '200ms'" -c "SELECT wallet.transfer(9, 10, 1) > 0" 2>&1 || true) | tail -1)
    [ "$locked" = t ] && locked=no || locked="yes ($locked)"
    for _ in $(seq 200); do
        q bench -qc "CALL wallet.recover()" >/dev/null
        outcome=$(q bench -tA -c "SELECT coalesce(outcome, '-') FROM wallet.global_transactions WHERE gtid = '$gtid' AND finished_at IS NOT NULL")
        [ -n "$outcome" ] && break
        sleep 0.05
    done
    finished=$(date +%s%N)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "${outcome:-unfinished}" "$prepared" "$holds" "$locked" \
        "$(( (finished - restarted) / 1000000 ))" | tee -a "$OUT/protocols-crash.tsv"
done
fi

# ---- 4. what a reader summing money over two nodes sees -----------------------------------------
# The reader takes its reference sum before the load starts (nothing else moves money between
# here and n2 meanwhile), then samples both sums, one query each, while 2-leg transfers run.
if only reader; then
printf 'protocol\tsamples\toff\tmax_off\n' > "$OUT/protocols-reader.tsv"
for p in tcc 2pc saga; do
    "$PYTHON" - "$SOCK" "$PORT" "$p" "$((SECONDS_PER_RUN - 2))" >> "$OUT/protocols-reader.tsv" <<'EOF' &
import sys, time, psycopg
sock, port, protocol, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
here = psycopg.connect(f"host={sock} port={port} dbname=bench user=postgres", autocommit=True)
n2 = psycopg.connect(f"host={sock} port={port} dbname=bench_n2 user=postgres", autocommit=True)
query = "SELECT sum(balance) FROM wallet.accounts WHERE NOT is_system"
reference = here.execute(query).fetchone()[0] + n2.execute(query).fetchone()[0]
time.sleep(1.0)  # the load starts meanwhile
samples = off = worst = 0
end = time.time() + seconds
while time.time() < end:
    (a,) = here.execute(query).fetchone()
    (b,) = n2.execute(query).fetchone()
    samples += 1
    d = abs(a + b - reference)
    if d:
        off += 1
        worst = max(worst, d)
print(f"{protocol}\t{samples}\t{off}\t{worst}")
EOF
    reader=$!
    sleep 0.4
    pgbench_run "reader-load-$p" "$SCRIPTS/$(case $p in tcc) echo T2 ;; 2pc) echo P2 ;; saga) echo S2 ;; esac).pgbench" 4 bench \
        > /dev/null
    wait "$reader"
    tail -1 "$OUT/protocols-reader.tsv"
done
fi

# ---- 5. batches of cross-node transfers ---------------------------------------------------------
# transfer_across_batch from here to n2, uniform over the 10,000 accounts of each, 2 clients,
# synchronous_commit on (a batch is one call: it commits a handful of times whatever its size);
# transfers/s = calls/s x batch size. Sizes alternated in every repetition.
if only batch; then
printf 'protocol\tsize\trep\ttransfers_per_s\tavg_ms\tp99_ms\tcpu_us\n' > "$OUT/protocols-batch.tsv"
for size in 1 10 100 1000 8000; do
    for p in tcc saga; do
        cat > "$SCRIPTS/batch-$p-$size.pgbench" <<EOF
\\set r random(1, 1000000000)
SELECT array_agg('$p-b$size-' || :client_id || '-' || :r || '-' || i) AS g, array_agg(2 + ((:r + i * 7919) % 10000)) AS a, array_agg(2 + ((:r::bigint * 3 + i * 104729) % 10000)) AS b, array_fill('local'::text, ARRAY[$size]) AS f, array_fill('n2'::text, ARRAY[$size]) AS t, array_fill(1::bigint, ARRAY[$size]) AS m FROM generate_series(1, $size) i \\gset
CALL wallet.transfer_across_batch(:g::text[], :f::text[], :a::bigint[], :t::text[], :b::bigint[], :m::bigint[], '$p');
EOF
    done
done
batch_run() {  # batch_run PROTOCOL SIZE REP
    local p="$1" size="$2" rep="$3" name="batch-$1-$2-$3" t0 t1
    q bench -qc "CHECKPOINT"
    t0=$(cluster_ticks)
    rm -f "$OUT/plog-$name".*
    PGOPTIONS="-c synchronous_commit=on" "$PG_BIN/pgbench" -n -M prepared -h "$SOCK" -p "$PORT" -U postgres \
        -c 2 -j 2 -T "$SECONDS_PER_RUN" -l --log-prefix="$OUT/plog-$name" \
        -f "$SCRIPTS/batch-$p-$size.pgbench" bench > "$OUT/p-$name.out" 2>&1 || { cat "$OUT/p-$name.out"; die "pgbench $name failed"; }
    sleep 0.3
    t1=$(cluster_ticks)
    local tps count avg p99
    tps="$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$OUT/p-$name.out")"
    count="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$OUT/p-$name.out")"
    [ "${count:-0}" -gt 0 ] || { cat "$OUT/p-$name.out" >&2; die "pgbench $name did nothing"; }
    read -r avg p99 < <(cat "$OUT/plog-$name".* | awk '{print $3}' | sort -n |
        awk '{v[NR]=$1; s+=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.1f %.1f\n", s/NR/1000, v[i]/1000}')
    awk -v p="$p" -v n="$size" -v r="$rep" -v tps="$tps" -v avg="$avg" -v p99="$p99" -v c="$count" \
        -v t="$((t1 - t0))" -v hz="$TICKS_PER_SECOND" \
        'BEGIN {printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%.1f\n", p, n, r, tps * n, avg, p99, t * 1000000 / hz / (c * n)}' \
        | tee -a "$OUT/protocols-batch.tsv"
}
batch_orders=("1 10 100 1000 8000" "8000 1000 100 10 1" "100 8000 1 1000 10")
for rep in $(seq 1 "$REPEAT"); do
    for size in ${batch_orders[$(( (rep - 1) % 3 ))]}; do
        for p in tcc saga; do
            batch_run "$p" "$size" "$rep"
        done
    done
done
fi

log "consistency after the runs"
for db in bench bench_n2 bench_n3; do
    q "$db" -tA -c "SELECT '$db: verify() ' || count(*) FROM wallet.verify()" \
        -c "SELECT '$db: trial balance ' || string_agg(total_balance::text, ',') FROM wallet.trial_balance()"
done
q bench -tA -c "SELECT 'unfinished global transactions: ' || count(*) FROM wallet.global_transactions WHERE finished_at IS NULL"
q bench_n2 -tA -c "SELECT 'prepared transactions left: ' || count(*) FROM pg_prepared_xacts"
if [ -n "${PROTOCOLS_ONLY:-}" ]; then
    for part in $PROTOCOLS_ONLY; do
        case "$part" in throughput) f=protocols.tsv ;; *) f="protocols-$part.tsv" ;; esac
        cat "$OUT/$f"
    done
else
    python3 "$HERE/summarize_protocols.py" "$OUT" | tee "$OUT/protocols.md"
fi
