"""A DBA's table changes while money moves (run by tests/ddl_load.sh, which builds the cluster).

Client threads move money without pause: single transfers at READ COMMITTED, single transfers in
REPEATABLE READ transactions (retried on 40001/40P01, as an application must), batches, and
TC/C holds tried then confirmed. Meanwhile a DBA thread runs, one after the other and again,
the changes an operator makes on a live system, each one undone after: table rewrites (SET
UNLOGGED/LOGGED, VACUUM FULL, CLUSTER, ADD COLUMN with a volatile default), index builds
(REINDEX, CREATE/DROP INDEX CONCURRENTLY), a CHECK constraint, a trigger (which moves the
writes from the direct path to the executor path and back), a column with a default.

What must hold:
- a client meets no error but the ones Postgres's own statements meet under concurrent DDL
  (40001, 40P01; at READ COMMITTED none at all);
- every account holds exactly its deposit plus what the calls the clients were told succeeded
  moved (nothing lost, nothing doubled, whatever table was rewritten meanwhile);
- the books balance, verify(), verify_postings() and, after seal(), verify_chain() are empty,
  no hold is pending;
- every change ran at least twice while money moved.

Usage: ddl_load.py SOCKET PORT SECONDS
"""

import random
import sys
import threading
import time

import psycopg

SOCK, PORT, SECONDS = sys.argv[1], sys.argv[2], float(sys.argv[3])
DSN = f"host={SOCK} port={PORT} dbname=ddl user=postgres"
ACCOUNTS = list(range(2, 42))  # 1 is the system account of EUR
DEPOSIT = 1_000_000
RETRYABLE = {"40001", "40P01"}

CHANGES = [
    ("SET UNLOGGED / SET LOGGED (rewrites)",
     ["ALTER TABLE wallet.accounts SET UNLOGGED", "ALTER TABLE wallet.accounts SET LOGGED"]),
    ("VACUUM FULL both tables",
     ["VACUUM FULL wallet.accounts", "VACUUM FULL wallet.events"]),
    ("CLUSTER accounts",
     ["CLUSTER wallet.accounts USING accounts_pkey"]),
    ("ADD COLUMN with a volatile default on the log (rewrite), then DROP",
     ["ALTER TABLE wallet.events ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp()",
      "ALTER TABLE wallet.events DROP COLUMN seen_at"]),
    ("ADD COLUMN NOT NULL DEFAULT on the accounts, then DROP",
     ["ALTER TABLE wallet.accounts ADD COLUMN region text NOT NULL DEFAULT 'eu'",
      "ALTER TABLE wallet.accounts DROP COLUMN region"]),
    ("REINDEX TABLE, REINDEX CONCURRENTLY",
     ["REINDEX TABLE wallet.accounts", "REINDEX TABLE CONCURRENTLY wallet.events"]),
    ("CREATE / DROP INDEX CONCURRENTLY",
     ["CREATE INDEX CONCURRENTLY events_amount_idx ON wallet.events (amount)",
      "DROP INDEX CONCURRENTLY wallet.events_amount_idx"]),
    ("a CHECK constraint, then DROP",
     ["ALTER TABLE wallet.accounts ADD CONSTRAINT cap CHECK (balance < 1000000000000)",
      "ALTER TABLE wallet.accounts DROP CONSTRAINT cap"]),
    ("a row trigger (executor path), then DROP (direct path)",
     ["CREATE TRIGGER touch BEFORE UPDATE ON wallet.accounts FOR EACH ROW EXECUTE FUNCTION public.touch()",
      "DROP TRIGGER touch ON wallet.accounts"]),
]

stop = threading.Event()
lock = threading.Lock()
moved = {}          # account -> net amount moved by calls that succeeded
counts = {"transfers": 0, "rr_transfers": 0, "rr_retries": 0, "batches": 0, "holds": 0}
changes_run = {name: 0 for name, _ in CHANGES}
errors = []


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def credit(debit, credit_to, amount):
    with lock:
        moved[debit] = moved.get(debit, 0) - amount
        moved[credit_to] = moved.get(credit_to, 0) + amount


def pair(rng):
    a, b = rng.sample(ACCOUNTS, 2)
    return a, b, rng.randint(1, 50)


def guarded(target):
    def run(*args):
        try:
            target(*args)
        except BaseException as e:  # noqa: BLE001 - reported by main
            errors.append(f"{target.__name__}{args}: {e!r}")
            stop.set()
    return run


def read_committed(n):
    rng = random.Random(f"rc{n}")
    with psycopg.connect(DSN, autocommit=True) as c:
        while not stop.is_set():
            a, b, m = pair(rng)
            c.execute("SELECT wallet.transfer(%s, %s, %s)", (a, b, m))
            credit(a, b, m)
            with lock:
                counts["transfers"] += 1


