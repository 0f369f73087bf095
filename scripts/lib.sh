# Shared by scripts/*.sh: install what is missing, build and install the extension, and run
# throwaway Postgres clusters owned by the postgres user. Source it; do not run it.
# Everything here is idempotent and non-interactive, and works as root (Postgres itself runs as
# the postgres user).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=/usr/bin/pg_config
PGRX_VERSION=0.18.1
export PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
export PATH="$HOME/.cargo/bin:$PATH"
# Clusters and scratch files live here, outside the repository, readable by postgres.
WORK_DIR="${WALLET_WORK_DIR:-/var/tmp/wallet_ext}"

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt packages: server headers pinned to the installed server (so apt upgrades nothing), sudo for
# pgrx's --runas, contrib for dblink. Skipped when everything is there.
install_packages() {
    local need=()
    [ -x "$PG_BIN/postgres" ] || need+=(postgresql-15)
    [ -f /usr/include/postgresql/15/server/postgres.h ] || need+=(postgresql-server-dev-15)
    command -v sudo >/dev/null || need+=(sudo)
    [ -f /usr/share/postgresql/15/extension/dblink.control ] || need+=(postgresql-contrib-15)
    [ ${#need[@]} -eq 0 ] && return 0
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    local version pinned=()
    version="$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)"
    for p in "${need[@]}"; do
        case "$p" in
            postgresql-server-dev-15|postgresql-15) [ -n "$version" ] && p="$p=$version" ;;
        esac
        pinned+=("$p")
    done
    as_root apt-get install -y -qq --no-install-recommends "${pinned[@]}" >/dev/null \
        || as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

install_cargo_pgrx() {
    command -v cargo >/dev/null || die "cargo is missing: this machine needs a Rust toolchain"
    if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
        log "installing cargo-pgrx $PGRX_VERSION (about 5 minutes, once)"
        cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked -q
    fi
    # Rewriting config.toml forces a rebuild of the bindings, so only write it when missing.
    if [ ! -f "$PGRX_HOME/config.toml" ]; then
        cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
    fi
}

ensure_toolchain() {
    install_packages
    install_cargo_pgrx
}

# Builds the extension and copies it into the system Postgres folders.
install_extension() {
    local profile_flag=()
    [ "${WALLET_RELEASE:-0}" = 1 ] && profile_flag=(--release)
    log "building and installing wallet_ext ${profile_flag[*]:-(debug)}"
    (cd "$REPO_ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" "${profile_flag[@]}" >/dev/null)
}

# cluster_start NAME PORT [extra postgres -c settings...]
# A throwaway cluster in $WORK_DIR/NAME, socket in the same folder. Re-initialised every time.
cluster_start() {
    local name="$1" port="$2"; shift 2
    local dir="$WORK_DIR/$name"
    cluster_stop "$name"
    as_root mkdir -p "$WORK_DIR"
    as_root chmod 755 "$WORK_DIR"
    as_root rm -rf "$dir"
    as_root install -d -o postgres -g postgres -m 700 "$dir"
    run_as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
    local opts="-p $port -k $dir -c listen_addresses='' -c fsync=off -c max_prepared_transactions=64"
    for setting in "$@"; do opts="$opts -c $setting"; done
    echo "$opts" | as_root tee "$dir/opts" >/dev/null
    # RUST_BACKTRACE=1: the wallet must keep Rust backtraces out of what clients see even when
    # capturing them is on (pg_test/sql/16_guards.sql checks it).
    run_as_postgres env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w start >/dev/null
}

# cluster_crash NAME: kill -9 of the postmaster and then of every process it had started (a
# whole server dying at once), without any shutdown.
cluster_crash() {
    local data="$WORK_DIR/$1/data" pid p left
    pid=$(head -1 "$data/postmaster.pid" 2>/dev/null) || return 0
    as_root kill -9 "$pid" 2>/dev/null || true
    # Its children: every process working in the data directory (Postgres chdirs there).
    for _ in $(seq 100); do
        left=0
        for p in /proc/[0-9]*; do
            if [ "$(as_root readlink "$p/cwd" 2>/dev/null)" = "$data" ]; then
                as_root kill -9 "${p#/proc/}" 2>/dev/null || true
                left=1
            fi
        done
        if [ "$left" = 0 ]; then
            # The postmaster itself must be gone, zombie included (this machine's init reaps
            # orphans only every second or so): Postgres takes any process with the pid in its
            # lock files for a live postmaster and refuses to start.
            for _ in $(seq 200); do
                [ -e "/proc/$pid" ] || return 0
                sleep 0.05
            done
            as_root rm -f "$data/postmaster.pid" "$WORK_DIR/$1"/.s.PGSQL.*.lock
            return 0
        fi
        sleep 0.05
    done
    die "processes of $1 survived kill -9"
}

# cluster_restart NAME: starts a stopped or crashed cluster again with the settings it was
# created with (crash recovery runs first).
cluster_restart() {
    local dir="$WORK_DIR/$1"
    run_as_postgres env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$(cat "$dir/opts")" \
        -w -t 60 start >/dev/null
}

cluster_stop() {
    local dir="$WORK_DIR/$1"
    if [ -f "$dir/data/postmaster.pid" ]; then
        run_as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

cluster_socket() { echo "$WORK_DIR/$1"; }

run_as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; else as_root sudo -u postgres -- "$@"; fi
}

# psql_at NAME PORT DB [psql args...]: quiet, stops at the first error.
psql_at() {
    local name="$1" port="$2" db="$3"; shift 3
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(cluster_socket "$name")" -p "$port" -U postgres -d "$db" "$@"
}

# A venv with psycopg 3 (from PyPI) for the Python parts of the tests and benchmarks; prints its
# python.
ensure_venv() {
    local venv="$WORK_DIR/venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
    "$venv/bin/python" -c "import psycopg; assert psycopg.__version__ >= '3.2'" 2>/dev/null \
        || "$venv/bin/pip" install -q --disable-pip-version-check "psycopg[binary]>=3.2,<4" >&2
    echo "$venv/bin/python"
}
