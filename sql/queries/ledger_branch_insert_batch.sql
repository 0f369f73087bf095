-- The branches of a batch's new global transactions, set-wise: of global transaction $1[i],
-- number $2[i] (id 'b' || number at the participant), on node $3[i], one posting from $4[i] to
-- $5[i] (NULL: the node's system account) of $6[i]. Returns the rows, columns as
-- ledger_branches_many.sql.
INSERT INTO wallet.branches (gtid, branch_no, branch, node, debit_account_ids, credit_account_ids,
                             amounts)
SELECT u.gtid, u.no, 'b' || u.no, u.node, ARRAY[u.debit], ARRAY[u.credit], ARRAY[u.amount]
  FROM unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
       AS u (gtid, no, node, debit, credit, amount)
RETURNING gtid, branch_no, branch, node, debit_account_ids, credit_account_ids, amounts, status,
          last_sqlstate, last_error
