-- Accounts' currencies and the system accounts they settle against: the system account, and the
-- further ones cross-node settlement is spread over (wallet.spread_settlement; only system
-- accounts of that currency count), worked out once per currency. $1 account ids.
WITH wanted AS (
    SELECT a.id, a.currency FROM wallet.accounts AS a WHERE a.id = ANY ($1)
), settling AS (
    SELECT c.code, c.system_account_id,
           ARRAY(SELECT s.id
                   FROM unnest(c.settlement_accounts) WITH ORDINALITY AS s (id, n)
                   JOIN wallet.accounts AS x ON x.id = s.id AND x.is_system AND x.currency = c.code
                  ORDER BY s.n) AS further
      FROM wallet.currencies AS c
     WHERE c.code IN (SELECT w.currency FROM wanted AS w)
)
SELECT w.id, w.currency, s.system_account_id, s.further
  FROM wanted AS w
  JOIN settling AS s ON s.code = w.currency
