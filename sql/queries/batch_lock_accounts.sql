-- Locks and reads every account a batch touches, in ascending id order (the LockRows node sits
-- above the sort), the same order single transfers lock in, so batches and transfers never
-- deadlock each other. $1 account ids (sorted, distinct).
-- A join with unnest, not "id = ANY ($1)": when a row was changed concurrently, EvalPlanQual
-- re-checks the quals on its newest version, and re-checking "= ANY" scans the whole array, which
-- made locking a batch quadratic in its size.
SELECT a.id, a.currency, a.status, a.allow_overdraft, a.is_system, a.balance, a.pending_debit,
       a.pending_credit, a.last_seq
  FROM unnest($1::bigint[]) AS v (id)
  JOIN wallet.accounts AS a ON a.id = v.id
 ORDER BY a.id
   FOR NO KEY UPDATE OF a
