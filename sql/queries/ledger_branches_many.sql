-- The branches of global transactions $1, each one's in order.
SELECT gtid, branch_no, branch, node, debit_account_ids, credit_account_ids, amounts, status,
       last_sqlstate, last_error
  FROM wallet.branches
 WHERE gtid = ANY ($1)
 ORDER BY gtid, branch_no
