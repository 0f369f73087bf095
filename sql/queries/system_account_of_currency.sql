-- The system account of a currency. $1 currency code.
SELECT system_account_id FROM wallet.currencies WHERE code = $1
