"""Global transactions of every protocol under crashes (run by tests/multinode.sh, which builds
the clusters).

Three databases on two clusters: n1 and n2 on cluster A, n3 on cluster B, each with wallet_ext,
20 funded accounts and every other node registered. Client threads on coordinators n1 (cluster
A) and n3 (cluster B) call wallet.transfer_global with a random protocol (tcc, 2pc, saga) and two
or three legs between random accounts of random nodes, or now and then a batch of four two-leg
ones (wallet.transfer_across_batch, TC/C or Saga); some ask for more than the account holds
(refused), and some set wallet.fault so that the coordinator stops at a named point (an ERROR)
or kills itself (SIGKILL: the whole cluster restarts). Meanwhile a killer thread crashes a whole
cluster (kill -9 of the postmaster and its processes) at random moments and starts it again.
Afterwards recovery runs (CALL wallet.recover(), besides the background worker) and these must
hold:

- every global transaction of both coordinators is finished, confirmed or cancelled; no branch
  refused (stuck);
- every account on every node holds its deposit plus the legs of the confirmed global
  transactions that name it, and nothing else: each confirmed one posted exactly once by every
  protocol, each cancelled one left nothing (a saga's undo balanced its postings);
- TC/C participants' holds agree with the outcome (confirmed -> all confirmed; cancelled -> none
  confirmed); 2PC and Saga leave no hold; no hold unknown to the coordinators;
- no prepared transaction is left on either cluster, and no hold is pending;
- the books of every node balance (trial balance 0), verify(), verify_postings() and, after
  seal(), verify_chain() are empty;
- every global transaction the client was told confirmed is confirmed (not lost by a crash).

Every database defaults to synchronous_commit = off, and half the clients keep it (the others
set it on): what another node acts on must be durable all the same (README, "Durable whatever
synchronous_commit says"). Only a global transaction no other node heard of (every leg on its
coordinator), told confirmed to a client with it off, may be lost by a crash, as any
asynchronous commit may; then it left nothing anywhere.

Usage: multinode.py SOCKET_A PORT_A SOCKET_B PORT_B REPO_ROOT SECONDS
"""

import random
import subprocess
import sys
import threading
import time

import psycopg

SOCK_A, PORT_A, SOCK_B, PORT_B, REPO, SECONDS = sys.argv[1:7]
SECONDS = float(SECONDS)
NODES = {
    "n1": ("A", f"host={SOCK_A} port={PORT_A} dbname=n1 user=postgres"),
    "n2": ("A", f"host={SOCK_A} port={PORT_A} dbname=n2 user=postgres"),
    "n3": ("B", f"host={SOCK_B} port={PORT_B} dbname=n3 user=postgres"),
}
CLUSTER_NAME = {"A": "mnA", "B": "mnB"}
COORDINATORS = ["n1", "n3"]
ACCOUNTS = range(2, 22)  # account 1 is the EUR system account on every node
DEPOSIT = 100_000
CLIENTS_PER_COORDINATOR = 3
TIMEOUT = "60 seconds"
PROTOCOLS = ["tcc", "2pc", "saga"]
FAULT_POINTS = ["after_record", "after_remote_try", "after_decide", "after_remote_confirm",
                "after_remote_cancel"]
# Errors a client may meet besides a refusal (WA...): the coordinator's connection lost to a
# crash or to a fault (57P01), and what concurrent transactions meet anywhere.
CONCURRENCY_STATES = {"40001", "40P01", "55P03"}

stop = threading.Event()
lock = threading.Lock()
told_confirmed = []  # (coordinator, gtid, must survive a crash) the client saw confirmed
counts = {"confirmed": 0, "pending": 0, "rejected": 0, "lost_connection": 0, "faults": 0}
rejections = {}
by_protocol = {p: 0 for p in PROTOCOLS}
crashes = []
thread_errors = []
here_alone = set()  # gtids whose every leg is on their coordinator


def connect(node, retry_for=90.0):
    deadline = time.time() + retry_for
    while True:
        try:
            return psycopg.connect(NODES[node][1], autocommit=True)
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def setup():
    for node, (_, dsn) in NODES.items():
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION wallet_ext")
            c.execute("SELECT wallet.create_currency('EUR')")
            for _ in ACCOUNTS:
                (a,) = c.execute("SELECT wallet.open_account('EUR')").fetchone()
                c.execute("SELECT wallet.deposit(%s, %s)", (a, DEPOSIT))
            for other, (_, other_dsn) in NODES.items():
                if other != node:
                    c.execute("SELECT wallet.register_node(%s, %s)",
                              (other, other_dsn + " connect_timeout=2"))
            c.execute(f"ALTER DATABASE {node} SET synchronous_commit = off")


