-- The branches of global transaction $1, in order.
SELECT branch_no, branch, node, debit_account_ids, credit_account_ids, amounts, status,
       last_sqlstate, last_error
  FROM wallet.branches
 WHERE gtid = $1
 ORDER BY branch_no
