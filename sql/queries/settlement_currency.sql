-- A currency's system account and further settlement accounts, its row locked (so that two
-- spread_settlement calls open accounts one after the other). $1 currency code.
SELECT system_account_id, settlement_accounts
  FROM wallet.currencies
 WHERE code = $1
   FOR UPDATE
