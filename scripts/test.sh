#!/usr/bin/env bash
# Command 2: every test. Installs what is missing first (like setup.sh), then runs
#   1. cargo test -p wallet_core (the domain rules, pgrx-free), then cargo pgrx test: the
#      extension's #[test]s and the in-process #[pg_test]s;
#   2. the pg_regress suite in pg_test/ (the documented behaviour of every function);
#   3. the concurrency test (tests/concurrency.sh: pgbench clients at READ COMMITTED and
#      SERIALIZABLE, then the invariants);
#   4. pg_dump / pg_restore (tests/dump_restore.sh), and ALTER EXTENSION UPDATE from 0.1.0
#      (tests/upgrade.sh: the updated schema equals a fresh install's, the data survives);
#   5. tests/fuzz.sql: 4,000 calls with random, NULL, extreme and malformed arguments, then
#      tests/fuzz/run.sh (FUZZ_CI=1): 30,000 calls from 12 concurrent sessions in UTF8 and SQL_ASCII
#      databases; every error a documented SQLSTATE, never XX000, a crash or a backtrace,
#      invariants intact afterwards;
#   6. a client in another language: examples/python_client.py with psycopg 3 (from PyPI, in a venv);
#   7. tests/replication.sh: logical replication of the log to a second cluster, which rebuilds
#      every balance from the replicated events alone;
#   8. tests/multinode.sh: global transactions of every protocol (TC/C, 2PC, Saga) over three
#      databases on two clusters while whole servers are killed (kill -9) and restarted; then
#      recovery and the invariants; 2PC refused by a node without prepared transactions; the
#      background worker's settings and its own recovery;
#   9. tests/crash_points.sh: each protocol stopped (ERROR or SIGKILL) at each named crash point,
#      then recovery and the invariants, case by case;
#  10. tests/search_path.sh: shadows of every function and operator the extension names, in the
#      schemas first on a hostile search_path (session and database), for every role and the
#      worker: none may run;
#  11. tests/ddl_load.sh: a DBA's table rewrites, index builds, constraints and triggers while
#      money moves at READ COMMITTED and REPEATABLE READ; nothing lost, nothing doubled;
#  12. tests/batch_load.sh: batches across nodes of 10,000 items at default lock settings, and
#      two at once in opposite orders; every item confirmed, the invariants on both nodes.
# Prints one closing line "N passed, N failed" and exits non-zero when anything failed.
# WALLET_TESTS="unit regress concurrency" (or comma-separated) picks a subset; an unknown name is an error.
source "$(dirname "$0")/lib.sh"

TEST_PORT="${WALLET_TEST_PORT:-54362}"
ALL_SUITES="unit regress concurrency dump upgrade fuzz client replication multinode crash_points search_path ddl_load batch_load"
SUITES="${WALLET_TESTS:-$ALL_SUITES}"
SUITES="${SUITES//,/ }"
passed=0
failed=0
failures=()

selected() { [[ " $SUITES " == *" $1 "* ]]; }
for name in $SUITES; do
    [[ " $ALL_SUITES " == *" $name "* ]] || die "unknown suite '$name' in WALLET_TESTS (suites: $ALL_SUITES)"
done

# suite NAME DESCRIPTION: when NAME is selected, runs the function test_NAME in a subshell that
# stops at its first failing command, and records whether it passed.
suite() {
    selected "$1" || return 0
    log "$2"
    local status
    # Not "( ... ) || status=$?": bash ignores set -e inside a command whose status is tested.
    set +e
    ( set -e; "test_$1" )
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$1")
    fi
}

fresh_db() {
    psql_at test "$TEST_PORT" postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
}

