-- How many global transactions are unfinished (an unreachable participant, or stuck).
SELECT count(*) FROM wallet.global_transactions WHERE finished_at IS NULL
