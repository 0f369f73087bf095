"""Every crash point of every protocol, deterministically (run by tests/crash_points.sh).

Two clusters: A holds the coordinator database `c` (and the node `local`), B holds the
participant databases `p` and `q`. For each protocol (tcc, 2pc, saga), each named point where the
coordinator can stop (wallet.fault: after_record, after_remote_try, after_decide,
after_remote_confirm, after_remote_cancel; and lost answers of each kind of call), each way of
stopping (`error`: the backend raises an ERROR there, leaving the ledger as committed, as a
coordinator failing between two steps would; `kill`: the backend kills itself with SIGKILL, which
crashes and restarts the whole cluster A), and each direction of money (from A to B, from B to A,
a transfer that B refuses, so that the cancel path runs, and one of three legs with two remote
branches, p and q, whose answers come in the same round), one global transaction is started
with the fault set; and for TC/C and Saga, a batch of three (out, in, refused) through
transfer_across_batch at each point. Then recovery runs (CALL wallet.recover(), until nothing is unfinished) and
these must hold, on both databases:

- the global transaction is finished: confirmed or cancelled (never stuck: no branch refused);
- what was confirmed moved the amount, what was cancelled moved nothing (per account, per node);
- the money of the customers summed over the two nodes is unchanged;
- no hold is pending, no prepared transaction is left on either cluster;
- verify() and verify_chain() (after seal()) are empty, and the trial balance is 0.

Usage: crash_points.py SOCK_A PORT_A SOCK_B PORT_B REPO
"""

import subprocess
import sys
import time

import psycopg

SOCK_A, PORT_A, SOCK_B, PORT_B, REPO = sys.argv[1:6]
DSN_C = f"host={SOCK_A} port={PORT_A} dbname=c user=postgres"
DSN_P = f"host={SOCK_B} port={PORT_B} dbname=p user=postgres"
DSN_Q = f"host={SOCK_B} port={PORT_B} dbname=q user=postgres"
DATABASES = (("c", DSN_C), ("p", DSN_P), ("q", DSN_Q))
DEPOSIT = 1_000_000
POINTS = ["after_record", "after_remote_try", "after_decide", "after_remote_confirm",
          "after_remote_cancel", "lose_answers:try", "lose_answers:confirm", "lose_answers:cancel"]


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def connect(dsn, retry_for=60.0):
    deadline = time.time() + retry_for
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def one(dsn, sql, params=None):
    with connect(dsn) as c:
        return c.execute(sql, params).fetchone()


def setup():
    for _, dsn in DATABASES:
        with connect(dsn) as c:
            c.execute("CREATE EXTENSION wallet_ext")
            c.execute("SELECT wallet.create_currency('EUR')")
            for owner in ("payer", "payee", "closed"):
                c.execute("SELECT wallet.open_account('EUR', %s)", (owner,))
            c.execute("SELECT wallet.deposit(2, %s)", (DEPOSIT,))
            c.execute("SELECT wallet.close_account(4)")
            # Settlement spread over three system accounts (5 and 6 besides 1): every case's
            # branches settle against one of them, chosen by key, through every crash.
            c.execute("SELECT wallet.spread_settlement('EUR', 3)")
    with connect(DSN_C) as c:
        c.execute("SELECT wallet.register_node('p', %s)", (DSN_P + " connect_timeout=5",))
        c.execute("SELECT wallet.register_node('q', %s)", (DSN_Q + " connect_timeout=5",))


def balances():
    out = {}
    for name, dsn in DATABASES:
        with connect(dsn) as c:
            for (account, balance) in c.execute("SELECT id, balance FROM wallet.accounts WHERE NOT is_system"):
                out[(name, account)] = balance
    return out


def recover():
    deadline = time.time() + 60
    while True:
        finished, unfinished = one(DSN_C, "CALL wallet.recover()")
        if unfinished == 0:
            return
        if time.time() > deadline:
            fail(f"{unfinished} global transactions unfinished after a minute of recovery")
        time.sleep(0.2)


