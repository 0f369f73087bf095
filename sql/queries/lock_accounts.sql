-- Locks the accounts in $1 in ascending id order, the order every writer uses, so that the
-- expiry of many holds at once cannot deadlock with transfers or batches.
SELECT a.id
  FROM wallet.accounts AS a
  JOIN (SELECT DISTINCT u.id FROM pg_catalog.unnest($1::bigint[]) AS u (id)) AS w ON w.id = a.id
 ORDER BY a.id
   FOR NO KEY UPDATE OF a
