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
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE wallet.currencies IS
    'One row per currency; scale = number of minor-unit decimals; its system account issues and settles money.';

-- Explicit sequences (not identity columns) so pg_dump can carry their positions as extension
-- configuration. CACHE 1 keeps event sequence numbers increasing in the order they are drawn.
CREATE SEQUENCE wallet.accounts_id_seq AS bigint;
CREATE SEQUENCE wallet.events_seq_seq AS bigint;

CREATE TABLE wallet.accounts (
    id              bigint PRIMARY KEY DEFAULT pg_catalog.nextval('wallet.accounts_id_seq'),
    currency        text NOT NULL REFERENCES wallet.currencies (code),
    owner           text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
    allow_overdraft boolean NOT NULL DEFAULT false,
    is_system       boolean NOT NULL DEFAULT false,
    balance         bigint NOT NULL DEFAULT 0,   -- posted, minor units
    pending_debit   bigint NOT NULL DEFAULT 0 CHECK (pending_debit >= 0),  -- reserved outgoing
    pending_credit  bigint NOT NULL DEFAULT 0 CHECK (pending_credit >= 0), -- reserved incoming
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Invariant 2, asserted by the table itself: no account below zero without permission.
    CONSTRAINT accounts_no_forbidden_overdraft CHECK (allow_overdraft OR balance - pending_debit >= 0)
)
-- Balances change on every transfer; free space on each page keeps those updates HOT
-- (no index mentions a balance column, so an update never touches an index).
WITH (fillfactor = 70);
CREATE INDEX accounts_owner_idx ON wallet.accounts (owner, id) WHERE owner IS NOT NULL;
CREATE INDEX accounts_currency_idx ON wallet.accounts (currency, id);
COMMENT ON TABLE wallet.accounts IS
    'Wallet state. Changed only by the wallet functions, in the transaction that records the event.';

-- The event log. Insert-only: UPDATE, DELETE and TRUNCATE are refused by triggers (for every role,
-- the owner included) and by privileges. A correction is a new event.
CREATE TABLE wallet.events (
    seq               bigint PRIMARY KEY DEFAULT pg_catalog.nextval('wallet.events_seq_seq'),
    event_type        text NOT NULL CHECK (event_type IN (
                          'currency_created', 'account_opened', 'account_frozen',
                          'account_unfrozen', 'account_closed', 'transfer')),
    occurred_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    tx_id             xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    account_id        bigint,   -- lifecycle events: the account concerned
    debit_account_id  bigint,   -- money movements: the side that pays
    credit_account_id bigint,   -- money movements: the side that receives
    amount            bigint CHECK (amount > 0),
    currency          text,
    debit_balance     bigint,   -- posted balance of the debit account after this event
    credit_balance    bigint,   -- posted balance of the credit account after this event
    idempotency_key   text,
    data              jsonb,    -- lifecycle details, or the caller's metadata for a transfer
    CONSTRAINT events_shape CHECK (
        CASE WHEN event_type = 'transfer'
             THEN debit_account_id IS NOT NULL AND credit_account_id IS NOT NULL
                  AND amount IS NOT NULL AND currency IS NOT NULL
                  AND debit_balance IS NOT NULL AND credit_balance IS NOT NULL
             ELSE account_id IS NOT NULL OR event_type = 'currency_created'
        END)
);
CREATE INDEX events_debit_idx ON wallet.events (debit_account_id, seq) WHERE debit_account_id IS NOT NULL;
CREATE INDEX events_credit_idx ON wallet.events (credit_account_id, seq) WHERE credit_account_id IS NOT NULL;
CREATE INDEX events_account_idx ON wallet.events (account_id, seq) WHERE account_id IS NOT NULL;
CREATE UNIQUE INDEX events_idempotency_key_idx ON wallet.events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
COMMENT ON TABLE wallet.events IS
    'Append-only event log: every state change, in sequence. Replaying it reproduces every balance.';

CREATE FUNCTION wallet.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    RAISE EXCEPTION 'the wallet event log is append-only: % is not allowed on wallet.events', TG_OP
        USING ERRCODE = 'WA017',
              HINT = 'Record a correcting event instead.';
END
$fn$;

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON wallet.events
    FOR EACH ROW EXECUTE FUNCTION wallet.refuse_event_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON wallet.events
    FOR EACH STATEMENT EXECUTE FUNCTION wallet.refuse_event_change();

-- pg_dump must carry the data of the extension's tables.
SELECT pg_catalog.pg_extension_config_dump('wallet.currencies', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.events', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.accounts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('wallet.events_seq_seq', '');
ALTER SEQUENCE wallet.accounts_id_seq OWNED BY wallet.accounts.id;
ALTER SEQUENCE wallet.events_seq_seq OWNED BY wallet.events.seq;
