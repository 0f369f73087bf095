-- The executor path of a money movement on a locked account (src/accounts.rs): $1 account,
-- $2 balance, $3 pending_debit, $4 pending_credit, $5 its newest money event. The statement the
-- direct path stands for: its SET list decides which UPDATE OF triggers would fire there.
UPDATE wallet.accounts
   SET balance = $2, pending_debit = $3, pending_credit = $4, last_seq = $5
 WHERE id = $1
