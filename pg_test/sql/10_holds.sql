-- Holds: Try-Confirm/Cancel on one database. try_hold reserves (available drops, posted does
-- not), confirm_hold posts up to the reserved amount and releases the rest, cancel_hold
-- releases; a timeout ends a hold that nobody confirmed. Keyed by (gtid, branch), every call is
-- idempotent; a cancel arriving before its try bars the try (no hanging reservation).
\set VERBOSITY terse
SELECT wallet.create_currency('CZK') AS czk_system \gset
SELECT wallet.open_account('CZK', 'vera') AS vera \gset
SELECT wallet.open_account('CZK', 'walt') AS walt \gset
SELECT wallet.deposit(:vera, 1000) > 0 AS posted;

-- Try: 300 reserved from vera for walt. Four balances on each side.
SELECT wallet.try_hold('order-1', 'payment', :vera, :walt, 300) AS hold_1 \gset
SELECT * FROM wallet.account_balances(:vera);
SELECT * FROM wallet.account_balances(:walt);
SELECT gtid, branch, debit_account_id = :vera AS from_vera, reserved, status,
       expires_at - created_at = interval '15 minutes' AS default_timeout
  FROM wallet.open_holds(:vera);
SELECT count(*) AS walt_sees_it FROM wallet.open_holds(:walt);
-- The reservation counts against what vera may spend, by any means.
SELECT wallet.transfer(:vera, :walt, 701);
\echo :LAST_ERROR_SQLSTATE
-- A repeated try answers the same hold; the same key with other parameters is refused.
SELECT wallet.try_hold('order-1', 'payment', :vera, :walt, 300) = :hold_1 AS same_hold;
SELECT wallet.try_hold('order-1', 'payment', :vera, :walt, 301);
\echo :LAST_ERROR_SQLSTATE

-- Each hold event carries the hold in its data: its id, key and the timeout (placed) or the
-- amount reserved (confirmed, cancelled, expired), as jsonb_build_object would write them; a key
-- with quotes, a backslash, a tab and non-ASCII text comes back as it went in.
SELECT wallet.try_hold(E'q"uo\\te\tß€', E'br\\"', :vera, :walt, 7) AS hold_q \gset
SELECT wallet.cancel_hold(E'q"uo\\te\tß€', E'br\\"') > 0 AS cancelled;
SELECT e.event_type, e.data - 'expires_at' - 'hold_id' AS data,
       e.data->'hold_id' = to_jsonb(:hold_q::bigint) AS hold_id,
       e.data->'expires_at' IS NULL OR e.data->'expires_at' = to_jsonb(h.expires_at) AS expires_at,
       e.data->>'gtid' = E'q"uo\\te\tß€' AS gtid_round_trip
  FROM wallet.events e JOIN wallet.holds h ON h.hold_id = (e.data->>'hold_id')::bigint
 WHERE h.hold_id = :hold_q ORDER BY e.seq;

-- Partial confirm: 250 of the 300 posted, the other 50 released.
SELECT wallet.confirm_hold('order-1', 'payment', 250) AS posting \gset
SELECT * FROM wallet.account_balances(:vera);
SELECT * FROM wallet.account_balances(:walt);
SELECT debit_account_id = :vera AS from_vera, credit_account_id = :walt AS to_walt, amount
  FROM wallet.get_transfer(:posting);
SELECT status, confirmed_amount, confirm_seq = :posting AS its_posting
  FROM wallet.get_hold('order-1', 'payment');
-- Confirm again: the first answer (no amount, or the same amount); another amount is refused.
SELECT wallet.confirm_hold('order-1', 'payment') = :posting AS same_answer;
SELECT wallet.confirm_hold('order-1', 'payment', 250) = :posting AS same_answer;
SELECT wallet.confirm_hold('order-1', 'payment', 300);
\echo :LAST_ERROR_SQLSTATE
-- A confirmed hold cannot be cancelled.
SELECT wallet.cancel_hold('order-1', 'payment');
\echo :LAST_ERROR_SQLSTATE

