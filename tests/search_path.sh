#!/usr/bin/env bash
# No wallet function, and nothing the background worker runs, resolves a name through a caller's
# search_path. In databases sp (the coordinator, served by the worker) and sp2 (a node), shadows
# of every pg_catalog function, aggregate and operator the extension's SQL names are created in
# schema evil (first on the attacker's path), in public and in a schema of the non-superuser
# database owner (tests/search_path.sql); a shadow that runs bumps public.shadow_fired, logs a
# WARNING and raises SH001. After a sanity check that they do fire, every wallet function each
# role may execute is called (tests/search_path/calls.sql) as the superuser, a wallet_operator,
# a wallet_reader and the database owner: in phase A with the attacker's search_path SET in the
# session; then ALTER DATABASE sp, sp2 SET search_path to it and a restart, under which the
# worker has to expire a hold, seal, snapshot and recover global transactions (TC/C, Saga, 2PC)
# whose coordinator failed, and sweep a stray prepared transaction on sp2; in phase B the roles
# again, inheriting the database's search_path. Nothing may fire. On a failure it then peels off
# the shadows that fired and repeats the calls, to list every unsafe resolution, not only the
# first of each call. Output of every session: $WORK_DIR/sp-run/. Usage: bash tests/search_path.sh
source "$(dirname "$0")/../scripts/lib.sh"

PORT=54381
RUN="$WORK_DIR/sp-run"            # generated SQL and every session's output
ATTACK_PATH="evil, sp_dbowner, public, pg_catalog"
started=$(date +%s)

as_root rm -rf "$RUN"
as_root mkdir -p "$RUN"

cluster_start sp "$PORT" "shared_preload_libraries=wallet_ext" "wallet.worker_databases='sp'" \
    "max_prepared_transactions=8"
trap 'cluster_stop sp' EXIT
SOCK="$(cluster_socket sp)"
LOG="$WORK_DIR/sp/server.log"

# A harness session: the superuser, with a search_path that reaches pg_catalog alone (set as a
# connection option, so it also wins over ALTER DATABASE ... SET search_path).
q() { PGAPPNAME=sp-harness PGOPTIONS="-c search_path=pg_catalog" psql_at sp "$PORT" "$@"; }
counter() { q "$1" -tA -c "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.shadow_fired"; }
log_size() { as_root stat -c %s "$LOG"; }
# Stray prepared transactions on sp2 (the test's own, under the coordinator's gid prefix).
strays() { q sp2 -tA -c "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'wallet:%:stray:%'"; }
drop_strays() { local g; for g in $(strays); do q sp2 -c "ROLLBACK PREPARED '$g'" >/dev/null; done; }
# The server log after byte offset $1; the lines of it that a shadow wrote (or that name one).
log_since() { as_root tail -c +"$(($1 + 1))" "$LOG"; }
log_firings() { log_since "$1" | grep -iE 'SH001|shadow' || true; }
# Who fired what since byte offset $1, on which statement (tests/search_path/firings.pl).
firings_since() { log_since "$1" | perl "$REPO_ROOT/tests/search_path/firings.pl"; }

# Bounded waits: a node answers within 3 s or counts as unreachable, and a statement a
# coordinator gave up on does not wait for a lock on sp2 for ever.
q postgres -c "ALTER SYSTEM SET wallet.worker_interval = '200ms'" -c "ALTER SYSTEM SET wallet.node_timeout = '3s'" \
    -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %b %u@%d %a: '" -c "SELECT pg_reload_conf()" >/dev/null
q postgres -c "CREATE ROLE sp_dbowner LOGIN" -c "CREATE ROLE sp_app LOGIN" \
    -c "CREATE ROLE sp_auditor LOGIN" -c "CREATE ROLE sp_nobody NOLOGIN" \
    -c "CREATE DATABASE sp OWNER sp_dbowner" -c "CREATE DATABASE sp2" -c "ALTER DATABASE sp2 SET lock_timeout = '5s'"
CONNINFO="host=$SOCK port=$PORT dbname=sp2 user=postgres"

