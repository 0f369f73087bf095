-- The global transaction of the branch prepared under gid $1 (2PC): its phase, and whether it is
-- finished with the outcome confirmed. No row: the gid is not this coordinator's ledger's.
SELECT g.phase, g.finished_at IS NOT NULL, g.outcome
  FROM wallet.branches AS b JOIN wallet.global_transactions AS g ON g.gtid = b.gtid
 WHERE b.gid = $1
