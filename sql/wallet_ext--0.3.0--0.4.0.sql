-- wallet_ext 0.3.0 -> 0.4.0: wallet.transfer_batch no longer reads its result array element by
-- element while the array holds NULLs (the transfer id of every rejected transfer): a batch of
-- 10,000 with about a hundred rejections took 210-244 ms in the wrapper where the library's call
-- takes 45-60 ms (bench/RESULTS.md, section 3). Only the PL/pgSQL wrapper changes; the library's
-- wallet._transfer_batch is the same, so the library works with either version of the wrapper.
-- Run by ALTER EXTENSION wallet_ext UPDATE TO '0.4.0'. tests/upgrade.sh checks that an updated
-- database has exactly the schema of a fresh 0.4.0 install.
-- The definition below is that of sql/api.sql at 0.4.0; later changes go to a later script.

CREATE OR REPLACE FUNCTION wallet.transfer_batch(debit_account_ids bigint[],
                                                 credit_account_ids bigint[], amounts bigint[],
                                                 idempotency_keys text[] DEFAULT NULL,
                                                 linked boolean[] DEFAULT NULL)
RETURNS TABLE (index integer, result text, transfer_id bigint)
-- PL/pgSQL, not SQL: a VOLATILE set-returning SQL function is never inlined and would be parsed
-- and planned again on every call; PL/pgSQL keeps its plan.
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
-- No NULL in r (a transfer without an id gets 0, turned back into NULL per row): reading one
-- element of an array that has NULLs counts the NULL bitmap up to it, which made a batch with
-- rejections quadratic here.
DECLARE
    r bigint[] := pg_catalog.array_replace(
        wallet._transfer_batch(debit_account_ids, credit_account_ids, amounts, idempotency_keys,
                               linked), NULL, 0);
BEGIN
    RETURN QUERY
        SELECT i, wallet._batch_result_name(r[2 * i - 1]), nullif(r[2 * i], 0)
          FROM generate_series(1, coalesce(array_length(r, 1), 0) / 2) AS i;
END
$fn$;
