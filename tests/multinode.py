"""Cross-node transfers under crashes (run by tests/multinode.sh, which builds the clusters).

Three databases on two clusters: n1 and n2 on cluster A, n3 on cluster B, each with wallet_ext,
20 funded accounts and every other node registered. Client threads call
wallet.transfer_across on coordinators n1 (cluster A) and n3 (cluster B) between random accounts
of random nodes, while a killer thread crashes a whole cluster (kill -9 of the postmaster and its
processes) at random moments and starts it again. Afterwards recovery runs (CALL
wallet.recover(), besides the background worker) and the invariants are checked:

- every global transaction of both coordinators is finished: confirmed or cancelled;
- every participant's holds agree with the outcome (confirmed -> all confirmed; cancelled ->
  none confirmed), and no branch was refused;
- the sum of balances per currency is 0 on every node (each node's books), and the sum of the
  customers' balances over all nodes is what was deposited (money conserved between nodes);
- no hold is pending any more, and none outlived its timeout;
- verify() is empty on every node;
- every transfer the client was told was confirmed is confirmed on its coordinator and on its
  participants (not lost by a crash).

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

down = {"A": threading.Event(), "B": threading.Event()}
stop = threading.Event()
lock = threading.Lock()
told_confirmed = []  # (coordinator, gtid) the client saw confirmed
counts = {"confirmed": 0, "rejected": 0, "lost_connection": 0}
rejections = {}
crashes = []


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
            c.execute("CREATE EXTENSION dblink")
            c.execute("SELECT wallet.create_currency('EUR')")
            for _ in ACCOUNTS:
                (a,) = c.execute("SELECT wallet.open_account('EUR')").fetchone()
                c.execute("SELECT wallet.deposit(%s, %s)", (a, DEPOSIT))
            for other, (_, other_dsn) in NODES.items():
                if other != node:
                    c.execute("SELECT wallet.register_node(%s, %s)",
                              (other, other_dsn + " connect_timeout=2"))


thread_errors = []


def guarded(target):
    def run(*args):
        try:
            target(*args)
        except BaseException as e:  # noqa: BLE001 - reported by main
            thread_errors.append(f"{target.__name__}{args}: {e!r}")
            stop.set()
    return run


def client(coordinator, number):
    rng = random.Random(f"{coordinator}-{number}")
    conn = connect(coordinator)
    i = 0
    while not stop.is_set():
        i += 1
        gtid = f"{coordinator}-{number}-{i}"
        f, t = rng.choice(list(NODES)), rng.choice(list(NODES))
        a, b = rng.choice(ACCOUNTS), rng.choice(ACCOUNTS)
        if f == t and a == b:
            continue
        amount = 10**9 if i % 25 == 0 else rng.randint(1, 500)  # some are refused: no funds
        name = lambda n: "local" if n == coordinator else n
        try:
            (outcome,) = conn.execute(
                "CALL wallet.transfer_across(%s, %s, %s, %s, %s, %s, %s::interval)",
                (gtid, name(f), a, name(t), b, amount, TIMEOUT)).fetchone()
            with lock:
                if outcome != "confirmed":
                    fail(f"{gtid}: outcome {outcome!r} without an error")
                counts["confirmed"] += 1
                told_confirmed.append((coordinator, gtid))
        except psycopg.errors.Error as e:
            state = e.sqlstate or ""
            if conn.closed or conn.broken or state.startswith("08") or state.startswith("57P"):
                with lock:
                    counts["lost_connection"] += 1
                try:
                    conn.close()
                except Exception:
                    pass
                time.sleep(0.1)
                conn = connect(coordinator)
            elif state.startswith("WA"):
                with lock:
                    counts["rejected"] += 1
                    rejections[state] = rejections.get(state, 0) + 1
            else:
                fail(f"{gtid}: unexpected error {state}: {e}")
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
    print(f"load: {counts}, rejections by SQLSTATE {rejections}, crashes: {len(crashes)} "
          f"{[n for _, n in crashes]}", flush=True)
    if thread_errors:
        fail("; ".join(thread_errors))
    if len(crashes) < 2 or counts["confirmed"] < 50:
        fail("too little happened to test anything")

    # Recovery: explicit calls (the worker runs too; their claims keep them apart).
    deadline = time.time() + 120
    for coordinator in COORDINATORS:
        while True:
            finished, unfinished = one(coordinator, "CALL wallet.recover()")
            if unfinished == 0:
                break
            if time.time() > deadline:
                fail(f"{coordinator}: {unfinished} global transactions still unfinished")
            time.sleep(0.5)
    for node in NODES:
        one(node, "SELECT wallet.expire_holds(10000)")

    # 1. Every global transaction finished, confirmed or cancelled; no branch refused.
    outcomes = {}
    for coordinator in COORDINATORS:
        for gtid, outcome, finished in rows(
                coordinator, "SELECT gtid, outcome, finished_at IS NOT NULL FROM wallet.global_transactions"):
            if not finished or outcome not in ("confirmed", "cancelled"):
                fail(f"{coordinator} {gtid}: outcome {outcome}, finished {finished}")
            outcomes[gtid] = outcome
        (refused,) = one(coordinator, "SELECT count(*) FROM wallet.branches WHERE status = 'refused'")
        if refused:
            fail(f"{coordinator}: {refused} branches refused after a confirm decision")
    by_recovery = sum(one(c, "SELECT count(*) FROM wallet.global_transactions WHERE finished_by = 'recovery'")[0]
                      for c in COORDINATORS)
    print(f"global transactions: {len(outcomes)}, confirmed "
          f"{sum(o == 'confirmed' for o in outcomes.values())}, finished by recovery {by_recovery}",
          flush=True)
    if by_recovery == 0:
        fail("no crash interrupted a global transaction: recovery was not exercised")

    # 2. The participants agree with the outcomes.
    holds = {}
    for node in NODES:
        for gtid, branch, status in rows(node, "SELECT gtid, branch, status FROM wallet.holds"):
            holds.setdefault(gtid, []).append((node, branch, status))
    for gtid, outcome in outcomes.items():
        statuses = [s for _, _, s in holds.get(gtid, [])]
        if outcome == "confirmed" and (not statuses or any(s != "confirmed" for s in statuses)):
            fail(f"{gtid} confirmed, its holds: {holds.get(gtid)}")
        if outcome == "cancelled" and any(s == "confirmed" for s in statuses):
            fail(f"{gtid} cancelled, its holds: {holds.get(gtid)}")
    for gtid in holds:
        if gtid not in outcomes:
            fail(f"hold of {gtid} on a participant, unknown to every coordinator: {holds[gtid]}")

    # 3. Books balanced per node; customers' money conserved over the nodes.
    users = 0
    for node in NODES:
        for currency, _, total, negative in rows(node, "SELECT * FROM wallet.trial_balance()"):
            if total != 0 or negative != 0:
                fail(f"{node} {currency}: total {total}, forbidden negatives {negative}")
        (s,) = one(node, "SELECT sum(balance) FROM wallet.accounts WHERE NOT is_system")
        users += s
    if users != DEPOSIT * len(ACCOUNTS) * len(NODES):
        fail(f"customers hold {users}, deposited {DEPOSIT * len(ACCOUNTS) * len(NODES)}")

    # 4. No pending hold, none past its timeout; 5. verify() empty everywhere.
    for node in NODES:
        (pending, late) = one(node, """SELECT count(*), count(*) FILTER (WHERE expires_at < clock_timestamp())
                                         FROM wallet.holds WHERE status = 'pending'""")
        if pending or late:
            fail(f"{node}: {pending} holds pending, {late} past their timeout")
        (differences,) = one(node, "SELECT count(*) FROM wallet.verify()")
        if differences:
            fail(f"{node}: verify() found {differences} differences")
        # account histories posted by the workers while servers crashed
        (problems,) = one(node, "SELECT count(*) FROM wallet.verify_postings()")
        if problems:
            fail(f"{node}: verify_postings() found {problems} problems")

    # 6. What the client was told confirmed is confirmed, on the coordinator and participants.
    for coordinator, gtid in told_confirmed:
        if outcomes.get(gtid) != "confirmed":
            fail(f"{gtid}: the client was told confirmed, the ledger says {outcomes.get(gtid)}")
    print(f"checked: {len(told_confirmed)} transfers told confirmed are confirmed on every node; "
          f"books balanced, money conserved ({users}), no pending hold, verify() and verify_postings() empty on 3 nodes",
          flush=True)


if __name__ == "__main__":
    main()
