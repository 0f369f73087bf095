-- A branch of global transaction $1: number $2, id $3 at the participant, node $4, its postings
-- ($5 debit accounts, $6 credit accounts, NULL for the node's system account; $7 amounts), and
-- for 2PC the gid $8 its transaction is prepared under (recorded before it is prepared).
INSERT INTO wallet.branches (gtid, branch_no, branch, node, debit_account_ids, credit_account_ids,
                             amounts, gid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
