-- Creates a currency and its system account (allowed to go negative: money enters the wallet
-- by debiting it), and records currency_created and account_opened. $1 code, $2 scale.
-- No row when the currency exists already.
WITH created AS (
    INSERT INTO wallet.currencies (code, scale, system_account_id)
    VALUES ($1, $2, nextval('wallet.accounts_id_seq'))
        ON CONFLICT (code) DO NOTHING
 RETURNING code, scale, system_account_id
), system_account AS (
    INSERT INTO wallet.accounts (id, currency, owner, allow_overdraft, is_system)
    SELECT system_account_id, code, 'system', true, true FROM created
 RETURNING id, currency
), recorded AS (
    INSERT INTO wallet.events (event_type, account_id, currency, data)
    SELECT 'currency_created', c.system_account_id, c.code,
           jsonb_build_object('scale', c.scale, 'system_account_id', c.system_account_id)
      FROM created AS c
    UNION ALL
    SELECT 'account_opened', s.id, s.currency,
           jsonb_build_object('owner', 'system', 'metadata', '{}'::jsonb,
                              'allow_overdraft', true, 'is_system', true)
      FROM system_account AS s
)
SELECT system_account_id FROM created