def guarded(target):
    def run(*args):
        try:
            target(*args)
        except BaseException as e:  # noqa: BLE001 - reported by main
            thread_errors.append(f"{target.__name__}{args}: {e!r}")
            stop.set()
    return run


def random_legs(rng, coordinator, i):
    """Two or three legs (node, account, amount) summing to 0, between distinct accounts."""
    n = rng.choice([2, 2, 3])
    places = set()
    while len(places) < n:
        places.add((rng.choice(list(NODES)), rng.choice(ACCOUNTS)))
    places = sorted(places)
    rng.shuffle(places)
    big = i % 25 == 0  # more than any account holds: refused
    if n == 2:
        a = 10**9 if big else rng.randint(1, 500)
        amounts = [-a, a]
    else:
        a, b = rng.randint(1, 300), rng.randint(1, 300)
        amounts = rng.choice([[-(a + b), a, b], [-a, -b, a + b]])
        if big:
            amounts = [m * 10**7 for m in amounts]
    name = lambda node: "local" if node == coordinator else node
    return [name(nd) for nd, _ in places], [acct for _, acct in places], amounts


def client(coordinator, number):
    rng = random.Random(f"{coordinator}-{number}")
    durable = number % 2 == 0

    def connect_client():
        c = connect(coordinator)
        c.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
        return c

    conn = connect_client()
    i = 0
    while not stop.is_set():
        i += 1
        gtid = f"{coordinator}-{number}-{i}"
        protocol = PROTOCOLS[i % 3]
        nodes, accounts, amounts = random_legs(rng, coordinator, i)
        fault = None
        if rng.random() < 0.04:
            fault = f"{rng.choice(FAULT_POINTS)}:{'kill' if rng.random() < 0.1 else 'error'}"
        if protocol != "2pc" and i % 5 == 0:
            # A batch of four two-leg global transactions, each with its own outcome.
            try:
                conn.execute("SELECT set_config('wallet.fault', %s, false)", (fault or "",))
                legs = [random_legs(rng, coordinator, 1) for _ in range(4)]
                legs = [(n[:2], a[:2], [m[0], -m[0]] if m[0] < 0 else [-m[1], m[1]]) for n, a, m in legs]
                gtids = [f"{gtid}.{k}" for k in range(4)]
                outcomes, states, _ = conn.execute(
                    "CALL wallet.transfer_across_batch(%s, %s, %s, %s, %s, %s, %s, %s::interval)",
                    (gtids, [n[0] for n, _, _ in legs], [a[0] for _, a, _ in legs],
                     [n[1] for n, _, _ in legs], [a[1] for _, a, _ in legs],
                     [abs(m[0]) for _, _, m in legs], protocol, TIMEOUT)).fetchone()
                with lock:
                    by_protocol[protocol] += 1
                    for g, o, st, item in zip(gtids, outcomes, states, legs):
                        if o == "confirmed":
                            counts["confirmed"] += 1
                            told_confirmed.append((coordinator, g, durable or item[0] != ["local", "local"]))
                        elif o in ("cancelled", "rejected"):
                            counts["rejected"] += 1
                            rejections[st] = rejections.get(st, 0) + 1
                        elif o == "pending":
                            counts["pending"] += 1
                        else:
                            fail(f"{g} ({protocol}, batch): outcome {o!r}")
                continue
            except psycopg.errors.Error as e:
                state = e.sqlstate or ""
                if conn.closed or conn.broken or state.startswith("08") or state.startswith("57P"):
                    with lock:
                        counts["faults" if fault and not conn.broken else "lost_connection"] += 1
                    try:
                        conn.close()
                    except Exception:
                        pass
                    time.sleep(0.1)
                    conn = connect_client()
                    continue
                if state in CONCURRENCY_STATES:
                    with lock:
                        rejections[state] = rejections.get(state, 0) + 1
                    continue
                fail(f"{gtid} ({protocol}, batch): unexpected error {state}: {e}")
        try:
            conn.execute("SELECT set_config('wallet.fault', %s, false)", (fault or "",))
            (outcome,) = conn.execute(
                "CALL wallet.transfer_global(%s, %s, %s, %s, %s, %s::interval)",
                (gtid, nodes, accounts, amounts, protocol, TIMEOUT)).fetchone()
            with lock:
                by_protocol[protocol] += 1
                if outcome == "confirmed":
                    counts["confirmed"] += 1
                    told_confirmed.append((coordinator, gtid, durable or any(n != "local" for n in nodes)))
                elif outcome == "pending" and protocol == "saga":
                    counts["pending"] += 1  # a saga not finished yet: recovery takes it on
                else:
                    fail(f"{gtid} ({protocol}): outcome {outcome!r} without an error")
        except psycopg.errors.Error as e:
            state = e.sqlstate or ""
            if conn.closed or conn.broken or state.startswith("08") or state.startswith("57P"):
                with lock:
                    counts["faults" if fault and not conn.broken else "lost_connection"] += 1
                try:
                    conn.close()
                except Exception:
                    pass
                time.sleep(0.1)
                conn = connect_client()
            elif state.startswith("WA") or state in CONCURRENCY_STATES:
                with lock:
                    counts["rejected"] += 1
                    rejections[state] = rejections.get(state, 0) + 1
            else:
                fail(f"{gtid} ({protocol}): unexpected error {state}: {e}")
    conn.close()


