-- The read side (CQRS) and snapshots: refresh_read_side, read_balances, read_daily,
-- verify_read_side, take_snapshot, check_snapshot, verify() from a snapshot.
\set VERBOSITY terse
SELECT wallet.create_currency('RON') AS ron_system \gset
SELECT wallet.open_account('RON', 'tina') AS tina \gset
SELECT wallet.open_account('RON', 'ugo') AS ugo \gset
SELECT wallet.deposit(:tina, 5000) > 0 AS posted;
SELECT wallet.transfer(:tina, :ugo, 1200) > 0 AS posted;
SELECT wallet.transfer(:ugo, :tina, 200) > 0 AS posted;

-- Before sealing and refreshing, the read side lags; the tail makes up the difference.
SELECT count(*) AS differences FROM wallet.verify_read_side();
SELECT wallet.seal() > 0 AS sealed;
SELECT wallet.refresh_read_side() > 0 AS applied;
SELECT wallet.refresh_read_side() AS nothing_left;
SELECT account_id = :tina AS is_tina, currency, balance FROM wallet.read_balances
 WHERE account_id IN (:tina, :ugo) ORDER BY account_id;
SELECT day = (now() AT TIME ZONE 'UTC')::date AS today, opening, closing, debits, credits
  FROM wallet.read_daily WHERE account_id = :tina;
SELECT count(*) AS differences FROM wallet.verify_read_side();

-- More writes after the refresh: still consistent, through the tail.
SELECT wallet.transfer(:tina, :ugo, 1) > 0 AS posted;
SELECT count(*) AS differences FROM wallet.verify_read_side();

-- A snapshot, then writes on top; verify() starts from the snapshot and applies the tail.
SELECT wallet.take_snapshot() AS snap \gset
SELECT position = (SELECT last_position FROM wallet.chain_head()) AS at_the_head,
       (SELECT count(*) FROM wallet.snapshot_balances b WHERE b.snapshot_id = :snap)
       = (SELECT count(*) FROM wallet.accounts) AS every_account
  FROM wallet.snapshots WHERE snapshot_id = :snap;
SELECT wallet.transfer(:ugo, :tina, 50) > 0 AS posted;
SELECT count(*) AS snapshot_vs_zero FROM wallet.check_snapshot(:snap);
SELECT count(*) AS verify_from_snapshot FROM wallet.verify();
SELECT count(*) AS verify_from_zero FROM wallet.verify(from_snapshot => false);

-- A stored balance no event explains is caught from the snapshot too, and by the read side check.
BEGIN;
UPDATE wallet.accounts SET balance = balance + 7 WHERE id = :ugo;
SELECT account_id = :ugo AS is_ugo, stored_balance - replayed_balance AS off_by FROM wallet.verify();
SELECT account_id = :ugo AS is_ugo, stored_balance - read_side_balance AS off_by FROM wallet.verify_read_side();
ROLLBACK;
-- A snapshot that was altered is caught by check_snapshot (done as superuser, rolled back).
BEGIN;
UPDATE wallet.snapshot_balances SET balance = balance - 1 WHERE snapshot_id = :snap AND account_id = :tina;
SELECT account_id = :tina AS is_tina, from_zero - from_snapshot AS off_by FROM wallet.check_snapshot(:snap);
ROLLBACK;
-- A full rebuild of the read side from the first sealed event gives the same balances.
CREATE TEMP TABLE before_rebuild AS SELECT * FROM wallet.read_balances;
SELECT wallet.rebuild_read_side() = (SELECT last_position FROM wallet.read_state) AS applied_every_position;
SELECT count(*) AS changed_by_rebuild
  FROM before_rebuild b FULL JOIN wallet.read_balances r USING (account_id)
 WHERE b.balance IS DISTINCT FROM r.balance;
SELECT wallet.refresh_read_side(0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.check_snapshot(424242);
\echo :LAST_ERROR_SQLSTATE
