//! The registry of every SQLSTATE the wallet raises itself: its code, its name (also the batch
//! result name) and what it means. README.md's SQLSTATE table repeats these rows and the SQL files
//! raise some of them by literal; `tests::readme_and_sql_repeat_the_registry` fails when either
//! drifts from this file. Codes are stable: never renumber one, never reuse a retired one.

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    AccountNotFound,
    SameAccount,
    InvalidAmount,
    BalanceOverflow,
    CurrencyMismatch,
    AccountFrozen,
    AccountClosed,
    InsufficientFunds,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    CurrencyNotFound,
    CurrencyExists,
    InvalidCurrency,
    AccountNotEmpty,
    SystemAccount,
    InvalidArgument,
    EventLogAppendOnly,
    HoldNotFound,
    HoldConfirmed,
    HoldCancelled,
    HoldExpired,
    AmountAboveReserved,
    TryAfterCancel,
    UnknownNode,
    NodeUnreachable,
    HoldReused,
    GtidReused,
    NodeInUse,
    DropRefused,
    PreparedTransactionsDisabled,
    ConcurrentChange,
    InvalidTransactionTermination,
    TableShape,
    DataCorrupted,
}

/// One row of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub reason: Reason,
    pub sqlstate: &'static str,
    pub name: &'static str,
    /// When it is raised, as README.md's SQLSTATE table says it.
    pub raised_when: &'static str,
}

const fn code(
    reason: Reason,
    sqlstate: &'static str,
    name: &'static str,
    raised_when: &'static str,
) -> Code {
    Code {
        reason,
        sqlstate,
        name,
        raised_when,
    }
}

/// Every code, in README order.
pub const CODES: &[Code] = &[
    code(Reason::AccountNotFound, "WA001", "account_not_found", "an account id does not exist"),
    code(Reason::SameAccount, "WA002", "same_account", "debit and credit account are the same"),
    code(Reason::InvalidAmount, "WA003", "invalid_amount", "amount is NULL, 0 or negative"),
    code(Reason::BalanceOverflow, "WA004", "balance_overflow", "a transfer, or a hold's try or confirm, would take a balance or pending amount past the bigint range"),
    code(Reason::CurrencyMismatch, "WA005", "currency_mismatch", "the accounts are in different currencies"),
    code(Reason::AccountFrozen, "WA006", "account_frozen", "an account of the transfer is frozen"),
    code(Reason::AccountClosed, "WA007", "account_closed", "an account of the transfer (or the status command) is closed"),
    code(Reason::InsufficientFunds, "WA008", "insufficient_funds", "available (posted - pending debit) is below the amount, without overdraft permission"),
    code(Reason::IdempotencyKeyReused, "WA009", "idempotency_key_reused", "the key was used by a transfer with different parameters"),
    code(Reason::InvalidIdempotencyKey, "WA010", "invalid_idempotency_key", "the key is empty or longer than 128 bytes"),
    code(Reason::CurrencyNotFound, "WA011", "currency_not_found", "opening an account in an unknown currency"),
    code(Reason::CurrencyExists, "WA012", "currency_exists", "creating a currency twice"),
    code(Reason::InvalidCurrency, "WA013", "invalid_currency", "bad currency code or scale"),
    code(Reason::AccountNotEmpty, "WA014", "account_not_empty", "closing an account with a balance or pending amounts"),
    code(Reason::SystemAccount, "WA015", "system_account", "freezing or closing a system account"),
    code(Reason::InvalidArgument, "WA016", "invalid_argument", "a required argument is NULL or out of its range, text is not valid UTF-8 where the wallet needs it, metadata is not a jsonb object or too large, owner too long, max_rows out of 1-10000, an array has more than one dimension"),
    code(Reason::EventLogAppendOnly, "WA017", "event_log_append_only", "UPDATE, DELETE or TRUNCATE on `wallet.events` or `wallet.chain`"),
    code(Reason::HoldNotFound, "WA018", "hold_not_found", "confirming (or reading) a hold that does not exist"),
    code(Reason::HoldConfirmed, "WA019", "hold_already_confirmed", "cancelling a confirmed hold, or confirming it again with another amount"),
    code(Reason::HoldCancelled, "WA020", "hold_already_cancelled", "confirming a cancelled hold (a cancel that came before its try included)"),
    code(Reason::HoldExpired, "WA021", "hold_expired", "confirming a hold past its timeout, or trying again an expired one; a global transaction cancelled at its deadline or by recovery"),
    code(Reason::AmountAboveReserved, "WA022", "amount_above_reserved", "confirming more than the hold reserved"),
    code(Reason::TryAfterCancel, "WA023", "try_after_cancel", "a try arriving after the cancel of its (gtid, branch): no hanging reservation"),
    code(Reason::UnknownNode, "WA024", "unknown_node", "a global transaction names a node that is not registered"),
    code(Reason::NodeUnreachable, "WA025", "node_unreachable", "a node could not be reached for its try, or failed with an error that is not a wallet rejection (the transfer is cancelled; the message carries the node's SQLSTATE and message)"),
    code(Reason::HoldReused, "WA026", "hold_reused", "a try for an existing (gtid, branch) with other accounts or amount"),
    code(Reason::GtidReused, "WA027", "gtid_reused", "a global transaction with an existing gtid and other parameters"),
    code(Reason::NodeInUse, "WA028", "node_in_use", "removing a node that an unfinished global transaction still needs"),
    code(Reason::DropRefused, "WA029", "drop_refused", "`DROP EXTENSION wallet_ext` (or `DROP SCHEMA wallet`) while the wallet holds events, without `wallet.allow_drop`"),
    code(Reason::PreparedTransactionsDisabled, "WA030", "prepared_transactions_disabled", "a 2PC global transaction names a node whose `max_prepared_transactions` is 0 (refused before anything is recorded)"),
    code(Reason::ConcurrentChange, "40001", "serialization_failure", "(standard) a concurrent change, or a concurrent ALTER of a wallet table at REPEATABLE READ or SERIALIZABLE; retry the transaction"),
    code(Reason::InvalidTransactionTermination, "2D000", "invalid_transaction_termination", "(standard) `CALL transfer_across`, `transfer_global`, `transfer_across_batch` or `recover` inside a transaction block"),
    code(Reason::TableShape, "55000", "object_not_in_prerequisite_state", "(standard) a column the wallet reads or writes was dropped, renamed or given another type, or an index it relies on is missing; or the database's wallet schema is older than the installed library (run `ALTER EXTENSION wallet_ext UPDATE`). Nothing is written"),
    code(Reason::DataCorrupted, "XX001", "data_corrupted", "(standard) a stored row holds a value the wallet never writes (an account status, say): someone changed the table by hand"),
];

