-- Writes the final balances of the accounts a batch changed (rows locked by
-- batch_lock_accounts.sql). $1 account ids, $2 balances.
UPDATE wallet.accounts AS a
   SET balance = v.balance
  FROM unnest($1::bigint[], $2::bigint[]) AS v (id, balance)
 WHERE a.id = v.id
