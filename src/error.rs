//! Every rejection the wallet can answer with, its stable SQLSTATE, and the one place where a
//! rejection becomes a Postgres ERROR.
//!
//! The SQLSTATEs are in class `WA` (implementation-defined range, unused by Postgres), so a client
//! can match on them without confusing them with Postgres's own errors. pgrx can only raise the
//! SQLSTATEs Postgres defines, so [`raise`] calls `ereport` itself, from the C-ABI entry point
//! after every Rust value is dropped (see `api.rs`).

use std::ffi::{c_char, c_int, CString};

use pgrx::pg_sys;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("account {account_id} does not exist")]
    AccountNotFound { account_id: i64 },

    #[error("transfer of {amount} from account {account_id} to itself")]
    SameAccount { account_id: i64, amount: i64 },

    #[error("amount must be a positive number of minor units, got {} for account {}",
        display_opt(.amount), display_opt(.account_id))]
    InvalidAmount {
        amount: Option<i64>,
        account_id: Option<i64>,
    },

    #[error("amount {amount} would overflow the balance of account {account_id}")]
    BalanceOverflow { account_id: i64, amount: i64 },

    #[error("currency mismatch: account {debit_account_id} is {debit_currency}, account {credit_account_id} is {credit_currency} (amount {amount})")]
    CurrencyMismatch {
        debit_account_id: i64,
        debit_currency: String,
        credit_account_id: i64,
        credit_currency: String,
        amount: i64,
    },

    #[error("account {account_id} is frozen")]
    AccountFrozen { account_id: i64 },

    #[error("account {account_id} is closed")]
    AccountClosed { account_id: i64 },

    #[error("insufficient funds in account {account_id}: amount {amount}, available {available}")]
    InsufficientFunds {
        account_id: i64,
        amount: i64,
        available: i64,
    },

    #[error("idempotency key \"{key}\" was already used by transfer {transfer_id} with different parameters (now: {amount} from account {debit_account_id} to account {credit_account_id})")]
    IdempotencyKeyReused {
        key: String,
        transfer_id: i64,
        debit_account_id: i64,
        credit_account_id: i64,
        amount: i64,
    },

    #[error(
        "idempotency key must be 1 to {} bytes, got {length}",
        crate::domain::IDEMPOTENCY_KEY_LENGTH_MAX
    )]
    InvalidIdempotencyKey { length: usize },

    #[error("currency {code} does not exist")]
    CurrencyNotFound { code: String },

    #[error("currency {code} already exists")]
    CurrencyExists { code: String },

    #[error("invalid currency \"{code}\" with scale {scale}: the code is 3 to 8 characters A-Z or 0-9 starting with a letter, the scale 0 to {}", crate::domain::CURRENCY_SCALE_MAX)]
    InvalidCurrency { code: String, scale: i32 },

    #[error("account {account_id} cannot be closed: balance {balance}, pending debit {pending_debit}, pending credit {pending_credit}")]
    AccountNotEmpty {
        account_id: i64,
        balance: i64,
        pending_debit: i64,
        pending_credit: i64,
    },

    #[error("account {account_id} is a system account and cannot be frozen or closed")]
    SystemAccount { account_id: i64 },

    #[error("invalid argument {argument}: {reason}")]
    InvalidArgument {
        argument: &'static str,
        reason: String,
    },

    #[error("hold {gtid}/{branch} does not exist")]
    HoldNotFound { gtid: String, branch: String },

    #[error(
        "hold {gtid}/{branch} was already confirmed ({amount} from account {debit_account_id})"
    )]
    HoldConfirmed {
        gtid: String,
        branch: String,
        debit_account_id: i64,
        amount: i64,
    },

    #[error("hold {gtid}/{branch} was already cancelled ({reserved} reserved on account {})", display_opt(.debit_account_id))]
    HoldCancelled {
        gtid: String,
        branch: String,
        debit_account_id: Option<i64>,
        reserved: i64,
    },

    #[error("hold {gtid}/{branch} of {reserved} on account {debit_account_id} has expired")]
    HoldExpired {
        gtid: String,
        branch: String,
        debit_account_id: i64,
        reserved: i64,
    },

    #[error("amount {amount} is above the {reserved} reserved by hold {gtid}/{branch} on account {debit_account_id}")]
    AmountAboveReserved {
        gtid: String,
        branch: String,
        debit_account_id: i64,
        amount: i64,
        reserved: i64,
    },

    #[error("try of {amount} from account {} for {gtid}/{branch} arrived after its cancel", display_opt(.debit_account_id))]
    TryAfterCancel {
        gtid: String,
        branch: String,
        debit_account_id: Option<i64>,
        amount: i64,
    },

    #[error("hold {gtid}/{branch} exists with different parameters ({reserved} from account {debit_account_id} to account {credit_account_id}; now: {amount} from account {} to account {})", display_opt(.new_debit_account_id), display_opt(.new_credit_account_id))]
    HoldReused {
        gtid: String,
        branch: String,
        debit_account_id: i64,
        credit_account_id: i64,
        reserved: i64,
        new_debit_account_id: Option<i64>,
        new_credit_account_id: Option<i64>,
        amount: i64,
    },

    /// A guard refused a transfer but the accounts, read again, allow it: another session changed
    /// them in between. Retrying the transaction is the answer (standard SQLSTATE 40001).
    #[error("accounts {debit_account_id} and {credit_account_id} changed concurrently while transferring {amount}")]
    ConcurrentChange {
        debit_account_id: i64,
        credit_account_id: i64,
        amount: i64,
    },
}

