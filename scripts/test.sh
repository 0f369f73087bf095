#!/usr/bin/env bash
# Command 2: every test. Installs what is missing first (like setup.sh), then runs
#   1. cargo pgrx test: the pure-Rust #[test]s (domain rules) and the in-process #[pg_test]s;
#   2. the pg_regress suite in pg_test/ (the documented behaviour of every function);
#   3. the concurrency test (tests/concurrency.sh: pgbench clients at READ COMMITTED and
#      SERIALIZABLE, then the invariants);
#   4. pg_dump / pg_restore (tests/dump_restore.sh);
#   5. tests/fuzz.sql: 3,000 calls with random, NULL, extreme and malformed arguments; every error a
#      documented SQLSTATE, never XX000 or a crash, invariants intact afterwards;
#   6. a client in another language: examples/python_client.py with psycopg 3 (from PyPI, in a venv).
# Prints one closing line "N passed, N failed" and exits non-zero when anything failed.
# WALLET_TESTS="unit regress concurrency" picks a subset.
source "$(dirname "$0")/lib.sh"

TEST_PORT="${WALLET_TEST_PORT:-54362}"
SUITES="${WALLET_TESTS:-unit regress concurrency dump fuzz client}"
passed=0
failed=0
failures=()

record() { # record NAME EXIT_CODE
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}

ensure_toolchain

if [[ " $SUITES " == *" unit "* ]]; then
    log "cargo pgrx test (Rust unit tests and #[pg_test]s)"
    install -d -o postgres "$WORK_DIR" 2>/dev/null || as_root install -d -o postgres "$WORK_DIR"
    set +e
    (cd "$REPO_ROOT" && cargo pgrx test pg15 --runas postgres --pgdata "$WORK_DIR/pgrx-test-data") \
        2>&1 | tee "$WORK_DIR/unit.log" | grep -E '^test |^test result|panicked|^error' 
    status=${PIPESTATUS[0]}
    set -e
    record "cargo pgrx test" "$status"
fi

if [[ " $SUITES " =~ " "(regress|concurrency|dump|fuzz|client)" " ]]; then
    install_extension
    cluster_start test "$TEST_PORT"
fi

if [[ " $SUITES " == *" regress "* ]]; then
    log "pg_regress suite (pg_test/)"
    out="$WORK_DIR/regress"
    rm -rf "$out" && mkdir -p "$out"
    psql_at test "$TEST_PORT" postgres -c "DROP DATABASE IF EXISTS wallet_regress" \
        -c "CREATE DATABASE wallet_regress"
    tests=$(cd "$REPO_ROOT/pg_test/sql" && ls *.sql | sed 's/\.sql$//' | sort)
    set +e
    (cd "$REPO_ROOT/pg_test" && /usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress \
        --use-existing --host="$(cluster_socket test)" --port="$TEST_PORT" --user=postgres \
        --bindir="$PG_BIN" --inputdir=. --outputdir="$out" --dbname=wallet_regress $tests)
    status=$?
    set -e
    [ $status -ne 0 ] && [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
    record "pg_regress" "$status"
fi

if [[ " $SUITES " == *" concurrency "* ]]; then
    log "concurrency test"
    set +e
    bash "$REPO_ROOT/tests/concurrency.sh" test "$TEST_PORT"
    status=$?
    set -e
    record "concurrency" "$status"
fi

if [[ " $SUITES " == *" dump "* ]]; then
    log "pg_dump / pg_restore"
    set +e
    bash "$REPO_ROOT/tests/dump_restore.sh" test "$TEST_PORT"
    status=$?
    set -e
    record "dump/restore" "$status"
fi

if [[ " $SUITES " == *" fuzz "* ]]; then
    log "fuzzing the API (tests/fuzz.sql)"
    set +e
    psql_at test "$TEST_PORT" postgres -c "DROP DATABASE IF EXISTS wallet_fuzz" -c "CREATE DATABASE wallet_fuzz" \
        && psql_at test "$TEST_PORT" wallet_fuzz -f "$REPO_ROOT/tests/fuzz.sql" | tail -22
    status=${PIPESTATUS[0]}
    set -e
    record "fuzz" "$status"
fi

if [[ " $SUITES " == *" client "* ]]; then
    log "Python client (examples/python_client.py)"
    set +e
    (
        set -e
        venv="$WORK_DIR/venv"
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/python" -c "import psycopg" 2>/dev/null \
            || "$venv/bin/pip" install -q --disable-pip-version-check "psycopg[binary]>=3.1,<4"
        psql_at test "$TEST_PORT" postgres -c "DROP DATABASE IF EXISTS wallet_client" \
            -c "CREATE DATABASE wallet_client"
        "$venv/bin/python" "$REPO_ROOT/examples/python_client.py" \
            "host=$(cluster_socket test) port=$TEST_PORT dbname=wallet_client user=postgres"
    )
    status=$?
    set -e
    record "python client" "$status"
fi

cluster_stop test
[ ${#failures[@]} -gt 0 ] && printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
