-- The coordinator: global transactions across nodes (databases running wallet_ext, here or on
-- other servers) by Try-Confirm/Cancel, two-phase commit or Saga, with one durable phase-status
-- ledger and one recovery for the three. The engine is src/coordinator/; the rules of each
-- protocol are wallet_core::protocol. README.md, "Transfers between databases", says how to use
-- it and what each protocol guarantees.

-- ---- nodes -------------------------------------------------------------------------------------

-- A node is a foreign server of this wrapper (its address: host, port, dbname, ...) with a user
-- mapping for the extension's owner (the credentials: user, password, ...). Secrets stay where
-- Postgres keeps them, readable by the superuser alone; no role is granted USAGE on the servers,
-- so none can open a connection with them (dblink or postgres_fdw refuse it).
CREATE FUNCTION wallet._node_options_valid(options text[], catalog oid) RETURNS void
LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_node_options_valid';
CREATE FOREIGN DATA WRAPPER wallet_nodes NO HANDLER VALIDATOR wallet._node_options_valid;

CREATE TABLE wallet.nodes (
    name       text PRIMARY KEY,       -- what global transactions call it ('local' is this database)
    server     name NOT NULL UNIQUE,   -- its foreign server (wallet_node_<name>)
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wallet.nodes IS
    'Other wallet_ext databases this one coordinates transfers with: foreign servers of wrapper wallet_nodes. ''local'' (this database) is implicit.';
SELECT pg_catalog.pg_extension_config_dump('wallet.nodes', '');

-- The keywords of a libpq connection string, each marked a credential or not.
CREATE FUNCTION wallet._conninfo_options(conninfo text)
RETURNS TABLE (keyword text, value text, secret boolean)
LANGUAGE c STRICT SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_conninfo_options';

-- Registers a node, or re-points one: the address of conninfo goes to its foreign server, the
-- credentials to the user mapping of the extension's owner; nothing of it is stored elsewhere.
CREATE FUNCTION wallet.register_node(name text, conninfo text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    server name := 'wallet_node_' || name;
    owner regrole := (SELECT e.extowner::regrole FROM pg_extension AS e WHERE e.extname = 'wallet_ext');
    address text;
    credentials text;
    old text;
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,49}$' OR name = 'local' THEN
        RAISE EXCEPTION 'invalid argument name: 1 to 50 characters a-z, 0-9, _ (not starting with a digit) and not ''local'', got %',
            coalesce(quote_literal(name), 'NULL') USING ERRCODE = 'WA016';
    END IF;
    IF conninfo IS NULL OR octet_length(conninfo) > 1000 THEN
        RAISE EXCEPTION 'invalid argument conninfo: a libpq connection string of at most 1000 bytes'
            USING ERRCODE = 'WA016';
    END IF;
    SELECT string_agg(format('%I %L', o.keyword, o.value), ', ') FILTER (WHERE NOT o.secret),
           string_agg(format('%I %L', o.keyword, o.value), ', ') FILTER (WHERE o.secret)
      INTO address, credentials
      FROM wallet._conninfo_options(conninfo) AS o;
    IF NOT EXISTS (SELECT FROM pg_foreign_server AS s WHERE s.srvname = server) THEN
        EXECUTE format('CREATE SERVER %I FOREIGN DATA WRAPPER wallet_nodes', server);
    ELSE
        SELECT string_agg(format('DROP %I', split_part(o, '=', 1)), ', ') INTO old
          FROM pg_foreign_server AS s, unnest(s.srvoptions) AS o WHERE s.srvname = server;
        IF old IS NOT NULL THEN
            EXECUTE format('ALTER SERVER %I OPTIONS (%s)', server, old);
        END IF;
    END IF;
    IF address IS NOT NULL THEN
        EXECUTE format('ALTER SERVER %I OPTIONS (%s)', server, regexp_replace(address, '(^|, )', '\1ADD ', 'g'));
    END IF;
    IF NOT EXISTS (SELECT FROM pg_user_mappings AS m WHERE m.srvname = server AND m.umuser = owner::oid) THEN
        EXECUTE format('CREATE USER MAPPING FOR %s SERVER %I', owner, server);
    END IF;
    SELECT string_agg(format('DROP %I', split_part(o, '=', 1)), ', ') INTO old
      FROM pg_user_mapping AS m JOIN pg_foreign_server AS s ON s.oid = m.umserver,
           unnest(m.umoptions) AS o
     WHERE s.srvname = server AND m.umuser = owner::oid;
    IF old IS NOT NULL THEN
        EXECUTE format('ALTER USER MAPPING FOR %s SERVER %I OPTIONS (%s)', owner, server, old);
    END IF;
    IF credentials IS NOT NULL THEN
        EXECUTE format('ALTER USER MAPPING FOR %s SERVER %I OPTIONS (%s)', owner, server,
                       regexp_replace(credentials, '(^|, )', '\1ADD ', 'g'));
    END IF;
    INSERT INTO wallet.nodes AS n (name, server) VALUES (register_node.name, server)
        ON CONFLICT ON CONSTRAINT nodes_pkey DO NOTHING;
    RETURN name;
END
$fn$;
COMMENT ON FUNCTION wallet.register_node(text, text) IS
    'Registers (or re-points) a node: its address goes to foreign server wallet_node_<name>, its credentials to the user mapping of the extension''s owner.';

-- Removes a node, refused while an unfinished global transaction has a branch there.
CREATE FUNCTION wallet.remove_node(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET client_min_messages = warning AS $fn$
DECLARE
    unfinished bigint;
    server name;
BEGIN
    SELECT n.server INTO server FROM wallet.nodes AS n WHERE n.name = remove_node.name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT count(DISTINCT b.gtid) INTO unfinished
      FROM wallet.branches AS b JOIN wallet.global_transactions AS g ON g.gtid = b.gtid
     WHERE b.node = remove_node.name AND g.finished_at IS NULL;
    IF unfinished > 0 THEN
        RAISE EXCEPTION 'node % cannot be removed: % unfinished global transactions still need it', name, unfinished
            USING ERRCODE = 'WA028', HINT = 'Let recovery finish them first (CALL wallet.recover()).';
    END IF;
    EXECUTE format('DROP SERVER IF EXISTS %I CASCADE', server);
    DELETE FROM wallet.nodes AS n WHERE n.name = remove_node.name;
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION wallet.remove_node(text) IS
    'Removes a node (its foreign server and user mapping); refused while an unfinished global transaction needs it.';

-- ---- the phase-status ledger -------------------------------------------------------------------

-- This coordinator's id: part of the gid of every transaction it prepares on a node (2PC), so
-- that recovery resolves its own prepared transactions and no other coordinator's. Made on first
-- use, not here: a dump carries it, and a restore runs this script before loading the data.
CREATE TABLE wallet.coordinator_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id        text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('wallet.coordinator_identity', '');

CREATE TABLE wallet.global_transactions (
    gtid            text PRIMARY KEY,
    protocol        text NOT NULL DEFAULT 'tcc',    -- tcc | 2pc | saga
    phase           text NOT NULL DEFAULT 'try',    -- try | confirm | cancel (the decision)
    outcome         text,                            -- confirmed | cancelled | stuck (an operator is needed)
    -- The legs: per leg a node, an account there and an amount (negative out of it, positive in).
    leg_nodes       text[] NOT NULL,
    leg_account_ids bigint[] NOT NULL,
    leg_amounts     bigint[] NOT NULL,
    amount          bigint NOT NULL,                 -- what moves: the sum of the credits
    currency        text,                            -- learnt from the first branch tried
    hold_timeout    interval NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    decide_by       timestamptz NOT NULL,            -- no confirm decision after this
    decided_at      timestamptz,
    finished_at     timestamptz,
    finished_by     text,                            -- coordinator | recovery
    error_sqlstate  text,                            -- why it was cancelled, or is stuck
    error_message   text,
    batch           text                             -- the batch it came in (transfer_across_batch)
)
-- Room on every page for the updates each row gets (what was learnt, the decision, the end), so
-- that most stay HOT.
WITH (fillfactor = 70);
CREATE INDEX global_transactions_unfinished_idx ON wallet.global_transactions (created_at)
    WHERE finished_at IS NULL;
-- No foreign key to wallet.global_transactions: the engine writes a global transaction and its
-- branches in one statement each of one step, and a key's trigger would run a query per branch
-- row (a batch of 4,000 transfers spent a fifth of its time there).
CREATE TABLE wallet.branches (
    gtid               text NOT NULL,
    branch_no          integer NOT NULL,             -- order (a saga's order of steps)
    branch             text NOT NULL,                -- its id at the participant
    node               text NOT NULL,
    -- Its postings on the node; a NULL account is the node's system account of the currency.
    debit_account_ids  bigint[] NOT NULL,
    credit_account_ids bigint[] NOT NULL,
    amounts            bigint[] NOT NULL,
    status             text NOT NULL DEFAULT 'new',  -- new | tried | failed | confirmed | cancelled | refused
    gid                text,                         -- 2PC: the gid of its prepared transaction on the node
    attempts           integer NOT NULL DEFAULT 0,
    last_sqlstate      text,
    last_error         text,
    updated_at         timestamptz,
    PRIMARY KEY (gtid, branch_no)
)
WITH (fillfactor = 70);
-- One prepared transaction per gid (2PC's branches have one; the others none).
CREATE UNIQUE INDEX branches_gid_idx ON wallet.branches (gid) WHERE gid IS NOT NULL;
COMMENT ON TABLE wallet.global_transactions IS
    'Phase-status ledger of the global transactions this database coordinates (TC/C, 2PC, Saga).';
COMMENT ON TABLE wallet.branches IS 'Branches of the global transactions: one per node, with its postings and status.';
SELECT pg_catalog.pg_extension_config_dump('wallet.global_transactions', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.branches', '');

-- ---- the participant side (src/coordinator/participant.rs) -------------------------------------

-- Each takes any number of items and answers each, in order, never raising for an item's
-- rejection: (item, sqlstate, message, value). What a coordinator calls on a node, one call per
-- node per phase.
CREATE FUNCTION wallet.tcc_try(gtids text[], branches text[], debit_account_ids bigint[],
                               credit_account_ids bigint[], amounts bigint[], timeout interval)
RETURNS TABLE (item integer, sqlstate text, message text, value text)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_tcc_try';
COMMENT ON FUNCTION wallet.tcc_try(text[], text[], bigint[], bigint[], bigint[], interval) IS
    'TC/C participant: try_hold for each item (a NULL account: the system account of the other''s currency); value = the hold''s currency.';

CREATE FUNCTION wallet.tcc_confirm(gtids text[], branches text[])
RETURNS TABLE (item integer, sqlstate text, message text, value text)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_tcc_confirm';
COMMENT ON FUNCTION wallet.tcc_confirm(text[], text[]) IS
    'TC/C participant: confirm_hold (all reserved) for each item; value = the posting''s transfer id.';

CREATE FUNCTION wallet.tcc_cancel(gtids text[], branches text[])
RETURNS TABLE (item integer, sqlstate text, message text, value text)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_tcc_cancel';
COMMENT ON FUNCTION wallet.tcc_cancel(text[], text[]) IS
    'TC/C participant: cancel_hold for each item (recording the cancel of a try that never arrived); value = the hold id.';

CREATE FUNCTION wallet.post_branch(keys text[], debit_account_ids bigint[], credit_account_ids bigint[],
                                   amounts bigint[], linked boolean[])
RETURNS TABLE (item integer, sqlstate text, message text, value text)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_post_branch';
COMMENT ON FUNCTION wallet.post_branch(text[], bigint[], bigint[], bigint[], boolean[]) IS
    '2PC and Saga participant: keyed transfers as one batch (linked as transfer_batch links); a NULL account is the system account of the other''s currency; value = the currency.';

CREATE FUNCTION wallet.undo_branch(keys text[], undo_keys text[])
RETURNS TABLE (item integer, sqlstate text, message text, value text)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wallet_undo_branch';
COMMENT ON FUNCTION wallet.undo_branch(text[], text[]) IS
    'Saga participant: for each posting key, the reverse transfer (with its undo key) if it posted, else a bar that refuses it for good; value = the reverse transfer id (NULL for a bar).';

-- ---- the API -----------------------------------------------------------------------------------

CREATE PROCEDURE wallet.transfer_across(gtid text, from_node text, from_account_id bigint,
                                        to_node text, to_account_id bigint, amount bigint,
                                        timeout interval DEFAULT NULL,
                                        INOUT outcome text DEFAULT NULL,
                                        protocol text DEFAULT 'tcc')
LANGUAGE c AS 'MODULE_PATHNAME', 'wallet_transfer_across';
COMMENT ON PROCEDURE wallet.transfer_across(text, text, bigint, text, bigint, bigint, interval, text, text) IS
    'Moves amount from an account on one node to an account on another by TC/C (default), 2PC or Saga; commits after each step, so CALL it outside a transaction block. Returns confirmed, or raises the reason of the cancel.';

CREATE PROCEDURE wallet.transfer_global(gtid text, nodes text[], account_ids bigint[], amounts bigint[],
                                        protocol text DEFAULT 'tcc', timeout interval DEFAULT NULL,
                                        INOUT outcome text DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'wallet_transfer_global';
COMMENT ON PROCEDURE wallet.transfer_global(text, text[], bigint[], bigint[], text, interval, text) IS
    'A global transaction of any number of legs (node, account, amount: negative out, positive in; summing to 0) by TC/C, 2PC or Saga. Returns confirmed, or raises the reason of the cancel.';

CREATE PROCEDURE wallet.transfer_across_batch(gtids text[], from_nodes text[], from_account_ids bigint[],
                                              to_nodes text[], to_account_ids bigint[], amounts bigint[],
                                              protocol text DEFAULT 'tcc', timeout interval DEFAULT NULL,
                                              INOUT outcomes text[] DEFAULT NULL,
                                              INOUT sqlstates text[] DEFAULT NULL,
                                              INOUT messages text[] DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'wallet_transfer_across_batch';
COMMENT ON PROCEDURE wallet.transfer_across_batch(text[], text[], bigint[], text[], bigint[], bigint[], text, interval, text[], text[], text[]) IS
    'Up to 10,000 transfers between nodes in one call, each its own global transaction (gtid, outcome, recovery), by TC/C or Saga; per item: outcome (confirmed, cancelled, pending, stuck, rejected), SQLSTATE and message, in input order.';

CREATE PROCEDURE wallet.recover(INOUT finished integer DEFAULT NULL, INOUT unfinished integer DEFAULT NULL)
LANGUAGE c AS 'MODULE_PATHNAME', 'wallet_recover';
COMMENT ON PROCEDURE wallet.recover(integer, integer) IS
    'Drives every global transaction whose coordinator is gone to its end, by its protocol; returns how many finished and how many are still unfinished (a participant unreachable, or stuck).';

-- An operator, having settled why a branch was refused for good (unfrozen an account, say), hands
-- a stuck global transaction back to recovery.
CREATE FUNCTION wallet.resume_global_transaction(gtid text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    UPDATE wallet.branches AS b SET status = 'tried', updated_at = clock_timestamp()
     WHERE b.gtid = resume_global_transaction.gtid AND b.status = 'refused';
    UPDATE wallet.global_transactions AS g SET outcome = NULL
     WHERE g.gtid = resume_global_transaction.gtid AND g.outcome = 'stuck';
    RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION wallet.resume_global_transaction(text) IS
    'Hands a stuck global transaction back to recovery, which repeats its refused step.';
