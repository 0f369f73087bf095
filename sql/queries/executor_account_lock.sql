-- The executor path of the account locker (src/accounts.rs): the accounts $1, locked FOR NO KEY
-- UPDATE in ascending id order, the order every writer uses. Columns as the direct path reads
-- them; row-level security, if the table has it, applies as to any statement.
SELECT id, currency, status, allow_overdraft, is_system, balance, pending_debit, pending_credit,
       last_seq
  FROM wallet.accounts
 WHERE id = ANY ($1)
 ORDER BY id
   FOR NO KEY UPDATE
