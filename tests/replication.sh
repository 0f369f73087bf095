#!/usr/bin/env bash
# Logical replication of the log to a second cluster: the publisher (wal_level = logical) creates
# the publication with wallet.create_publication() and takes concurrent transfers; a subscriber
# cluster on another port subscribes to wallet.events and rebuilds every balance on its own, from
# the replicated events alone. Both clusters are started and stopped here.
source "$(dirname "$0")/../scripts/lib.sh"
PUB_PORT="${WALLET_PUB_PORT:-54364}"
SUB_PORT="${WALLET_SUB_PORT:-54365}"
pub() { psql_at publisher "$PUB_PORT" wallet_pub -tA "$@"; }
sub() { psql_at subscriber "$SUB_PORT" wallet_sub -tA "$@"; }

cluster_start publisher "$PUB_PORT" wal_level=logical max_wal_senders=4 max_replication_slots=4
cluster_start subscriber "$SUB_PORT" max_logical_replication_workers=4
trap 'cluster_stop publisher; cluster_stop subscriber' EXIT
psql_at publisher "$PUB_PORT" postgres -c "CREATE DATABASE wallet_pub" >/dev/null
psql_at subscriber "$SUB_PORT" postgres -c "CREATE DATABASE wallet_sub" >/dev/null

pub >/dev/null <<'SQL'
CREATE EXTENSION wallet_ext;
SELECT wallet.create_currency('REP');
SELECT count(wallet.open_account('REP')) FROM generate_series(1, 50);
SELECT count(wallet.deposit(id, 100000)) FROM wallet.accounts WHERE NOT is_system;
SELECT wallet.create_publication();
SQL
[ "$(pub -c "SELECT wallet.create_publication()")" = wallet_events ] || die "create_publication is not idempotent"

# The subscriber only needs the log's table: the extension provides it (empty, append-only).
sub -c "CREATE EXTENSION wallet_ext" >/dev/null
sub -c "CREATE SUBSCRIPTION wallet_sub CONNECTION 'host=$(cluster_socket publisher) port=$PUB_PORT dbname=wallet_pub user=postgres' PUBLICATION wallet_events" >/dev/null

# Transfers while the subscription runs (initial copy, then streaming).
cat > "$WORK_DIR/replication.pgbench" <<'PGB'
\set a random(2, 51)
\set b 2 + (:a - 2 + random(1, 49)) % 50
\set amount random(1, 500)
SELECT wallet.transfer(:a, :b, :amount);
PGB
"$PG_BIN/pgbench" -n -h "$(cluster_socket publisher)" -p "$PUB_PORT" -U postgres -c 4 -j 2 -t 500 \
    -f "$WORK_DIR/replication.pgbench" wallet_pub > "$WORK_DIR/replication-pgbench.log" 2>&1 \
    || { cat "$WORK_DIR/replication-pgbench.log"; die "pgbench on the publisher failed"; }

# Batches: their events are written with heap_multi_insert (up to 1,000 rows per call, one WAL
# record per page), which logical decoding reads differently from single inserts.
pub -c "SELECT count(*) FROM wallet.transfer_batch(
          ARRAY(SELECT 2 + g % 50 FROM generate_series(1, 2500) g)::bigint[],
          ARRAY(SELECT 2 + (g + 1 + g % 7) % 50 FROM generate_series(1, 2500) g)::bigint[],
          ARRAY(SELECT 1 + g % 3 FROM generate_series(1, 2500) g)::bigint[],
          ARRAY(SELECT CASE WHEN g % 2 = 0 THEN 'repl-' || g END FROM generate_series(1, 2500) g))
         WHERE result = 'ok'" >/dev/null

want="$(pub -c "SELECT max(seq) || '/' || count(*) FROM wallet.events")"
for _ in $(seq 1 120); do
    [ "$(sub -c "SELECT max(seq) || '/' || count(*) FROM wallet.events")" = "$want" ] && break
    sleep 0.5
done
[ "$(sub -c "SELECT max(seq) || '/' || count(*) FROM wallet.events")" = "$want" ] \
    || die "subscriber did not catch up: has $(sub -c "SELECT count(*) FROM wallet.events"), want $want"

# Balances rebuilt on the subscriber from the replicated events alone, against the publisher's state.
replay="SELECT string_agg(account_id || ':' || balance, ',' ORDER BY account_id) FROM (
          SELECT m.account_id, sum(m.delta) AS balance
            FROM wallet.events e
           CROSS JOIN LATERAL (VALUES (e.debit_account_id, -e.amount), (e.credit_account_id, e.amount)) m (account_id, delta)
           WHERE e.event_type = 'transfer' GROUP BY 1) s"
state="SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM wallet.accounts WHERE balance <> 0"
[ "$(sub -c "$replay")" = "$(pub -c "$state")" ] || die "balances rebuilt on the subscriber differ from the publisher's"
rows="SELECT md5(string_agg(concat_ws('|', seq, event_type, debit_account_id, credit_account_id, amount,
          debit_balance, credit_balance, idempotency_key, debit_prev, credit_prev), ',' ORDER BY seq))
        FROM wallet.events"
[ "$(sub -c "$rows")" = "$(pub -c "$rows")" ] || die "the subscriber's events differ from the publisher's"
[ "$(sub -c "SELECT count(*) FROM wallet.events WHERE idempotency_key LIKE 'repl-%'")" = 1250 ] \
    || die "the batch's keyed events did not all reach the subscriber"
[ "$(pub -c "SELECT count(*) FROM wallet.verify()")" = 0 ] || die "publisher verify() not empty"
log "replication: $(sub -c "SELECT count(*) FROM wallet.events") events replicated; balances rebuilt on the subscriber match"
sub -c "DROP SUBSCRIPTION wallet_sub" >/dev/null
