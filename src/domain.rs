//! Domain rules of the wallet, free of Postgres: amounts, identifiers, the account state machine
//! and the order in which a transfer's rejections are reported.
//!
//! The storage layer enforces the same rules inside its SQL guards (so the hot path needs one
//! statement); when a guard refuses, the storage layer reads both accounts and asks this module
//! *which* rule was broken, so the answer always follows the precedence written down here.

use crate::error::WalletError;

/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 128;
/// Largest metadata document accepted on an account or a transfer, in bytes of jsonb.
pub const METADATA_SIZE_MAX: usize = 4096;
/// Longest owner reference accepted on an account, in bytes.
pub const OWNER_LENGTH_MAX: usize = 200;
/// Largest page a reading function returns at once.
pub const PAGE_ROWS_MAX: i32 = 10_000;
/// Largest number of minor-unit decimals a currency may declare.
pub const CURRENCY_SCALE_MAX: i32 = 18;

/// Lifecycle state of an account. Stored as text in `wallet.accounts.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Frozen,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        match text {
            "active" => Some(AccountStatus::Active),
            "frozen" => Some(AccountStatus::Frozen),
            "closed" => Some(AccountStatus::Closed),
            _ => None,
        }
    }
}

/// A change of account status that an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCommand {
    Freeze,
    Unfreeze,
    Close,
}

impl StatusCommand {
    /// The event type recorded when the command changes the account.
    pub fn event_type(self) -> &'static str {
        match self {
            StatusCommand::Freeze => "account_frozen",
            StatusCommand::Unfreeze => "account_unfrozen",
            StatusCommand::Close => "account_closed",
        }
    }

    pub fn target(self) -> AccountStatus {
        match self {
            StatusCommand::Freeze => AccountStatus::Frozen,
            StatusCommand::Unfreeze => AccountStatus::Active,
            StatusCommand::Close => AccountStatus::Closed,
        }
    }
}

/// What the storage layer knows about an account when a rule has to be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub id: i64,
    pub currency: String,
    pub status: AccountStatus,
    pub allow_overdraft: bool,
    pub is_system: bool,
    /// Posted balance, minor units.
    pub balance: i64,
    /// Reserved for outgoing holds; counts against what is available.
    pub pending_debit: i64,
    /// Reserved incoming amounts of holds not yet posted.
    pub pending_credit: i64,
}

impl AccountState {
    /// An active EUR account without overdraft, for the unit tests of this crate.
    #[cfg(test)]
    pub fn for_tests(id: i64, balance: i64) -> AccountState {
        AccountState {
            id,
            currency: "EUR".into(),
            status: AccountStatus::Active,
            allow_overdraft: false,
            is_system: false,
            balance,
            pending_debit: 0,
            pending_credit: 0,
        }
    }

    /// What the account may still spend: posted balance less outgoing reservations.
    /// `None` when the subtraction itself overflows (only possible for overdraft accounts).
    pub fn available(&self) -> Option<i64> {
        self.balance.checked_sub(self.pending_debit)
    }
}

/// Outcome of a status command that is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// The account moves to the target status; an event is recorded.
    Changed(AccountStatus),
    /// The account is already in the target status; nothing is written.
    Unchanged,
}

/// The account state machine: active <-> frozen, active | frozen -> closed (empty accounts only).
/// System accounts are never frozen or closed: money must always be able to enter and leave.
pub fn apply_status_command(
    account: &AccountState,
    command: StatusCommand,
) -> Result<StatusChange, WalletError> {
    if account.is_system {
        return Err(WalletError::SystemAccount {
            account_id: account.id,
        });
    }
    let target = command.target();
    if account.status == target {
        return Ok(StatusChange::Unchanged);
    }
    if account.status == AccountStatus::Closed {
        return Err(WalletError::AccountClosed {
            account_id: account.id,
        });
    }
    if command == StatusCommand::Close
        && (account.balance != 0 || account.pending_debit != 0 || account.pending_credit != 0)
    {
        return Err(WalletError::AccountNotEmpty {
            account_id: account.id,
            balance: account.balance,
            pending_debit: account.pending_debit,
            pending_credit: account.pending_credit,
        });
    }
    Ok(StatusChange::Changed(target))
}

