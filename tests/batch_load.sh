#!/usr/bin/env bash
# Batches across nodes at their largest, on a cluster with Postgres's default lock settings
# (max_locks_per_transaction 64, max_connections 100, max_prepared_transactions 0: a lock table
# of about 7,800 entries): a coordinator database and node n2, 20,000
# accounts each in two currencies (so two system accounts per node).
#  1. two sessions at once, each with 10,000 transfers in one call (TC/C out to n2 and TC/C in
#     from n2; then Saga out and TC/C out): a call must not take one lock-table entry per item
#     to its transaction's end (wallet_ext 0.6.0 before this test did: 53200 out of shared memory);
#     meanwhile a single transfer_across repeating one of the running batch's items answers
#     pending while the batch still runs (never waiting for the whole batch);
#  2. two sessions at once, three times, each a TC/C batch of 3,000 over the same accounts in
#     opposite orders and both currencies: their merged calls must not deadlock each other into
#     failing, and no item may be lost to the other's;
# then every item confirmed, nothing unfinished, no pending hold, replay = state on both nodes,
# each node's books balanced, and the money of the customers over both nodes unchanged.
source "$(dirname "$0")/../scripts/lib.sh"
PORT=54377
cluster_start batchload "$PORT" max_prepared_transactions=0 >/dev/null
trap 'cluster_stop batchload' EXIT
SOCK="$(cluster_socket batchload)"
q() { psql_at batchload "$PORT" "$@"; }
for db in c n2; do
    q postgres -c "CREATE DATABASE $db" >/dev/null
    q "$db" -c "CREATE EXTENSION wallet_ext" -c "SELECT wallet.create_currency('NOK')" \
        -c "SELECT wallet.create_currency('SEK')" \
        -c "SELECT count(wallet.deposit(wallet.open_account(CASE WHEN i % 2 = 0 THEN 'NOK' ELSE 'SEK' END,
                                                             'u' || i), 1000000))
              FROM generate_series(1, 20000) AS i" >/dev/null
done
q c -c "CREATE EXTENSION dblink" \
    -c "SELECT wallet.register_node('n2', 'host=$SOCK port=$PORT dbname=n2 user=postgres')" >/dev/null
[ "$(q c -tA -c "SHOW max_locks_per_transaction")" = 64 ] || die "not the default lock settings"
customers() { q "$1" -tA -c "SELECT sum(balance) FROM wallet.accounts WHERE NOT is_system"; }
before=$(( $(customers c) + $(customers n2) ))

# batch NAME N FROM_NODE TO_NODE ACCOUNT_EXPRESSION(i) [PROTOCOL]: one call; prints its outcomes.
batch() {
    local file="$WORK_DIR/batchload-$1.sql"
    cat > "$file" <<SQL
SELECT ARRAY(SELECT '$1-' || i FROM generate_series(1, $2) AS i) AS g,
       array_fill('$3'::text, ARRAY[$2]) AS f, array_fill('$4'::text, ARRAY[$2]) AS t,
       ARRAY(SELECT ($5)::bigint FROM generate_series(1, $2) AS i) AS a,
       array_fill(1::bigint, ARRAY[$2]) AS m \gset
CALL wallet.transfer_across_batch(:'g', :'f', :'a', :'t', :'a', :'m', protocol => '${6:-tcc}');
SQL
    q c -f "$file" >/dev/null || die "the batch $1 raised"
    q c -tA -c "SELECT '$1: ' || string_agg(coalesce(outcome, 'unfinished') || ' ' || n, ', ')
                  FROM (SELECT outcome, count(*) AS n FROM wallet.global_transactions
                         WHERE gtid LIKE '$1-%' GROUP BY 1 ORDER BY 1) AS o"
}
expect_confirmed() {  # NAME N
    local got
    got="$(q c -tA -c "SELECT count(*) FROM wallet.global_transactions WHERE gtid LIKE '$1-%' AND outcome = 'confirmed'")"
    [ "$got" = "$2" ] || die "$1: $got of $2 items confirmed"
}

