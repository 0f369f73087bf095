-- Records a batch's posted transfers, one event each. $1 seq, $2 debit, $3 credit, $4 amount,
-- $5 currency, $6 / $7 posted balances after, $8 idempotency keys, $9 / $10 the accounts'
-- previous money events (batch::chain_links). Returns the seq of every
-- row written: when a keyed row meets a key a concurrent transaction committed meanwhile
-- (READ COMMITTED), it is skipped, and the caller answers the whole batch with 40001.
-- The plan for a batch without keys leaves out the line marked "keyed only".
INSERT INTO wallet.events (seq, event_type, debit_account_id, credit_account_id, amount, currency,
                           debit_balance, credit_balance, idempotency_key, debit_prev, credit_prev)
SELECT s, 'transfer', d, c, a, cur, db, cb, k, dp, cp
  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
              $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[])
       AS u (s, d, c, a, cur, db, cb, k, dp, cp)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING -- keyed only
RETURNING seq
