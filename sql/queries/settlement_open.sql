-- Opens $2 further settlement accounts of currency $1 (system accounts: allowed to go negative),
-- records account_opened for each, and appends them to the currency's settlement_accounts.
-- Returns the currency's further settlement accounts, all of them.
WITH opened AS (
    INSERT INTO wallet.accounts (id, currency, owner, allow_overdraft, is_system)
    SELECT nextval('wallet.accounts_id_seq'), $1, 'system', true, true
      FROM generate_series(1, $2)
 RETURNING id, currency
), recorded AS (
    INSERT INTO wallet.events (event_type, account_id, currency, data)
    SELECT 'account_opened', o.id, o.currency,
           jsonb_build_object('owner', 'system', 'metadata', '{}'::jsonb,
                              'allow_overdraft', true, 'is_system', true)
      FROM opened AS o
     ORDER BY o.id
), kept AS (
    UPDATE wallet.currencies AS c
       SET settlement_accounts = c.settlement_accounts
                                 || coalesce((SELECT array_agg(o.id ORDER BY o.id) FROM opened AS o),
                                             '{}'::bigint[])
     WHERE c.code = $1
 RETURNING c.settlement_accounts
)
SELECT settlement_accounts FROM kept
