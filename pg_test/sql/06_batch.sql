-- wallet.transfer_batch: many transfers in one call, applied in input order, one result each,
-- never raising for a rejected transfer. Linked chains succeed or fail together.
\set VERBOSITY terse
SELECT wallet.create_currency('DKK') AS dkk_system \gset
SELECT wallet.create_currency('PLN') AS pln_system \gset
SELECT wallet.open_account('DKK', 'lena') AS lena \gset
SELECT wallet.open_account('DKK', 'mads') AS mads \gset
SELECT wallet.open_account('DKK', 'nils') AS nils \gset
SELECT wallet.open_account('PLN', 'ola') AS ola \gset
SELECT wallet.open_account('DKK', 'frozen') AS frz \gset
SELECT wallet.freeze_account(:frz);
SELECT wallet.deposit(:lena, 1000);

-- In order, like single calls: mads can pay on once lena has paid him.
SELECT index, result, transfer_id > 0 AS has_id
  FROM wallet.transfer_batch(ARRAY[:mads, :lena, :mads]::bigint[],
                             ARRAY[:nils, :mads, :nils]::bigint[],
                             ARRAY[100, 300, 100]::bigint[]);
SELECT wallet.balance(:lena) AS lena, wallet.balance(:mads) AS mads, wallet.balance(:nils) AS nils;

-- Every rejection has its code; the rest of the batch goes on.
SELECT index, result, transfer_id
  FROM wallet.transfer_batch(
         ARRAY[NULL, :lena, :lena, :lena, :lena, 424242, :lena, :lena, :frz, :lena, :lena]::bigint[],
         ARRAY[:mads, :mads, :mads, :lena, :mads, :mads, :ola, :frz, :mads, :mads, :mads]::bigint[],
         ARRAY[1, 0, NULL, 1, 1, 1, 1, 1, 1, 100000, 1]::bigint[],
         ARRAY[NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL]::text[])
 ORDER BY index;

-- A linked chain: lena -> mads -> nils succeeds or fails whole.
SELECT index, result
  FROM wallet.transfer_batch(ARRAY[:lena, :mads, :lena, :mads]::bigint[],
                             ARRAY[:mads, :nils, :mads, :nils]::bigint[],
                             ARRAY[50, 50, 50, 99999]::bigint[],
                             linked => ARRAY[true, false, true, false]);
-- A chain still open at the end of the batch fails whole.
SELECT index, result
  FROM wallet.transfer_batch(ARRAY[:lena, :lena]::bigint[], ARRAY[:mads, :mads]::bigint[],
                             ARRAY[1, 1]::bigint[], linked => ARRAY[false, true]);

-- Idempotency keys: within a batch, against earlier batches, and against single calls.
SELECT index, result, transfer_id IS NOT NULL AS has_id
  FROM wallet.transfer_batch(ARRAY[:lena, :lena, :lena]::bigint[],
                             ARRAY[:mads, :mads, :mads]::bigint[],
                             ARRAY[10, 10, 11]::bigint[],
                             ARRAY['b-1', 'b-1', 'b-1']);
SELECT result, transfer_id = (SELECT seq FROM wallet.events WHERE idempotency_key = 'b-1') AS first_id
  FROM wallet.transfer_batch(ARRAY[:lena]::bigint[], ARRAY[:mads]::bigint[], ARRAY[10]::bigint[],
                             ARRAY['b-1']);
SELECT wallet.transfer(:lena, :mads, 10, 'b-1') = (SELECT seq FROM wallet.events WHERE idempotency_key = 'b-1')
       AS single_call_gets_first_answer;

-- Call-level mistakes do raise (WA016): unequal arrays, too many transfers, NULL arrays.
SELECT * FROM wallet.transfer_batch(ARRAY[:lena]::bigint[], ARRAY[:mads, :nils]::bigint[], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM wallet.transfer_batch(array_fill(:lena::bigint, ARRAY[10001]),
                                           array_fill(:mads::bigint, ARRAY[10001]),
                                           array_fill(1::bigint, ARRAY[10001]));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.transfer_batch(NULL, ARRAY[:mads]::bigint[], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS empty_batch FROM wallet.transfer_batch('{}', '{}', '{}');

-- A set-returning function: in the select list as well, one row per transfer (rolled back).
BEGIN;
SELECT (r).index, (r).result, (r).transfer_id IS NOT NULL AS has_id
  FROM (SELECT wallet.transfer_batch(ARRAY[:lena, :lena]::bigint[], ARRAY[:mads, :lena]::bigint[],
                                     ARRAY[1, 1]::bigint[]) AS r) AS rows;
ROLLBACK;

-- The largest batch, 10,000 transfers, in one call.
SELECT result, count(*)
  FROM wallet.transfer_batch(array_fill(:lena::bigint, ARRAY[10000]),
                             array_fill(:mads::bigint, ARRAY[10000]),
                             array_fill(0::bigint, ARRAY[10000]) ) GROUP BY result;
SELECT result, count(*)
  FROM wallet.transfer_batch(array_fill(:mads::bigint, ARRAY[10000]),
                             array_fill(:nils::bigint, ARRAY[10000]),
                             array_fill(1::bigint, ARRAY[10000])) GROUP BY result ORDER BY result;
SELECT wallet.balance(:lena) AS lena, wallet.balance(:mads) AS mads, wallet.balance(:nils) AS nils;
-- Each posted transfer is its own event, with the balances after it.
SELECT count(*) AS transfer_events, min(credit_balance) AS first_nils_balance
  FROM wallet.events WHERE event_type = 'transfer' AND debit_account_id = :mads AND credit_account_id = :nils;
-- A batch's events are written up to 1,000 at a time (as COPY does); 2,500 keyed transfers cross
-- that boundary twice. Each is its own event with its key, the balances after it, and its place
-- in both accounts' histories; the repeat of the batch answers every one with the same id.
SELECT wallet.deposit(:lena, 2500) > 0 AS funded;
SELECT wallet.balance(:lena) AS lena_before \gset
CREATE TEMP TABLE big AS
SELECT * FROM wallet.transfer_batch(array_fill(:lena::bigint, ARRAY[2500]),
                                    array_fill(:nils::bigint, ARRAY[2500]),
                                    array_fill(1::bigint, ARRAY[2500]),
                                    ARRAY(SELECT 'big-' || g FROM generate_series(1, 2500) g));
SELECT result, count(*) FROM big GROUP BY result;
SELECT count(*) AS events_with_their_key
  FROM big JOIN wallet.events e ON e.seq = big.transfer_id
 WHERE e.idempotency_key = 'big-' || big.index AND e.amount = 1;
WITH e AS (
    SELECT seq, debit_balance, debit_prev, credit_prev, lag(seq) OVER w AS before,
           row_number() OVER w AS n
      FROM wallet.events WHERE idempotency_key LIKE 'big-%' WINDOW w AS (ORDER BY seq))
SELECT bool_and(debit_balance = :lena_before - n) AS lena_balances_step_down,
       bool_and(n = 1 OR (debit_prev = before AND credit_prev = before)) AS linked_in_order,
       max(seq) = (SELECT last_seq FROM wallet.accounts WHERE id = :lena) AS newest_is_last
  FROM e;
SELECT count(*) AS nils_statement_rows
  FROM wallet.statement(:nils, (SELECT min(transfer_id) - 1 FROM big), 10000)
 WHERE idempotency_key LIKE 'big-%';
SELECT b2.result, count(*), bool_and(b2.transfer_id = big.transfer_id) AS same_ids
  FROM wallet.transfer_batch(array_fill(:lena::bigint, ARRAY[2500]),
                             array_fill(:nils::bigint, ARRAY[2500]),
                             array_fill(1::bigint, ARRAY[2500]),
                             ARRAY(SELECT 'big-' || g FROM generate_series(1, 2500) g)) b2
  JOIN big USING (index) GROUP BY b2.result;
SELECT count(*) AS posting_problems FROM wallet.verify_postings();
SELECT * FROM wallet.verify();
SELECT * FROM wallet.trial_balance() WHERE currency IN ('DKK', 'PLN');
