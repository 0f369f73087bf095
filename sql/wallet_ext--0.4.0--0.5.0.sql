-- wallet_ext 0.4.0 -> 0.5.0: wallet.transfer_batch becomes the library's own set-returning function
-- (one row per transfer, materialized), replacing the PL/pgSQL wrapper that unpacked the array of
-- wallet._transfer_batch through wallet._batch_result_name; both helpers go. The library keeps the
-- entry point behind wallet._transfer_batch, so a 0.5.0 library serves a 0.2.0-0.4.0 schema until
-- this update is run. Run by ALTER EXTENSION wallet_ext UPDATE TO '0.5.0'. tests/upgrade.sh checks
-- that an updated database has exactly the schema of a fresh 0.5.0 install.
-- The definition below is that of sql/api.sql at 0.5.0; later changes go to a later script.

CREATE OR REPLACE FUNCTION wallet.transfer_batch(debit_account_ids bigint[], credit_account_ids bigint[],
                                      amounts bigint[], idempotency_keys text[] DEFAULT NULL,
                                      linked boolean[] DEFAULT NULL)
RETURNS TABLE (index integer, result text, transfer_id bigint)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_transfer_batch_rows';

DROP FUNCTION wallet._transfer_batch(bigint[], bigint[], bigint[], text[], boolean[]);
DROP FUNCTION wallet._batch_result_name(bigint);
