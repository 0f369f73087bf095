-- The coordinator: transfers between accounts on different nodes (databases running wallet_ext,
-- here or on other servers) by Try-Confirm/Cancel, with a durable phase-status ledger.
--
-- Nodes are registered by name with a libpq connection string and reached with contrib's dblink
-- (one connection per node per session, kept); the node 'local' is this database, reached
-- directly. A global transaction has one branch per node: on the paying node a hold from the
-- account to that node's system account of the currency, on the receiving node a hold from its
-- system account to the account (one branch, account to account, when both are on one node).
-- Each node's books stay balanced; the system accounts carry each node's net position.
--
-- Why a procedure: a decision must be durable before any participant hears of it, and the
-- ledger must be durable before any participant is touched. One transaction cannot do that, so
-- wallet.transfer_across is a PROCEDURE that COMMITs after each step (call it outside an explicit
-- transaction block, like VACUUM). Each step is one call of wallet._gtx_step, which reads the
-- ledger, asks the rules (src/tcc.rs, via wallet._tcc_next_step) what comes next, does it, and
-- records it. Recovery (CALL wallet.recover(), or the background worker) runs the same steps for
-- transactions whose coordinator is gone: a session-level advisory lock per global transaction
-- says whether someone is driving it (a crashed backend's locks vanish with it).

CREATE TABLE wallet.nodes (
    name       text PRIMARY KEY,
    conninfo   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wallet.nodes IS
    'Other wallet_ext databases this one coordinates transfers with; ''local'' (this database) is implicit.';

CREATE TABLE wallet.global_transactions (
    gtid           text PRIMARY KEY,
    phase          text NOT NULL DEFAULT 'try',   -- try | confirm | cancel (the decision)
    outcome        text,                           -- confirmed | cancelled, once every branch is done
    from_node      text NOT NULL,
    from_account_id bigint NOT NULL,
    to_node        text NOT NULL,
    to_account_id  bigint NOT NULL,
    amount         bigint NOT NULL,
    currency       text,                           -- learnt from the paying branch's try
    hold_timeout   interval NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    decide_by      timestamptz NOT NULL,           -- no confirm decision after this
    decided_at     timestamptz,
    finished_at    timestamptz,
    finished_by    text,                           -- coordinator | recovery
    error_sqlstate text,                           -- why it was cancelled
    error_message  text
);
CREATE INDEX global_transactions_unfinished_idx ON wallet.global_transactions (created_at)
    WHERE finished_at IS NULL;
CREATE TABLE wallet.branches (
    gtid              text NOT NULL REFERENCES wallet.global_transactions,
    branch_no         integer NOT NULL,            -- order of the tries
    branch            text NOT NULL,               -- branch id at the participant
    node              text NOT NULL,
    debit_account_id  bigint,                      -- NULL: the node's system account
    credit_account_id bigint,
    status            text NOT NULL DEFAULT 'new', -- new | tried | failed | confirmed | cancelled | refused
    attempts          integer NOT NULL DEFAULT 0,
    last_sqlstate     text,
    last_error        text,
    updated_at        timestamptz,
    PRIMARY KEY (gtid, branch_no)
);
COMMENT ON TABLE wallet.global_transactions IS
    'Phase-status ledger of the transfers this database coordinates (TC/C).';
COMMENT ON TABLE wallet.branches IS 'Branches of the global transactions: node, accounts, status.';
SELECT pg_catalog.pg_extension_config_dump('wallet.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.global_transactions', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.branches', '');

-- The rules (src/tcc.rs): next step of a global transaction, and which errors are worth a retry.
CREATE FUNCTION wallet._tcc_next_step(phase text, branch_statuses text[], past_deadline boolean)
RETURNS text LANGUAGE c IMMUTABLE AS 'MODULE_PATHNAME', 'wallet_tcc_next_step';
CREATE FUNCTION wallet._tcc_transient(sqlstate text)
RETURNS boolean LANGUAGE c IMMUTABLE AS 'MODULE_PATHNAME', 'wallet_tcc_transient';

-- ---- nodes -------------------------------------------------------------------------------------

CREATE FUNCTION wallet._dblink_schema() RETURNS name
LANGUAGE sql STABLE AS $fn$
    SELECT n.nspname FROM pg_catalog.pg_extension AS e
      JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink'
$fn$;

CREATE FUNCTION wallet.register_node(name text, conninfo text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' OR name = 'local' THEN
        RAISE EXCEPTION 'invalid argument name: 1 to 63 characters a-z, 0-9, _ and not ''local'', got %',
            coalesce(quote_literal(name), 'NULL') USING ERRCODE = 'WA016';
    END IF;
    IF conninfo IS NULL OR length(conninfo) > 1000 THEN
        RAISE EXCEPTION 'invalid argument conninfo: a libpq connection string of at most 1000 bytes'
            USING ERRCODE = 'WA016';
    END IF;
    IF wallet._dblink_schema() IS NULL THEN
        RAISE EXCEPTION 'invalid argument conninfo: node % needs the dblink extension in this database', name
            USING ERRCODE = 'WA016', HINT = 'CREATE EXTENSION dblink;';
    END IF;
    INSERT INTO wallet.nodes AS n (name, conninfo) VALUES ($1, $2)
        ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE SET conninfo = excluded.conninfo;
    RETURN name;
END
$fn$;
COMMENT ON FUNCTION wallet.register_node(text, text) IS
    'Registers (or re-points) a node: a wallet_ext database reached with dblink through conninfo.';

CREATE FUNCTION wallet._require_node(node text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF node IS DISTINCT FROM 'local' AND NOT EXISTS (SELECT 1 FROM wallet.nodes AS n WHERE n.name = node) THEN
        RAISE EXCEPTION 'unknown node %', coalesce(quote_literal(node), 'NULL')
            USING ERRCODE = 'WA024', HINT = 'Register it with wallet.register_node(name, conninfo).';
    END IF;
END
$fn$;

-- The functions that run on every step keep their plans for the session (PL/pgSQL), and plan
-- with enable_seqscan off: a plan made while the ledger tables look empty (after a VACUUM)
-- would otherwise scan them sequentially for as long as the session lives (measured: the
-- coordinator at 0.7k transfers/s instead of 3.2k/s right after a VACUUM of empty tables).

-- Runs one participant call on a remote node and returns its single text result, or raises the
-- participant's error (with its SQLSTATE; 08xxx when the node cannot be reached).
CREATE FUNCTION wallet._node_call(node text, command text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    dbl name := wallet._dblink_schema();
    conn text;
    info text;
    result text;
BEGIN
    SELECT n.conninfo INTO info FROM wallet.nodes AS n WHERE n.name = node;
    -- Named after the connection string too: a node re-pointed with register_node gets a new
    -- connection, even in a session (the worker's) that keeps the old one.
    conn := 'wallet_' || node || '_' || left(md5(info), 8);
    EXECUTE format('SELECT coalesce($1 = ANY (%I.dblink_get_connections()), false)', dbl)
        INTO STRICT result USING conn;
    IF result = 'false' THEN
        EXECUTE format('SELECT %I.dblink_connect($1, $2)', dbl) USING conn, info;
    END IF;
    BEGIN
        EXECUTE format('SELECT t.r FROM %I.dblink($1, $2) AS t (r text)', dbl)
            INTO result USING conn, command;
    EXCEPTION WHEN OTHERS THEN
        -- A broken connection is dropped, so that the next call connects again.
        IF left(SQLSTATE, 2) = '08' OR SQLSTATE IN ('57P01', '57P02', '57P03', 'XX000') THEN
            BEGIN
                EXECUTE format('SELECT %I.dblink_disconnect($1)', dbl) USING conn;
            EXCEPTION WHEN OTHERS THEN NULL;
            END;
        END IF;
        RAISE;
    END;
    RETURN result;
END
$fn$;

-- ---- the phase ledger ------------------------------------------------------------------------

-- Session-level lock: whoever holds it drives the global transaction (coordinator or recovery).
CREATE FUNCTION wallet._gtx_claim(gtid text, wait boolean DEFAULT false) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF wait THEN
        PERFORM pg_catalog.pg_advisory_lock(1463898964, pg_catalog.hashtext(gtid));
        RETURN true;
    END IF;
    RETURN pg_catalog.pg_try_advisory_lock(1463898964, pg_catalog.hashtext(gtid));
END
$fn$;
CREATE FUNCTION wallet._gtx_release(gtid text) RETURNS boolean
LANGUAGE sql VOLATILE AS $fn$
    SELECT pg_catalog.pg_advisory_unlock(1463898964, pg_catalog.hashtext(gtid))
$fn$;

-- Unfinished global transactions (recovery's work list): those decided to confirm first, oldest
-- first, because their participants' holds run out (a hold past its timeout cannot be
-- confirmed any more); then those cancelling, then those still trying.
CREATE FUNCTION wallet._recovery_candidates() RETURNS text[]
LANGUAGE sql STABLE SET enable_seqscan = off AS $fn$
    SELECT coalesce(array_agg(g.gtid ORDER BY g.urgency, g.created_at), '{}')
      FROM (SELECT gtid, created_at,
                   CASE phase WHEN 'confirm' THEN 0 WHEN 'cancel' THEN 1 ELSE 2 END AS urgency
              FROM wallet.global_transactions
             WHERE finished_at IS NULL
             ORDER BY 3, created_at LIMIT 1000) AS g
$fn$;

-- The participant call of a step, as SQL text for the branch's node.
CREATE FUNCTION wallet._branch_command(action text, g wallet.global_transactions, b wallet.branches)
RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE action
        WHEN 'try' THEN format(
            'SELECT wallet.try_branch(%L, %L, %s, %s, %s, %L::interval, %L)',
            g.gtid, b.branch, coalesce(b.debit_account_id::text, 'NULL'),
            coalesce(b.credit_account_id::text, 'NULL'), g.amount, g.hold_timeout, g.currency)
        WHEN 'confirm' THEN format('SELECT wallet.confirm_hold(%L, %L)::text', g.gtid, b.branch)
        WHEN 'cancel' THEN format('SELECT wallet.cancel_hold(%L, %L)::text', g.gtid, b.branch)
    END
$fn$;

-- One durable step of a global transaction; the caller commits after it and holds its claim.
-- A step sends at most one participant call (try, confirm or cancel of one branch) and records
-- its answer; then it applies, in the same transaction, a decision or the outcome that follows
-- from the ledger alone: a decision is committed with the try answer it rests on, before any
-- participant hears of it; the outcome with the last branch's answer. Returns 'more' (call
-- again), 'done' (finished) or 'wait' (a participant is unreachable: try later). recovering:
-- the coordinator is gone, so a transaction still trying is cancelled.
CREATE FUNCTION wallet._gtx_step(gtid text, recovering boolean DEFAULT true) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off AS $fn$
DECLARE
    g wallet.global_transactions;
    b wallet.branches;
    statuses text[];
    step text;
    action text;
    n integer;
    answer text;
    failed_state text;
    failed_message text;
    called boolean := false;
BEGIN
    LOOP
        SELECT * INTO g FROM wallet.global_transactions AS x WHERE x.gtid = _gtx_step.gtid FOR UPDATE;
        IF NOT FOUND OR g.finished_at IS NOT NULL THEN
            RETURN 'done';
        END IF;
        SELECT array_agg(x.status ORDER BY x.branch_no) INTO statuses
          FROM wallet.branches AS x WHERE x.gtid = g.gtid;
        step := wallet._tcc_next_step(g.phase, statuses,
                                      recovering OR pg_catalog.clock_timestamp() > g.decide_by);
        action := split_part(step, ' ', 1);
        n := split_part(step, ' ', 2)::integer;
        IF action = 'decide_confirm' THEN
            UPDATE wallet.global_transactions AS x SET phase = 'confirm', decided_at = clock_timestamp()
             WHERE x.gtid = g.gtid;
            RETURN 'more';  -- committed before any participant is told
        ELSIF action = 'decide_cancel' THEN
            UPDATE wallet.global_transactions AS x
               SET phase = 'cancel', decided_at = clock_timestamp(),
                   error_sqlstate = coalesce(x.error_sqlstate, 'WA021'),
                   error_message = coalesce(x.error_message, CASE WHEN recovering
                       THEN format('global transaction %s was cancelled by recovery: its coordinator stopped before deciding', g.gtid)
                       ELSE format('global transaction %s passed its decision deadline (%s) before every branch was tried', g.gtid, g.decide_by) END)
             WHERE x.gtid = g.gtid;
            RETURN 'more';
        ELSIF action IN ('finish_confirmed', 'finish_cancelled') THEN
            UPDATE wallet.global_transactions AS x
               SET outcome = CASE action WHEN 'finish_confirmed' THEN 'confirmed' ELSE 'cancelled' END,
                   finished_at = clock_timestamp(),
                   finished_by = CASE WHEN recovering THEN 'recovery' ELSE 'coordinator' END
             WHERE x.gtid = g.gtid;
            RETURN 'done';
        ELSIF called THEN
            RETURN 'more';  -- one participant call per step
        END IF;
        called := true;
        SELECT * INTO b FROM wallet.branches AS x WHERE x.gtid = g.gtid AND x.branch_no = n;
        BEGIN
            IF b.node = 'local' THEN
                -- Called directly: the plans of these calls are kept, unlike a command's text.
                answer := CASE action
                    WHEN 'try' THEN wallet.try_branch(g.gtid, b.branch, b.debit_account_id,
                                                      b.credit_account_id, g.amount, g.hold_timeout, g.currency)
                    WHEN 'confirm' THEN wallet.confirm_hold(g.gtid, b.branch)::text
                    ELSE wallet.cancel_hold(g.gtid, b.branch)::text END;
            ELSE
                answer := wallet._node_call(b.node, wallet._branch_command(action, g, b));
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
        END;
        IF failed_state IS NULL THEN
            UPDATE wallet.branches AS x
               SET status = CASE action WHEN 'try' THEN 'tried' WHEN 'confirm' THEN 'confirmed' ELSE 'cancelled' END,
                   attempts = x.attempts + 1, last_sqlstate = NULL, last_error = NULL,
                   updated_at = clock_timestamp()
             WHERE x.gtid = g.gtid AND x.branch_no = n;
            IF action = 'try' AND g.currency IS NULL THEN
                UPDATE wallet.global_transactions AS x SET currency = answer WHERE x.gtid = g.gtid;
            END IF;
            CONTINUE;  -- a decision or the outcome may follow in this transaction
        END IF;
        IF wallet._tcc_transient(failed_state) THEN
            failed_message := format('node %s unreachable (%s: %s)', b.node, failed_state, failed_message);
            failed_state := 'WA025';
        END IF;
        UPDATE wallet.branches AS x
           SET attempts = x.attempts + 1, last_sqlstate = failed_state, last_error = failed_message,
               updated_at = clock_timestamp(),
               status = CASE WHEN action = 'try' THEN 'failed'
                             WHEN failed_state = 'WA025' THEN x.status
                             ELSE 'refused' END
         WHERE x.gtid = g.gtid AND x.branch_no = n;
        IF action = 'try' THEN
            -- A try that failed either way leads to cancel (which also reaches a try whose answer
            -- was lost); the decision follows in this transaction.
            UPDATE wallet.global_transactions AS x
               SET error_sqlstate = failed_state, error_message = failed_message
             WHERE x.gtid = g.gtid;
            CONTINUE;
        END IF;
        IF failed_state = 'WA025' THEN
            RETURN 'wait';
        END IF;
        -- refused for good: the outcome may follow in this transaction
    END LOOP;
END
$fn$;

-- Records a new global transaction and its branches (durable once the caller commits).
CREATE FUNCTION wallet._gtx_begin(gtid text, from_node text, from_account_id bigint,
                                  to_node text, to_account_id bigint, amount bigint,
                                  hold_timeout interval) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET enable_seqscan = off AS $fn$
DECLARE
    g wallet.global_transactions;
BEGIN
    SELECT * INTO g FROM wallet.global_transactions AS x WHERE x.gtid = _gtx_begin.gtid;
    IF FOUND THEN
        IF (g.from_node, g.from_account_id, g.to_node, g.to_account_id, g.amount)
           IS DISTINCT FROM (from_node, from_account_id, to_node, to_account_id, amount) THEN
            RAISE EXCEPTION 'global transaction % exists with different parameters (% from account % on node % to account % on node %)',
                g.gtid, g.amount, g.from_account_id, g.from_node, g.to_account_id, g.to_node
                USING ERRCODE = 'WA027', HINT = 'Use a new global transaction id for a different transfer.';
        END IF;
        RETURN;  -- a repeat: drive the existing one to its end
    END IF;
    INSERT INTO wallet.global_transactions (gtid, from_node, from_account_id, to_node, to_account_id,
                                            amount, hold_timeout, decide_by)
    VALUES (gtid, from_node, from_account_id, to_node, to_account_id, amount, hold_timeout,
            clock_timestamp() + hold_timeout / 2);
    IF from_node = to_node THEN
        INSERT INTO wallet.branches (gtid, branch_no, branch, node, debit_account_id, credit_account_id)
        VALUES (gtid, 1, 'transfer', from_node, from_account_id, to_account_id);
    ELSE
        INSERT INTO wallet.branches (gtid, branch_no, branch, node, debit_account_id, credit_account_id)
        VALUES (gtid, 1, 'debit', from_node, from_account_id, NULL),
               (gtid, 2, 'credit', to_node, NULL, to_account_id);
    END IF;
END
$fn$;

-- A global transaction by id, and how many are unfinished: for the procedures below, which
-- cannot carry a SET clause (a procedure that commits may not) but must not plan a sequential
-- scan of a ledger that looked empty when they were first called.
CREATE FUNCTION wallet._gtx_get(gtid text) RETURNS wallet.global_transactions
LANGUAGE sql STABLE SET enable_seqscan = off AS $fn$
    SELECT * FROM wallet.global_transactions AS x WHERE x.gtid = $1
$fn$;
CREATE FUNCTION wallet._gtx_unfinished() RETURNS bigint
LANGUAGE sql STABLE SET enable_seqscan = off AS $fn$
    SELECT count(*) FROM wallet.global_transactions WHERE finished_at IS NULL
$fn$;

-- ---- the API -----------------------------------------------------------------------------------

CREATE PROCEDURE wallet.transfer_across(gtid text, from_node text, from_account_id bigint,
                                        to_node text, to_account_id bigint, amount bigint,
                                        timeout interval DEFAULT NULL,
                                        INOUT outcome text DEFAULT NULL)
LANGUAGE plpgsql AS $fn$
DECLARE
    g wallet.global_transactions;
    t interval := coalesce(timeout, current_setting('wallet.hold_timeout', true)::interval,
                           interval '900 seconds');
    step text;
BEGIN
    IF gtid IS NULL OR octet_length(gtid) NOT BETWEEN 1 AND 128 THEN
        RAISE EXCEPTION 'invalid argument gtid: must be 1 to 128 bytes, got %',
            coalesce(octet_length(gtid)::text, 'NULL') USING ERRCODE = 'WA016';
    END IF;
    IF amount IS NULL OR amount <= 0 THEN
        RAISE EXCEPTION 'amount must be a positive number of minor units, got % for account %',
            coalesce(amount::text, 'NULL'), coalesce(from_account_id::text, 'NULL') USING ERRCODE = 'WA003';
    END IF;
    IF from_account_id IS NULL OR to_account_id IS NULL THEN
        RAISE EXCEPTION 'invalid argument account_id: must not be NULL' USING ERRCODE = 'WA016';
    END IF;
    IF from_node = to_node AND from_account_id = to_account_id THEN
        RAISE EXCEPTION 'transfer of % from account % to itself', amount, from_account_id
            USING ERRCODE = 'WA002';
    END IF;
    IF t <= interval '0' THEN
        RAISE EXCEPTION 'invalid argument timeout: must be positive, got %', t USING ERRCODE = 'WA016';
    END IF;
    PERFORM wallet._require_node(from_node);
    PERFORM wallet._require_node(to_node);
    -- Fails at once ("invalid transaction termination") inside a transaction block, before the
    -- session-level claim below is taken.
    COMMIT;
    PERFORM wallet._gtx_claim(gtid, wait => true);
    BEGIN
        PERFORM wallet._gtx_begin(gtid, from_node, from_account_id, to_node, to_account_id, amount, t);
    EXCEPTION WHEN OTHERS THEN
        PERFORM wallet._gtx_release(gtid);
        RAISE;
    END;
    COMMIT;  -- the ledger is durable before any participant is touched
    LOOP
        BEGIN
            step := wallet._gtx_step(gtid, recovering => false);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            -- Unexpected (a bug, a cancel, a timeout): give the transaction to recovery.
            PERFORM wallet._gtx_release(gtid);
            RAISE;
        END;
        COMMIT;  -- each step, and above all each decision, is durable before the next
        EXIT WHEN step <> 'more';
    END LOOP;
    PERFORM wallet._gtx_release(gtid);
    g := wallet._gtx_get(gtid);
    IF g.phase = 'confirm' THEN
        -- Decided: confirmed, even if a participant still has to hear it (recovery will tell it).
        outcome := 'confirmed';
        IF g.finished_at IS NULL THEN
            RAISE WARNING 'global transaction % is confirmed; a participant is unreachable and recovery will complete it', gtid;
        END IF;
        RETURN;
    END IF;
    outcome := 'cancelled';
    RAISE EXCEPTION USING ERRCODE = coalesce(g.error_sqlstate, 'WA021'),
        MESSAGE = format('transfer %s of %s from account %s on node %s to account %s on node %s was cancelled: %s',
                         gtid, amount, from_account_id, from_node, to_account_id, to_node,
                         coalesce(g.error_message, 'deadline passed')),
        HINT = CASE WHEN g.finished_at IS NULL
                    THEN 'A participant is unreachable; recovery will finish the cancel.'
                    ELSE 'Nothing was moved on any node.' END;
END
$fn$;
COMMENT ON PROCEDURE wallet.transfer_across(text, text, bigint, text, bigint, bigint, interval, text) IS
    'Moves amount from an account on one node to an account on another by Try-Confirm/Cancel; commits after each step, so CALL it outside a transaction block. Returns confirmed, or raises the reason of the cancel.';

CREATE PROCEDURE wallet.recover(INOUT finished integer DEFAULT NULL, INOUT unfinished integer DEFAULT NULL)
LANGUAGE plpgsql AS $fn$
DECLARE
    todo text[] := wallet._recovery_candidates();
    one text;
    step text;
BEGIN
    finished := 0;
    COMMIT;
    FOREACH one IN ARRAY todo LOOP
        CONTINUE WHEN NOT wallet._gtx_claim(one);
        LOOP
            BEGIN
                step := wallet._gtx_step(one, recovering => true);
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                PERFORM wallet._gtx_release(one);
                RAISE;
            END;
            COMMIT;
            EXIT WHEN step <> 'more';
        END LOOP;
        PERFORM wallet._gtx_release(one);
        IF step = 'done' THEN
            finished := finished + 1;
        END IF;
    END LOOP;
    unfinished := wallet._gtx_unfinished();
END
$fn$;
COMMENT ON PROCEDURE wallet.recover(integer, integer) IS
    'Drives every global transaction whose coordinator is gone to its end: confirm if the decision to confirm was recorded, otherwise cancel. Returns how many finished and how many are still unfinished (an unreachable participant).';
