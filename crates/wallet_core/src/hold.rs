//! The state machine of a hold: one Try-Confirm/Cancel branch of a global transaction on one
//! database, keyed by (gtid, branch). Pure rules; the extension locks the hold and its accounts
//! and carries out the action these functions choose.

use crate::error::WalletError;
use crate::limits::HOLD_ID_LENGTH_MAX;
use crate::text::Text;

/// The state of a hold. `Cancelled` includes a cancel that arrived before its try (null
/// compensation): that hold has no accounts and reserves nothing, and it bars a later try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Pending,
    Confirmed,
    Cancelled,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Pending => "pending",
            HoldStatus::Confirmed => "confirmed",
            HoldStatus::Cancelled => "cancelled",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<HoldStatus> {
        Some(match text {
            "pending" => HoldStatus::Pending,
            "confirmed" => HoldStatus::Confirmed,
            "cancelled" => HoldStatus::Cancelled,
            "expired" => HoldStatus::Expired,
            _ => return None,
        })
    }
}

/// A stored hold, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub gtid: Text,
    pub branch: Text,
    pub status: HoldStatus,
    /// None for a cancel that came first.
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub reserved: i64,
    pub confirmed_amount: Option<i64>,
    /// Its timeout has passed (a pending hold past it can no longer be confirmed).
    pub timed_out: bool,
    /// The answer a repeat gets: the hold id for try and cancel, the posting's event for confirm.
    pub hold_id: i64,
    pub confirm_seq: Option<i64>,
}

/// What a call does to a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldAction {
    /// Reserve (try), on accounts checked by `domain::check_transfer_against` afterwards.
    Place,
    /// Post `amount` and release the whole reservation (confirm).
    Confirm { amount: i64 },
    /// Release the reservation (cancel, or expiry).
    Release,
    /// Record a cancel whose try never arrived: no effect, but a later try is refused.
    RecordEmptyCancel,
    /// A repeat: change nothing, return the first answer.
    Repeat,
}

/// Checks a global transaction id or branch id: 1 to HOLD_ID_LENGTH_MAX bytes.
pub fn check_hold_key(value: Option<&[u8]>, argument: &'static str) -> Result<(), WalletError> {
    match value {
        Some(v) if !v.is_empty() && v.len() <= HOLD_ID_LENGTH_MAX && !v.contains(&0) => Ok(()),
        Some(v) => Err(WalletError::InvalidArgument {
            argument,
            reason: format!("must be 1 to {HOLD_ID_LENGTH_MAX} bytes, got {}", v.len()),
        }),
        None => Err(WalletError::InvalidArgument {
            argument,
            reason: "must not be NULL".into(),
        }),
    }
}

/// The timeout of a new hold in microseconds: the one asked for, or the default (both in
/// seconds from the settings wallet.hold_timeout and wallet.hold_timeout_max). A timeout must
/// be positive and at most the maximum; the default is capped by it.
pub fn hold_timeout_micros(
    requested_micros: Option<i128>,
    default_seconds: i32,
    max_seconds: i32,
) -> Result<i64, WalletError> {
    let max = i128::from(max_seconds) * 1_000_000;
    match requested_micros {
        None => Ok(i64::from(default_seconds.min(max_seconds)) * 1_000_000),
        Some(t) if t > 0 && t <= max => Ok(t as i64),
        Some(t) => Err(WalletError::InvalidArgument {
            argument: "timeout",
            reason: format!(
                "must be positive and at most wallet.hold_timeout_max ({max_seconds} s), got {} s",
                t / 1_000_000
            ),
        }),
    }
}

/// A try for (gtid, branch) reserving `amount` from debit to credit (None = the system account,
/// resolved later), against what is stored under that key.
pub fn judge_try(
    stored: Option<&Hold>,
    debit_account_id: Option<i64>,
    credit_account_id: Option<i64>,
    amount: i64,
) -> Result<HoldAction, WalletError> {
    let Some(h) = stored else {
        return Ok(HoldAction::Place);
    };
    match h.status {
        HoldStatus::Cancelled => Err(WalletError::TryAfterCancel {
            gtid: h.gtid.clone(),
            branch: h.branch.clone(),
            debit_account_id: debit_account_id.or(h.debit_account_id),
            amount,
        }),
        _ if h.reserved != amount
            || debit_account_id.is_some_and(|d| Some(d) != h.debit_account_id)
            || credit_account_id.is_some_and(|c| Some(c) != h.credit_account_id) =>
        {
            Err(WalletError::HoldReused {
                gtid: h.gtid.clone(),
                branch: h.branch.clone(),
                debit_account_id: h.debit_account_id.unwrap_or_default(),
                credit_account_id: h.credit_account_id.unwrap_or_default(),
                reserved: h.reserved,
                new_debit_account_id: debit_account_id,
                new_credit_account_id: credit_account_id,
                amount,
            })
        }
        HoldStatus::Expired => Err(expired(h)),
        HoldStatus::Pending | HoldStatus::Confirmed => Ok(HoldAction::Repeat),
    }
}

