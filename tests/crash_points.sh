#!/usr/bin/env bash
# Every crash point of every protocol (tests/crash_points.py): a coordinator cluster and a
# participant cluster; the coordinator stops (or is killed) at each named point of each protocol,
# then recovery must leave every invariant intact.
# Usage: tests/crash_points.sh PYTHON
source "$(dirname "$0")/../scripts/lib.sh"
PYTHON="$1"
shift
PORT_A=54368
PORT_B=54369
# wal_writer_delay = 10s: what a session commits with synchronous_commit off stays in the WAL
# buffers (and is lost by a crash) for seconds, so that the cases of crash_points.py that crash
# a cluster right after a call answered would see any commit the protocol needs durable but left
# asynchronous.
cluster_start cpA "$PORT_A" "max_connections=40" "wal_writer_delay=10s"
cluster_start cpB "$PORT_B" "max_connections=40" "wal_writer_delay=10s"
trap 'cluster_stop cpA; cluster_stop cpB' EXIT
psql_at cpA "$PORT_A" postgres -c "CREATE DATABASE c" >/dev/null
psql_at cpB "$PORT_B" postgres -c "CREATE DATABASE p" -c "CREATE DATABASE q" >/dev/null
"$PYTHON" "$REPO_ROOT/tests/crash_points.py" "$(cluster_socket cpA)" "$PORT_A" \
    "$(cluster_socket cpB)" "$PORT_B" "$REPO_ROOT" "$@"
# The kills were real crashes: the coordinator's cluster recovered from each.
crashes=$(grep -c "terminated by signal 9" "$WORK_DIR/cpA/server.log" || true)
log "cpA: $crashes backends killed at a crash point, the cluster recovered each time"
[ "$crashes" -ge 30 ] || die "expected at least 30 kills on cpA, saw $crashes"