fn display_opt(value: &Option<i64>) -> String {
    value.map_or_else(|| "NULL".to_string(), |v| v.to_string())
}

impl WalletError {
    /// The stable SQLSTATE of this rejection. Documented in README.md; never renumber.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            WalletError::AccountNotFound { .. } => "WA001",
            WalletError::SameAccount { .. } => "WA002",
            WalletError::InvalidAmount { .. } => "WA003",
            WalletError::BalanceOverflow { .. } => "WA004",
            WalletError::CurrencyMismatch { .. } => "WA005",
            WalletError::AccountFrozen { .. } => "WA006",
            WalletError::AccountClosed { .. } => "WA007",
            WalletError::InsufficientFunds { .. } => "WA008",
            WalletError::IdempotencyKeyReused { .. } => "WA009",
            WalletError::InvalidIdempotencyKey { .. } => "WA010",
            WalletError::CurrencyNotFound { .. } => "WA011",
            WalletError::CurrencyExists { .. } => "WA012",
            WalletError::InvalidCurrency { .. } => "WA013",
            WalletError::AccountNotEmpty { .. } => "WA014",
            WalletError::SystemAccount { .. } => "WA015",
            WalletError::InvalidArgument { .. } => "WA016",
            WalletError::HoldNotFound { .. } => "WA018",
            WalletError::HoldConfirmed { .. } => "WA019",
            WalletError::HoldCancelled { .. } => "WA020",
            WalletError::HoldExpired { .. } => "WA021",
            WalletError::AmountAboveReserved { .. } => "WA022",
            WalletError::TryAfterCancel { .. } => "WA023",
            // WA024 unknown_node, WA025 node_unreachable and WA027 gtid_reused are raised by the
            // coordinator (sql/tcc.sql); WA017 by the log's triggers (sql/schema.sql).
            WalletError::HoldReused { .. } => "WA026",
            WalletError::ConcurrentChange { .. } => "40001",
        }
    }

    /// The rejection's name, as in README.md's SQLSTATE table and the batch result codes.
    pub fn name(&self) -> &'static str {
        match self {
            WalletError::AccountNotFound { .. } => "account_not_found",
            WalletError::SameAccount { .. } => "same_account",
            WalletError::InvalidAmount { .. } => "invalid_amount",
            WalletError::BalanceOverflow { .. } => "balance_overflow",
            WalletError::CurrencyMismatch { .. } => "currency_mismatch",
            WalletError::AccountFrozen { .. } => "account_frozen",
            WalletError::AccountClosed { .. } => "account_closed",
            WalletError::InsufficientFunds { .. } => "insufficient_funds",
            WalletError::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            WalletError::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            WalletError::CurrencyNotFound { .. } => "currency_not_found",
            WalletError::CurrencyExists { .. } => "currency_exists",
            WalletError::InvalidCurrency { .. } => "invalid_currency",
            WalletError::AccountNotEmpty { .. } => "account_not_empty",
            WalletError::SystemAccount { .. } => "system_account",
            WalletError::InvalidArgument { .. } => "invalid_argument",
            WalletError::HoldNotFound { .. } => "hold_not_found",
            WalletError::HoldConfirmed { .. } => "hold_already_confirmed",
            WalletError::HoldCancelled { .. } => "hold_already_cancelled",
            WalletError::HoldExpired { .. } => "hold_expired",
            WalletError::AmountAboveReserved { .. } => "amount_above_reserved",
            WalletError::TryAfterCancel { .. } => "try_after_cancel",
            WalletError::HoldReused { .. } => "hold_reused",
            WalletError::ConcurrentChange { .. } => "serialization_failure",
        }
    }

    /// A small stable number per rejection (the digits of its WA SQLSTATE; 40001 is 40),
    /// used to carry batch results from C to SQL.
    pub fn number(&self) -> i64 {
        let code = self.sqlstate();
        if let Some(digits) = code.strip_prefix("WA") {
            digits.parse().expect("WA SQLSTATEs end in digits")
        } else {
            40
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            WalletError::ConcurrentChange { .. } => Some("Retry the transaction."),
            WalletError::IdempotencyKeyReused { .. } => {
                Some("Use a new idempotency key for a different transfer.")
            }
            WalletError::InsufficientFunds { .. } => {
                Some("Available = posted balance - pending outgoing holds.")
            }
            _ => None,
        }
    }
}

