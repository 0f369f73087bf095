-- Locks and reads every account a batch touches, in ascending id order (the LockRows node sits
-- above the sort), the same order single transfers lock in, so batches and transfers never
-- deadlock each other. $1 account ids.
SELECT id, currency, status, allow_overdraft, is_system, balance, pending_debit, pending_credit
  FROM wallet.accounts
 WHERE id = ANY ($1)
 ORDER BY id
   FOR NO KEY UPDATE
