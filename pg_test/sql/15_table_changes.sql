-- What a DBA may change on the wallet's tables, and what the money paths then do: each change is
-- honoured exactly as a plain UPDATE or INSERT would honour it (the executor path: SQL
-- statements), or refused with a clear error before anything is written (55000). The direct
-- path (the table access methods) runs only while nothing a statement would do is skipped;
-- wallet.write_paths() says which path each table takes, and why.
\set VERBOSITY terse
SELECT wallet.create_currency('SEK') AS sek_system \gset
SELECT wallet.open_account('SEK', 'sten') AS sten \gset
SELECT wallet.open_account('SEK', 'tove') AS tove \gset
SELECT wallet.deposit(:sten, 100000) > 0 AS posted;
CREATE FUNCTION pg_temp.clean() RETURNS TABLE (verify bigint, chain bigint, postings bigint, sek_total numeric) LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM wallet.verify()), (SELECT count(*) FROM wallet.verify_chain()),
           (SELECT count(*) FROM wallet.verify_postings()),
           (SELECT total_balance FROM wallet.trial_balance() WHERE currency = 'SEK')
$$;
SELECT * FROM wallet.write_paths();

-- ---- kept on the direct path ----
-- A foreign key from an application table to wallet.accounts(id): its triggers do nothing when
-- the key does not change, as Postgres itself decides, and a transfer never changes it.
CREATE TABLE public.customers (id serial PRIMARY KEY, wallet_account bigint REFERENCES wallet.accounts (id));
INSERT INTO public.customers (wallet_account) VALUES (:sten), (:tove);
-- An extra index on each table, and a nullable column added to the log.
CREATE INDEX events_amount_idx ON wallet.events (amount);
CREATE INDEX accounts_balance_idx ON wallet.accounts (balance);
ALTER TABLE wallet.events ADD COLUMN note text;
SELECT * FROM wallet.write_paths();
SELECT wallet.transfer(:sten, :tove, 100) > 0 AS posted;
SELECT count(*) AS found_by_the_new_index FROM wallet.accounts WHERE balance = 100 AND id = :tove;
DELETE FROM public.customers WHERE wallet_account = :tove;
-- A trigger that is disabled, or that fires only for columns a transfer does not set, fires no
-- more for the statement a transfer stands for.
CREATE TABLE public.audit (what text, n bigint);
CREATE FUNCTION public.audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.audit VALUES (TG_TABLE_NAME || ' ' || TG_OP || ' ' || TG_LEVEL, 1); RETURN NEW; END $$;
CREATE TRIGGER on_owner AFTER UPDATE OF owner ON wallet.accounts FOR EACH ROW EXECUTE FUNCTION public.audit_row();
CREATE TRIGGER off BEFORE INSERT ON wallet.events FOR EACH ROW EXECUTE FUNCTION public.audit_row();
ALTER TABLE wallet.events DISABLE TRIGGER off;
SELECT * FROM wallet.write_paths();
SELECT wallet.transfer(:sten, :tove, 100) > 0 AS posted;
SELECT count(*) AS fired FROM public.audit;
DROP TRIGGER on_owner ON wallet.accounts;
DROP TRIGGER off ON wallet.events;