pub type WalletResult<T> = Result<T, WalletError>;

/// Postgres packs a five-character SQLSTATE into an int, six bits a character.
pub fn pack_sqlstate(code: &str) -> c_int {
    let b = code.as_bytes();
    assert_eq!(b.len(), 5, "a SQLSTATE has five characters");
    let six = |c: u8| (c.wrapping_sub(b'0') as c_int) & 0x3F;
    six(b[0]) | (six(b[1]) << 6) | (six(b[2]) << 12) | (six(b[3]) << 18) | (six(b[4]) << 24)
}

/// A rejection ready to raise: plain data with no destructor, so nothing is skipped when
/// `ereport` jumps out of the entry point's frame.
pub struct PendingError {
    sqlerrcode: c_int,
    message: *mut c_char,
    hint: *mut c_char,
}

impl From<WalletError> for PendingError {
    fn from(error: WalletError) -> Self {
        PendingError {
            sqlerrcode: pack_sqlstate(error.sqlstate()),
            message: palloc_cstring(&error.to_string()),
            hint: error.hint().map_or(std::ptr::null_mut(), palloc_cstring),
        }
    }
}

/// Copies text into the current memory context (Postgres frees it with the error).
fn palloc_cstring(text: &str) -> *mut c_char {
    let owned = CString::new(text.replace('\0', "")).expect("NUL bytes were removed");
    // SAFETY: pstrdup copies a NUL-terminated string; `owned` lives until it returns.
    unsafe { pg_sys::pstrdup(owned.as_ptr()) }
}

#[allow(improper_ctypes)]
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
}