# The texts the extension runs besides its SQL functions: the statements of sql/queries/ and the
# SQL string literals of the Rust sources (the worker's, the coordinator's remote calls, ...).
srcload="$RUN/srcload.sql"
{
    for f in "$REPO_ROOT"/sql/queries/*.sql; do
        printf "\\\\set body \`cat '%s'\`\nINSERT INTO sp_test.src VALUES ('query', '%s', :'body');\n" "$f" "${f#"$REPO_ROOT"/}"
    done
    while IFS= read -r f; do
        printf "\\\\set body \`cat '%s'\`\nINSERT INTO sp_test.src VALUES ('rust', '%s', :'body');\n" "$f" "${f#"$REPO_ROOT"/}"
    done < <(find "$REPO_ROOT/src" -name '*.rs' | sort)
} | as_root tee "$srcload" >/dev/null
grep -q "src/worker.rs" "$srcload" || die "src/worker.rs not among the sources"

log "set-up and shadows in sp2 and sp"
q sp2 -v coordinator=off -v srcload="$srcload" -v conninfo="$CONNINFO" -f "$REPO_ROOT/tests/search_path.sql"
q sp -v coordinator=on -v srcload="$srcload" -v conninfo="$CONNINFO" -f "$REPO_ROOT/tests/search_path.sql"
q sp -c "GRANT wallet_operator TO sp_app, sp_dbowner" -c "GRANT wallet_reader TO sp_auditor" >/dev/null
# The placeholders of sp2's accounts and of the node's connection string, for the templates in sp.
b_values=$(q sp2 -tA -c "SELECT string_agg(format('(%L, %L, %L)', tag, key, val), ', ') FROM sp_test.tagvals WHERE key LIKE 'B%'")
q sp -c "INSERT INTO sp_test.tagvals VALUES $b_values, ('*', 'CONNINFO', '$CONNINFO')"
q sp -f "$REPO_ROOT/tests/search_path/calls.sql"

shadows=0
for db in sp sp2; do
    n=$(q "$db" -tA -c "SELECT count(*) FROM sp_test.ddl_result WHERE ok")
    [ "$n" -gt 0 ] || die "$db: no shadow created"
    shadows=$((shadows + n))
done
summary=$(q sp -tA -F ' ' -c "SELECT string_agg(format('%s %s', count, kind), ', ' ORDER BY kind) FROM (SELECT kind, count(*) FROM sp_test.ddl_result WHERE ok AND schema_name = 'evil' GROUP BY kind) AS k")
log "shadows per schema in sp: $summary; in all: $shadows (3 schemas x 2 databases)"

# ---- sanity: the shadows do fire ----------------------------------------------------------------

# sanity DB PATH SQL: with PATH, SQL must fire a shadow (the counter moves, SH001 is raised).
sanity() {
    local db="$1" path="$2" sql="$3" before after out
    before=$(counter "$db")
    out=$(PGAPPNAME=sp-sanity psql_at sp "$PORT" "$db" -v ON_ERROR_STOP=0 -v VERBOSITY=verbose \
        -c "SET search_path = $path" -c "$sql" 2>&1 || true)
    after=$(counter "$db")
    grep -q "SH001" <<<"$out" && [ "$after" -gt "$before" ] \
        || die "sanity: in $db, '$sql' with search_path $path fired nothing (counter $before -> $after): $out"
    log "sanity: $db, search_path $path: $sql -> fired ($(grep -m1 -o 'shadow fired: [^(]*' <<<"$out"))"
}
for db in sp sp2; do
    q "$db" -tA -c "SELECT 'evil.unnest(bigint[])'::regprocedure, 'public.unnest(bigint[])'::regprocedure,
                           'sp_dbowner.count()'::regprocedure, 'evil.=(bigint,bigint)'::regoperator" >/dev/null \
        || die "$db: the shadows the sanity checks need are missing"
    sanity "$db" "$ATTACK_PATH" "SELECT 1::bigint = 1::bigint"
    sanity "$db" "$ATTACK_PATH" "SELECT unnest(ARRAY[1::bigint])"
    sanity "$db" "public" "SELECT unnest(ARRAY[1::bigint])"
    sanity "$db" "sp_dbowner, pg_catalog" "SELECT count(*) FROM (VALUES (1)) AS v (x)"
done
base_sp=$(counter sp)
base_sp2=$(counter sp2)
log_offset=$(log_size)
log "sanity done: shadow_fired is at $base_sp in sp and $base_sp2 in sp2; from here on it must not move"

# ---- the attack ---------------------------------------------------------------------------------

calls=0
failures=()
FIRED="$RUN/fired.tsv"   # tag, role, FIRED|UNEXPECTED, message, call
as_root rm -f "$FIRED"; as_root touch "$FIRED"
# attack ROLE TAG SET_PATH(yes|no) [diag]: the role calls every wallet function it may execute,
# in sp; with SET_PATH=yes the session sets the attacker's search_path first, else it has the
# database's. Counts the calls and records what fired (not in diag mode).
attack() {
    local role="$1" tag="$2" set_path="$3" mode="${4:-test}"
    local file="$RUN/attack-$tag.sql" out="$RUN/attack-$tag.out" n untemplated report
    {
        echo "\\set VERBOSITY verbose"
        if [ "$set_path" = yes ]; then echo "SET search_path = $ATTACK_PATH;"; fi
        q sp -tA -v role="$role" -v tag="$tag" <<'SQL'
SELECT CASE WHEN s ~ ';$' THEN s ELSE s || ';' END
  FROM (SELECT sp_test.fill(c.stmt, :'tag') AS s, c.ord
          FROM sp_test.calls AS c
         WHERE has_function_privilege(:'role', c.fn::regprocedure, 'EXECUTE')) AS t
 ORDER BY ord;
SQL
    } | as_root tee "$file" >/dev/null
    # Any function the templates do not know yet is called too, with NULLs.
    untemplated=$(q sp -tA -v role="$role" <<'SQL'
SELECT CASE WHEN p.prokind = 'p' THEN 'CALL ' ELSE 'SELECT * FROM ' END
       || p.oid::regproc::text || '(' || array_to_string(array_fill('NULL'::text, ARRAY[p.pronargs::integer]), ', ') || ');'
  FROM pg_proc AS p
 WHERE p.pronamespace = 'wallet'::regnamespace
   AND has_function_privilege(:'role', p.oid, 'EXECUTE')
   AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
   AND p.oid NOT IN (SELECT c.fn::regprocedure FROM sp_test.calls AS c)
 ORDER BY 1;
SQL
    )
    if [ -n "$untemplated" ]; then
        [ "$mode" = diag ] || log "$tag: no call template for: $(tr '\n' ' ' <<<"$untemplated")(called with NULLs)"
        echo "$untemplated" | as_root tee -a "$file" >/dev/null
    fi
    n=$(grep -vcE '^(\\set |SET search_path)' "$file" || true)
    timeout --foreground 300 env PGAPPNAME="sp-attack-$tag" "$PG_BIN/psql" -X -q -h "$SOCK" -p "$PORT" -U "$role" -d sp \
        -v ON_ERROR_STOP=0 -f "$file" >"$out" 2>&1 || true
    [ "$mode" = diag ] && return 0
    calls=$((calls + n))
    # Every error and warning, by SQLSTATE: wallet rejections (WA...), serialization failures
    # and missing privileges are the wallet's answers; a shadow's message is a firing (the
    # wallet may re-raise its SH001 as XX000); anything else is unexpected (a name resolved to
    # something else than the catalog's could fail this way too).
    report=$(awk '
        match($0, /^psql:[^:]*:[0-9]+: (ERROR|WARNING|FATAL|PANIC):  [0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z]: /) {
            split($0, f, ":"); line = f[3]
            rest = substr($0, RSTART + RLENGTH)
            level = $0; sub(/^psql:[^:]*:[0-9]+: /, "", level); sub(/:.*/, "", level)
            code = $0; sub(/^psql:[^:]*:[0-9]+: [A-Z]+:  /, "", code); code = substr(code, 1, 5)
            if (code == "SH001" || rest ~ /SH001|shadow/) {
                if (level == "ERROR") { fired++; print "FIRED line " line ": " level " " code ": " rest }
                next
            }
            if (level == "ERROR" && (code ~ /^WA/ || code == "40001" || code == "42501")) { expected[code]++; next }
            if (level == "WARNING" && code == "01000") { warnings++; next }
            unexpected++; print "UNEXPECTED line " line ": " level " " code ": " rest; next
        }
        /server closed the connection|connection to server .* failed|could not connect/ { unexpected++; print "UNEXPECTED: " $0 }
        END {
            s = ""; for (c in expected) { s = s " " c "x" expected[c]; total += expected[c] }
            printf "SUMMARY %d wallet rejections (%s ), %d warnings, %d unexpected errors, %d calls failed by a shadow\n", total, s, warnings, unexpected, fired
        }' "$out")
    log "$tag ($role, search_path $([ "$set_path" = yes ] && echo 'SET in the session' || echo 'from ALTER DATABASE')): $n calls; $(sed -n 's/^SUMMARY //p' <<<"$report")"
    while IFS= read -r r; do
        [ -n "$r" ] || continue
        local lineno stmt="" what message
        what=${r%% *}
        lineno=$(sed -nE 's/^(FIRED|UNEXPECTED) line ([0-9]+):.*/\2/p' <<<"$r")
        message=$(sed -E 's/^(FIRED|UNEXPECTED)( line [0-9]+)?: //' <<<"$r")
        [ -n "$lineno" ] && stmt=$(sed -n "${lineno}p" "$file")
        printf '%s\t%s\t%s\t%s\t%s\n' "$tag" "$role" "$what" "$message" "$stmt" | as_root tee -a "$FIRED" >/dev/null
    done < <(grep -E '^(FIRED|UNEXPECTED)' <<<"$report" || true)
}