-- ---- honoured, by the executor path ----
-- Row and statement triggers, on both tables, for single transfers, batches and holds.
CREATE TRIGGER rows_in AFTER INSERT ON wallet.events FOR EACH ROW EXECUTE FUNCTION public.audit_row();
CREATE TRIGGER statements_in AFTER INSERT ON wallet.events FOR EACH STATEMENT EXECUTE FUNCTION public.audit_row();
CREATE TRIGGER rows_up BEFORE UPDATE ON wallet.accounts FOR EACH ROW EXECUTE FUNCTION public.audit_row();
SELECT * FROM wallet.write_paths();
SELECT wallet.transfer(:sten, :tove, 10) > 0 AS posted;
SELECT count(*) FROM wallet.transfer_batch(ARRAY[:sten, :sten]::bigint[], ARRAY[:tove, :tove]::bigint[], ARRAY[1, 2]::bigint[]);
SELECT wallet.try_hold('tc-1', 'b', :sten, :tove, 5) > 0 AS held;
SELECT wallet.confirm_hold('tc-1', 'b') > 0 AS confirmed;
SELECT what, sum(n) FROM public.audit GROUP BY what ORDER BY what;
DROP TRIGGER rows_in ON wallet.events;
DROP TRIGGER statements_in ON wallet.events;
DROP TRIGGER rows_up ON wallet.accounts;
-- The ledger of global transactions: a transfer between two accounts of this node writes its
-- row directly (looked up, the transfer posted, then inserted), a repeat answers the first, and
-- the row is the one its SQL would write.
SELECT table_name, write_path FROM wallet.write_paths() WHERE table_name = 'wallet.global_transactions';
CALL wallet.transfer_across('tc-direct', 'local', :sten, 'local', :tove, 7);
CALL wallet.transfer_across('tc-direct', 'local', :sten, 'local', :tove, 7);
CALL wallet.transfer_across('tc-direct', 'local', :sten, 'local', :tove, 8);
\echo :LAST_ERROR_SQLSTATE
SELECT protocol, phase, outcome, leg_nodes, leg_account_ids = ARRAY[:sten, :tove]::bigint[] AS legs, leg_amounts,
       amount, currency, hold_timeout, decide_by = created_at + hold_timeout / 2 AS decide_by,
       decided_at = created_at AND finished_at = created_at AS one_reading, finished_by,
       error_sqlstate, batch
  FROM wallet.global_transactions WHERE gtid = 'tc-direct';
SELECT count(*) AS posted_once FROM wallet.events WHERE data->>'gtid' = 'tc-direct';
-- Refused (insufficient funds): recorded as cancelled, nothing posted.
CALL wallet.transfer_across('tc-poor', 'local', :tove, 'local', :sten, 999999999);
SELECT outcome, currency, error_sqlstate FROM wallet.global_transactions WHERE gtid = 'tc-poor';
-- A trigger on the ledger fires for that row as for an INSERT, on the executor path; a CHECK on
-- the ledger ends the call with its 23514, and nothing is posted.
CREATE TRIGGER ledger_in AFTER INSERT ON wallet.global_transactions FOR EACH ROW EXECUTE FUNCTION public.audit_row();
SELECT table_name, write_path, reason FROM wallet.write_paths() WHERE table_name = 'wallet.global_transactions';
CALL wallet.transfer_across('tc-trigger', 'local', :sten, 'local', :tove, 7);
SELECT what, sum(n) FROM public.audit WHERE what LIKE 'global%' GROUP BY what;
DROP TRIGGER ledger_in ON wallet.global_transactions;
ALTER TABLE wallet.global_transactions ADD CONSTRAINT small CHECK (amount < 1000) NOT VALID;
SELECT write_path, reason FROM wallet.write_paths() WHERE table_name = 'wallet.global_transactions';
SELECT wallet.balance(:sten) AS sten_before \gset
CALL wallet.transfer_across('tc-check', 'local', :sten, 'local', :tove, 5000);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS recorded, wallet.balance(:sten) = :sten_before AS nothing_posted
  FROM wallet.global_transactions WHERE gtid = 'tc-check';
