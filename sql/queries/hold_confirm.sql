-- Confirm: posts $4 from the debit account ($2) to the credit account ($3) and releases the whole
-- reservation $5 on both; records the event and finishes the hold ($1). Both accounts are
-- locked already and the amounts checked (storage::confirm_hold). $6 currency, $7 gtid,
-- $8 branch. Returns the posting's event seq (its transfer id). Chain links as in hold_place.sql.
WITH s AS MATERIALIZED (
    -- The event's number, drawn first: the accounts point at it as their newest (last_seq).
    -- The rows were locked before, so this transaction has its id (see chain.sql, "Postings").
    SELECT pg_catalog.nextval('wallet.events_seq_seq') AS seq
), d AS (
    UPDATE wallet.accounts AS a
       SET balance = a.balance - $4, pending_debit = a.pending_debit - $5, last_seq = s.seq
      FROM s, wallet.accounts AS o WHERE a.id = $2 AND o.id = $2 RETURNING a.balance, o.last_seq AS prev
), c AS (
    UPDATE wallet.accounts AS a
       SET balance = a.balance + $4, pending_credit = a.pending_credit - $5, last_seq = s.seq
      FROM s, wallet.accounts AS o WHERE a.id = $3 AND o.id = $3 RETURNING a.balance, o.last_seq AS prev
), e AS (
    INSERT INTO wallet.events (seq, event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, pending_delta, data, debit_prev,
                               credit_prev)
    SELECT s.seq, 'hold_confirmed', $2, $3, $4, $6, d.balance, c.balance, -$5,
           pg_catalog.jsonb_build_object('hold_id', $1, 'gtid', $7::text, 'branch', $8::text,
                                         'reserved', $5),
           d.prev, c.prev
      FROM s, d, c
    RETURNING seq
)
UPDATE wallet.holds AS h
   SET status = 'confirmed', confirmed_amount = $4, confirm_seq = e.seq,
       finished_at = pg_catalog.clock_timestamp()
  FROM e
 WHERE h.hold_id = $1
RETURNING e.seq
