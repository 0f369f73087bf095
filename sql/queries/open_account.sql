-- Opens an account and records account_opened. $1 currency, $2 owner, $3 metadata,
-- $4 allow_overdraft. No row when the currency does not exist.
WITH opened AS (
    INSERT INTO wallet.accounts (currency, owner, metadata, allow_overdraft)
    SELECT code, $2, $3, $4 FROM wallet.currencies WHERE code = $1
 RETURNING id, currency, owner, metadata, allow_overdraft
), recorded AS (
    INSERT INTO wallet.events (event_type, account_id, currency, data)
    SELECT 'account_opened', id, currency,
           jsonb_build_object('owner', owner, 'metadata', metadata,
                              'allow_overdraft', allow_overdraft, 'is_system', false)
      FROM opened
)
SELECT id FROM opened