def killer():
    rng = random.Random(7)
    time.sleep(rng.uniform(3, 5))
    cluster = rng.choice(["A", "B"])
    while not stop.is_set():
        cluster = "B" if cluster == "A" else "A"
        name = CLUSTER_NAME[cluster]
        subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh"; cluster_crash {name}'],
                       check=True)
        crashes.append((round(time.time(), 1), name))
        time.sleep(rng.uniform(0.5, 2.0))
        subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh"; cluster_restart {name}'],
                       check=True)
        stop.wait(rng.uniform(3, 8))


def one(node, sql, params=None):
    with connect(node) as c:
        return c.execute(sql, params).fetchone()


def rows(node, sql, params=None):
    with connect(node) as c:
        return c.execute(sql, params).fetchall()


def long_holders():
    """What holds locks or prepared transactions for long on each cluster (printed when recovery
    is slow: a lock held for a hold's whole timeout is what makes a decided confirm meet WA021)."""
    for cluster in ("n1", "n3"):
        for row in rows(cluster, """SELECT 'backend', a.datname, a.pid, a.state, now() - a.xact_start,
                                          pg_catalog.pg_blocking_pids(a.pid), left(a.query, 120)
                                     FROM pg_catalog.pg_stat_activity AS a
                                    WHERE a.xact_start < now() - interval '5 seconds' AND a.pid <> pg_backend_pid()
                                   UNION ALL
                                   SELECT 'waits', w.datname, w.pid, w.wait_event_type || ':' || coalesce(w.wait_event, ''),
                                          now() - w.query_start, pg_catalog.pg_blocking_pids(w.pid),
                                          left(w.query, 60) || ' <- ' || coalesce((SELECT string_agg(b.pid || ' ' || coalesce(b.state, '-') || ' ' || coalesce(b.application_name, '') || ' xact ' || coalesce((now() - b.xact_start)::text, '-') || ' ' || left(b.query, 60), '; ')
                                                      FROM pg_catalog.pg_stat_activity AS b WHERE b.pid = ANY (pg_catalog.pg_blocking_pids(w.pid))), '')
                                     FROM pg_catalog.pg_stat_activity AS w
                                    WHERE w.wait_event_type = 'Lock'
                                   UNION ALL
                                   SELECT 'prepared', p.database, NULL, p.gid, now() - p.prepared, NULL, NULL
                                     FROM pg_catalog.pg_prepared_xacts AS p
                                    WHERE p.prepared < now() - interval '5 seconds'"""):
            print(f"  long on {NODES[cluster][0]}: {row}", flush=True)
            if row[0] == "prepared":
                for coordinator in COORDINATORS:
                    for g in rows(coordinator, """SELECT g.gtid, g.protocol, g.phase, g.outcome, g.finished_at,
                                                          g.batch, g.created_at, g.finished_by
                                                     FROM wallet.branches AS b
                                                     JOIN wallet.global_transactions AS g USING (gtid)
                                                    WHERE b.gid = %s""", (row[3],)):
                        print(f"    its global transaction on {coordinator}: {g}", flush=True)


