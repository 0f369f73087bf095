-- Recovery's work list: unfinished global transactions that need no operator, at most $1, with
-- the batch each came in (NULL: it came alone). 2PC's first: what recovery does for them (COMMIT
-- or ROLLBACK PREPARED) waits for no lock and releases the row locks their prepared transactions
-- hold, which the others' calls to the same nodes would otherwise wait for; then those decided to
-- confirm (their holds run out), then those cancelling, then those still trying.
SELECT gtid, batch, protocol = '2pc'
  FROM wallet.global_transactions
 WHERE finished_at IS NULL AND outcome IS NULL
 ORDER BY protocol <> '2pc',
          CASE phase WHEN 'confirm' THEN 0 WHEN 'cancel' THEN 1 ELSE 2 END, created_at
 LIMIT $1