-- Confirm above the reserved amount, confirm of nothing, confirm of a hold that does not exist.
SELECT wallet.try_hold('order-2', 'payment', :vera, :walt, 100) > 0 AS reserved;
SELECT wallet.confirm_hold('order-2', 'payment', 101);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.confirm_hold('order-2', 'payment', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.confirm_hold('order-404', 'payment');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.get_hold('order-404', 'payment');
\echo :LAST_ERROR_SQLSTATE

-- Cancel: the reservation is released; a repeat answers the same; confirm is refused.
SELECT wallet.cancel_hold('order-2', 'payment') = wallet.cancel_hold('order-2', 'payment') AS same_answer;
SELECT * FROM wallet.account_balances(:vera);
SELECT wallet.confirm_hold('order-2', 'payment');
\echo :LAST_ERROR_SQLSTATE
-- A try after its own cancel is refused too.
SELECT wallet.try_hold('order-2', 'payment', :vera, :walt, 100);
\echo :LAST_ERROR_SQLSTATE

-- Anomaly 1, null compensation: a cancel whose try never arrived records itself, moves nothing.
SELECT wallet.cancel_hold('order-3', 'payment') > 0 AS recorded;
SELECT status, reserved, debit_account_id IS NULL AS no_accounts
  FROM wallet.get_hold('order-3', 'payment');
-- Anomaly 2, hanging reservation: the try arriving after that cancel is refused.
SELECT wallet.try_hold('order-3', 'payment', :vera, :walt, 100);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.account_balances(:vera);

-- Timeouts: per hold (bounded by wallet.hold_timeout_max), or wallet.hold_timeout by default.
SELECT wallet.try_hold('order-4', 'payment', :vera, :walt, 100, interval '3 days');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.try_hold('order-4', 'payment', :vera, :walt, 100, interval '-1 second');
\echo :LAST_ERROR_SQLSTATE
SET wallet.hold_timeout = '1s';
SELECT wallet.try_hold('order-4', 'payment', :vera, :walt, 100) > 0 AS reserved;
RESET wallet.hold_timeout;
SELECT wallet.try_hold('order-5', 'payment', :vera, :walt, 40, interval '1 second') > 0 AS reserved;
SELECT wallet.try_hold('order-6', 'payment', :vera, :walt, 60, interval '1 hour') > 0 AS reserved;
SELECT pg_sleep(1.1);
-- Past its timeout a hold cannot be confirmed, even before expiry has released it.
SELECT wallet.confirm_hold('order-4', 'payment');
\echo :LAST_ERROR_SQLSTATE
-- Expiry (the worker's job, or cron's) releases the funds of every hold past its timeout.
SELECT * FROM wallet.account_balances(:vera);
SELECT wallet.expire_holds() AS expired;
SELECT wallet.expire_holds() AS expired_again;
SELECT * FROM wallet.account_balances(:vera);
SELECT gtid, status FROM wallet.holds WHERE gtid IN ('order-4', 'order-5', 'order-6') ORDER BY gtid;
SELECT wallet.confirm_hold('order-5', 'payment');
\echo :LAST_ERROR_SQLSTATE
-- Cancelling an expired hold succeeds and changes nothing; the other hold is still open.
SELECT wallet.cancel_hold('order-5', 'payment') > 0 AS answered;
SELECT wallet.confirm_hold('order-6', 'payment') > 0 AS posted;

-- One side left NULL: the system account of the currency (how cross-node branches settle).
SELECT wallet.try_hold('order-7', 'inbound', NULL, :walt, 500) > 0 AS reserved;
SELECT debit_account_id = :czk_system AS from_system FROM wallet.get_hold('order-7', 'inbound');
SELECT wallet.try_branch('order-8', 'inbound', NULL, :walt, 5, NULL, 'CZK') AS currency;
SELECT wallet.try_branch('order-9', 'inbound', NULL, :walt, 5, NULL, 'RON');
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.try_hold('order-9', 'inbound', NULL, NULL, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.confirm_hold('order-7', 'inbound') > 0 AS posted;
SELECT wallet.cancel_hold('order-8', 'inbound') > 0 AS released;

-- Bad keys and amounts are refused before anything is read.
SELECT wallet.try_hold('', 'payment', :vera, :walt, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.try_hold('order-10', repeat('b', 129), :vera, :walt, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.try_hold('order-10', 'payment', :vera, :walt, -1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.try_hold('order-10', 'payment', :vera, :vera, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.cancel_hold(NULL, 'payment');
\echo :LAST_ERROR_SQLSTATE

-- Every step was an event; replay reproduces posted and pending balances.
SELECT event_type, amount, pending_delta FROM wallet.events
 WHERE event_type LIKE 'hold%' ORDER BY seq;
SELECT * FROM wallet.account_balances(:vera);
SELECT * FROM wallet.account_balances(:walt);
SELECT count(*) AS differences FROM wallet.verify();
SELECT count(*) AS differences FROM wallet.verify(from_snapshot => false);
SELECT wallet.take_snapshot() AS snap \gset
SELECT count(*) AS differences FROM wallet.check_snapshot(:snap);
SELECT count(*) AS differences FROM wallet.verify_read_side();
-- A frozen account's pending hold still confirms (the funds were reserved before), and an
-- account with a pending hold cannot be closed.
SELECT wallet.try_hold('order-11', 'payment', :vera, :walt, 10) > 0 AS reserved;
SELECT wallet.freeze_account(:vera);
SELECT wallet.try_hold('order-12', 'payment', :vera, :walt, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.confirm_hold('order-11', 'payment') > 0 AS posted;
SELECT wallet.unfreeze_account(:vera);
SELECT wallet.open_account('CZK', 'xavi') AS xavi \gset
SELECT wallet.try_hold('order-13', 'payment', NULL, :xavi, 10) > 0 AS reserved;
SELECT wallet.close_account(:xavi);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.trial_balance() WHERE currency = 'CZK';
SELECT count(*) AS differences FROM wallet.verify();
