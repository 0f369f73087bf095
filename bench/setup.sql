-- Benchmark database: 10,000 wallet accounts (ids 2..10001; 1 is the BEN system account) and the
-- plain-SQL floor F over 10,000 accounts (ids 1..10000). Every account holds 10^12 minor units,
-- so no benchmark transfer is ever refused for funds.
CREATE EXTENSION wallet_ext;
SELECT wallet.create_currency('BEN');
SELECT count(wallet.open_account('BEN')) FROM generate_series(1, 10000);
SELECT count(wallet.deposit(id, 1000000000000)) FROM wallet.accounts WHERE NOT is_system;
-- Cross-node settlement spread over 8 system accounts (ids 10002..10008 besides 1), as the README
-- advises for a node that takes many concurrent cross-node transfers; local transfers never touch
-- them.
SELECT cardinality(wallet.spread_settlement('BEN', 8));

-- F: the floor, as a careful engineer would write it by hand. One plpgsql function updates the
-- two balance rows (lower id first, debit guarded by balance >= amount) and inserts one journal
-- row. It writes no event and honours no idempotency key. Same fillfactor as wallet.accounts.
CREATE SCHEMA floor;
CREATE TABLE floor.accounts (id bigint PRIMARY KEY, balance bigint NOT NULL) WITH (fillfactor = 70);
INSERT INTO floor.accounts SELECT i, 1000000000000 FROM generate_series(1, 10000) i;
CREATE TABLE floor.journal (
    id bigserial PRIMARY KEY,
    debit_account_id bigint NOT NULL,
    credit_account_id bigint NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION floor.transfer(debit bigint, credit bigint, amount bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    journal_id bigint;
BEGIN
    IF debit < credit THEN
        UPDATE floor.accounts SET balance = balance - amount WHERE id = debit AND balance >= amount;
        IF NOT FOUND THEN RAISE EXCEPTION 'insufficient funds in %', debit; END IF;
        UPDATE floor.accounts SET balance = balance + amount WHERE id = credit;
    ELSE
        UPDATE floor.accounts SET balance = balance + amount WHERE id = credit;
        UPDATE floor.accounts SET balance = balance - amount WHERE id = debit AND balance >= amount;
        IF NOT FOUND THEN RAISE EXCEPTION 'insufficient funds in %', debit; END IF;
    END IF;
    INSERT INTO floor.journal (debit_account_id, credit_account_id, amount)
    VALUES (debit, credit, amount) RETURNING id INTO journal_id;
    RETURN journal_id;
END
$$;
VACUUM ANALYZE;
CHECKPOINT;

-- Batches for the batch benchmark: 40 random batches per size, uniform pairs over the 10,000
-- wallet accounts (distinct by construction), amounts 1..100. Generated once, here, so pgbench
-- measures the wallet and not the making of arrays.
CREATE SCHEMA bench;
CREATE TABLE bench.batches (size int, id int, d bigint[], c bigint[], a bigint[], PRIMARY KEY (size, id));
INSERT INTO bench.batches
SELECT size, id, array_agg(x + 2 ORDER BY g), array_agg((x + y) % 10000 + 2 ORDER BY g),
       array_agg(amount ORDER BY g)
  FROM unnest(ARRAY[1, 10, 100, 1000, 8000]) AS size,
       generate_series(1, 40) AS id,
       LATERAL generate_series(1, size) AS g,
       LATERAL (SELECT (random() * 9999)::int AS x, 1 + (random() * 9998)::int AS y,
                       1 + (random() * 99)::bigint AS amount, g AS gg, id AS ii) r
 GROUP BY size, id;
VACUUM ANALYZE bench.batches;