def repeatable_read(n):
    rng = random.Random(f"rr{n}")
    with psycopg.connect(DSN) as c:
        while not stop.is_set():
            a, b, m = pair(rng)
            while True:
                try:
                    c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    c.execute("SELECT wallet.transfer(%s, %s, %s)", (a, b, m))
                    c.commit()
                    break
                except psycopg.errors.Error as e:
                    c.rollback()
                    if e.sqlstate not in RETRYABLE:
                        raise
                    with lock:
                        counts["rr_retries"] += 1
            credit(a, b, m)
            with lock:
                counts["rr_transfers"] += 1


def batches(n):
    rng = random.Random(f"batch{n}")
    with psycopg.connect(DSN, autocommit=True) as c:
        while not stop.is_set():
            legs = [pair(rng) for _ in range(20)]
            rows = c.execute("SELECT index, result FROM wallet.transfer_batch(%s, %s, %s)",
                             ([a for a, _, _ in legs], [b for _, b, _ in legs],
                              [m for _, _, m in legs])).fetchall()
            for index, result in rows:
                if result != "ok":
                    fail(f"batch leg {index}: {result}")
                a, b, m = legs[index - 1]
                credit(a, b, m)
            with lock:
                counts["batches"] += 1


def holds(n):
    rng = random.Random(f"hold{n}")
    i = 0
    with psycopg.connect(DSN, autocommit=True) as c:
        while not stop.is_set():
            i += 1
            a, b, m = pair(rng)
            gtid = f"ddl-{n}-{i}"
            c.execute("SELECT wallet.try_hold(%s, 'b', %s, %s, %s, interval '1 hour')", (gtid, a, b, m))
            c.execute("SELECT wallet.confirm_hold(%s, 'b')", (gtid,))
            credit(a, b, m)
            with lock:
                counts["holds"] += 1


def dba():
    rng = random.Random(11)
    with psycopg.connect(DSN, autocommit=True) as c:
        c.execute("SET lock_timeout = '5s'")
        while not stop.is_set():
            name, statements = rng.choice(CHANGES)
            for sql in statements:
                c.execute(sql)
            changes_run[name] += 1
            stop.wait(rng.uniform(0.05, 0.3))


def one(sql):
    with psycopg.connect(DSN, autocommit=True) as c:
        return c.execute(sql).fetchone()


def main():
    with psycopg.connect(DSN, autocommit=True) as c:
        c.execute("CREATE EXTENSION wallet_ext")
        c.execute("SELECT wallet.create_currency('EUR')")
        for _ in ACCOUNTS:
            (a,) = c.execute("SELECT wallet.open_account('EUR')").fetchone()
            c.execute("SELECT wallet.deposit(%s, %s)", (a, DEPOSIT))
        c.execute("""CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql
                     AS $$ BEGIN RETURN NEW; END $$""")
    threads = [threading.Thread(target=guarded(f), args=(n,))
               for f, n in [(read_committed, 1), (read_committed, 2), (repeatable_read, 1),
                            (batches, 1), (holds, 1)]]
    threads.append(threading.Thread(target=guarded(dba)))
    for t in threads:
        t.start()
    # Long enough that every change runs twice (or SECONDS, whichever is later).
    deadline = time.time() + SECONDS
    while not stop.is_set() and (time.time() < deadline or min(changes_run.values()) < 2):
        if time.time() > deadline + 120:
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    print(f"load: {counts}; changes run: {changes_run}", flush=True)
    if errors:
        fail("; ".join(errors))
    if min(changes_run.values()) < 2:
        fail(f"some change ran fewer than twice: {changes_run}")

    with psycopg.connect(DSN, autocommit=True) as c:
        for account, balance in c.execute("SELECT id, balance FROM wallet.accounts WHERE NOT is_system"):
            expected = DEPOSIT + moved.get(account, 0)
            if balance != expected:
                fail(f"account {account}: balance {balance}, the successful calls say {expected}")
        c.execute("SELECT wallet.seal()")
        (total,) = c.execute("SELECT sum(total_balance) FROM wallet.trial_balance()").fetchone()
        (pending,) = c.execute("SELECT count(*) FROM wallet.holds WHERE status = 'pending'").fetchone()
        checks = {name: c.execute(f"SELECT count(*) FROM wallet.{name}()").fetchone()[0]
                  for name in ("verify", "verify_postings", "verify_chain")}
        paths = c.execute("SELECT string_agg(table_name || ':' || write_path, ', ') FROM wallet.write_paths()").fetchone()[0]
    if total != 0 or pending or any(checks.values()):
        fail(f"after the load: trial balance {total}, {pending} holds pending, checks {checks}")
    print(f"checked: every account holds its deposit plus what the successful calls moved; books "
          f"balanced; verify(), verify_postings(), verify_chain() empty; write paths now {paths}",
          flush=True)


if __name__ == "__main__":
    main()
