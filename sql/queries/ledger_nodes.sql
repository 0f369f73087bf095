-- Every registered node (recovery looks for this coordinator's prepared transactions on each).
SELECT name FROM wallet.nodes ORDER BY name