/// An amount must be present and strictly positive; money is bigint minor units.
pub fn check_amount(amount: Option<i64>, account_id: Option<i64>) -> Result<i64, WalletError> {
    match amount {
        Some(value) if value > 0 => Ok(value),
        _ => Err(WalletError::InvalidAmount { amount, account_id }),
    }
}

/// An idempotency key, when given, is 1 to [`IDEMPOTENCY_KEY_LENGTH_MAX`] bytes.
pub fn check_idempotency_key(key: Option<&str>) -> Result<(), WalletError> {
    match key {
        Some(k) if k.is_empty() || k.len() > IDEMPOTENCY_KEY_LENGTH_MAX => {
            Err(WalletError::InvalidIdempotencyKey { length: k.len() })
        }
        _ => Ok(()),
    }
}

/// A currency code is 3 to 8 characters of A-Z and 0-9 starting with a letter (ISO 4217 codes and
/// the usual token symbols fit); the scale is the number of minor-unit decimals, 0 to 18.
pub fn check_currency(code: &str, scale: i32) -> Result<(), WalletError> {
    let bytes = code.as_bytes();
    let shape_ok = (3..=8).contains(&bytes.len())
        && bytes[0].is_ascii_uppercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !shape_ok || !(0..=CURRENCY_SCALE_MAX).contains(&scale) {
        return Err(WalletError::InvalidCurrency {
            code: code.to_string(),
            scale,
        });
    }
    Ok(())
}

/// Page size of a reading function: 1 to [`PAGE_ROWS_MAX`].
pub fn check_page_rows(rows: i32) -> Result<(), WalletError> {
    if (1..=PAGE_ROWS_MAX).contains(&rows) {
        Ok(())
    } else {
        Err(WalletError::InvalidArgument {
            argument: "max_rows",
            reason: format!("must be between 1 and {PAGE_ROWS_MAX}, got {rows}"),
        })
    }
}

/// A transfer as asked for by the caller, after its arguments were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub debit_account_id: i64,
    pub credit_account_id: i64,
    pub amount: i64,
}

impl TransferRequest {
    /// The retryable answer (40001) when a concurrent change keeps this transfer from being
    /// judged or recorded.
    pub fn concurrent_change(&self) -> WalletError {
        WalletError::ConcurrentChange {
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount,
        }
    }
}

/// Checks of a transfer that need no stored state, in precedence order:
/// missing account ids, amount, idempotency key, same account.
pub fn check_transfer_arguments(
    debit_account_id: Option<i64>,
    credit_account_id: Option<i64>,
    amount: Option<i64>,
    idempotency_key: Option<&str>,
) -> Result<TransferRequest, WalletError> {
    let debit_account_id = debit_account_id.ok_or(WalletError::InvalidArgument {
        argument: "debit_account_id",
        reason: "must not be NULL".into(),
    })?;
    let credit_account_id = credit_account_id.ok_or(WalletError::InvalidArgument {
        argument: "credit_account_id",
        reason: "must not be NULL".into(),
    })?;
    let amount = check_amount(amount, Some(debit_account_id))?;
    check_idempotency_key(idempotency_key)?;
    if debit_account_id == credit_account_id {
        return Err(WalletError::SameAccount {
            account_id: debit_account_id,
            amount,
        });
    }
    Ok(TransferRequest {
        debit_account_id,
        credit_account_id,
        amount,
    })
}

