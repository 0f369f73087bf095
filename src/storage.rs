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

const TRANSFER_RECORD_SQL: &str = include_str!("../sql/queries/transfer_record.sql");

/// The event insert of a keyed transfer, as written.
fn transfer_record_keyed_sql() -> String {
    TRANSFER_RECORD_SQL.to_string()
}

/// The same statement without the lines only a keyed transfer needs (see transfer_record.sql).
fn transfer_record_unkeyed_sql() -> String {
    TRANSFER_RECORD_SQL
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

static TRANSFER_LEG: Kept = Kept {
    slot: 0,
    sql: text!("transfer_leg.sql"),
    args: &[I8, I8, I8, TEXT],
};
static TRANSFER_RECORD_UNKEYED: Kept = Kept {
    slot: 1,
    sql: transfer_record_unkeyed_sql,
    args: &[I8, I8, I8, TEXT, I8, I8, TEXT, JSONB],
};
static TRANSFER_RECORD_KEYED: Kept = Kept {
    slot: 8,
    sql: transfer_record_keyed_sql,
    args: &[I8, I8, I8, TEXT, I8, I8, TEXT, JSONB],
};
static TRANSFER_PRIOR: Kept = Kept {
    slot: 9,
    sql: text!("transfer_prior.sql"),
    args: &[TEXT, JSONB],
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

/// Posts a transfer (or returns the first answer for a repeated idempotency key): the two legs
/// in ascending account id order, then the event. Three kept statements, the shape of a careful
/// hand-written transfer, issued without an interpreter in between.
pub fn transfer(conn: &Connection, call: &TransferCall) -> WalletResult<i64> {
    let r = &call.request;
    if let Some((key, key_datum)) = call.idempotency_key {
        lock_idempotency_key(key.as_bytes());
        let rows = conn.execute(&TRANSFER_PRIOR, &[Some(key_datum), call.metadata]);
        if !rows.is_empty() {
            let prior = PriorTransfer {
                transfer_id: rows.get(0, 1).expect("seq"),
                event_type: rows.get(0, 2).expect("event_type"),
                debit_account_id: rows.get(0, 3),
                credit_account_id: rows.get(0, 4),
                amount: rows.get(0, 5),
                metadata_matches: rows.get(0, 6).expect("same_metadata"),
            };
            return domain::replay_answer(key, r, &prior);
        }
    }
    let debit_first = r.debit_account_id < r.credit_account_id;
    let (first_id, second_id) = if debit_first {
        (r.debit_account_id, r.credit_account_id)
    } else {
        (r.credit_account_id, r.debit_account_id)
    };
    let leg = |account_id: i64, currency: Option<Datum>| {
        let rows = conn.execute(
            &TRANSFER_LEG,
            &[
                account_id.into_datum(),
                r.debit_account_id.into_datum(),
                r.amount.into_datum(),
                currency,
            ],
        );
        // The currency stays a datum (text), passed on as it came: no conversion on this path.
        (!rows.is_empty()).then(|| {
            (
                rows.get::<Datum>(0, 1).expect("currency"),
                rows.get::<i64>(0, 2).expect("balance"),
            )
        })
    };
    let Some((currency, first_balance)) = leg(first_id, None) else {
        return Err(explain_refused_transfer(conn, r, None));
    };
    let Some((_, second_balance)) = leg(second_id, Some(currency)) else {
        return Err(explain_refused_transfer(conn, r, Some(first_id)));
    };
    let (debit_balance, credit_balance) = if debit_first {
        (first_balance, second_balance)
    } else {
        (second_balance, first_balance)
    };
    let record = if call.idempotency_key.is_some() {
        &TRANSFER_RECORD_KEYED
    } else {
        &TRANSFER_RECORD_UNKEYED
    };
    let rows = conn.execute(
        record,
        &[
            r.debit_account_id.into_datum(),
            r.credit_account_id.into_datum(),
            r.amount.into_datum(),
            Some(currency),
            debit_balance.into_datum(),
            credit_balance.into_datum(),
            call.idempotency_key.map(|(_, datum)| datum),
            call.metadata,
        ],
    );
    if rows.is_empty() {
        // Only under REPEATABLE READ / SERIALIZABLE can a keyed insert meet a conflict here
        // (and Postgres itself raises 40001 first); answer the same way if it ever does.
        return Err(WalletError::ConcurrentChange {
            debit_account_id: r.debit_account_id,
            credit_account_id: r.credit_account_id,
            amount: r.amount,
        });
    }
    Ok(rows.get(0, 1).expect("seq"))
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
    fn unkeyed_record_drops_only_the_on_conflict_line() {
        let keyed = transfer_record_keyed_sql();
        let unkeyed = transfer_record_unkeyed_sql();
        assert!(keyed.contains("DO NOTHING"));
        assert!(!unkeyed.contains("DO NOTHING"));
        assert_eq!(keyed.lines().count(), unkeyed.lines().count() + 1);
    }
}
