//! Storage: every statement Rust runs, and the commands built from them. The SQL text lives in
//! `sql/queries/*.sql`; this module binds arguments, reads results and asks `domain` to judge.

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::IntoDatum;

use crate::domain::{self, AccountState, AccountStatus, StatusChange, StatusCommand};
use crate::domain::{PriorTransfer, TransferRequest};
use crate::error::{WalletError, WalletResult};
use crate::spi::{Connection, Kept};

const I8: Oid = pg_sys::INT8OID;
const I4: Oid = pg_sys::INT4OID;
const TEXT: Oid = pg_sys::TEXTOID;
const JSONB: Oid = pg_sys::JSONBOID;
const BOOL: Oid = pg_sys::BOOLOID;

const TRANSFER_SQL: &str = include_str!("../sql/queries/transfer.sql");

/// The keyed transfer statement as written.
fn transfer_keyed_sql() -> String {
    TRANSFER_SQL.to_string()
}

/// The same statement without the lines only a keyed transfer needs (see transfer.sql).
fn transfer_unkeyed_sql() -> String {
    TRANSFER_SQL
        .lines()
        .filter(|line| !line.trim_end().ends_with("-- keyed only"))
        .collect::<Vec<_>>()
        .join("\n")
}

macro_rules! text {
    ($file:literal) => {{
        fn sql() -> String {
            include_str!(concat!("../sql/queries/", $file)).to_string()
        }
        sql
    }};
}

static TRANSFER_UNKEYED: Kept = Kept {
    slot: 0,
    sql: transfer_unkeyed_sql,
    args: &[I8, I8, I8, TEXT, JSONB],
};
static TRANSFER_KEYED: Kept = Kept {
    slot: 1,
    sql: transfer_keyed_sql,
    args: &[I8, I8, I8, TEXT, JSONB],
};
static ACCOUNT_STATE: Kept = Kept {
    slot: 2,
    sql: text!("account_state.sql"),
    args: &[I8],
};
static ACCOUNT_STATE_FOR_UPDATE: Kept = Kept {
    slot: 3,
    sql: text!("account_state_for_update.sql"),
    args: &[I8],
};
static SET_STATUS: Kept = Kept {
    slot: 4,
    sql: text!("set_status.sql"),
    args: &[I8, TEXT, TEXT],
};
static OPEN_ACCOUNT: Kept = Kept {
    slot: 5,
    sql: text!("open_account.sql"),
    args: &[TEXT, TEXT, JSONB, BOOL],
};
static CREATE_CURRENCY: Kept = Kept {
    slot: 6,
    sql: text!("create_currency.sql"),
    args: &[TEXT, I4],
};
static SYSTEM_ACCOUNT_OF: Kept = Kept {
    slot: 7,
    sql: text!("system_account_of.sql"),
    args: &[I8],
};

/// Namespace of the wallet's advisory locks (first key of the two-int4 form): "WALT".
const ADVISORY_LOCK_NAMESPACE: i32 = 0x5741_4C54;

/// An argument value that is already a datum (text or jsonb passed through from the caller).
pub type RawArg = Option<Datum>;

fn read_account(conn: &Connection, kept: &Kept, account_id: i64) -> Option<AccountState> {
    let rows = conn.execute(kept, &[account_id.into_datum()]);
    if rows.is_empty() {
        return None;
    }
    let status: String = rows.get(0, 3).expect("status is NOT NULL");
    Some(AccountState {
        id: rows.get(0, 1).expect("id"),
        currency: rows.get(0, 2).expect("currency"),
        status: AccountStatus::parse(&status).expect("status CHECK constraint"),
        allow_overdraft: rows.get(0, 4).expect("allow_overdraft"),
        is_system: rows.get(0, 5).expect("is_system"),
        balance: rows.get(0, 6).expect("balance"),
        pending_debit: rows.get(0, 7).expect("pending_debit"),
        pending_credit: rows.get(0, 8).expect("pending_credit"),
    })
}

/// Takes a transaction-level advisory lock on the key's hash, so two sessions presenting the
/// same key run one after the other (see transfer.sql).
fn lock_idempotency_key(key: &[u8]) {
    let hash = domain::key_hash(key);
    let folded = ((hash >> 32) ^ hash) as u32 as i32;
    // SAFETY: pg_advisory_xact_lock_int4 takes two int4 arguments and returns void.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::pg_advisory_xact_lock_int4,
            &[ADVISORY_LOCK_NAMESPACE.into_datum(), folded.into_datum()],
        );
    }
}

/// A transfer after its arguments passed `domain::check_transfer_arguments`.
pub struct TransferCall<'a> {
    pub request: TransferRequest,
    /// The key's text and its datum, when a key was given.
    pub idempotency_key: Option<(&'a str, Datum)>,
    pub metadata: RawArg,
}

