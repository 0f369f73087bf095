-- The state of one account, as domain::AccountState. $1 account id.
SELECT id, currency, status, allow_overdraft, is_system, balance, pending_debit, pending_credit
  FROM wallet.accounts
 WHERE id = $1
