-- The system account of a currency, and the further accounts cross-node settlement is spread
-- over (wallet.spread_settlement; only system accounts of that currency count). $1 currency code.
SELECT c.system_account_id,
       ARRAY(SELECT s.id
               FROM unnest(c.settlement_accounts) WITH ORDINALITY AS s (id, n)
               JOIN wallet.accounts AS x ON x.id = s.id AND x.is_system AND x.currency = c.code
              ORDER BY s.n)
  FROM wallet.currencies AS c
 WHERE c.code = $1
