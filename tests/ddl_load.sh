#!/usr/bin/env bash
# A DBA's table changes while money moves: tests/ddl_load.py against a throwaway cluster.
# Usage: tests/ddl_load.sh PYTHON [SECONDS]
source "$(dirname "$0")/../scripts/lib.sh"
PYTHON="$1"
SECONDS_OF_LOAD="${2:-30}"
PORT=54373
cluster_start ddl "$PORT"
trap 'cluster_stop ddl' EXIT
psql_at ddl "$PORT" postgres -c "CREATE DATABASE ddl" >/dev/null
"$PYTHON" "$REPO_ROOT/tests/ddl_load.py" "$(cluster_socket ddl)" "$PORT" "$SECONDS_OF_LOAD"