log "phase A: search_path = $ATTACK_PATH set in each session"
attack postgres SUA yes
attack sp_app APPA yes
attack sp_auditor AUDA yes
attack sp_dbowner OWNA yes
phaseA_fired=$(( $(counter sp) - base_sp + $(counter sp2) - base_sp2 ))
log "phase A: shadow_fired moved by $phaseA_fired (sp and sp2)"

# ---- the worker, under the database's default search_path --------------------------------------

# Its work is made while the worker is off and the databases' search_path still the default (the
# calls that make it are not under test here): a hold that expires in a second, unsealed events,
# and global transactions whose coordinator failed (wallet.fault) after deciding (TC/C, 2PC: the
# latter leaves its branch prepared on sp2) or after a remote try (Saga). Then the databases get the attacker's search_path and the cluster restarts,
# so that the worker and its connections to sp2 start under it.
log "worker: making its work with the worker off"
q sp -c "ALTER SYSTEM SET wallet.worker_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1.5
wrk() { q sp -tA -c "SELECT val FROM sp_test.tagvals WHERE tag = 'WRK' AND key = '$1'"; }
W_A1=$(wrk A1); W_A2=$(wrk A2); W_B1=$(wrk B1); W_B2=$(wrk B2); W_B4=$(wrk B4)
q sp -c "SELECT wallet.try_hold('sp-worker-hold', 'pay', $W_A1, $W_A2, 10, interval '1 second')" \
    -c "SELECT wallet.transfer($W_A1, $W_A2, 3, 'sp-worker-t1')" \
    -c "SELECT * FROM wallet.transfer_batch(ARRAY[$W_A1, $W_A2]::bigint[], ARRAY[$W_A2, $W_A1]::bigint[], ARRAY[1, 2]::bigint[])" >/dev/null