/// Checks of a transfer against the two accounts, in the documented precedence:
/// existence (debit, then credit), currency, closed (debit, credit), frozen (debit, credit),
/// overflow (credit's balance, then an overdraft debit's balance), available funds.
///
/// `Ok(())` means the transfer may be posted against these states.
pub fn check_transfer_against(
    request: &TransferRequest,
    debit: Option<&AccountState>,
    credit: Option<&AccountState>,
) -> Result<(), WalletError> {
    let amount = request.amount;
    let debit = debit.ok_or(WalletError::AccountNotFound {
        account_id: request.debit_account_id,
    })?;
    let credit = credit.ok_or(WalletError::AccountNotFound {
        account_id: request.credit_account_id,
    })?;
    if debit.currency != credit.currency {
        return Err(WalletError::CurrencyMismatch {
            debit_account_id: debit.id,
            debit_currency: debit.currency.clone(),
            credit_account_id: credit.id,
            credit_currency: credit.currency.clone(),
            amount,
        });
    }
    for account in [debit, credit] {
        if account.status == AccountStatus::Closed {
            return Err(WalletError::AccountClosed {
                account_id: account.id,
            });
        }
    }
    for account in [debit, credit] {
        if account.status == AccountStatus::Frozen {
            return Err(WalletError::AccountFrozen {
                account_id: account.id,
            });
        }
    }
    check_posting_bounds(debit, credit, amount)?;
    if !debit.allow_overdraft {
        // Both terms are >= 0 for an account without overdraft, so this cannot overflow.
        let available = debit.available().unwrap_or(i64::MIN);
        if available < amount {
            return Err(WalletError::InsufficientFunds {
                account_id: debit.id,
                amount,
                available,
            });
        }
    }
    Ok(())
}

/// Posting `amount` keeps both balances within bigint: the credit side first, then the debit side
/// (only an overdraft account can get near the lower bound). Part of `check_transfer_against`,
/// and all that a hold's confirm re-checks (its funds were reserved at try).
pub fn check_posting_bounds(
    debit: &AccountState,
    credit: &AccountState,
    amount: i64,
) -> Result<(), WalletError> {
    if credit.balance.checked_add(amount).is_none() {
        return Err(WalletError::BalanceOverflow {
            account_id: credit.id,
            amount,
        });
    }
    if debit.balance.checked_sub(amount).is_none() {
        return Err(WalletError::BalanceOverflow {
            account_id: debit.id,
            amount,
        });
    }
    Ok(())
}

/// The posted balances of the debit and credit accounts after posting `amount`, for a transfer
/// that `check_transfer_against` (or a confirm that `check_posting_bounds`) accepted: both
/// results are then within bigint, which this checks again rather than trust.
pub fn balances_after(debit: &AccountState, credit: &AccountState, amount: i64) -> (i64, i64) {
    (
        debit
            .balance
            .checked_sub(amount)
            .expect("posting bounds were checked"),
        credit
            .balance
            .checked_add(amount)
            .expect("posting bounds were checked"),
    )
}

/// Reserving `amount` keeps the debit account's pending_debit and the credit account's
/// pending_credit within bigint (debit side first).
pub fn check_reservation_bounds(
    debit: &AccountState,
    credit: &AccountState,
    amount: i64,
) -> Result<(), WalletError> {
    for (account, pending) in [
        (debit, debit.pending_debit),
        (credit, credit.pending_credit),
    ] {
        if pending.checked_add(amount).is_none() {
            return Err(WalletError::BalanceOverflow {
                account_id: account.id,
                amount,
            });
        }
    }
    Ok(())
}

/// What a stored event with the same idempotency key recorded, for comparison with a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorTransfer {
    pub transfer_id: i64,
    pub event_type: String,
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: Option<i64>,
    /// Whether the stored metadata equals the retry's (compared as jsonb by the statement).
    pub metadata_matches: bool,
}

