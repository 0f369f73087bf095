-- Confirm: posts $4 from the debit account ($2) to the credit account ($3) and releases the whole
-- reservation $5 on both; records the event and finishes the hold ($1). Both accounts are
-- locked already and the amounts checked (storage::confirm_hold). $6 currency, $7 gtid,
-- $8 branch. Returns the posting's event seq (its transfer id).
WITH d AS (
    UPDATE wallet.accounts SET balance = balance - $4, pending_debit = pending_debit - $5
     WHERE id = $2 RETURNING balance
), c AS (
    UPDATE wallet.accounts SET balance = balance + $4, pending_credit = pending_credit - $5
     WHERE id = $3 RETURNING balance
), e AS (
    INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, pending_delta, data)
    SELECT 'hold_confirmed', $2, $3, $4, $6, d.balance, c.balance, -$5,
           pg_catalog.jsonb_build_object('hold_id', $1, 'gtid', $7::text, 'branch', $8::text,
                                         'reserved', $5)
      FROM d, c
    RETURNING seq
)
UPDATE wallet.holds AS h
   SET status = 'confirmed', confirmed_amount = $4, confirm_seq = e.seq,
       finished_at = pg_catalog.clock_timestamp()
  FROM e
 WHERE h.hold_id = $1
RETURNING e.seq
