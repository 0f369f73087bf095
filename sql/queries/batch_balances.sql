-- Writes the final balances and newest events of the accounts a batch changed (rows locked by
-- batch_lock_accounts.sql). $1 account ids, $2 balances, $3 last_seq.
UPDATE wallet.accounts AS a
   SET balance = v.balance, last_seq = v.last_seq
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v (id, balance, last_seq)
 WHERE a.id = v.id
