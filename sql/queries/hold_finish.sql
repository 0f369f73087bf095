-- A hold's end ($1 hold id): status $2 (confirmed, cancelled or expired), and for a confirm the
-- amount posted $3 and its event $4. The hold row is locked (hold_lookup.sql or hold_expired.sql).
UPDATE wallet.holds
   SET status = $2, confirmed_amount = $3, confirm_seq = $4, finished_at = clock_timestamp()
 WHERE hold_id = $1
RETURNING hold_id
