//! Every limit of the wallet, in one place. The SQL side gets these numbers from here: the
//! declarations in `sql/` that repeat one are checked against this file by
//! `tests::sql_repeats_the_registry` (crate `wallet_core`, `cargo test`).

/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 128;
/// Largest metadata document accepted on an account or a transfer, in bytes of jsonb.
pub const METADATA_SIZE_MAX: usize = 4096;
/// Longest owner reference accepted on an account, in bytes.
pub const OWNER_LENGTH_MAX: usize = 200;
/// Largest page a reading function returns at once (and the most holds one expiry call releases).
pub const PAGE_ROWS_MAX: i32 = 10_000;
/// Largest number of minor-unit decimals a currency may declare.
pub const CURRENCY_SCALE_MAX: i32 = 18;
/// Most transfers one batch may carry.
pub const BATCH_TRANSFERS_MAX: usize = 10_000;
/// Longest global transaction id or branch id, in bytes.
pub const HOLD_ID_LENGTH_MAX: usize = 128;
/// Most events one call of seal() or refresh_read_side() works through.
pub const SEAL_EVENTS_MAX: i32 = 1_000_000;
/// Longest node name, in bytes (a Postgres identifier, less the prefix of its foreign server).
pub const NODE_NAME_LENGTH_MAX: usize = 50;
/// Most legs (account movements) one global transaction may have.
pub const GLOBAL_LEGS_MAX: usize = 16;
/// Most accounts a currency's cross-node settlement may be spread over (its system account
/// included; `spread_settlement`).
pub const SETTLEMENT_ACCOUNTS_MAX: i32 = 64;
