-- This coordinator's id (16 hex digits, made on first use; a dump carries it): the first part
-- of the gid of every transaction it prepares on a node.
WITH made AS (
    INSERT INTO wallet.coordinator_identity (id)
    SELECT left(replace(gen_random_uuid()::text, '-', ''), 16)
     WHERE NOT EXISTS (SELECT FROM wallet.coordinator_identity)
        ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT id FROM made UNION ALL SELECT id FROM wallet.coordinator_identity