fn expired(h: &Hold) -> WalletError {
    WalletError::HoldExpired {
        gtid: h.gtid.clone(),
        branch: h.branch.clone(),
        debit_account_id: h.debit_account_id.unwrap_or_default(),
        reserved: h.reserved,
    }
}

/// A confirm of `amount` (None = all that is reserved). Precedence: not found, cancelled,
/// expired, confirmed already (a repeat with no amount or the same amount is answered), amount.
pub fn judge_confirm(
    stored: Option<&Hold>,
    gtid: &[u8],
    branch: &[u8],
    amount: Option<i64>,
) -> Result<HoldAction, WalletError> {
    let Some(h) = stored else {
        return Err(WalletError::HoldNotFound {
            gtid: Text::from(gtid),
            branch: Text::from(branch),
        });
    };
    let debit_account_id = h.debit_account_id.unwrap_or_default();
    match h.status {
        HoldStatus::Cancelled => Err(WalletError::HoldCancelled {
            gtid: h.gtid.clone(),
            branch: h.branch.clone(),
            debit_account_id: h.debit_account_id,
            reserved: h.reserved,
        }),
        HoldStatus::Expired => Err(expired(h)),
        HoldStatus::Confirmed => {
            let posted = h.confirmed_amount.unwrap_or_default();
            if amount.is_none_or(|a| a == posted) {
                Ok(HoldAction::Repeat)
            } else {
                Err(WalletError::HoldConfirmed {
                    gtid: h.gtid.clone(),
                    branch: h.branch.clone(),
                    debit_account_id,
                    amount: posted,
                })
            }
        }
        HoldStatus::Pending if h.timed_out => Err(expired(h)),
        HoldStatus::Pending => {
            let amount = amount.unwrap_or(h.reserved);
            if amount <= 0 {
                Err(WalletError::InvalidAmount {
                    amount: Some(amount),
                    account_id: h.debit_account_id,
                })
            } else if amount > h.reserved {
                Err(WalletError::AmountAboveReserved {
                    gtid: h.gtid.clone(),
                    branch: h.branch.clone(),
                    debit_account_id,
                    amount,
                    reserved: h.reserved,
                })
            } else {
                Ok(HoldAction::Confirm { amount })
            }
        }
    }
}

/// A cancel. Succeeds unless the hold was confirmed: a pending hold is released (even past its
/// timeout), a cancelled or expired one is answered as it is, a missing one is recorded.
pub fn judge_cancel(stored: Option<&Hold>) -> Result<HoldAction, WalletError> {
    let Some(h) = stored else {
        return Ok(HoldAction::RecordEmptyCancel);
    };
    match h.status {
        HoldStatus::Pending => Ok(HoldAction::Release),
        HoldStatus::Cancelled | HoldStatus::Expired => Ok(HoldAction::Repeat),
        HoldStatus::Confirmed => Err(WalletError::HoldConfirmed {
            gtid: h.gtid.clone(),
            branch: h.branch.clone(),
            debit_account_id: h.debit_account_id.unwrap_or_default(),
            amount: h.confirmed_amount.unwrap_or_default(),
        }),
    }
}