ALTER TABLE wallet.global_transactions DROP CONSTRAINT small;
-- A column with a default that the ledger's insert does not write: the executor path gives it.
ALTER TABLE wallet.global_transactions ADD COLUMN region text NOT NULL DEFAULT 'eu';
SELECT write_path, reason FROM wallet.write_paths() WHERE table_name = 'wallet.global_transactions';
CALL wallet.transfer_across('tc-default', 'local', :sten, 'local', :tove, 7);
SELECT region FROM wallet.global_transactions WHERE gtid = 'tc-default';
ALTER TABLE wallet.global_transactions DROP COLUMN region;
SELECT write_path FROM wallet.write_paths() WHERE table_name = 'wallet.global_transactions';
-- Direct again, around the dropped column.
CALL wallet.transfer_across('tc-dropped', 'local', :sten, 'local', :tove, 7);
SELECT outcome, currency FROM wallet.global_transactions WHERE gtid = 'tc-dropped';
-- A CHECK constraint: a transfer that breaks it fails with Postgres's own 23514, writing nothing.
ALTER TABLE wallet.accounts ADD CONSTRAINT balance_cap CHECK (is_system OR balance <= 150000);
SELECT * FROM wallet.write_paths();
SELECT count(*) AS events_before FROM wallet.events \gset
SELECT wallet.deposit(:tove, 200000);
\echo :LAST_ERROR_SQLSTATE
SELECT result FROM wallet.transfer_batch(ARRAY[:sek_system]::bigint[], ARRAY[:tove]::bigint[], ARRAY[200000]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) - :events_before AS written FROM wallet.events;
SELECT wallet.deposit(:tove, 1000) > 0 AS within_the_cap;
ALTER TABLE wallet.accounts DROP CONSTRAINT balance_cap;
-- A CHECK on the pending amounts applies to a hold's try as to any update.
ALTER TABLE wallet.accounts ADD CONSTRAINT pending_cap CHECK (pending_debit <= 1000);
SELECT wallet.try_hold('tc-2', 'b', :sten, :tove, 5000);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.accounts DROP CONSTRAINT pending_cap;
-- A column with a default (and NOT NULL) on the log: money events get the default.
ALTER TABLE wallet.events ADD COLUMN region text NOT NULL DEFAULT 'eu-west';
SELECT * FROM wallet.write_paths();
SELECT wallet.transfer(:sten, :tove, 7) AS seq \gset
SELECT region FROM wallet.events WHERE seq = :seq;
ALTER TABLE wallet.events DROP COLUMN region;
-- A stored generated column on the accounts: kept up to date.
ALTER TABLE wallet.accounts ADD COLUMN balance_major numeric GENERATED ALWAYS AS (balance / 100.0) STORED;
SELECT wallet.transfer(:sten, :tove, 300) > 0 AS posted;
SELECT balance, balance_major FROM wallet.accounts WHERE id = :tove;
ALTER TABLE wallet.accounts DROP COLUMN balance_major;
-- A CHECK on the log, for new events only (NOT VALID): a transfer without metadata is refused
-- with 23514, as its INSERT would be.
ALTER TABLE wallet.events ADD CONSTRAINT data_present CHECK (data IS NOT NULL) NOT VALID;
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.transfer(:sten, :tove, 1, metadata => '{"memo": "has data"}') > 0 AS posted_with_data;
ALTER TABLE wallet.events DROP CONSTRAINT data_present;
-- A unique index and an exclusion constraint a DBA added answer with their own SQLSTATEs (23505,
-- 23P01), never a "retry" (40001): only the idempotency keys' index is the wallet's arbiter.
CREATE UNIQUE INDEX one_per_amount ON wallet.events (amount) WHERE amount = 4242;
SELECT wallet.transfer(:sten, :tove, 4242) > 0 AS first;
SELECT wallet.transfer(:sten, :tove, 4242);
\echo :LAST_ERROR_SQLSTATE
SELECT result FROM wallet.transfer_batch(ARRAY[:sten]::bigint[], ARRAY[:tove]::bigint[], ARRAY[4242]::bigint[], ARRAY['k-4242']);
\echo :LAST_ERROR_SQLSTATE
DROP INDEX wallet.one_per_amount;
ALTER TABLE wallet.events ADD CONSTRAINT no_two_4343 EXCLUDE USING btree (amount WITH =) WHERE (amount = 4343);
SELECT wallet.transfer(:sten, :tove, 4343) > 0 AS first;
SELECT wallet.transfer(:sten, :tove, 4343);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.events DROP CONSTRAINT no_two_4343;
-- A rule on the log would rewrite its inserts: refused (55000), nothing written.
CREATE RULE copy_transfers AS ON INSERT TO wallet.events DO ALSO INSERT INTO public.audit VALUES ('rule', NEW.amount);
SELECT wallet.transfer(:sten, :tove, 33);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS rule_ran FROM public.audit WHERE what = 'rule';
DROP RULE copy_transfers ON wallet.events;
-- Replica identity: a table that publishes updates needs one; without it a transfer is refused
-- exactly as a plain UPDATE is (55000).
CREATE PUBLICATION wallet_accounts_pub FOR TABLE wallet.accounts;
ALTER TABLE wallet.accounts REPLICA IDENTITY NOTHING;
SELECT * FROM wallet.write_paths();
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE wallet.accounts SET owner = owner WHERE id = :sten;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.accounts REPLICA IDENTITY DEFAULT;
-- A row filter on a column outside the replica identity: refused as for a plain UPDATE.
ALTER PUBLICATION wallet_accounts_pub SET TABLE wallet.accounts WHERE (balance > 0);
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
DROP PUBLICATION wallet_accounts_pub;
-- Row-level security, even forced: the wallet's owner, a superuser, is not subject to it, as no
-- statement of its own would be; so nothing is skipped.
ALTER TABLE wallet.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE wallet.accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY only_sten ON wallet.accounts USING (id <> :tove);
SELECT * FROM wallet.write_paths();
SELECT wallet.transfer(:sten, :tove, 1) > 0 AS posted;
DROP POLICY only_sten ON wallet.accounts;
ALTER TABLE wallet.accounts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE wallet.accounts DISABLE ROW LEVEL SECURITY;

