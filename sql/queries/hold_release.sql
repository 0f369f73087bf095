-- Cancel or expiry: releases the reservation $4 on the debit ($2) and credit ($3) accounts,
-- records the event and finishes the hold ($1) with status $6 ('cancelled' or 'expired').
-- Both accounts are locked already. $5 currency, $7 gtid, $8 branch. Returns the hold id.
-- Chain links as in hold_place.sql.
WITH s AS MATERIALIZED (
    -- The event's number, drawn first: the accounts point at it as their newest (last_seq).
    -- The rows were locked before, so this transaction has its id (see chain.sql, "Postings").
    SELECT pg_catalog.nextval('wallet.events_seq_seq') AS seq
), d AS (
    UPDATE wallet.accounts AS a SET pending_debit = a.pending_debit - $4, last_seq = s.seq
      FROM s, wallet.accounts AS o WHERE a.id = $2 AND o.id = $2 RETURNING a.balance, o.last_seq AS prev
), c AS (
    UPDATE wallet.accounts AS a SET pending_credit = a.pending_credit - $4, last_seq = s.seq
      FROM s, wallet.accounts AS o WHERE a.id = $3 AND o.id = $3 RETURNING a.balance, o.last_seq AS prev
), e AS (
    INSERT INTO wallet.events (seq, event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, pending_delta, data, debit_prev,
                               credit_prev)
    SELECT s.seq, CASE $6 WHEN 'expired' THEN 'hold_expired' ELSE 'hold_cancelled' END,
           $2, $3, 0, $5, d.balance, c.balance, -$4,
           pg_catalog.jsonb_build_object('hold_id', $1, 'gtid', $7::text, 'branch', $8::text,
                                         'reserved', $4),
           d.prev, c.prev
      FROM s, d, c
    RETURNING seq
)
UPDATE wallet.holds AS h
   SET status = $6, finished_at = pg_catalog.clock_timestamp()
  FROM e
 WHERE h.hold_id = $1
RETURNING h.hold_id
