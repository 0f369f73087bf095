-- Accounts' currencies and the system accounts they settle against. $1 account ids.
SELECT a.id, a.currency, c.system_account_id
  FROM wallet.accounts AS a
  JOIN wallet.currencies AS c ON c.code = a.currency
 WHERE a.id = ANY ($1)
