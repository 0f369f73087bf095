-- wallet_ext schema: currencies, accounts (the state) and events (the append-only log).
-- Everything lives in schema "wallet" (wallet_ext.control: schema = wallet, relocatable = false).
-- Roles are cluster-wide, so they are created only when missing: a second database in the same
-- cluster reuses them.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'wallet_reader') THEN
        CREATE ROLE wallet_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'wallet_operator') THEN
        CREATE ROLE wallet_operator NOLOGIN;
    END IF;
END
$roles$;

COMMENT ON SCHEMA wallet IS 'wallet_ext: double-entry wallet engine. Call the functions; never write the tables.';

CREATE TABLE wallet.currencies (
    code              text PRIMARY KEY,
    scale             smallint NOT NULL CHECK (scale BETWEEN 0 AND 18),
    system_account_id bigint NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Further system accounts that cross-node postings and holds settle against besides the
    -- system account (wallet.spread_settlement), in the order they were opened.
    settlement_accounts bigint[] NOT NULL DEFAULT '{}'::bigint[]
);
COMMENT ON TABLE wallet.currencies IS
    'One row per currency; scale = number of minor-unit decimals; its system account issues and settles money (cross-node settlement spread over settlement_accounts too).';

-- Explicit sequences (not identity columns) so pg_dump can carry their positions as extension
-- configuration. CACHE 1 keeps event sequence numbers increasing in the order they are drawn.
CREATE SEQUENCE wallet.accounts_id_seq AS bigint;
CREATE SEQUENCE wallet.events_seq_seq AS bigint;

CREATE TABLE wallet.accounts (
    id              bigint PRIMARY KEY DEFAULT pg_catalog.nextval('wallet.accounts_id_seq'),
    currency        text NOT NULL,  -- a wallet.currencies code (checked by open_account)
    owner           text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'active',  -- active | frozen | closed
    allow_overdraft boolean NOT NULL DEFAULT false,
    is_system       boolean NOT NULL DEFAULT false,
    balance         bigint NOT NULL DEFAULT 0,       -- posted, minor units
    pending_debit   bigint NOT NULL DEFAULT 0,       -- reserved outgoing (>= 0)
    pending_credit  bigint NOT NULL DEFAULT 0,       -- reserved incoming (>= 0)
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_seq        bigint  -- the account's newest money event (see "History paths" below)
)
-- Balances change on every transfer; free space on each page keeps those updates HOT
-- (no index mentions a balance column, so an update never touches an index).
-- No foreign key (its trigger runs on every balance update) and no CHECK constraints on this
-- table or on wallet.events, on purpose: Postgres re-reads a CHECK
-- constraint's stored expression on every statement that writes the table, which cost about a
-- quarter of a transfer. The wallet functions are the only writers; their guards enforce the
-- rules (status values, no forbidden overdraft, pending >= 0, event shapes), and
-- wallet.trial_balance() and wallet.verify() check the outcome.
WITH (fillfactor = 70);
CREATE INDEX accounts_owner_idx ON wallet.accounts (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX accounts_currency_idx ON wallet.accounts (currency, id);
COMMENT ON TABLE wallet.accounts IS
    'Wallet state. Changed only by the wallet functions, in the transaction that records the event.';

-- The event log. Insert-only: UPDATE, DELETE and TRUNCATE are refused by triggers (for every role,
-- the owner included) and by privileges. A correction is a new event.
CREATE TABLE wallet.events (
    seq               bigint PRIMARY KEY DEFAULT pg_catalog.nextval('wallet.events_seq_seq'),
    event_type        text NOT NULL,  -- see README.md, "Event types"
    -- clock_timestamp(), not now(): an event is written while its accounts' rows are locked, so
    -- per account the time grows with seq, and a balance at a time is the one after the
    -- account's last event at or before it.
    occurred_at       timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    tx_id             xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    account_id        bigint,   -- lifecycle events: the account concerned
    debit_account_id  bigint,   -- money movements: the side that pays
    credit_account_id bigint,   -- money movements: the side that receives
    amount            bigint,   -- > 0
    currency          text,
    debit_balance     bigint,   -- posted balance of the debit account after this event
    credit_balance    bigint,   -- posted balance of the credit account after this event
    idempotency_key   text,
    data              jsonb,    -- lifecycle details, or the caller's metadata for a transfer
    -- hold events: the change of the debit account's pending_debit and of the credit account's
    -- pending_credit (+reserved at try, -reserved when confirmed, cancelled or expired)
    pending_delta     bigint,
    -- the previous money event of the debit / credit account (NULL: none, or one already in
    -- wallet.postings when this event was written)
    debit_prev        bigint,
    credit_prev       bigint
);
-- History paths. An account's money events (it is the debit or the credit side) are found in
-- two parts, without an index on the write path:
--  * up to wallet.seal_state.posted_seq, in wallet.postings (sql/chain.sql), which wallet.seal()
--    fills in the background, many events per statement;
--  * after it, by following the account's chain: accounts.last_seq, then each event's
--    debit_prev / credit_prev. Every writer of a money event sets them while it holds the
--    account's row lock, so the chain is exactly the account's events in seq order.
-- Two per-account indexes written by every transfer cost about a quarter of its CPU time
-- (bench/RESULTS.md, section 2). Lifecycle events are rare and keep a partial index.
CREATE INDEX events_account_idx ON wallet.events (account_id, seq) WHERE account_id IS NOT NULL;
CREATE UNIQUE INDEX events_idempotency_key_idx ON wallet.events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
COMMENT ON TABLE wallet.events IS
    'Append-only event log: every state change, in sequence. Replaying it reproduces every balance.';

CREATE FUNCTION wallet.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION 'the wallet event log is append-only: % is not allowed on wallet.%', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'WA017',
              HINT = 'Record a correcting event instead.';
END
$fn$;

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON wallet.events
    FOR EACH ROW EXECUTE FUNCTION wallet.refuse_event_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON wallet.events
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.refuse_event_change();

-- The ledger outlives a careless DROP: before DROP EXTENSION wallet_ext, DROP SCHEMA wallet or
-- DROP OWNED BY its owner, this refuses the drop while wallet.events holds an event (WA029),
-- unless a superuser SET wallet.allow_drop = on (src/guard.rs).
CREATE FUNCTION wallet._guard_drop() RETURNS event_trigger
LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'wallet_guard_drop';
CREATE EVENT TRIGGER wallet_guard_drop ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION wallet._guard_drop();

-- pg_dump must carry the data of the extension's tables.
SELECT pg_catalog.pg_extension_config_dump('wallet.currencies', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.events', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.events_seq_seq', '');
ALTER SEQUENCE wallet.accounts_id_seq OWNED BY wallet.accounts.id;
ALTER SEQUENCE wallet.events_seq_seq OWNED BY wallet.events.seq;
