-- A cancel whose try never arrived (null compensation): records a cancelled hold with no
-- accounts and nothing reserved, so that a try arriving later is refused, and its event.
-- $1 gtid, $2 branch. Returns the hold id; no row when the key was taken meanwhile (see
-- hold_place.sql).
WITH h AS (
    INSERT INTO wallet.holds (gtid, branch, reserved, status, expires_at, finished_at)
    VALUES ($1, $2, 0, 'cancelled', NULL, pg_catalog.clock_timestamp())
        ON CONFLICT (gtid, branch) DO NOTHING
    RETURNING hold_id
), e AS (
    INSERT INTO wallet.events (event_type, amount, pending_delta, data)
    SELECT 'hold_cancelled', 0, 0,
           pg_catalog.jsonb_build_object('hold_id', h.hold_id, 'gtid', $1::text, 'branch', $2::text,
                                         'reserved', 0, 'try_arrived', false)
      FROM h
    RETURNING seq
)
SELECT h.hold_id FROM h, e
