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
SELECT * FROM wallet.verify();
SELECT * FROM wallet.trial_balance() WHERE currency IN ('DKK', 'PLN');
