#!/usr/bin/env bash
# Command 1: install what is missing, build and install wallet_ext, start a throwaway local
# cluster and run the demonstration (scripts/demo.sql) in it. Idempotent; fast the second time.
# The cluster stays up afterwards so you can explore it; the last lines say how to connect.
source "$(dirname "$0")/lib.sh"

DEMO_PORT="${WALLET_DEMO_PORT:-54361}"

ensure_toolchain
install_extension
log "starting a throwaway cluster on port $DEMO_PORT"
cluster_start demo "$DEMO_PORT"
psql_at demo "$DEMO_PORT" postgres -c "CREATE DATABASE wallet_demo"
log "demonstration (scripts/demo.sql)"
psql_at demo "$DEMO_PORT" wallet_demo -f "$REPO_ROOT/scripts/demo.sql"
log "done. Explore: $PG_BIN/psql -h $(cluster_socket demo) -p $DEMO_PORT -U postgres wallet_demo"
log "stop it:  sudo -u postgres $PG_BIN/pg_ctl -D $WORK_DIR/demo/data stop"
