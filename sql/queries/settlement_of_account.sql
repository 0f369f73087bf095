-- Where an account's currency settles a hold with a side left NULL: its system account, and the
-- further accounts cross-node settlement is spread over (wallet.spread_settlement; only system
-- accounts of that currency count). $1 account id.
SELECT c.system_account_id,
       ARRAY(SELECT s.id
               FROM unnest(c.settlement_accounts) WITH ORDINALITY AS s (id, n)
               JOIN wallet.accounts AS x ON x.id = s.id AND x.is_system AND x.currency = c.code
              ORDER BY s.n)
  FROM wallet.accounts AS a
  JOIN wallet.currencies AS c ON c.code = a.currency
 WHERE a.id = $1