/// Posts a transfer (or returns the first answer for a repeated idempotency key).
pub fn transfer(conn: &Connection, call: &TransferCall) -> WalletResult<i64> {
    let r = &call.request;
    if let Some((key, _)) = call.idempotency_key {
        lock_idempotency_key(key.as_bytes());
    }
    let kept = if call.idempotency_key.is_some() {
        &TRANSFER_KEYED
    } else {
        &TRANSFER_UNKEYED
    };
    let rows = conn.execute(
        kept,
        &[
            r.debit_account_id.into_datum(),
            r.credit_account_id.into_datum(),
            r.amount.into_datum(),
            call.idempotency_key.map(|(_, datum)| datum),
            call.metadata,
        ],
    );
    if let Some(transfer_id) = rows.get::<i64>(0, 1) {
        return Ok(transfer_id);
    }
    if let (Some((key, _)), Some(prior_id)) = (call.idempotency_key, rows.get::<i64>(0, 3)) {
        let prior = PriorTransfer {
            transfer_id: prior_id,
            event_type: rows.get(0, 4).expect("event_type"),
            debit_account_id: rows.get(0, 5),
            credit_account_id: rows.get(0, 6),
            amount: rows.get(0, 7),
            metadata_matches: rows.get(0, 8).unwrap_or(false),
        };
        return domain::replay_answer(key, r, &prior);
    }
    let first_leg_id: Option<i64> = rows.get(0, 2);
    Err(explain_refused_transfer(conn, r, first_leg_id))
}

/// A guard refused the transfer: read both accounts and let the domain name the broken rule.
/// If the first leg was applied already, its effect is taken back out of the state read here
/// (the ERROR that follows rolls it back for real).
fn explain_refused_transfer(
    conn: &Connection,
    r: &TransferRequest,
    first_leg_id: Option<i64>,
) -> WalletError {
    let mut debit = read_account(conn, &ACCOUNT_STATE, r.debit_account_id);
    let mut credit = read_account(conn, &ACCOUNT_STATE, r.credit_account_id);
    match first_leg_id {
        Some(id) if id == r.debit_account_id => {
            if let Some(a) = debit.as_mut() {
                a.balance += r.amount;
            }
        }
        Some(_) => {
            if let Some(a) = credit.as_mut() {
                a.balance -= r.amount;
            }
        }
        None => {}
    }
    match domain::check_transfer_against(r, debit.as_ref(), credit.as_ref()) {
        Err(rejection) => rejection,
        Ok(()) => WalletError::ConcurrentChange {
            debit_account_id: r.debit_account_id,
            credit_account_id: r.credit_account_id,
            amount: r.amount,
        },
    }
}

/// The system account that deposits and withdrawals of this account settle against.
pub fn system_account_of(conn: &Connection, account_id: i64) -> WalletResult<i64> {
    let rows = conn.execute(&SYSTEM_ACCOUNT_OF, &[account_id.into_datum()]);
    if rows.is_empty() {
        return Err(WalletError::AccountNotFound { account_id });
    }
    Ok(rows.get(0, 1).expect("system_account_id is NOT NULL"))
}

/// The account's state, or AccountNotFound.
pub fn account(conn: &Connection, account_id: i64) -> WalletResult<AccountState> {
    read_account(conn, &ACCOUNT_STATE, account_id)
        .ok_or(WalletError::AccountNotFound { account_id })
}

/// Applies a status command; returns whether the account changed (and an event was recorded).
pub fn change_status(
    conn: &Connection,
    account_id: i64,
    command: StatusCommand,
) -> WalletResult<bool> {
    let state = read_account(conn, &ACCOUNT_STATE_FOR_UPDATE, account_id)
        .ok_or(WalletError::AccountNotFound { account_id })?;
    match domain::apply_status_command(&state, command)? {
        StatusChange::Unchanged => Ok(false),
        StatusChange::Changed(target) => {
            let rows = conn.execute(
                &SET_STATUS,
                &[
                    account_id.into_datum(),
                    target.as_str().into_datum(),
                    command.event_type().into_datum(),
                ],
            );
            assert_eq!(rows.len(), 1, "the locked account row was updated");
            Ok(true)
        }
    }
}

/// Opens an account; returns its id.
pub fn open_account(
    conn: &Connection,
    currency: &str,
    owner: RawArg,
    metadata: Datum,
    allow_overdraft: bool,
) -> WalletResult<i64> {
    let rows = conn.execute(
        &OPEN_ACCOUNT,
        &[
            currency.into_datum(),
            owner,
            Some(metadata),
            allow_overdraft.into_datum(),
        ],
    );
    if rows.is_empty() {
        return Err(WalletError::CurrencyNotFound {
            code: currency.to_string(),
        });
    }
    Ok(rows.get(0, 1).expect("id"))
}

/// Creates a currency; returns its system account id.
pub fn create_currency(conn: &Connection, code: &str, scale: i32) -> WalletResult<i64> {
    let rows = conn.execute(&CREATE_CURRENCY, &[code.into_datum(), scale.into_datum()]);
    if rows.is_empty() {
        return Err(WalletError::CurrencyExists {
            code: code.to_string(),
        });
    }
    Ok(rows.get(0, 1).expect("system_account_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unkeyed_transfer_drops_only_the_on_conflict_line() {
        let keyed = transfer_keyed_sql();
        let unkeyed = transfer_unkeyed_sql();
        assert!(keyed.contains("DO NOTHING"));
        assert!(!unkeyed.contains("DO NOTHING"));
        assert_eq!(keyed.lines().count(), unkeyed.lines().count() + 1);
    }
}
