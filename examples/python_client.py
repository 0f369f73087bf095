"""wallet_ext from Python (psycopg 3): the calls an application makes, with the error handling
it needs. Run by scripts/test.sh against a database where wallet_ext is installed:

    python3 examples/python_client.py "host=/var/tmp/wallet_ext/test port=54362 dbname=... user=postgres"

Exits non-zero if anything behaves other than documented.
"""

import sys
import time

import psycopg

RETRYABLE = {"40001", "40P01"}  # serialization failure, deadlock: retry the whole transaction


def transfer(conn, debit, credit, amount, key):
    """One transfer in its own transaction, retried on 40001/40P01. With an idempotency key a retry
    can never move money twice: it gets the first answer."""
    for attempt in range(10):
        try:
            with conn.transaction():
                row = conn.execute(
                    "SELECT wallet.transfer(%s, %s, %s, %s)", (debit, credit, amount, key)
                ).fetchone()
                return row[0]
        except psycopg.Error as e:
            if e.sqlstate in RETRYABLE and attempt < 9:
                time.sleep(0.01 * (attempt + 1))
                continue
            raise
    raise AssertionError("unreachable")


def main(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS wallet_ext")
        conn.execute("SELECT wallet.create_currency('PYC')")
        (alice,) = conn.execute("SELECT wallet.open_account('PYC', 'alice')").fetchone()
        (bob,) = conn.execute("SELECT wallet.open_account('PYC', 'bob')").fetchone()
        conn.execute("SELECT wallet.deposit(%s, %s)", (alice, 10_000))

        first = transfer(conn, alice, bob, 2_500, "py-order-1")
        again = transfer(conn, alice, bob, 2_500, "py-order-1")
        assert first == again, (first, again)

        # A rejection is matched on its SQLSTATE; the message names account and amount.
        try:
            transfer(conn, bob, alice, 1_000_000, None)
            raise AssertionError("an overdraft was accepted")
        except psycopg.Error as e:
            assert e.sqlstate == "WA008", e.sqlstate
            assert str(bob) in e.diag.message_primary and "1000000" in e.diag.message_primary
            print(f"rejected as documented: {e.sqlstate} {e.diag.message_primary}")

        # The same key with other parameters is refused, not replayed.
        try:
            transfer(conn, alice, bob, 1, "py-order-1")
            raise AssertionError("a reused key was accepted")
        except psycopg.Error as e:
            assert e.sqlstate == "WA009", e.sqlstate

        # A batch answers per transfer and does not raise for a rejected one.
        rows = conn.execute(
            "SELECT index, result FROM wallet.transfer_batch(%s, %s, %s)",
            ([alice, bob], [bob, alice], [100, 10**9]),
        ).fetchall()
        assert rows == [(1, "ok"), (2, "insufficient_funds")], rows

        # Consumers follow the sealed log: LISTEN, then page with events_after().
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute("LISTEN wallet_events")
            (sealed,) = conn.execute("SELECT wallet.seal()").fetchone()
            assert sealed > 0, sealed
            (head,) = conn.execute("SELECT last_position FROM wallet.chain_head()").fetchone()
            notes = list(listener.notifies(timeout=5.0, stop_after=1))
            assert notes and notes[0].payload == str(head), (notes, head)
            events = listener.execute(
                "SELECT chain_position, event_type FROM wallet.events_after(%s, 100)", (head - 2,)
            ).fetchall()
            assert [p for p, _ in events] == [head - 1, head], events
            print(f"notified of chain position {head}; the last two sealed events: {events}")

        balances = conn.execute(
            "SELECT wallet.balance(%s), wallet.balance(%s)", (alice, bob)
        ).fetchone()
        assert balances == (7_400, 2_600), balances
        (differences,) = conn.execute("SELECT count(*) FROM wallet.verify()").fetchone()
        assert differences == 0
        print(f"transfer {first} posted once; balances {balances}; verify() clean")


if __name__ == "__main__":
    main(sys.argv[1])
