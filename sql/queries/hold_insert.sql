-- Try: records hold ($1 gtid, $2 branch) of $5 from the debit account $3 to the credit account
-- $4, in currency $6, pending until $7 microseconds from now. The accounts are locked and judged
-- already (src/holds.rs), which then moves their pending amounts and appends the hold_placed
-- event. Returns the hold id and its timeout; no row when the key was taken meanwhile (a single
-- call at READ COMMITTED cannot get there: it holds the key's lock; one item of a participant
-- call with many takes no such lock and gets here when a racing call took the key; REPEATABLE
-- READ and SERIALIZABLE raise 40001 on the invisible conflict).
WITH t AS (
    SELECT clock_timestamp() AS now  -- one reading: expires_at = created_at + timeout
)
INSERT INTO wallet.holds (gtid, branch, debit_account_id, credit_account_id, currency, reserved,
                          status, created_at, expires_at)
SELECT $1, $2, $3, $4, $6, $5, 'pending', t.now, t.now + $7 * interval '1 microsecond' FROM t
    ON CONFLICT (gtid, branch) DO NOTHING
RETURNING hold_id, expires_at
