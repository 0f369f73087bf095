-- Account histories without an index on the write path (see "History paths" in sql/schema.sql):
-- money events up to seal_state.posted_seq are found in wallet.postings, which wallet.seal()
-- fills; later ones by following each account's chain (accounts.last_seq, then debit_prev /
-- credit_prev). statement(), balance_at() and balance_at_time() must give the same answers
-- whatever part of the history is posted, and posting must never pass an event number that a
-- running transaction may still commit.
\set VERBOSITY terse
SELECT wallet.create_currency('MXN', 0) AS mxn_system \gset
SELECT wallet.open_account('MXN', 'jon') AS jon \gset
SELECT wallet.open_account('MXN', 'kari') AS kari \gset
SELECT wallet.open_account('MXN', 'lea') AS lea \gset

-- The answer every history function must match: the account's events straight from the log.
CREATE TEMP VIEW mxn_log AS
SELECT a.id AS account_id, e.seq, e.occurred_at,
       CASE WHEN e.debit_account_id = a.id THEN e.debit_balance
            WHEN e.credit_account_id = a.id THEN e.credit_balance
            WHEN e.event_type = 'account_opened' THEN 0 END AS balance
  FROM wallet.accounts AS a
  JOIN wallet.events AS e
    ON a.id IN (e.debit_account_id, e.credit_account_id)
    OR (e.account_id = a.id AND e.event_type <> 'currency_created')
 WHERE a.currency = 'MXN' AND NOT a.is_system;
-- Differences between the history functions and the log, over every page start and point.
CREATE TEMP VIEW mxn_differences AS
SELECT 'statement' AS what, l.account_id, s.seq
  FROM mxn_log AS l
 CROSS JOIN LATERAL (
     (SELECT x.seq, x.balance FROM wallet.statement(l.account_id, l.seq - 1, 3) AS x
      EXCEPT ALL
      (SELECT y.seq, y.balance FROM mxn_log AS y WHERE y.account_id = l.account_id
          AND y.seq >= l.seq ORDER BY y.seq LIMIT 3))
     UNION ALL
     ((SELECT y.seq, y.balance FROM mxn_log AS y WHERE y.account_id = l.account_id
          AND y.seq >= l.seq ORDER BY y.seq LIMIT 3)
      EXCEPT ALL
      SELECT x.seq, x.balance FROM wallet.statement(l.account_id, l.seq - 1, 3) AS x)
 ) AS s
UNION ALL
SELECT 'balance_at', l.account_id, l.seq
  FROM mxn_log AS l
 WHERE wallet.balance_at(l.account_id, l.seq) IS DISTINCT FROM l.balance
    OR wallet.balance_at(l.account_id, l.seq - 1) IS DISTINCT FROM
       (SELECT y.balance FROM mxn_log AS y WHERE y.account_id = l.account_id AND y.seq < l.seq
         ORDER BY y.seq DESC LIMIT 1)
UNION ALL
SELECT 'balance_at_time', l.account_id, l.seq
  FROM mxn_log AS l
 WHERE wallet.balance_at_time(l.account_id, l.occurred_at) IS DISTINCT FROM
       (SELECT y.balance FROM mxn_log AS y WHERE y.account_id = l.account_id
           AND y.occurred_at <= l.occurred_at ORDER BY y.seq DESC LIMIT 1);

-- Every kind of money event: direct and keyed transfers, a batch, holds placed, confirmed and
-- cancelled.
SELECT wallet.deposit(:jon, 1000) > 0 AS deposited;
SELECT wallet.transfer(:jon, :kari, 100) > 0 AS direct;
SELECT wallet.transfer(:kari, :lea, 40, 'mxn-keyed-1') > 0 AS keyed;
SELECT result, count(*) FROM wallet.transfer_batch(ARRAY[:jon, :kari, :jon], ARRAY[:lea, :jon, :kari],
                                                   ARRAY[10, 20, 30]) GROUP BY result ORDER BY result;
SELECT wallet.try_hold('mxn-h1', 'b', :jon, :lea, 50) > 0 AS held;
SELECT wallet.confirm_hold('mxn-h1', 'b', 45) > 0 AS confirmed;
SELECT wallet.try_hold('mxn-h2', 'b', :lea, :jon, 5) > 0 AS held;
SELECT wallet.cancel_hold('mxn-h2', 'b') > 0 AS cancelled;

-- Nothing posted yet: the chains alone give the whole history.
SELECT count(*) AS posted_mxn_events
  FROM wallet.postings WHERE account_id IN (:jon, :kari, :lea);
SELECT * FROM mxn_differences;
SELECT count(*) AS chain_length FROM wallet._chain(:jon, 0);
SELECT count(*) AS jon_money_events FROM mxn_log WHERE account_id = :jon AND seq > (
    SELECT seq FROM mxn_log WHERE account_id = :jon ORDER BY seq LIMIT 1);