/// Same key and same parameters: the first answer. Same key and anything else different: refused.
pub fn replay_answer(
    key: &str,
    request: &TransferRequest,
    prior: &PriorTransfer,
) -> Result<i64, WalletError> {
    let same = prior.event_type == "transfer"
        && prior.debit_account_id == Some(request.debit_account_id)
        && prior.credit_account_id == Some(request.credit_account_id)
        && prior.amount == Some(request.amount)
        && prior.metadata_matches;
    if same {
        Ok(prior.transfer_id)
    } else {
        Err(WalletError::IdempotencyKeyReused {
            key: key.to_string(),
            transfer_id: prior.transfer_id,
            debit_account_id: request.debit_account_id,
            credit_account_id: request.credit_account_id,
            amount: request.amount,
        })
    }
}

/// FNV-1a, 64 bits: a hash of the idempotency key that every backend computes alike, forever,
/// used to serialise two sessions that present the same key at once.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: i64) -> AccountState {
        AccountState::for_tests(id, 100)
    }

    fn request(amount: i64) -> TransferRequest {
        TransferRequest {
            debit_account_id: 1,
            credit_account_id: 2,
            amount,
        }
    }

    #[test]
    fn balances_after_move_the_amount_from_debit_to_credit() {
        let mut overdraft = AccountState::for_tests(1, -5);
        overdraft.allow_overdraft = true;
        assert_eq!(balances_after(&account(1), &account(2), 30), (70, 130));
        assert_eq!(balances_after(&overdraft, &account(2), 10), (-15, 110));
        // At the very edge that check_posting_bounds still accepts.
        let full = AccountState::for_tests(2, i64::MAX - 7);
        let mut low = AccountState::for_tests(1, i64::MIN + 7);
        low.allow_overdraft = true;
        assert!(check_posting_bounds(&low, &full, 7).is_ok());
        assert_eq!(balances_after(&low, &full, 7), (i64::MIN, i64::MAX));
        assert!(check_posting_bounds(&low, &full, 8).is_err());
    }

    #[test]
    fn amounts_must_be_positive() {
        assert_eq!(check_amount(Some(1), None), Ok(1));
        assert_eq!(check_amount(Some(i64::MAX), None), Ok(i64::MAX));
        for bad in [None, Some(0), Some(-1), Some(i64::MIN)] {
            assert!(matches!(
                check_amount(bad, Some(7)),
                Err(WalletError::InvalidAmount { .. })
            ));
        }
    }

    #[test]
    fn argument_checks_follow_precedence() {
        // NULL account beats a bad amount; a bad amount beats a bad key; a bad key beats same-account.
        assert!(matches!(
            check_transfer_arguments(None, Some(1), Some(-1), Some("")),
            Err(WalletError::InvalidArgument {
                argument: "debit_account_id",
                ..
            })
        ));
        assert!(matches!(
            check_transfer_arguments(Some(1), None, Some(-1), Some("")),
            Err(WalletError::InvalidArgument {
                argument: "credit_account_id",
                ..
            })
        ));
        assert!(matches!(
            check_transfer_arguments(Some(1), Some(1), Some(0), Some("")),
            Err(WalletError::InvalidAmount { .. })
        ));
        assert!(matches!(
            check_transfer_arguments(Some(1), Some(1), Some(5), Some("")),
            Err(WalletError::InvalidIdempotencyKey { length: 0 })
        ));
        let long = "k".repeat(IDEMPOTENCY_KEY_LENGTH_MAX + 1);
        assert!(matches!(
            check_transfer_arguments(Some(1), Some(2), Some(5), Some(&long)),
            Err(WalletError::InvalidIdempotencyKey { .. })
        ));
        assert_eq!(
            check_transfer_arguments(Some(1), Some(1), Some(5), None),
            Err(WalletError::SameAccount {
                account_id: 1,
                amount: 5
            })
        );
        assert_eq!(
            check_transfer_arguments(Some(1), Some(2), Some(5), Some("k")),
            Ok(request(5))
        );
    }

    #[test]
    fn transfer_state_checks_follow_precedence() {
        let (d, c) = (account(1), account(2));
        assert_eq!(
            check_transfer_against(&request(100), Some(&d), Some(&c)),
            Ok(())
        );
        assert_eq!(
            check_transfer_against(&request(5), None, None),
            Err(WalletError::AccountNotFound { account_id: 1 })
        );
        assert_eq!(
            check_transfer_against(&request(5), Some(&d), None),
            Err(WalletError::AccountNotFound { account_id: 2 })
        );

        let mut usd = account(2);
        usd.currency = "USD".into();
        usd.status = AccountStatus::Closed;
        assert!(matches!(
            check_transfer_against(&request(5), Some(&d), Some(&usd)),
            Err(WalletError::CurrencyMismatch { .. })
        ));

        // closed beats frozen, whichever side each is on; debit is reported before credit
        let mut frozen = account(1);
        frozen.status = AccountStatus::Frozen;
        let mut closed = account(2);
        closed.status = AccountStatus::Closed;
        assert_eq!(
            check_transfer_against(&request(5), Some(&frozen), Some(&closed)),
            Err(WalletError::AccountClosed { account_id: 2 })
        );
        assert_eq!(
            check_transfer_against(&request(5), Some(&frozen), Some(&c)),
            Err(WalletError::AccountFrozen { account_id: 1 })
        );

        // frozen beats insufficient funds
        assert_eq!(
            check_transfer_against(&request(1000), Some(&frozen), Some(&c)),
            Err(WalletError::AccountFrozen { account_id: 1 })
        );
    }

    #[test]
    fn funds_count_pending_reservations_and_respect_overdraft() {
        let mut d = account(1);
        d.pending_debit = 60;
        let c = account(2);
        assert_eq!(
            check_transfer_against(&request(40), Some(&d), Some(&c)),
            Ok(())
        );
        assert_eq!(
            check_transfer_against(&request(41), Some(&d), Some(&c)),
            Err(WalletError::InsufficientFunds {
                account_id: 1,
                amount: 41,
                available: 40
            })
        );
        d.allow_overdraft = true;
        assert_eq!(
            check_transfer_against(&request(1_000_000), Some(&d), Some(&c)),
            Ok(())
        );
    }

    #[test]
    fn reservations_never_overflow() {
        let d = AccountState {
            pending_debit: i64::MAX - 5,
            ..AccountState::for_tests(7, 100)
        };
        let c = AccountState::for_tests(8, 0);
        assert_eq!(check_reservation_bounds(&d, &c, 5), Ok(()));
        assert_eq!(
            check_reservation_bounds(&d, &c, 6),
            Err(WalletError::BalanceOverflow {
                account_id: 7,
                amount: 6
            })
        );
        let c = AccountState {
            pending_credit: i64::MAX,
            ..AccountState::for_tests(8, 0)
        };
        assert_eq!(
            check_reservation_bounds(&AccountState::for_tests(7, 100), &c, 1),
            Err(WalletError::BalanceOverflow {
                account_id: 8,
                amount: 1
            })
        );
    }

    #[test]
    fn balances_never_overflow() {
        let d = account(1);
        let mut c = account(2);
        c.balance = i64::MAX - 50;
        assert_eq!(
            check_transfer_against(&request(51), Some(&d), Some(&c)),
            Err(WalletError::BalanceOverflow {
                account_id: 2,
                amount: 51
            })
        );
        let mut system = account(1);
        system.allow_overdraft = true;
        system.balance = i64::MIN + 10;
        assert_eq!(
            check_transfer_against(&request(11), Some(&system), Some(&account(2))),
            Err(WalletError::BalanceOverflow {
                account_id: 1,
                amount: 11
            })
        );
        assert_eq!(
            check_transfer_against(&request(10), Some(&system), Some(&account(2))),
            Ok(())
        );
    }

    #[test]
    fn status_machine_allows_and_refuses_every_transition() {
        use AccountStatus::*;
        use StatusCommand::*;
        let cases = [
            (Active, Freeze, Ok(StatusChange::Changed(Frozen))),
            (Active, Unfreeze, Ok(StatusChange::Unchanged)),
            (Active, Close, Ok(StatusChange::Changed(Closed))),
            (Frozen, Freeze, Ok(StatusChange::Unchanged)),
            (Frozen, Unfreeze, Ok(StatusChange::Changed(Active))),
            (Frozen, Close, Ok(StatusChange::Changed(Closed))),
            (
                Closed,
                Freeze,
                Err(WalletError::AccountClosed { account_id: 1 }),
            ),
            (
                Closed,
                Unfreeze,
                Err(WalletError::AccountClosed { account_id: 1 }),
            ),
            (Closed, Close, Ok(StatusChange::Unchanged)),
        ];
        for (from, command, expected) in cases {
            let mut a = account(1);
            a.balance = 0;
            a.status = from;
            assert_eq!(
                apply_status_command(&a, command),
                expected,
                "{from:?} {command:?}"
            );
        }
    }

    #[test]
    fn only_empty_accounts_close_and_system_accounts_never_change() {
        let a = account(1);
        assert!(matches!(
            apply_status_command(&a, StatusCommand::Close),
            Err(WalletError::AccountNotEmpty { balance: 100, .. })
        ));
        let mut pending = account(1);
        pending.balance = 0;
        pending.pending_credit = 3;
        assert!(matches!(
            apply_status_command(&pending, StatusCommand::Close),
            Err(WalletError::AccountNotEmpty {
                pending_credit: 3,
                ..
            })
        ));
        let mut system = account(9);
        system.is_system = true;
        for command in [
            StatusCommand::Freeze,
            StatusCommand::Unfreeze,
            StatusCommand::Close,
        ] {
            assert_eq!(
                apply_status_command(&system, command),
                Err(WalletError::SystemAccount { account_id: 9 })
            );
        }
    }

    #[test]
    fn currency_codes() {
        for ok in ["EUR", "USD", "USDT", "BTC", "X1Y2Z3AB"] {
            assert_eq!(check_currency(ok, 2), Ok(()), "{ok}");
        }
        for bad in ["", "EU", "eur", "1EU", "EUR-", "ABCDEFGHI", "ÉUR"] {
            assert!(check_currency(bad, 2).is_err(), "{bad}");
        }
        assert!(check_currency("EUR", -1).is_err());
        assert!(check_currency("EUR", 19).is_err());
        assert_eq!(check_currency("EUR", 18), Ok(()));
    }

    #[test]
    fn idempotent_replay_returns_first_answer_only_for_same_parameters() {
        let prior = PriorTransfer {
            transfer_id: 42,
            event_type: "transfer".into(),
            debit_account_id: Some(1),
            credit_account_id: Some(2),
            amount: Some(5),
            metadata_matches: true,
        };
        assert_eq!(replay_answer("k", &request(5), &prior), Ok(42));
        assert!(matches!(
            replay_answer("k", &request(6), &prior),
            Err(WalletError::IdempotencyKeyReused {
                transfer_id: 42,
                ..
            })
        ));
        let other_metadata = PriorTransfer {
            metadata_matches: false,
            ..prior.clone()
        };
        assert!(replay_answer("k", &request(5), &other_metadata).is_err());
        let swapped = TransferRequest {
            debit_account_id: 2,
            credit_account_id: 1,
            amount: 5,
        };
        assert!(replay_answer("k", &swapped, &prior).is_err());
        let hold = PriorTransfer {
            event_type: "hold_placed".into(),
            ..prior.clone()
        };
        assert!(replay_answer("k", &request(5), &hold).is_err());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert!(check_page_rows(1).is_ok());
        assert!(check_page_rows(PAGE_ROWS_MAX).is_ok());
        assert!(check_page_rows(0).is_err());
        assert!(check_page_rows(PAGE_ROWS_MAX + 1).is_err());
    }

    #[test]
    fn key_hash_is_stable() {
        // Fixed values: changing the hash would let two builds in one cluster disagree.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(key_hash(b"order-1"), key_hash(b"order-2"));
    }
}
