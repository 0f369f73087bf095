-- The foreign server of node $1.
SELECT server::text FROM wallet.nodes WHERE name = $1
