//! Every rejection the wallet can answer with. Each variant names what was wrong (the account,
//! the amount, the key) and has a [`Reason`], whose row in the registry (`codes.rs`) gives its
//! stable SQLSTATE and name. Turning one into a Postgres ERROR is the extension's business.

use crate::codes::Reason;
use crate::limits::{CURRENCY_SCALE_MAX, IDEMPOTENCY_KEY_LENGTH_MAX};
use crate::text::Text;

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
        debit_currency: Text,
        credit_account_id: i64,
        credit_currency: Text,
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

    #[error("idempotency key \"{key}\" was already used by {} with different parameters (now: {amount} from account {debit_account_id} to account {credit_account_id})", used_by(*.transfer_id))]
    IdempotencyKeyReused {
        key: Text,
        /// The first transfer's id; None for one earlier in the same batch, not written yet.
        transfer_id: Option<i64>,
        debit_account_id: i64,
        credit_account_id: i64,
        amount: i64,
    },

    #[error(
        "idempotency key must be 1 to {} bytes, got {length}",
        IDEMPOTENCY_KEY_LENGTH_MAX
    )]
    InvalidIdempotencyKey { length: usize },

    #[error("currency {code} does not exist")]
    CurrencyNotFound { code: Text },

    #[error("currency {code} already exists")]
    CurrencyExists { code: Text },

    #[error("invalid currency \"{code}\" with scale {scale}: the code is 3 to 8 characters A-Z or 0-9 starting with a letter, the scale 0 to {}", CURRENCY_SCALE_MAX)]
    InvalidCurrency { code: Text, scale: i32 },

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
    HoldNotFound { gtid: Text, branch: Text },

    #[error(
        "hold {gtid}/{branch} was already confirmed ({amount} from account {debit_account_id})"
    )]
    HoldConfirmed {
        gtid: Text,
        branch: Text,
        debit_account_id: i64,
        amount: i64,
    },

    #[error("hold {gtid}/{branch} was already cancelled ({reserved} reserved on account {})", display_opt(.debit_account_id))]
    HoldCancelled {
        gtid: Text,
        branch: Text,
        debit_account_id: Option<i64>,
        reserved: i64,
    },

    #[error("hold {gtid}/{branch} of {reserved} on account {debit_account_id} has expired")]
    HoldExpired {
        gtid: Text,
        branch: Text,
        debit_account_id: i64,
        reserved: i64,
    },

    #[error("amount {amount} is above the {reserved} reserved by hold {gtid}/{branch} on account {debit_account_id}")]
    AmountAboveReserved {
        gtid: Text,
        branch: Text,
        debit_account_id: i64,
        amount: i64,
        reserved: i64,
    },

    #[error("try of {amount} from account {} for {gtid}/{branch} arrived after its cancel", display_opt(.debit_account_id))]
    TryAfterCancel {
        gtid: Text,
        branch: Text,
        debit_account_id: Option<i64>,
        amount: i64,
    },

    #[error("hold {gtid}/{branch} exists with different parameters ({reserved} from account {debit_account_id} to account {credit_account_id}; now: {amount} from account {} to account {})", display_opt(.new_debit_account_id), display_opt(.new_credit_account_id))]
    HoldReused {
        gtid: Text,
        branch: Text,
        debit_account_id: i64,
        credit_account_id: i64,
        reserved: i64,
        new_debit_account_id: Option<i64>,
        new_credit_account_id: Option<i64>,
        amount: i64,
    },

    #[error("unknown node {node}")]
    UnknownNode { node: Text },

    #[error("node {node} is unreachable or failed ({sqlstate}): {message}")]
    NodeUnreachable {
        node: Text,
        sqlstate: String,
        message: String,
    },

    #[error("global transaction {gtid} exists with different parameters ({existing})")]
    GtidReused { gtid: Text, existing: String },

    #[error(
        "node {node} cannot be removed: {unfinished} unfinished global transactions still need it"
    )]
    NodeInUse { node: Text, unfinished: i64 },

    #[error(
        "node {node} cannot take part in two-phase commit: its max_prepared_transactions is 0"
    )]
    PreparedTransactionsDisabled { node: Text },

    #[error("{what} refused: the wallet in this database holds its ledger (events up to seq {newest_seq})")]
    DropRefused { what: String, newest_seq: i64 },

    /// A procedure that commits was called where it cannot (inside a transaction block).
    #[error("{procedure} commits after every step: CALL it outside a transaction block (and not from a function)")]
    InvalidTransactionTermination { procedure: String },

    /// What another node answered (a participant's rejection, carried on to the caller).
    #[error("{message}")]
    Remote { sqlstate: String, message: String },

    /// A wallet table was changed by a transaction that committed after this one's snapshot, which
    /// therefore cannot see its rows as they are now (a rewritten table's rows look absent).
    #[error("wallet.{table} was altered by a transaction that committed after this transaction's snapshot was taken")]
    ConcurrentAlter { table: String },

    /// A wallet table no longer has a column, type or index the wallet reads or writes.
    #[error("{0}")]
    TableShape(String),

    /// A stored row holds a value the wallet never writes.
    #[error("{0}")]
    DataCorrupted(String),

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
    /// Why: the registry row that gives this rejection's SQLSTATE and name.
    pub fn reason(&self) -> Reason {
        use WalletError as E;
        match self {
            E::AccountNotFound { .. } => Reason::AccountNotFound,
            E::SameAccount { .. } => Reason::SameAccount,
            E::InvalidAmount { .. } => Reason::InvalidAmount,
            E::BalanceOverflow { .. } => Reason::BalanceOverflow,
            E::CurrencyMismatch { .. } => Reason::CurrencyMismatch,
            E::AccountFrozen { .. } => Reason::AccountFrozen,
            E::AccountClosed { .. } => Reason::AccountClosed,
            E::InsufficientFunds { .. } => Reason::InsufficientFunds,
            E::IdempotencyKeyReused { .. } => Reason::IdempotencyKeyReused,
            E::InvalidIdempotencyKey { .. } => Reason::InvalidIdempotencyKey,
            E::CurrencyNotFound { .. } => Reason::CurrencyNotFound,
            E::CurrencyExists { .. } => Reason::CurrencyExists,
            E::InvalidCurrency { .. } => Reason::InvalidCurrency,
            E::AccountNotEmpty { .. } => Reason::AccountNotEmpty,
            E::SystemAccount { .. } => Reason::SystemAccount,
            E::InvalidArgument { .. } => Reason::InvalidArgument,
            E::HoldNotFound { .. } => Reason::HoldNotFound,
            E::HoldConfirmed { .. } => Reason::HoldConfirmed,
            E::HoldCancelled { .. } => Reason::HoldCancelled,
            E::HoldExpired { .. } => Reason::HoldExpired,
            E::AmountAboveReserved { .. } => Reason::AmountAboveReserved,
            E::TryAfterCancel { .. } => Reason::TryAfterCancel,
            E::HoldReused { .. } => Reason::HoldReused,
            E::UnknownNode { .. } => Reason::UnknownNode,
            E::NodeUnreachable { .. } => Reason::NodeUnreachable,
            E::GtidReused { .. } => Reason::GtidReused,
            E::NodeInUse { .. } => Reason::NodeInUse,
            E::PreparedTransactionsDisabled { .. } => Reason::PreparedTransactionsDisabled,
            E::DropRefused { .. } => Reason::DropRefused,
            E::TableShape(_) => Reason::TableShape,
            E::DataCorrupted(_) => Reason::DataCorrupted,
            E::ConcurrentChange { .. } | E::ConcurrentAlter { .. } => Reason::ConcurrentChange,
            E::InvalidTransactionTermination { .. } => Reason::InvalidTransactionTermination,
            E::Remote { sqlstate, .. } => crate::codes::CODES
                .iter()
                .find(|c| c.sqlstate == sqlstate)
                .map_or(Reason::NodeUnreachable, |c| c.reason),
        }
    }

    /// The stable SQLSTATE of this rejection (README.md, "SQLSTATEs"; never renumbered); for an
    /// answer of another node, the SQLSTATE it answered with.
    pub fn sqlstate(&self) -> &str {
        match self {
            WalletError::Remote { sqlstate, .. } => sqlstate,
            _ => self.reason().sqlstate(),
        }
    }

    /// The rejection's name, as in README.md's SQLSTATE table and the batch result codes.
    pub fn name(&self) -> &'static str {
        self.reason().name()
    }

    pub fn hint(&self) -> Option<&'static str> {
        self.reason().hint()
    }

    /// An invalid argument, named, with the reason.
    pub fn invalid_argument(argument: &'static str, reason: impl Into<String>) -> WalletError {
        WalletError::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }
}

pub type WalletResult<T> = Result<T, WalletError>;

/// Who used an idempotency key first, for IdempotencyKeyReused's message.
fn used_by(transfer_id: Option<i64>) -> String {
    match transfer_id {
        Some(id) => format!("transfer {id}"),
        None => "an earlier transfer of this batch".to_string(),
    }
}
