-- The new global transactions of a batch (transfer_across_batch), set-wise: $1[i] gtid, from
-- account $3[i] on node $2[i] to account $5[i] on node $4[i], amount $6[i]; $7 protocol, $8 the
-- hold timeout in microseconds (decision deadline: half of it), $9 the batch. Returns the rows
-- that were new (the others exist), columns as ledger_get_many.sql: the batch's drive starts
-- from them instead of reading them again.
INSERT INTO wallet.global_transactions (gtid, protocol, leg_nodes, leg_account_ids, leg_amounts,
                                        amount, hold_timeout, decide_by, batch)
SELECT u.gtid, $7, ARRAY[u.from_node, u.to_node], ARRAY[u.from_account, u.to_account],
       ARRAY[-u.amount, u.amount], u.amount, $8 * interval '1 microsecond',
       clock_timestamp() + $8 * interval '1 microsecond' / 2, $9
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])
       AS u (gtid, from_node, from_account, to_node, to_account, amount)
    ON CONFLICT (gtid) DO NOTHING
RETURNING gtid, protocol, phase, outcome, currency,
          (extract(epoch FROM hold_timeout) * 1000000)::bigint,
          (extract(epoch FROM decide_by) * 1000000)::bigint, finished_at IS NOT NULL,
          leg_nodes, leg_account_ids, leg_amounts, error_sqlstate, error_message, batch