def recover():
    deadline = time.time() + 180
    started = time.time()
    slow = started + 20  # when to print what holds locks (every 20 s while it lasts)
    for coordinator in COORDINATORS:
        while True:
            finished, unfinished = one(coordinator, "CALL wallet.recover()")
            if unfinished == 0:
                break
            if slow and time.time() > slow:
                slow = slow + 20 if slow < deadline - 100 else None
                print(f"recovery slow: {unfinished} unfinished on {coordinator} after "
                      f"{time.time() - started:.0f} s", flush=True)
                long_holders()
            if time.time() > deadline:
                stuck = rows(coordinator, """SELECT gtid, protocol, phase, outcome, error_sqlstate, error_message
                                               FROM wallet.global_transactions WHERE finished_at IS NULL LIMIT 5""")
                fail(f"{coordinator}: {unfinished} global transactions still unfinished: {stuck}")
            time.sleep(0.5)
    for node in NODES:
        one(node, "SELECT wallet.expire_holds(10000)")


def check_outcomes():
    """1. Every global transaction finished; returns {gtid: (protocol, outcome, legs)}."""
    found = {}
    for coordinator in COORDINATORS:
        for gtid, protocol, outcome, finished, nodes, accounts, amounts, batch in rows(
                coordinator, """SELECT gtid, protocol, outcome, finished_at IS NOT NULL,
                                       leg_nodes, leg_account_ids, leg_amounts, batch
                                  FROM wallet.global_transactions"""):
            if not finished or outcome not in ("confirmed", "cancelled"):
                fail(f"{coordinator} {gtid} ({protocol}): outcome {outcome}, finished {finished}")
            legs = [(coordinator if n == "local" else n, a, m) for n, a, m in zip(nodes, accounts, amounts)]
            found[gtid] = (protocol, outcome, legs)
            if batch is None and all(n == "local" for n in nodes):
                # A single call's: one local transaction, no branch rows, no holds (README,
                # "Transfers between databases"); its balances are checked with the others'.
                here_alone.add(gtid)
        (branches,) = one(coordinator, """SELECT count(*) FROM wallet.branches AS b
                                            JOIN wallet.global_transactions AS g USING (gtid)
                                           WHERE g.batch IS NULL AND g.leg_nodes <@ ARRAY['local']""")
        if branches:
            fail(f"{coordinator}: {branches} branch rows of global transactions with every leg on it")
        (refused,) = one(coordinator, "SELECT count(*) FROM wallet.branches WHERE status = 'refused'")
        if refused:
            fail(f"{coordinator}: {refused} branches refused after a confirm decision")
    return found


def check_balances(outcomes):
    """2. Each account holds its deposit plus the confirmed legs naming it, nothing else."""
    expected = {(node, a): DEPOSIT for node in NODES for a in ACCOUNTS}
    for protocol, outcome, legs in outcomes.values():
        if outcome == "confirmed":
            for node, account, amount in legs:
                expected[(node, account)] += amount
    users = 0
    for node in NODES:
        for account, balance in rows(node, "SELECT id, balance FROM wallet.accounts WHERE NOT is_system"):
            users += balance
            if balance != expected[(node, account)]:
                touching = [(g, p, o) for g, (p, o, legs) in outcomes.items()
                            if any(n == node and a == account for n, a, _ in legs)][-5:]
                fail(f"{node} account {account}: balance {balance}, expected {expected[(node, account)]} "
                     f"(last global transactions naming it: {touching})")
    if users != DEPOSIT * len(ACCOUNTS) * len(NODES):
        fail(f"customers hold {users}, deposited {DEPOSIT * len(ACCOUNTS) * len(NODES)}")
    return users


