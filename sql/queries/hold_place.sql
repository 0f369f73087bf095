-- Try: reserves $5 on the debit account ($3, pending_debit) and announces it to the credit
-- account ($4, pending_credit), records the hold and its event; both accounts are locked
-- already (storage::lock_pair) and were judged by domain::check_transfer_against.
-- $1 gtid, $2 branch, $6 currency, $7 timeout in microseconds. Returns the hold id; no row when
-- the key was taken meanwhile (READ COMMITTED cannot get there: the caller holds the key's
-- advisory lock; REPEATABLE READ and SERIALIZABLE raise 40001 on the invisible conflict).
WITH d AS (
    UPDATE wallet.accounts SET pending_debit = pending_debit + $5 WHERE id = $3 RETURNING balance
), c AS (
    UPDATE wallet.accounts SET pending_credit = pending_credit + $5 WHERE id = $4 RETURNING balance
), t AS (
    SELECT pg_catalog.clock_timestamp() AS now  -- one reading: expires_at = created_at + timeout
), h AS (
    INSERT INTO wallet.holds (gtid, branch, debit_account_id, credit_account_id, currency, reserved,
                              status, created_at, expires_at)
    SELECT $1, $2, $3, $4, $6, $5, 'pending', t.now, t.now + $7 * interval '1 microsecond' FROM t
        ON CONFLICT (gtid, branch) DO NOTHING
    RETURNING hold_id, expires_at
), e AS (
    INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, pending_delta, data)
    SELECT 'hold_placed', $3, $4, 0, $6, d.balance, c.balance, $5,
           pg_catalog.jsonb_build_object('hold_id', h.hold_id, 'gtid', $1::text, 'branch', $2::text,
                                         'expires_at', h.expires_at)
      FROM d, c, h
    RETURNING seq
)
SELECT h.hold_id FROM h, e
