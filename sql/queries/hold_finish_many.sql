-- The ends of holds $1[i] (locked by hold_lookup_many.sql or hold_expired.sql), in one
-- statement: status $2[i] (confirmed, cancelled or expired), and for a confirm the amount posted
-- $3[i] and its event $4[i]. Returns the ids written (as hold_finish.sql: one skipped means
-- something added to the table got in the way). Found by `hold_id = ANY ($1)`, an index
-- condition (see ledger_update_many.sql).
UPDATE wallet.holds AS h
   SET status = u.status, confirmed_amount = u.amount, confirm_seq = u.seq,
       finished_at = pg_catalog.clock_timestamp()
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])
       AS u (hold_id, status, amount, seq)
 WHERE h.hold_id = ANY ($1) AND h.hold_id = u.hold_id
RETURNING h.hold_id
