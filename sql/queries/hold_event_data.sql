-- The data of a hold event: hold id $1, gtid $2, branch $3, and the timeout $4 (hold_placed) or
-- the amount reserved $5 (hold_confirmed, hold_cancelled, hold_expired); the other one is NULL.
SELECT CASE WHEN $4::timestamptz IS NOT NULL
            THEN jsonb_build_object('hold_id', $1::bigint, 'gtid', $2::text, 'branch', $3::text,
                                    'expires_at', $4::timestamptz)
            ELSE jsonb_build_object('hold_id', $1::bigint, 'gtid', $2::text, 'branch', $3::text,
                                    'reserved', $5::bigint) END
