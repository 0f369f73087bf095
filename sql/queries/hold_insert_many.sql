-- The holds placed by a participant call with many tries, in one statement: hold $1[i]
-- (hold_ids.sql) under ($2[i] gtid, $3[i] branch), of $7[i] from the debit account $4[i] to the
-- credit account $5[i] in currency $6[i], all created at $8 and pending for $9[i] microseconds
-- from then. The accounts were locked and judged, and the hold_placed events appended
-- (src/holds.rs). Returns the ids written: a key taken meanwhile by a racing call is not
-- (hold_insert.sql), and the command then fails as a whole.
INSERT INTO wallet.holds (hold_id, gtid, branch, debit_account_id, credit_account_id, currency,
                          reserved, status, created_at, expires_at)
SELECT u.hold_id, u.gtid, u.branch, u.debit, u.credit, u.currency, u.reserved, 'pending', $8,
       $8 + u.timeout * interval '1 microsecond'
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
              $7::bigint[], $9::bigint[])
       AS u (hold_id, gtid, branch, debit, credit, currency, reserved, timeout)
    ON CONFLICT (gtid, branch) DO NOTHING
RETURNING hold_id
