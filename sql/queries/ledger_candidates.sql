-- Recovery's work list: unfinished global transactions that need no operator, those decided to
-- confirm first (their holds run out), then those cancelling, then those still trying; at most
-- $1; with the batch each came in (NULL: it came alone).
SELECT gtid, batch
  FROM wallet.global_transactions
 WHERE finished_at IS NULL AND outcome IS NULL
 ORDER BY CASE phase WHEN 'confirm' THEN 0 WHEN 'cancel' THEN 1 ELSE 2 END, created_at
 LIMIT $1