/// Raises the rejection as a Postgres ERROR. Never returns.
///
/// # Safety
/// Call only from the outermost frame of a C-ABI function called by Postgres, with no Rust value
/// that needs dropping still alive in any frame between it and Postgres: `errfinish` longjmps.
pub unsafe fn raise(error: PendingError) -> ! {
    unsafe {
        if errstart(pgrx::PgLogLevel::ERROR as c_int, std::ptr::null()) {
            errcode(error.sqlerrcode);
            errmsg(c"%s".as_ptr(), error.message);
            if !error.hint.is_null() {
                errhint(c"%s".as_ptr(), error.hint);
            }
            errfinish(c"wallet_ext".as_ptr(), 0, std::ptr::null());
        }
    }
    unreachable!("errfinish returned from an ERROR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_pack_like_postgres() {
        // MAKE_SQLSTATE('4','0','0','0','1') = 40001 serialization_failure
        assert_eq!(
            pack_sqlstate("40001"),
            pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE as c_int
        );
        assert_eq!(
            pack_sqlstate("XX000"),
            pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR as c_int
        );
    }

    #[test]
    fn every_rejection_has_a_distinct_sqlstate_and_names_what_was_wrong() {
        let all = [
            WalletError::AccountNotFound { account_id: 7 },
            WalletError::SameAccount {
                account_id: 7,
                amount: 5,
            },
            WalletError::InvalidAmount {
                amount: Some(-5),
                account_id: Some(7),
            },
            WalletError::BalanceOverflow {
                account_id: 7,
                amount: 5,
            },
            WalletError::CurrencyMismatch {
                debit_account_id: 7,
                debit_currency: "EUR".into(),
                credit_account_id: 8,
                credit_currency: "USD".into(),
                amount: 5,
            },
            WalletError::AccountFrozen { account_id: 7 },
            WalletError::AccountClosed { account_id: 7 },
            WalletError::InsufficientFunds {
                account_id: 7,
                amount: 5,
                available: 1,
            },
            WalletError::IdempotencyKeyReused {
                key: "k".into(),
                transfer_id: 1,
                debit_account_id: 7,
                credit_account_id: 8,
                amount: 5,
            },
            WalletError::InvalidIdempotencyKey { length: 0 },
            WalletError::CurrencyNotFound { code: "XYZ".into() },
            WalletError::CurrencyExists { code: "EUR".into() },
            WalletError::InvalidCurrency {
                code: "e".into(),
                scale: 2,
            },
            WalletError::AccountNotEmpty {
                account_id: 7,
                balance: 5,
                pending_debit: 0,
                pending_credit: 0,
            },
            WalletError::SystemAccount { account_id: 7 },
            WalletError::InvalidArgument {
                argument: "x",
                reason: "y".into(),
            },
            WalletError::ConcurrentChange {
                debit_account_id: 7,
                credit_account_id: 8,
                amount: 5,
            },
            WalletError::HoldNotFound {
                gtid: "g7".into(),
                branch: "b".into(),
            },
            WalletError::HoldConfirmed {
                gtid: "g".into(),
                branch: "b".into(),
                debit_account_id: 7,
                amount: 5,
            },
            WalletError::HoldCancelled {
                gtid: "g".into(),
                branch: "b".into(),
                debit_account_id: Some(7),
                reserved: 5,
            },
            WalletError::HoldExpired {
                gtid: "g".into(),
                branch: "b".into(),
                debit_account_id: 7,
                reserved: 5,
            },
            WalletError::AmountAboveReserved {
                gtid: "g".into(),
                branch: "b".into(),
                debit_account_id: 7,
                amount: 6,
                reserved: 5,
            },
            WalletError::TryAfterCancel {
                gtid: "g".into(),
                branch: "b".into(),
                debit_account_id: Some(7),
                amount: 5,
            },
            WalletError::HoldReused {
                gtid: "g".into(),
                branch: "b".into(),
                debit_account_id: 7,
                credit_account_id: 8,
                reserved: 5,
                new_debit_account_id: Some(7),
                new_credit_account_id: Some(8),
                amount: 6,
            },
        ];
        let mut codes: Vec<_> = all.iter().map(|e| e.sqlstate()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "SQLSTATEs must be distinct");
        for e in &all {
            let text = e.to_string();
            let names_subject = text.contains('7')
                || matches!(e, WalletError::InvalidIdempotencyKey { .. })
                || matches!(
                    e,
                    WalletError::CurrencyNotFound { .. } | WalletError::CurrencyExists { .. }
                )
                || matches!(
                    e,
                    WalletError::InvalidCurrency { .. } | WalletError::InvalidArgument { .. }
                );
            assert!(names_subject, "{text}");
        }
        assert_eq!(
            WalletError::InvalidAmount {
                amount: None,
                account_id: Some(3)
            }
            .to_string(),
            "amount must be a positive number of minor units, got NULL for account 3"
        );
    }
}
