-- First leg of a transfer: applies the amount to the account with the lower id, if its guards
-- allow. $1 the account, $2 the transfer's debit account, $3 amount (> 0, checked before).
-- transfer_post.sql then does the same to the other account (with the currency returned here)
-- and records the event.
--
-- A transfer runs its two legs in ascending account id order, so two transfers lock any two
-- accounts in the same order and never deadlock each other. The guards repeat
-- domain::check_transfer_against: active status, currency, funds for the debit side
-- (available = balance - pending_debit, unless overdraft is allowed) and the bigint bounds.
-- Under READ COMMITTED a row changed concurrently is re-checked on its newest version
-- (EvalPlanQual), so no update is lost and no guard is bypassed. When a guard refuses, the row
-- is not returned and the Rust caller raises the precise rejection, which also rolls back a
-- first leg already applied.
UPDATE wallet.accounts
   SET balance = balance + CASE WHEN id = $2 THEN -$3 ELSE $3 END
 WHERE id = $1
   AND status = 'active'
   AND CASE WHEN id = $2
            THEN CASE WHEN allow_overdraft THEN balance >= (-9223372036854775807 - 1) + $3
                      ELSE balance - pending_debit >= $3 END
            ELSE balance <= 9223372036854775807 - $3 END
RETURNING currency, balance
