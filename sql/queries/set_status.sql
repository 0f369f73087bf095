-- Applies an allowed status change and records its event. $1 account, $2 new status,
-- $3 event type. Returns the event's sequence number.
WITH changed AS (
    UPDATE wallet.accounts SET status = $2 WHERE id = $1
 RETURNING id, currency, balance
)
INSERT INTO wallet.events (event_type, account_id, currency, data)
SELECT $3, id, currency, jsonb_build_object('status', $2::text, 'balance', balance)
  FROM changed
RETURNING seq