impl Reason {
    /// This reason's row of the registry.
    pub fn code(self) -> &'static Code {
        CODES
            .iter()
            .find(|c| c.reason == self)
            .expect("every reason has a row in CODES")
    }

    pub fn sqlstate(self) -> &'static str {
        self.code().sqlstate
    }

    pub fn name(self) -> &'static str {
        self.code().name
    }

    /// A hint for the client, where one helps.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Reason::ConcurrentChange => Some("Retry the transaction."),
            Reason::IdempotencyKeyReused => {
                Some("Use a new idempotency key for a different transfer.")
            }
            Reason::InsufficientFunds => {
                Some("Available = posted balance - pending outgoing holds.")
            }
            Reason::GtidReused => {
                Some("Use a new global transaction id for a different transfer.")
            }
            Reason::UnknownNode => Some("Register it with wallet.register_node(name, conninfo)."),
            Reason::PreparedTransactionsDisabled => Some(
                "Set max_prepared_transactions on that node (a restart), or use protocol tcc or saga.",
            ),
            Reason::DropRefused => Some(
                "Dump the database first; then a superuser may SET wallet.allow_drop = on for the drop.",
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_distinct_and_well_formed() {
        let sqlstates: HashSet<_> = CODES.iter().map(|c| c.sqlstate).collect();
        let names: HashSet<_> = CODES.iter().map(|c| c.name).collect();
        let reasons: HashSet<_> = CODES.iter().map(|c| c.reason).collect();
        assert_eq!(sqlstates.len(), CODES.len());
        assert_eq!(names.len(), CODES.len());
        assert_eq!(reasons.len(), CODES.len());
        for c in CODES {
            assert_eq!(c.sqlstate.len(), 5, "{}", c.sqlstate);
            assert!(c
                .sqlstate
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            assert!(!c.sqlstate.starts_with("XX000"), "never an internal error");
        }
    }
}