# (A prepared transaction keeps its rows locked, sp2's system account among them: one at a time.)
# The last but one ('lost'): its prepared transaction is committed on sp2 by hand, as if the
# confirm had been delivered and its answer lost; recovery's COMMIT PREPARED then finds no such
# gid and looks for the branch's postings on sp2 instead.
for spec in "tcc after_decide $W_B1 -" "saga after_remote_try $W_B2 -" "2pc after_decide $W_B4 lost" "2pc after_decide $W_B4 -"; do
    read -r protocol fault account variant <<<"$spec"
    gtid="sp-worker-$protocol-$fault$([ "$variant" = lost ] && echo -lost || true)"
    out=$(q sp -c "SET wallet.fault = '$fault'" \
        -c "CALL wallet.transfer_across('$gtid', 'local', $W_A1, 'sp2', $account, 7, NULL, NULL, '$protocol')" 2>&1 || true)
    grep -q "wallet.fault" <<<"$out" || die "worker work: $protocol with fault $fault answered: $out"
    if [ "$variant" = lost ]; then
        gid=$(q sp -tA -c "SELECT gid FROM wallet.branches WHERE gtid = '$gtid' AND gid IS NOT NULL")
        q sp2 -c "COMMIT PREPARED '$gid'" >/dev/null
    fi