log "10,000 items in one call, two sessions at once: TC/C out and TC/C in, then Saga out and TC/C out"
batch out 10000 local n2 "3 + i" > "$WORK_DIR/batchload-out.out" 2>&1 &
first=$!
batch in 10000 n2 local "10002 + i" > "$WORK_DIR/batchload-in.out" 2>&1 &
second=$!
# Meanwhile a client repeats one item of the running batch with a single call: it must answer at
# once (pending while the batch's session drives it, or its outcome), never wait for the batch
# nor make it fail.
# (It may wait for the batch's current step to commit, which holds the item's ledger row, but
# never for the whole batch: when it answers pending, the batch is still running.)
sleep 3
started=$(date +%s%N)
repeat="$(q c -tA -c "SET wallet.node_timeout = '60s'" \
    -c "CALL wallet.transfer_across('out-5000', 'local', 5003, 'n2', 5003, 1)" 2>&1)" \
    || die "a single call repeating a batch item raised: $repeat"
took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
case "$repeat" in
    *pending*)
        kill -0 "$first" 2>/dev/null || die "a single call repeating out-5000 answered pending only after the batch ended (${took_ms} ms)"
        echo "a single call repeating out-5000 meanwhile (${took_ms} ms, the batch still running): $repeat" ;;
    *confirmed*) echo "a single call repeating out-5000 after its batch had confirmed it (${took_ms} ms): $repeat" ;;
    *) die "a single call repeating out-5000 answered '$repeat'" ;;
esac
wait "$first" || { cat "$WORK_DIR/batchload-out.out"; die "out failed"; }
wait "$second" || { cat "$WORK_DIR/batchload-in.out"; die "in failed"; }
cat "$WORK_DIR/batchload-out.out" "$WORK_DIR/batchload-in.out"
expect_confirmed out 10000
expect_confirmed in 10000
batch saga 10000 local n2 "10002 + i" saga > "$WORK_DIR/batchload-saga.out" 2>&1 &
first=$!
batch out2 10000 local n2 "3 + i" > "$WORK_DIR/batchload-out2.out" 2>&1 &
second=$!
wait "$first" || { cat "$WORK_DIR/batchload-saga.out"; die "saga failed"; }
wait "$second" || { cat "$WORK_DIR/batchload-out2.out"; die "out2 failed"; }
cat "$WORK_DIR/batchload-saga.out" "$WORK_DIR/batchload-out2.out"
expect_confirmed saga 10000
expect_confirmed out2 10000

log "two sessions at once, opposite orders, both currencies"
for r in 1 2 3; do
    batch "up$r" 3000 local n2 "3 + i" > "$WORK_DIR/batchload-up$r.out" 2>&1 &
    up=$!
    batch "down$r" 3000 local n2 "3003 - i" > "$WORK_DIR/batchload-down$r.out" 2>&1 &
    down=$!
    wait "$up" || { cat "$WORK_DIR/batchload-up$r.out"; die "up$r failed"; }
    wait "$down" || { cat "$WORK_DIR/batchload-down$r.out"; die "down$r failed"; }
    cat "$WORK_DIR/batchload-up$r.out" "$WORK_DIR/batchload-down$r.out"
    expect_confirmed "up$r" 3000
    expect_confirmed "down$r" 3000
done

log "invariants"
check() {  # DESCRIPTION DB SQL EXPECTED
    local got
    got="$(q "$2" -tA -c "$3")"
    [ "$got" = "$4" ] || die "$1 ($2): got '$got', expected '$4'"
    echo "$1 ($2): $got"
}
check "unfinished global transactions" c "SELECT count(*) FROM wallet.global_transactions WHERE finished_at IS NULL" 0
for db in c n2; do
    check "pending holds" "$db" "SELECT count(*) FROM wallet.holds WHERE status = 'pending'" 0
    check "verify() differences" "$db" "SELECT count(*) FROM wallet.verify()" 0
    check "books balanced" "$db" "SELECT bool_and(total_balance = 0) FROM wallet.trial_balance()" t
done
after=$(( $(customers c) + $(customers n2) ))
[ "$before" = "$after" ] || die "customers' money over both nodes: $before before, $after after"
echo "customers' money over both nodes: $after (unchanged)"
