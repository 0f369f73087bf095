-- Cancel or expiry: releases the reservation $4 on the debit ($2) and credit ($3) accounts,
-- records the event and finishes the hold ($1) with status $6 ('cancelled' or 'expired').
-- Both accounts are locked already. $5 currency, $7 gtid, $8 branch. Returns the hold id.
WITH d AS (
    UPDATE wallet.accounts SET pending_debit = pending_debit - $4 WHERE id = $2 RETURNING balance
), c AS (
    UPDATE wallet.accounts SET pending_credit = pending_credit - $4 WHERE id = $3 RETURNING balance
), e AS (
    INSERT INTO wallet.events (event_type, debit_account_id, credit_account_id, amount, currency,
                               debit_balance, credit_balance, pending_delta, data)
    SELECT CASE $6 WHEN 'expired' THEN 'hold_expired' ELSE 'hold_cancelled' END,
           $2, $3, 0, $5, d.balance, c.balance, -$4,
           pg_catalog.jsonb_build_object('hold_id', $1, 'gtid', $7::text, 'branch', $8::text,
                                         'reserved', $4)
      FROM d, c
    RETURNING seq
)
UPDATE wallet.holds AS h
   SET status = $6, finished_at = pg_catalog.clock_timestamp()
  FROM e
 WHERE h.hold_id = $1
RETURNING h.hold_id
