-- The edges of the ranges: amounts, times and totals at the ends of what their types hold.
\set VERBOSITY terse
-- A day's flows through an account may pass the bigint range while its balance never does: in
-- 2^62, out 2^62, in 2^62 on an overdraft account (its system account goes to -2^62). The daily
-- totals are numeric, and a refresh computes each account's change in numeric.
SELECT wallet.create_currency('XBG') AS xbg_system \gset
SELECT wallet.open_account('XBG', 'big', allow_overdraft => true) AS big \gset
SELECT wallet.deposit(:big, 4611686018427387904) > 0, wallet.withdraw(:big, 4611686018427387904) > 0,
       wallet.deposit(:big, 4611686018427387904) > 0;
SELECT wallet.seal() > 0 AS sealed, wallet.refresh_read_side() > 0 AS refreshed;
SELECT debits, credits, closing FROM wallet.read_daily WHERE account_id = :big;
SELECT balance FROM wallet.read_balances WHERE account_id = :big;
SELECT count(*) AS read_side_differences FROM wallet.verify_read_side();
SELECT wallet.take_snapshot() > 0 AS snapshot_taken;
SELECT * FROM wallet.trial_balance() WHERE currency = 'XBG';
-- One refresh's change of an account may pass the bigint range too: from -2^62 to 2^63 - 1 (a
-- change of 3 x 2^62 - 1), both balances in range.
SELECT wallet.create_currency('XBH') AS xbh_system \gset
SELECT wallet.open_account('XBH', 'swing', allow_overdraft => true) AS swing \gset
SELECT wallet.withdraw(:swing, 4611686018427387904) > 0 AS out;
SELECT wallet.seal() > 0 AS sealed, wallet.refresh_read_side() > 0 AS refreshed;
SELECT balance FROM wallet.read_balances WHERE account_id = :swing;
SELECT wallet.deposit(:swing, 4611686018427387904) > 0, wallet.deposit(:swing, 4611686018427387904) > 0,
       wallet.deposit(:swing, 4611686018427387903) > 0;
SELECT wallet.seal() > 0 AS sealed, wallet.refresh_read_side() > 0 AS refreshed;
SELECT r.balance AS read_side, a.balance AS stored
  FROM wallet.read_balances r JOIN wallet.accounts a ON a.id = r.account_id WHERE r.account_id = :swing;
SELECT count(*) AS read_side_differences FROM wallet.verify_read_side();
SELECT count(*) AS differences FROM wallet.verify();