done
left=$(q sp -tA -F ' ' -c "SELECT count(*) FILTER (WHERE finished_at IS NULL), count(*) FROM wallet.global_transactions WHERE gtid LIKE 'sp-worker-%'")
[ "$left" = "4 4" ] || die "expected 4 unfinished global transactions for the worker (unfinished, all): $left"
# And a prepared transaction on sp2 under this coordinator's gid prefix that no global
# transaction knows (a PREPARE that outlived its branch): recovery's sweep has to roll it back,
# which also makes the sweep's query on sp2 evaluate its conditions on a row.
coordinator=$(q sp -tA -c "SELECT id FROM wallet.coordinator_identity")
q sp2 -c "BEGIN" -c "SELECT pg_current_xact_id()" -c "PREPARE TRANSACTION 'wallet:$coordinator:stray:1'" >/dev/null
prepared=$(q sp -tA -c "SELECT count(*) FROM pg_prepared_xacts WHERE database = 'sp2'")
[ "$prepared" -ge 2 ] || die "expected the 2PC branch and a stray transaction prepared on sp2, found $prepared prepared transactions"
log "worker: left a pending 1 s hold, unsealed events, 4 unfinished global transactions (TC/C, Saga, 2PC twice) and $prepared prepared transactions on sp2 (one a stray)"

log "worker: ALTER DATABASE sp, sp2 SET search_path = $ATTACK_PATH; worker on; restart"
q sp -c "ALTER DATABASE sp SET search_path = $ATTACK_PATH" -c "ALTER DATABASE sp2 SET search_path = $ATTACK_PATH" \
    -c "ALTER SYSTEM SET wallet.snapshot_interval = '2s'" -c "ALTER SYSTEM SET wallet.worker_enabled = on" >/dev/null
starts=$(as_root grep -c "wallet_ext worker started in database sp" "$LOG" || true)
worker_offset=$(log_size)
worker_sp=$(counter sp)
worker_sp2=$(counter sp2)
# A clean shutdown: after a crash a sequence resumes up to 32 values ahead (what it logged).
run_as_postgres "$PG_BIN/pg_ctl" -D "$WORK_DIR/sp/data" -m fast -w -t 60 stop >/dev/null
cluster_restart sp
restarted=no
for _ in $(seq 60); do
    if [ "$(as_root grep -c "wallet_ext worker started in database sp" "$LOG" || true)" -gt "$starts" ]; then restarted=yes; break; fi
    sleep 0.5
done
[ "$restarted" = yes ] || die "the worker did not start again within 30 s"
got=$(PGAPPNAME=sp-check "$PG_BIN/psql" -X -q -h "$SOCK" -p "$PORT" -U sp_app -d sp2 -tA -c "SHOW search_path")
[ "$got" = "$ATTACK_PATH" ] || die "a session in sp2 gets search_path '$got', not the database's setting"
t0=$(q sp -tA -c "SELECT clock_timestamp()")