test_unit() {
    # The domain rules, without Postgres (crates/wallet_core).
    (cd "$REPO_ROOT" && cargo test -q -p wallet_core) 2>&1 | tee "$WORK_DIR/unit-core.log" \
        | grep -E '^test result|panicked|FAILED|^error'
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    install -d -o postgres "$WORK_DIR" 2>/dev/null || as_root install -d -o postgres "$WORK_DIR"
    (cd "$REPO_ROOT" && cargo pgrx test pg15 --runas postgres --pgdata "$WORK_DIR/pgrx-test-data") \
        2>&1 | tee "$WORK_DIR/unit.log" | grep -E '^test |^test result|panicked|^error'
    return "${PIPESTATUS[0]}"
}

test_regress() {
    local out="$WORK_DIR/regress" tests
    rm -rf "$out" && mkdir -p "$out"
    fresh_db wallet_regress
    tests=$(cd "$REPO_ROOT/pg_test/sql" && ls *.sql | sed 's/\.sql$//' | sort)
    (cd "$REPO_ROOT/pg_test" && /usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress \
        --use-existing --host="$(cluster_socket test)" --port="$TEST_PORT" --user=postgres \
        --bindir="$PG_BIN" --inputdir=. --outputdir="$out" --dbname=wallet_regress $tests) || {
        [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
        return 1
    }
}

test_concurrency() { bash "$REPO_ROOT/tests/concurrency.sh" test "$TEST_PORT"; }

test_replication() { bash "$REPO_ROOT/tests/replication.sh"; }

test_multinode() { bash "$REPO_ROOT/tests/multinode.sh" "$(ensure_venv)" 40; }

test_crash_points() { bash "$REPO_ROOT/tests/crash_points.sh" "$(ensure_venv)"; }

test_search_path() { bash "$REPO_ROOT/tests/search_path.sh"; }

test_ddl_load() { bash "$REPO_ROOT/tests/ddl_load.sh" "$(ensure_venv)" 30; }

test_batch_load() { bash "$REPO_ROOT/tests/batch_load.sh"; }

test_dump() { bash "$REPO_ROOT/tests/dump_restore.sh" test "$TEST_PORT"; }

test_upgrade() { bash "$REPO_ROOT/tests/upgrade.sh" test "$TEST_PORT"; }

test_fuzz() {
    fresh_db wallet_fuzz
    psql_at test "$TEST_PORT" wallet_fuzz -f "$REPO_ROOT/tests/fuzz.sql" | tail -22
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    # The concurrent fuzz (tests/fuzz/README.md): 30,000 calls here; FUZZ_CALLS=100000 for a full run.
    FUZZ_CI=1 bash "$REPO_ROOT/tests/fuzz/run.sh"
}

test_client() {
    local python
    python=$(ensure_venv)
    fresh_db wallet_client
    "$python" "$REPO_ROOT/examples/python_client.py" \
        "host=$(cluster_socket test) port=$TEST_PORT dbname=wallet_client user=postgres"
}

ensure_toolchain
suite unit "cargo pgrx test (Rust unit tests and #[pg_test]s)"
if [[ " $SUITES " != " unit " ]]; then
    install_extension
    cluster_start test "$TEST_PORT"
fi
suite regress "pg_regress suite (pg_test/)"
suite concurrency "concurrency test (tests/concurrency.sh)"
suite dump "pg_dump / pg_restore (tests/dump_restore.sh)"
suite upgrade "ALTER EXTENSION UPDATE from 0.1.0 (tests/upgrade.sh)"
suite fuzz "fuzzing the API (tests/fuzz.sql)"
suite client "Python client (examples/python_client.py)"
cluster_stop test
suite replication "logical replication to a second cluster (tests/replication.sh)"
suite multinode "global transactions of every protocol while servers are killed (tests/multinode.sh)"
suite crash_points "every crash point of every protocol (tests/crash_points.sh)"
suite search_path "a hostile search_path for every role and the worker (tests/search_path.sh)"
suite ddl_load "table changes while money moves (tests/ddl_load.sh)"
suite batch_load "batches across nodes at their largest, and racing (tests/batch_load.sh)"

[ ${#failures[@]} -gt 0 ] && printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