def moved_between(before, after):
    """{(database, account): change} of every customer account whose balance changed."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) != before.get(k, 0)}


def stopped_call(fault, sql, params, session=()):
    """Runs `sql` on the coordinator with wallet.fault set to `fault` (after the `session`
    statements), expecting the fault to stop it (an ERROR, or the connection dying with the
    backend); waits until cluster A is back (after a kill it restarts on its own,
    restart_after_crash) and runs recovery. Returns whether the call came back normally."""
    conn = connect(DSN_C)
    returned = False
    try:
        for statement in session:
            conn.execute(statement)
        conn.execute("SELECT set_config('wallet.fault', %s, false)", (fault,))
        conn.execute(sql, params)
        returned = True
    except psycopg.Error:
        pass
    finally:
        try:
            conn.close()
        except Exception:
            pass
    connect(DSN_C).close()
    recover()
    return returned


def check_clean(context):
    for name, dsn in DATABASES:
        with connect(dsn) as c:
            c.execute("SELECT wallet.seal()")
            (pending,) = c.execute("SELECT count(*) FROM wallet.holds WHERE status = 'pending'").fetchone()
            (diff,) = c.execute("SELECT count(*) FROM wallet.verify()").fetchone()
            (broken,) = c.execute("SELECT count(*) FROM wallet.verify_chain()").fetchone()
            (prepared,) = c.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()
            (total,) = c.execute("SELECT coalesce(sum(total_balance), 0) FROM wallet.trial_balance()").fetchone()
            if pending or diff or broken or prepared or total != 0:
                fail(f"{context}: on {name}: {pending} pending holds, {diff} verify differences, "
                     f"{broken} broken links, {prepared} prepared transactions, total {total}")


def run_case(number, protocol, point, mode, direction):
    gtid = f"cp-{number}-{protocol}-{point}-{mode}-{direction}"
    amount = 100 + number
    if direction == "c_to_p":
        legs, refused = [("local", 2, -amount), ("p", 3, amount)], False
    elif direction == "p_to_c":
        legs, refused = [("p", 2, -amount), ("local", 3, amount)], False
    elif direction == "two_remote":
        legs, refused = [("local", 2, -amount), ("p", 3, amount - 1), ("q", 3, 1)], False
    else:
        legs, refused = [("local", 2, -amount), ("p", 4, amount)], True   # p's account 4 is closed
    before = balances()
    fault = point if point.startswith("lose_answers") else f"{point}:{mode}"
    stopped_call(fault, "CALL wallet.transfer_global(%s, %s, %s, %s, %s, %s::interval)",
                 (gtid, [n for n, _, _ in legs], [a for _, a, _ in legs], [m for _, _, m in legs],
                  protocol, "1 hour"))
    row = one(DSN_C, "SELECT outcome, finished_at IS NOT NULL FROM wallet.global_transactions WHERE gtid = %s", (gtid,))
    after = balances()
    if row is None:
        # Stopped before anything was recorded (a kill at after_record can only come after the
        # record committed, so this cannot happen).
        fail(f"{gtid}: not recorded")
    outcome, finished = row
    if not finished or outcome not in ("confirmed", "cancelled"):
        fail(f"{gtid}: outcome {outcome}, finished {finished}")
    if refused and outcome == "confirmed":
        fail(f"{gtid}: confirmed although the credit account is closed")
    moved = moved_between(before, after)
    expected = {}
    if outcome == "confirmed":
        expected = {("c" if n == "local" else n, a): m for n, a, m in legs}
    if moved != expected:
        fail(f"{gtid}: outcome {outcome}, but the balances moved {moved} (expected {expected})")
    if sum(after.values()) != sum(before.values()):
        fail(f"{gtid}: customers' money changed from {sum(before.values())} to {sum(after.values())}")
    check_clean(gtid)
    return outcome


def run_batch_case(number, protocol, point, mode):
    """A batch of three global transactions (out, in, refused) stopped at `point`."""
    tag = f"cp-{number}-{protocol}-{point}-{mode}-batch"
    amount = 100 + number
    items = [(f"{tag}-out", ("local", 2, "p", 3), False),
             (f"{tag}-in", ("p", 2, "local", 3), False),
             (f"{tag}-refused", ("local", 2, "p", 4), True)]
    before = balances()
    fault = point if point.startswith("lose_answers") else f"{point}:{mode}"
    stopped_call(fault, "CALL wallet.transfer_across_batch(%s, %s, %s, %s, %s, %s, %s, %s::interval)",
                 ([g for g, _, _ in items], [l[0] for _, l, _ in items], [l[1] for _, l, _ in items],
                  [l[2] for _, l, _ in items], [l[3] for _, l, _ in items], [amount] * 3,
                  protocol, "1 hour"))
    after = balances()
    expected = {}
    outcomes = {}
    for gtid, legs, refused in items:
        row = one(DSN_C, "SELECT outcome, finished_at IS NOT NULL FROM wallet.global_transactions WHERE gtid = %s", (gtid,))
        if row is None:
            fail(f"{gtid}: not recorded")
        outcome, finished = row
        if not finished or outcome not in ("confirmed", "cancelled"):
            fail(f"{gtid}: outcome {outcome}, finished {finished}")
        if refused and outcome == "confirmed":
            fail(f"{gtid}: confirmed although the credit account is closed")
        outcomes[gtid] = outcome
        if outcome == "confirmed":
            src = ("c" if legs[0] == "local" else "p", legs[1])
            dst = ("c" if legs[2] == "local" else "p", legs[3])
            expected[src] = expected.get(src, 0) - amount
            expected[dst] = expected.get(dst, 0) + amount
    expected = {k: v for k, v in expected.items() if v != 0}
    moved = moved_between(before, after)
    if moved != expected:
        fail(f"{tag}: outcomes {outcomes}, but the balances moved {moved} (expected {expected})")
    check_clean(tag)
    return outcomes


def crash_cluster(name):
    """The whole cluster NAME dies at once (kill -9 of every process) and starts again."""
    subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh"; cluster_crash {name}; cluster_restart {name}'],
                   check=True)


def run_async_case(number, protocol, crashed, batch):
    """A global transaction (or a batch of two) answered to a caller with synchronous_commit off,
    on nodes whose default is off too, and then the whole cluster `crashed` dies at once.

    Both clusters run with wal_writer_delay = 10s (crash_points.sh), so what was committed
    asynchronously is still in the WAL buffers when the cluster dies, and is lost. What the
    answer rested on must not be: every commit that a call to another node follows (the record,
    the decision) and every participant's answer are durable whatever the session's setting.
    After recovery, what was answered confirmed is confirmed and moved its money on both nodes."""
    tag = f"cp-{number}-{protocol}-async-{crashed}"
    amount = 100 + number
    gtids = [f"{tag}-{i}" for i in range(2 if batch else 1)]
    before = balances()
    with connect(DSN_C) as conn:
        conn.execute("SET synchronous_commit = off")
        if batch:
            conn.execute("CALL wallet.transfer_across_batch(%s, %s, %s, %s, %s, %s, %s, %s::interval)",
                          (gtids, ["local", "p"], [2, 2], ["p", "local"], [3, 3], [amount, amount],
                           protocol, "1 hour"))
            answers = [r[0] for r in conn.execute(
                "SELECT outcome FROM wallet.global_transactions WHERE gtid = ANY (%s) ORDER BY gtid",
                (gtids,)).fetchall()]
        else:
            answers = [conn.execute("CALL wallet.transfer_global(%s, %s, %s, %s, %s, %s::interval)",
                                    (gtids[0], ["local", "p"], [2, 3], [-amount, amount],
                                     protocol, "1 hour")).fetchone()[0]]
    if answers != ["confirmed"] * len(gtids):
        fail(f"{tag}: answered {answers} before the crash")
    crash_cluster(crashed)
    connect(DSN_C).close()
    connect(DSN_P).close()
    recover()
    after = balances()
    for gtid in gtids:
        row = one(DSN_C, "SELECT outcome, finished_at IS NOT NULL FROM wallet.global_transactions WHERE gtid = %s",
                  (gtid,))
        if row != ("confirmed", True):
            fail(f"{gtid}: answered confirmed, but after {crashed} crashed and recovery ran the ledger has {row}")
    expected = {("c", 2): -amount, ("p", 3): amount}
    if batch:
        expected = {("c", 2): -amount, ("p", 3): amount, ("p", 2): -amount, ("c", 3): amount}
    moved = moved_between(before, after)
    if moved != expected:
        fail(f"{tag}: confirmed, but after {crashed} crashed the balances moved {moved} (expected {expected})")
    check_clean(tag)


def run_async_forgotten_case(number, protocol):
    """The coordinator killed right after its participant's tentative answer (a TC/C try, a 2PC
    prepare), everything asynchronous: the step before those calls need not be durable, so the
    global transaction's record may be lost with the crash. Whether it was or not, nothing may stay
    behind: recovery cancels what it finds; a try no ledger knows of expires at its timeout, a
    prepared transaction no ledger knows of is rolled back by recovery's sweep. Returns whether the
    record was lost."""
    gtid = f"cp-{number}-{protocol}-async-forgotten"
    amount = 100 + number
    before = balances()
    if stopped_call("after_remote_try:kill", "CALL wallet.transfer_global(%s, %s, %s, %s, %s, %s::interval)",
                    (gtid, ["local", "p"], [2, 3], [-amount, amount], protocol, "2 seconds"),
                    session=["SET synchronous_commit = off"]):
        fail(f"{gtid}: the coordinator was not killed after the remote try")
    row = one(DSN_C, "SELECT outcome, finished_at IS NOT NULL FROM wallet.global_transactions WHERE gtid = %s",
              (gtid,))
    if row is not None and row != ("cancelled", True):
        fail(f"{gtid}: killed before its decision, but after recovery the ledger has {row}")
    time.sleep(2.5)
    for _, dsn in DATABASES:
        with connect(dsn) as c:
            c.execute("SELECT wallet.expire_holds()")
    after = balances()
    if after != before:
        fail(f"{gtid}: killed before its decision, but the balances moved {moved_between(before, after)}")
    check_clean(gtid)
    return row is None


def set_synchronous_commit_default(value):
    """Every database's default synchronous_commit: `= off`, or None for the server's."""
    for name, dsn in DATABASES:
        with connect(dsn) as c:
            if value is None:
                c.execute(f"ALTER DATABASE {name} RESET synchronous_commit")
            else:
                c.execute(f"ALTER DATABASE {name} SET synchronous_commit {value}")


def run_async_cases(number):
    """run_async_case for every protocol (and batches of TC/C and Saga), each cluster crashed."""
    set_synchronous_commit_default("= off")
    cases = 0
    for protocol, batch in (("tcc", False), ("2pc", False), ("saga", False), ("tcc", True), ("saga", True)):
        for crashed in ("cpA", "cpB"):
            number += 1
            cases += 1
            run_async_case(number, protocol, crashed, batch)
    forgotten = 0
    for protocol in ("tcc", "2pc"):
        number += 1
        cases += 1
        forgotten += run_async_forgotten_case(number, protocol)
    set_synchronous_commit_default(None)
    print(f"crash points: {cases} transfers with synchronous_commit off everywhere, each followed by "
          f"a crash: every one answered confirmed stayed confirmed on both nodes; of the two killed "
          f"after a tentative remote call, {forgotten} lost their record and left nothing behind either",
          flush=True)
    return number


def main():
    setup()
    counts = {}
    number = run_async_cases(0)
    if "--async-only" in sys.argv:
        return
    for protocol in ("tcc", "2pc", "saga"):
        for point in POINTS:
            modes = ["error"] if point.startswith("lose_answers") else ["error", "kill"]
            for mode in modes:
                for direction in ("c_to_p", "p_to_c", "two_remote", "refused"):
                    number += 1
                    outcome = run_case(number, protocol, point, mode, direction)
                    counts[(protocol, outcome)] = counts.get((protocol, outcome), 0) + 1
    # Batches (TC/C and Saga): every item keeps every guarantee, whatever point stopped them.
    for protocol in ("tcc", "saga"):
        for point in POINTS:
            modes = ["error"] if point.startswith("lose_answers") else ["error", "kill"]
            for mode in modes:
                number += 1
                for outcome in run_batch_case(number, protocol, point, mode).values():
                    counts[(f"{protocol} batch", outcome)] = counts.get((f"{protocol} batch", outcome), 0) + 1
    (kills,) = one(DSN_C, "SELECT count(*) FROM wallet.global_transactions WHERE finished_by = 'recovery'")
    print(f"crash points: {number} cases ({', '.join(f'{p} {o} {n}' for (p, o), n in sorted(counts.items()))}); "
          f"{kills} finished by recovery; every invariant held after each", flush=True)


if __name__ == "__main__":
    main()
