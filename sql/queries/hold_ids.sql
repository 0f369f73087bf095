-- $1 new hold ids, for the tries of a participant call with many items (their events name their
-- holds before the rows are written, all at once by hold_insert_many.sql).
SELECT pg_catalog.nextval('wallet.holds_id_seq'::pg_catalog.regclass)
  FROM pg_catalog.generate_series(1, $1)
