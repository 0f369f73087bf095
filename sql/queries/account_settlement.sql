-- An account's currency and the system account it settles against. $1 account id.
SELECT a.currency, c.system_account_id
  FROM wallet.accounts AS a
  JOIN wallet.currencies AS c ON c.code = a.currency
 WHERE a.id = $1
