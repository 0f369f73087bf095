-- A saga's compensation of a forward posting that never arrived: takes the posting's key $1
-- (with a note of the compensation's key $2), so that the posting, should it arrive later, is
-- refused (WA009) and never takes effect. No row when the key was taken meanwhile.
INSERT INTO wallet.events (event_type, idempotency_key, data)
VALUES ('posting_barred', $1, jsonb_build_object('compensation_key', $2::text))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq
