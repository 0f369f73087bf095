//! Judging a transfer, free of Postgres: the checks of its arguments and of its two accounts, in
//! the documented order of precedence, the bounds of every balance it moves, and the answer to a
//! repeated idempotency key. Storage locks the accounts and carries out what these functions allow.

use crate::account::{AccountState, AccountStatus};
use crate::error::WalletError;
use crate::limits::{CURRENCY_SCALE_MAX, IDEMPOTENCY_KEY_LENGTH_MAX, PAGE_ROWS_MAX};
use crate::text::Text;

/// An amount must be present and strictly positive; money is bigint minor units.
pub fn check_amount(amount: Option<i64>, account_id: Option<i64>) -> Result<i64, WalletError> {
    match amount {
        Some(value) if value > 0 => Ok(value),
        _ => Err(WalletError::InvalidAmount { amount, account_id }),
    }
}

/// An idempotency key, when given, is 1 to [`IDEMPOTENCY_KEY_LENGTH_MAX`] bytes.
pub fn check_idempotency_key(key: Option<&[u8]>) -> Result<(), WalletError> {
    match key {
        Some(k) if k.is_empty() || k.len() > IDEMPOTENCY_KEY_LENGTH_MAX => {
            Err(WalletError::InvalidIdempotencyKey { length: k.len() })
        }
        _ => Ok(()),
    }
}

/// A currency code is 3 to 8 characters of A-Z and 0-9 starting with a letter (ISO 4217 codes and
/// the usual token symbols fit); the scale is the number of minor-unit decimals, 0 to 18.
pub fn check_currency(code: &[u8], scale: i32) -> Result<(), WalletError> {
    let bytes = code;
    let shape_ok = (3..=8).contains(&bytes.len())
        && bytes[0].is_ascii_uppercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !shape_ok || !(0..=CURRENCY_SCALE_MAX).contains(&scale) {
        return Err(WalletError::InvalidCurrency {
            code: Text::from(code),
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
    idempotency_key: Option<&[u8]>,
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
    key: &[u8],
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
            key: Text::from(key),
            transfer_id: Some(prior.transfer_id),
            debit_account_id: request.debit_account_id,
            credit_account_id: request.credit_account_id,
            amount: request.amount,
        })
    }
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
            check_transfer_arguments(None, Some(1), Some(-1), Some(b"")),
            Err(WalletError::InvalidArgument {
                argument: "debit_account_id",
                ..
            })
        ));
        assert!(matches!(
            check_transfer_arguments(Some(1), None, Some(-1), Some(b"")),
            Err(WalletError::InvalidArgument {
                argument: "credit_account_id",
                ..
            })
        ));
        assert!(matches!(
            check_transfer_arguments(Some(1), Some(1), Some(0), Some(b"")),
            Err(WalletError::InvalidAmount { .. })
        ));
        assert!(matches!(
            check_transfer_arguments(Some(1), Some(1), Some(5), Some(b"")),
            Err(WalletError::InvalidIdempotencyKey { length: 0 })
        ));
        let long = "k".repeat(IDEMPOTENCY_KEY_LENGTH_MAX + 1);
        assert!(matches!(
            check_transfer_arguments(Some(1), Some(2), Some(5), Some(long.as_bytes())),
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
            check_transfer_arguments(Some(1), Some(2), Some(5), Some(b"k")),
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
    fn currency_codes() {
        for ok in ["EUR", "USD", "USDT", "BTC", "X1Y2Z3AB"] {
            assert_eq!(check_currency(ok.as_bytes(), 2), Ok(()), "{ok}");
        }
        for bad in ["", "EU", "eur", "1EU", "EUR-", "ABCDEFGHI", "ÉUR"] {
            assert!(check_currency(bad.as_bytes(), 2).is_err(), "{bad}");
        }
        assert!(check_currency(b"EUR", -1).is_err());
        assert!(check_currency(b"EUR", 19).is_err());
        assert_eq!(check_currency(b"EUR", 18), Ok(()));
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
        assert_eq!(replay_answer(b"k", &request(5), &prior), Ok(42));
        assert!(matches!(
            replay_answer(b"k", &request(6), &prior),
            Err(WalletError::IdempotencyKeyReused {
                transfer_id: Some(42),
                ..
            })
        ));
        let other_metadata = PriorTransfer {
            metadata_matches: false,
            ..prior.clone()
        };
        assert!(replay_answer(b"k", &request(5), &other_metadata).is_err());
        let swapped = TransferRequest {
            debit_account_id: 2,
            credit_account_id: 1,
            amount: 5,
        };
        assert!(replay_answer(b"k", &swapped, &prior).is_err());
        let hold = PriorTransfer {
            event_type: "hold_placed".into(),
            ..prior.clone()
        };
        assert!(replay_answer(b"k", &request(5), &hold).is_err());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert!(check_page_rows(1).is_ok());
        assert!(check_page_rows(PAGE_ROWS_MAX).is_ok());
        assert!(check_page_rows(0).is_err());
        assert!(check_page_rows(PAGE_ROWS_MAX + 1).is_err());
    }
}