def check_holds(outcomes):
    """3. TC/C holds agree with their outcome; no hold of 2PC or Saga, none unknown."""
    holds = {}
    for node in NODES:
        for gtid, branch, status in rows(node, "SELECT gtid, branch, status FROM wallet.holds"):
            holds.setdefault(gtid, []).append((node, branch, status))
    for gtid, found in holds.items():
        if gtid not in outcomes or outcomes[gtid][0] != "tcc":
            fail(f"holds of {gtid}, which is no TC/C global transaction a coordinator knows: {found}")
        protocol, outcome, legs = outcomes[gtid]
        statuses = [s for _, _, s in found]
        if outcome == "confirmed" and any(s != "confirmed" for s in statuses):
            fail(f"{gtid} confirmed, its holds: {found}")
        if outcome == "cancelled" and any(s == "confirmed" for s in statuses):
            fail(f"{gtid} cancelled, its holds: {found}")
    for gtid, (protocol, outcome, legs) in outcomes.items():
        if gtid in here_alone:
            if holds.get(gtid):
                fail(f"{gtid}: every leg on its coordinator, yet holds: {holds[gtid]}")
        elif protocol == "tcc" and outcome == "confirmed" and not holds.get(gtid):
            fail(f"{gtid} (tcc) confirmed without a hold anywhere")


def check_nodes():
    """4. Nothing prepared or pending; 5. books balanced, logs verified and chained."""
    for cluster_node in ("n1", "n3"):
        (prepared,) = one(cluster_node, "SELECT count(*) FROM pg_prepared_xacts")
        if prepared:
            fail(f"cluster of {cluster_node}: {prepared} prepared transactions left")
    for node in NODES:
        (pending, late) = one(node, """SELECT count(*), count(*) FILTER (WHERE expires_at < clock_timestamp())
                                         FROM wallet.holds WHERE status = 'pending'""")
        if pending or late:
            fail(f"{node}: {pending} holds pending, {late} past their timeout")
        for currency, _, total, negative in rows(node, "SELECT * FROM wallet.trial_balance()"):
            if total != 0 or negative != 0:
                fail(f"{node} {currency}: total {total}, forbidden negatives {negative}")
        one(node, "SELECT wallet.seal()")
        for check in ("verify", "verify_postings", "verify_chain"):
            (problems,) = one(node, f"SELECT count(*) FROM wallet.{check}()")
            if problems:
                fail(f"{node}: {check}() found {problems} problems")


def main():
    setup()
    threads = [threading.Thread(target=guarded(client), args=(c, n))
               for c in COORDINATORS for n in range(CLIENTS_PER_COORDINATOR)]
    kill_thread = threading.Thread(target=guarded(killer))
    for t in threads:
        t.start()
    kill_thread.start()
    stop.wait(SECONDS)
    stop.set()
    kill_thread.join()
    for t in threads:
        t.join()
    print(f"load: {counts}, answered by protocol {by_protocol}, rejections by SQLSTATE {rejections}, "
          f"crashes: {len(crashes)} {[n for _, n in crashes]}", flush=True)
    if thread_errors:
        fail("; ".join(thread_errors))
    if len(crashes) < 2 or counts["confirmed"] < 50 or min(by_protocol.values()) < 10:
        fail("too little happened to test anything")

    recover()
    outcomes = check_outcomes()
    by_recovery = sum(one(c, "SELECT count(*) FROM wallet.global_transactions WHERE finished_by = 'recovery'")[0]
                      for c in COORDINATORS)
    summary = {}
    for protocol, outcome, _ in outcomes.values():
        summary[(protocol, outcome)] = summary.get((protocol, outcome), 0) + 1
    print(f"global transactions: {len(outcomes)} "
          f"({', '.join(f'{p} {o} {n}' for (p, o), n in sorted(summary.items()))}), "
          f"finished by recovery {by_recovery}, every leg on the coordinator {len(here_alone)}", flush=True)
    if by_recovery == 0:
        fail("no crash interrupted a global transaction: recovery was not exercised")
    users = check_balances(outcomes)
    check_holds(outcomes)
    check_nodes()
    lost = 0
    for coordinator, gtid, must_survive in told_confirmed:
        outcome = outcomes.get(gtid, (None, None))[1]
        if outcome is None and not must_survive:
            lost += 1  # asynchronous, on its coordinator alone: lost whole by a crash
        elif outcome != "confirmed":
            fail(f"{gtid}: the client was told confirmed, the ledger says {outcomes.get(gtid)}")
    print(f"checked: {len(told_confirmed)} told confirmed are confirmed (but {lost} asynchronous ones "
          f"on their coordinator alone, lost whole by a crash); every account on 3 nodes holds "
          f"exactly its confirmed legs; money conserved ({users}); no hold pending, nothing prepared; "
          f"verify(), verify_postings(), verify_chain() empty on 3 nodes", flush=True)


if __name__ == "__main__":
    main()
