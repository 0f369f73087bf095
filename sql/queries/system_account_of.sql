-- The system account of an account's currency (deposit and withdraw settle against it).
SELECT c.system_account_id
  FROM wallet.accounts AS a
  JOIN wallet.currencies AS c ON c.code = a.currency
 WHERE a.id = $1