-- Posting takes two rounds: the first notes the highest event number drawn, the second posts up
-- to it once every transaction that could still use a number up to it has ended.
SELECT wallet.seal() >= 0 AS round_1;
SELECT wallet.seal() >= 0 AS round_2;
SELECT posted_seq >= (SELECT max(seq) FROM mxn_log) AS all_posted FROM wallet.seal_state;
-- A round of posting gives each account one row holding its events of that round, in order.
SELECT count(*) AS jon_rows, sum(cardinality(seqs)) AS jon_events,
       bool_and(seqs = ARRAY(SELECT u FROM unnest(seqs) AS u ORDER BY u)) AS in_order
  FROM wallet.postings WHERE account_id = :jon;
SELECT count(*) AS chain_length FROM wallet._chain(:jon, 0);
SELECT * FROM mxn_differences;

-- Half posted, half in the chains.
SELECT wallet.transfer(:kari, :jon, 7) > 0 AS direct;
SELECT wallet.transfer(:lea, :kari, 3, 'mxn-keyed-2') > 0 AS keyed;
SELECT wallet.try_hold('mxn-h3', 'b', :jon, :kari, 11) > 0 AS held;
SELECT wallet.confirm_hold('mxn-h3', 'b') > 0 AS confirmed;
SELECT count(*) AS chain_length FROM wallet._chain(:jon, 0);
SELECT * FROM mxn_differences;
SELECT count(*) AS problems FROM wallet.verify_postings();

-- A transaction still running holds posting back: its event number was drawn before the sealer
-- read the highest one, and it commits after both rounds.
SELECT 'host=' || split_part(current_setting('unix_socket_directories'), ',', 1)
       || ' port=' || current_setting('port') || ' user=' || current_user
       || ' dbname=' || current_database() AS here \gset
SELECT dblink_connect('mxn_open', :'here');
SELECT dblink_exec('mxn_open', 'BEGIN');
SELECT * FROM dblink('mxn_open', format('SELECT wallet.transfer(%s, %s, 2)', :jon, :lea))
    AS t (seq bigint) \gset open_
SELECT wallet.withdraw(:kari, 1) > :open_seq AS drawn_later;
SELECT wallet.seal() >= 0 AS round_1;
SELECT wallet.seal() >= 0 AS round_2;
SELECT wallet.seal() >= 0 AS round_3;
SELECT posted_seq < :open_seq AS held_back FROM wallet.seal_state;
SELECT dblink_exec('mxn_open', 'COMMIT');
SELECT dblink_disconnect('mxn_open');
-- Committed late, below numbers already drawn: found through the chain, then posted.
SELECT count(*) AS found FROM wallet.statement(:jon, :open_seq - 1, 1) WHERE seq = :open_seq;
SELECT wallet.seal() >= 0 AS round_1;
SELECT wallet.seal() >= 0 AS round_2;
SELECT count(*) AS posted FROM wallet.postings WHERE :open_seq = ANY (seqs);
SELECT * FROM mxn_differences;
SELECT count(*) AS problems FROM wallet.verify_postings();

-- A frontier noted by another cluster and restored from its dump: its transaction id is ahead of
-- this cluster's counter, so waiting for it could take forever; every event up to it was restored,
-- so the next round posts them.
SELECT wallet.transfer(:jon, :kari, 1) AS foreign_seq \gset
SELECT wallet.seal() >= 0 AS round_1;
UPDATE wallet.seal_state SET pending_xid = (wallet._next_xid()::text::bigint + 1000000)::text::xid8;
SELECT wallet.seal() >= 0 AS round_2;
SELECT posted_seq >= :foreign_seq AS posted, pending_xid IS NULL AS nothing_pending FROM wallet.seal_state;

-- A rolled-back transfer leaves no trace in the chains.
BEGIN;
SELECT wallet.transfer(:jon, :kari, 1) > 0 AS posted;
ROLLBACK;
SELECT * FROM mxn_differences;
SELECT count(*) AS problems FROM wallet.verify_postings();

-- verify_postings() finds a missing posting, a broken link and a wrong last_seq.
BEGIN;
UPDATE wallet.postings SET seqs = seqs[2:]
 WHERE account_id = :jon AND last_seq = (SELECT max(last_seq) FROM wallet.postings WHERE account_id = :jon);
SELECT account_id = :jon AS jon, regexp_replace(problem, '[0-9]+', 'N', 'g') AS problem
  FROM wallet.verify_postings();
ROLLBACK;
BEGIN;
UPDATE wallet.postings SET seqs = seqs || seqs[1]
 WHERE account_id = :jon AND last_seq = (SELECT max(last_seq) FROM wallet.postings WHERE account_id = :jon);
SELECT account_id = :jon AS jon, regexp_replace(problem, '[0-9]+', 'N', 'g') AS problem
  FROM wallet.verify_postings();
ROLLBACK;
BEGIN;
SELECT wallet.transfer(:jon, :kari, 1) AS unposted \gset
ALTER TABLE wallet.events DISABLE TRIGGER events_no_update_delete;
UPDATE wallet.events SET debit_prev = NULL WHERE seq = :unposted;
UPDATE wallet.accounts SET last_seq = last_seq - 1 WHERE id = :kari;
SELECT account_id = :jon AS jon, account_id = :kari AS kari,
       regexp_replace(problem, '[0-9]+', 'N', 'g') AS problem
  FROM wallet.verify_postings();
ROLLBACK;

-- The log and the state still agree.
SELECT count(*) AS differences FROM wallet.verify();
