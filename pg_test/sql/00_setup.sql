-- wallet_ext regression suite. Run in order in a fresh database by scripts/test.sh.
-- Rejections are shown by psql as "ERROR:  message", followed by their SQLSTATE
-- (\echo :LAST_ERROR_SQLSTATE).
CREATE EXTENSION wallet_ext;
SELECT extname, extversion, nspname AS schema
  FROM pg_extension JOIN pg_namespace ON pg_namespace.oid = extnamespace
 WHERE extname = 'wallet_ext';
-- The API: every function in schema wallet, with its security mode.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result, p.prosecdef AS security_definer,
       p.proconfig AS settings
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'wallet' AND p.proname NOT LIKE '\_%' AND p.prorettype <> 'trigger'::regtype
 ORDER BY p.proname;
SELECT rolname FROM pg_roles WHERE rolname LIKE 'wallet\_%' ORDER BY 1;
-- Name resolution never goes through a caller's search_path: every function pins it, or has a
-- SQL-standard body (resolved when it was created; kept inlinable). The rest are C functions
-- that resolve no name (_link_hash) and the coordinator's C procedures, which pin search_path
-- for every step they take (a procedure that commits cannot carry a SET clause).
SELECT p.proname, p.prokind, l.lanname
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'wallet'::regnamespace
   AND NOT coalesce(array_to_string(p.proconfig, ',') LIKE '%search_path=pg_catalog, pg_temp%', false)
   AND p.prosqlbody IS NULL
 ORDER BY 1;
-- The ledger outlives a careless DROP EXTENSION: an event trigger refuses it while events exist.
SELECT evtname, evtevent, evttags FROM pg_event_trigger WHERE evtname LIKE 'wallet%';
