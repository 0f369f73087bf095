-- Try: reserves $5 on the debit account ($3, pending_debit) and announces it to the credit
-- account ($4, pending_credit), records the hold and its event; both accounts are locked
-- already (storage::lock_pair) and were judged by domain::check_transfer_against.
-- $1 gtid, $2 branch, $6 currency, $7 timeout in microseconds. Returns the hold id; no row when
-- the key was taken meanwhile (READ COMMITTED cannot get there: the caller holds the key's
-- advisory lock; REPEATABLE READ and SERIALIZABLE raise 40001 on the invisible conflict).
-- Each account's previous money event (o.last_seq, the version this statement's snapshot sees,
-- the one locked) becomes the event's debit_prev / credit_prev.
WITH s AS MATERIALIZED (
    -- The event's number, drawn first: the accounts point at it as their newest (last_seq).
    -- The rows were locked before, so this transaction has its id (see chain.sql, "Postings").
    SELECT pg_catalog.nextval('wallet.events_seq_seq') AS seq
), d AS (
    UPDATE wallet.accounts AS a SET pending_debit = a.pending_debit + $5, last_seq = s.seq
      FROM s, wallet.accounts AS o WHERE a.id = $3 AND o.id = $3 RETURNING a.balance, o.last_seq AS prev
), c AS (
    UPDATE wallet.accounts AS a SET pending_credit = a.pending_credit + $5, last_seq = s.seq
      FROM s, wallet.accounts AS o WHERE a.id = $4 AND o.id = $4 RETURNING a.balance, o.last_seq AS prev
), t AS (
    SELECT pg_catalog.clock_timestamp() AS now  -- one reading: expires_at = created_at + timeout
), h AS (
    INSERT INTO wallet.holds (gtid, branch, debit_account_id, credit_account_id, currency, reserved,
                              status, created_at, expires_at)
    SELECT $1, $2, $3, $4, $6, $5, 'pending', t.now, t.now + $7 * interval '1 microsecond' FROM t
        ON CONFLICT (gtid, branch) DO NOTHING
    RETURNING hold_id, expires_at
), e AS (
    INSERT INTO wallet.events (seq, event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, pending_delta, data, debit_prev,
                               credit_prev)
    SELECT s.seq, 'hold_placed', $3, $4, 0, $6, d.balance, c.balance, $5,
           pg_catalog.jsonb_build_object('hold_id', h.hold_id, 'gtid', $1::text, 'branch', $2::text,
                                         'expires_at', h.expires_at),
           d.prev, c.prev
      FROM s, d, c, h
    RETURNING seq
)
SELECT h.hold_id FROM h, e