-- ---- refused: what the wallet reads or writes changed its type, or is gone ----
-- The wallet's SQL functions pin the columns they read: Postgres refuses to change their type.
ALTER TABLE wallet.accounts ALTER COLUMN balance TYPE numeric(30,0);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.events ALTER COLUMN idempotency_key TYPE varchar(10);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.events ALTER COLUMN amount TYPE numeric;
\echo :LAST_ERROR_SQLSTATE
-- Where Postgres lets a change through, the money paths refuse to work on the changed table
-- (55000), naming the column, and write nothing.
SELECT count(*) AS events_before FROM wallet.events \gset
ALTER TABLE wallet.accounts ALTER COLUMN is_system TYPE text;
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wallet.transfer_batch(ARRAY[:sten]::bigint[], ARRAY[:tove]::bigint[], ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.try_hold('tc-3', 'b', :sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT wallet.deposit(:tove, 1);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.accounts ALTER COLUMN is_system TYPE boolean USING is_system::boolean;
ALTER TABLE wallet.accounts RENAME COLUMN last_seq TO newest;
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE wallet.accounts RENAME COLUMN newest TO last_seq;
DROP INDEX wallet.events_idempotency_key_idx;
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
CREATE UNIQUE INDEX events_idempotency_key_idx ON wallet.events (idempotency_key) WHERE idempotency_key IS NOT NULL;
SELECT count(*) - :events_before AS written_while_refused FROM wallet.events;
-- A renamed index is still the primary key: nothing to refuse.
ALTER INDEX wallet.accounts_pkey RENAME TO accounts_key;
SELECT wallet.transfer(:sten, :tove, 1) > 0 AS posted;
ALTER INDEX wallet.accounts_key RENAME TO accounts_pkey;
-- A value the wallet never writes (a status edited by hand) is data corruption (XX001), not a
-- crash.
ALTER TABLE wallet.accounts DISABLE TRIGGER ALL;
UPDATE wallet.accounts SET status = 'weird' WHERE id = :tove;
SELECT wallet.transfer(:sten, :tove, 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE wallet.accounts SET status = 'active' WHERE id = :tove;
ALTER TABLE wallet.accounts ENABLE TRIGGER ALL;

-- Back to the shape the extension gave: the direct path again, and everything consistent.
DROP TABLE public.customers;
DROP INDEX wallet.events_amount_idx, wallet.accounts_balance_idx;
ALTER TABLE wallet.events DROP COLUMN note;
SELECT * FROM wallet.write_paths();
SELECT wallet.seal() >= 0 AS sealed;
SELECT * FROM pg_temp.clean();
DROP TABLE public.audit;
DROP FUNCTION public.audit_row();
