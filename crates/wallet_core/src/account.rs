//! The account: its state, and the state machine of its status (pure rules, no Postgres).

use crate::error::WalletError;
use crate::text::Text;

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
    pub currency: Text,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: i64) -> AccountState {
        AccountState::for_tests(id, 100)
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
}
