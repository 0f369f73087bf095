-- account_state.sql, locking the row: a status change is judged on the state it will replace.
SELECT id, currency, status, allow_overdraft, is_system, balance, pending_debit, pending_credit
  FROM wallet.accounts
 WHERE id = $1
   FOR NO KEY UPDATE