# worker_state: what is left of the worker's work, one line.
worker_state() {
    q sp -tA -F '; ' -c "
    SELECT 'hold ' || (SELECT status FROM wallet.holds WHERE gtid = 'sp-worker-hold'),
           (SELECT string_agg(format('%s %s by %s', gtid, coalesce(outcome, 'unfinished'), coalesce(finished_by, '-')), ', ' ORDER BY gtid)
              FROM wallet.global_transactions WHERE gtid LIKE 'sp-worker-%'),
           (SELECT count(*) FROM wallet.events AS e WHERE NOT EXISTS (SELECT FROM wallet.chain AS c WHERE c.seq = e.seq)) || ' unsealed events',
           (SELECT count(*) FROM wallet.snapshots WHERE taken_at > '$t0') || ' new snapshots',
           (SELECT count(*) FROM pg_prepared_xacts) || ' prepared transactions'"
}
# wait_for SECONDS SQL: polls until SQL answers t.
wait_for() {
    local i
    for i in $(seq $(($1 * 2))); do
        [ "$(q sp -tA -c "$2")" = t ] && return 0
        sleep 0.5
    done
    return 1
}
expired="(SELECT status FROM wallet.holds WHERE gtid = 'sp-worker-hold') = 'expired'"
snapshot="EXISTS (SELECT FROM wallet.snapshots WHERE taken_at > '$t0')"
recovered="NOT EXISTS (SELECT FROM wallet.global_transactions WHERE gtid LIKE 'sp-worker-%' AND finished_at IS NULL) AND NOT EXISTS (SELECT FROM pg_prepared_xacts)"
sealed="NOT EXISTS (SELECT FROM wallet.events AS e WHERE NOT EXISTS (SELECT FROM wallet.chain AS c WHERE c.seq = e.seq))"
wait_for 30 "SELECT $expired AND $snapshot AND $recovered AND $sealed" || true
log "worker, after at most 30 s: $(worker_state)"
[ "$(q sp -tA -c "SELECT $expired")" = t ] || failures+=("worker: the 1 s hold was not expired within 30 s")
[ "$(q sp -tA -c "SELECT $snapshot")" = t ] || failures+=("worker: no snapshot within 30 s (wallet.snapshot_interval = 2s)")
# What fired while the worker alone worked (it is the only one talking to sp2 here).
worker_fired=$(( $(counter sp) - worker_sp + $(counter sp2) - worker_sp2 ))
if [ "$worker_fired" -ne 0 ] || [ -n "$(log_firings "$worker_offset")" ]; then
    failures+=("worker: shadow_fired moved by $worker_fired in 30 s of its rounds (no other session running); from the server log:
$(firings_since "$worker_offset")")
fi
log "worker: shadow_fired moved by $worker_fired while it worked"
if [ "$(q sp -tA -c "SELECT $recovered")" != t ]; then
    # What the worker said about its rounds (its WARNINGs: an ERROR in one of its calls).
    complaints=$(log_since "$worker_offset" | grep -E '\] wallet_ext worker .*WARNING' \
        | sed -E 's/^.*WARNING:  //' | cut -c1-400 | sort | uniq -c | sort -rn | head -5 || true)
    failures+=("worker: the global transactions left unfinished by their coordinator were not all recovered within 30 s ($(worker_state)); the worker's warnings since its start:
${complaints:-    (none)}")
    # The recovery the worker should have finished, run the way it runs it (search_path pinned
    # to pg_catalog, pg_temp, in a session of the superuser), so that the rest of the test is
    # not blocked; what fires in it is reported too.
    log "worker: recovering in a session with the worker's search_path (pg_catalog, pg_temp) instead, worker off"
    q sp -c "ALTER SYSTEM SET wallet.worker_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1.5
    fallback_offset=$(log_size)
    fallback_sp=$(counter sp)
    fallback_sp2=$(counter sp2)
    # (A TC/C confirm can wait once for a 2PC branch's lock on sp2: a few passes.)
    for _ in 1 2 3 4 5; do
        out=$(PGAPPNAME=sp-recovery-as-worker PGOPTIONS="-c search_path=pg_catalog,pg_temp" psql_at sp "$PORT" sp \
            -v ON_ERROR_STOP=0 -v VERBOSITY=verbose -c "CALL wallet.recover()" 2>&1 || true)
        [ "$(q sp -tA -c "SELECT $recovered")" = t ] && break
    done
    wait_for 15 "SELECT $recovered AND $sealed" \
        || failures+=("recovery with the worker's search_path left: $(worker_state); CALL wallet.recover() answered: $(tr -s ' \n' ' ' <<<"$out")")
    log "worker: after that recovery: $(worker_state)"
    fallback_fired=$(( $(counter sp) - fallback_sp + $(counter sp2) - fallback_sp2 ))
    if [ "$fallback_fired" -ne 0 ] || [ -n "$(log_firings "$fallback_offset")" ]; then
        failures+=("recovery with the worker's search_path: shadow_fired moved by $fallback_fired; from the server log:
$(firings_since "$fallback_offset")")
    fi
    q sp -c "ALTER SYSTEM SET wallet.worker_enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
elif [ "$(q sp -tA -c "SELECT $sealed")" != t ]; then
    failures+=("worker: events left unsealed after 30 s: $(worker_state)")
fi
left=$(strays)
if [ -n "$left" ]; then
    failures+=("recovery did not roll back the stray prepared transaction $(tr '\n' ' ' <<<"$left")on sp2 (it holds back every snapshot's xmin, so sealing waits); rolled back by hand")
    drop_strays
fi

# ---- phase B: every role again, the search_path coming from ALTER DATABASE ----------------------

log "phase B: search_path = $ATTACK_PATH from ALTER DATABASE (sessions set nothing)"
attack postgres SUB no
attack sp_app APPB no
attack sp_auditor AUDB no
attack sp_dbowner OWNB no
sleep 1   # a worker round over what phase B left

# ---- verdict ------------------------------------------------------------------------------------

for db in sp sp2; do
    [ "$(q "$db" -tA -c "SELECT count(*) FROM wallet.verify()")" = 0 ] \
        || failures+=("$db: wallet.verify() finds balances the log does not explain")
done
fired=$(( $(counter sp) - base_sp + $(counter sp2) - base_sp2 ))
end_offset=$(log_size)
all_log=$(log_firings "$log_offset")
elapsed=$(($(date +%s) - started))
if [ "$fired" -eq 0 ] && [ ${#failures[@]} -eq 0 ] && [ -z "$all_log" ] && [ ! -s "$FIRED" ]; then
    log "search_path: done in ${elapsed} s"
    echo "search_path: $shadows shadows, $calls calls, fired 0"
    exit 0
fi

{
    if [ -s "$FIRED" ]; then
        printf '\nCALLS THAT FAILED (count, role (phase), what, function called, message; one example call each):\n'
        awk -F '\t' '{
                fn = $5; if (match(fn, /wallet\.[a-z_0-9]+/)) fn = substr(fn, RSTART, RLENGTH); else fn = "?"
                key = $2 " (" substr($1, length($1)) ")\t" $3 "\t" fn "\t" $4
                if (!(key in n)) { order[++k] = key; example[key] = $5 }
                n[key]++
            }
            END { for (i = 1; i <= k; i++) { split(order[i], f, "\t")
                printf "%4d x %s %s %s: %s\n       e.g. %s\n", n[order[i]], f[1], f[2], f[3], f[4], example[order[i]] } }' "$FIRED"
    fi
    if [ ${#failures[@]} -gt 0 ]; then
        printf '\nFAILURES:\n'
        for f in "${failures[@]}"; do printf -- '- %s\n' "$f"; done
    fi
    printf '\nEvery shadow that fired since the sanity checks (server log: count, shadow, session, statement):\n'
    firings_since "$log_offset"
} >&2

# Diagnosis: a call stops at the first shadow it reaches, which hides whatever it would have
# resolved next. Drop the shadows that fired (their copies in every schema and database), call
# everything again as the superuser, and repeat until nothing new fires.
q sp -c "INSERT INTO sp_test.tagvals SELECT 'DG' || i, key, val FROM sp_test.tagvals, generate_series(1, 8) AS i WHERE tag = 'SUB'" >/dev/null
printf '\nDiagnosis (peeling off the shadows that fired; calls repeated as postgres with the database search_path):\n' >&2
offset=$log_offset
for i in $(seq 8); do
    # The shadows that fired, per database: each is dropped where it fired only (the same
    # signature may be resolved unsafely in the other database too, at a later point).
    fired_where=$(log_since "$offset" | sed -nE 's/.*WARNING:  SH001 shadow fired: (.*) \(in database ([^,]*), as [^)]*\)$/\2\t\1/p' | sort -u)
    [ -n "$fired_where" ] || break
    for db in sp sp2; do
        labels=$(awk -F '\t' -v db="$db" '$1 == db { print $2 }' <<<"$fired_where")
        [ -n "$labels" ] || continue
        q "$db" -tA -v labels="$labels" >/dev/null <<'SQL'
SELECT d2.stmt FROM sp_test.ddl_drop AS d1 JOIN sp_test.ddl_drop AS d2 ON d2.sig = d1.sig
 WHERE d1.label = ANY (string_to_array(:'labels', E'\n')) \gexec
SQL
    done
    printf '  round %d: dropped %s\n' "$i" "$(awk -F '\t' '{ printf "%s in %s; ", $2, $1 }' <<<"$fired_where")" >&2
    # Leftovers of the previous round (a prepared transaction keeps sp2's rows locked) first;
    # then a stray prepared transaction for recovery's sweep to find.
    PGOPTIONS="-c search_path=pg_catalog,pg_temp" psql_at sp "$PORT" sp -c "CALL wallet.recover()" >/dev/null 2>&1 || true
    drop_strays
    q sp2 -c "BEGIN" -c "SELECT pg_current_xact_id()" -c "PREPARE TRANSACTION 'wallet:$coordinator:stray:dg$i'" >/dev/null
    offset=$(log_size)
    attack postgres "DG$i" no diag
    sleep 1
    if [ -z "$(log_firings "$offset")" ]; then
        printf '  round %d: nothing fired any more\n' "$i" >&2
        break
    fi
    firings_since "$offset" | sed 's/^/    /' >&2
done
log "search_path: done in ${elapsed} s"
echo "search_path: $shadows shadows, $calls calls, fired $fired"
exit 1