/// Expiry: only a pending hold past its timeout is released.
pub fn judge_expiry(stored: &Hold) -> Option<HoldAction> {
    (stored.status == HoldStatus::Pending && stored.timed_out).then_some(HoldAction::Release)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(status: HoldStatus) -> Hold {
        Hold {
            gtid: Text::from("g"),
            branch: Text::from("b"),
            status,
            debit_account_id: Some(7),
            credit_account_id: Some(8),
            reserved: 100,
            confirmed_amount: (status == HoldStatus::Confirmed).then_some(60),
            timed_out: false,
            hold_id: 1,
            confirm_seq: None,
        }
    }

    fn empty_cancel() -> Hold {
        Hold {
            debit_account_id: None,
            credit_account_id: None,
            reserved: 0,
            ..hold(HoldStatus::Cancelled)
        }
    }

    fn code(r: Result<HoldAction, WalletError>) -> &'static str {
        match r {
            Ok(HoldAction::Place) => "place",
            Ok(HoldAction::Confirm { .. }) => "confirm",
            Ok(HoldAction::Release) => "release",
            Ok(HoldAction::RecordEmptyCancel) => "record_empty_cancel",
            Ok(HoldAction::Repeat) => "repeat",
            Err(e) => e.name(),
        }
    }

    #[test]
    fn try_transitions() {
        assert_eq!(code(judge_try(None, Some(7), Some(8), 100)), "place");
        for (status, expected) in [
            (HoldStatus::Pending, "repeat"),
            (HoldStatus::Confirmed, "repeat"),
            (HoldStatus::Cancelled, "try_after_cancel"),
            (HoldStatus::Expired, "hold_expired"),
        ] {
            let h = hold(status);
            assert_eq!(
                code(judge_try(Some(&h), Some(7), Some(8), 100)),
                expected,
                "{status:?}"
            );
        }
        // The anomaly: a try after a cancel that arrived first.
        assert_eq!(
            code(judge_try(Some(&empty_cancel()), Some(7), Some(8), 100)),
            "try_after_cancel"
        );
        // Same key, other parameters.
        let h = hold(HoldStatus::Pending);
        assert_eq!(
            code(judge_try(Some(&h), Some(7), Some(8), 99)),
            "hold_reused"
        );
        assert_eq!(
            code(judge_try(Some(&h), Some(9), Some(8), 100)),
            "hold_reused"
        );
        assert_eq!(
            code(judge_try(Some(&h), Some(7), Some(9), 100)),
            "hold_reused"
        );
        // The system side left to the participant matches whatever it resolved to.
        assert_eq!(code(judge_try(Some(&h), None, Some(8), 100)), "repeat");
    }

    #[test]
    fn confirm_transitions() {
        let c = |h: Option<&Hold>, a| code(judge_confirm(h, b"g", b"b", a));
        assert_eq!(c(None, None), "hold_not_found");
        let pending = hold(HoldStatus::Pending);
        assert_eq!(
            judge_confirm(Some(&pending), b"g", b"b", None),
            Ok(HoldAction::Confirm { amount: 100 })
        );
        assert_eq!(
            judge_confirm(Some(&pending), b"g", b"b", Some(40)),
            Ok(HoldAction::Confirm { amount: 40 })
        );
        assert_eq!(c(Some(&pending), Some(101)), "amount_above_reserved");
        assert_eq!(c(Some(&pending), Some(0)), "invalid_amount");
        assert_eq!(c(Some(&pending), Some(-1)), "invalid_amount");
        let late = Hold {
            timed_out: true,
            ..pending.clone()
        };
        assert_eq!(c(Some(&late), None), "hold_expired");
        assert_eq!(c(Some(&hold(HoldStatus::Expired)), None), "hold_expired");
        assert_eq!(
            c(Some(&hold(HoldStatus::Cancelled)), None),
            "hold_already_cancelled"
        );
        assert_eq!(c(Some(&empty_cancel()), None), "hold_already_cancelled");
        let confirmed = hold(HoldStatus::Confirmed);
        assert_eq!(c(Some(&confirmed), None), "repeat");
        assert_eq!(c(Some(&confirmed), Some(60)), "repeat");
        assert_eq!(c(Some(&confirmed), Some(61)), "hold_already_confirmed");
    }

    #[test]
    fn cancel_and_expiry_transitions() {
        assert_eq!(code(judge_cancel(None)), "record_empty_cancel");
        assert_eq!(
            code(judge_cancel(Some(&hold(HoldStatus::Pending)))),
            "release"
        );
        let late = Hold {
            timed_out: true,
            ..hold(HoldStatus::Pending)
        };
        assert_eq!(code(judge_cancel(Some(&late))), "release");
        assert_eq!(
            code(judge_cancel(Some(&hold(HoldStatus::Cancelled)))),
            "repeat"
        );
        assert_eq!(code(judge_cancel(Some(&empty_cancel()))), "repeat");
        assert_eq!(
            code(judge_cancel(Some(&hold(HoldStatus::Expired)))),
            "repeat"
        );
        assert_eq!(
            code(judge_cancel(Some(&hold(HoldStatus::Confirmed)))),
            "hold_already_confirmed"
        );
        assert_eq!(judge_expiry(&late), Some(HoldAction::Release));
        assert_eq!(judge_expiry(&hold(HoldStatus::Pending)), None);
        for s in [
            HoldStatus::Confirmed,
            HoldStatus::Cancelled,
            HoldStatus::Expired,
        ] {
            let h = Hold {
                timed_out: true,
                ..hold(s)
            };
            assert_eq!(judge_expiry(&h), None, "{s:?}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(hold_timeout_micros(None, 900, 86_400), Ok(900_000_000));
        assert_eq!(hold_timeout_micros(None, 900, 60), Ok(60_000_000));
        assert_eq!(hold_timeout_micros(Some(5_000_000), 900, 60), Ok(5_000_000));
        assert_eq!(
            hold_timeout_micros(Some(60_000_000), 900, 60),
            Ok(60_000_000)
        );
        for bad in [0, -1, 60_000_001, i128::MAX] {
            assert!(hold_timeout_micros(Some(bad), 900, 60).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            HoldStatus::Pending,
            HoldStatus::Confirmed,
            HoldStatus::Cancelled,
            HoldStatus::Expired,
        ] {
            assert_eq!(HoldStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(HoldStatus::parse("open"), None);
        assert!(check_hold_key(Some(b"g"), "gtid").is_ok());
        assert!(check_hold_key(Some(b""), "gtid").is_err());
        assert!(check_hold_key(None, "gtid").is_err());
        assert!(check_hold_key(Some("x".repeat(129).as_bytes()), "gtid").is_err());
    }
}
