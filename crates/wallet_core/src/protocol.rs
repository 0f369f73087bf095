//! The state machines of a global transaction: what a coordinator does next, from what its
//! phase-status ledger records. Pure functions; the coordinator carries out their answers.

/// Phase of a global transaction. `Try` until a decision; the decision is recorded (committed)
/// before any participant hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Try,
    Confirm,
    Cancel,
}

impl Phase {
    pub fn parse(text: &str) -> Option<Phase> {
        Some(match text {
            "try" => Phase::Try,
            "confirm" => Phase::Confirm,
            "cancel" => Phase::Cancel,
            _ => return None,
        })
    }
}

/// A branch as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchStatus {
    /// Not tried yet, or the try's answer was lost (it may or may not have reserved).
    New,
    /// The participant answered the try: the amount is reserved.
    Tried,
    /// The participant refused the try, or could not be reached for it.
    Failed,
    Confirmed,
    Cancelled,
    /// After a confirm decision, the participant refused the confirm for good (its hold had
    /// expired or was cancelled there): needs an operator; see README.
    Refused,
}

impl BranchStatus {
    pub fn parse(text: &str) -> Option<BranchStatus> {
        Some(match text {
            "new" => BranchStatus::New,
            "tried" => BranchStatus::Tried,
            "failed" => BranchStatus::Failed,
            "confirmed" => BranchStatus::Confirmed,
            "cancelled" => BranchStatus::Cancelled,
            "refused" => BranchStatus::Refused,
            _ => return None,
        })
    }
}

/// The coordinator's next durable step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the try of branch i.
    Try(usize),
    /// Record the decision (then commit, then tell the participants).
    DecideConfirm,
    DecideCancel,
    /// Send the confirm / cancel of branch i.
    Confirm(usize),
    Cancel(usize),
    /// Every branch is final: record the outcome.
    FinishConfirmed,
    FinishCancelled,
}

/// Decides the next step. `past_deadline`: the time to decide is over (or the coordinator is
/// gone and recovery runs): a global transaction still trying is cancelled.
///
/// Rules: confirm only when every branch was tried and the deadline has not passed; any failed
/// try or the deadline means cancel. Cancel goes to every branch not cancelled yet, tried or not
/// (a try whose answer was lost may have reserved; a try that never arrived is barred by the
/// participant's record of the cancel). Confirm goes to every tried branch. A branch whose
/// participant refused for good (`Refused`) is not asked again.
pub fn next_step(phase: Phase, branches: &[BranchStatus], past_deadline: bool) -> Step {
    use BranchStatus as B;
    match phase {
        Phase::Try => {
            if past_deadline || branches.iter().any(|b| matches!(b, B::Failed)) {
                Step::DecideCancel
            } else if let Some(i) = branches.iter().position(|b| *b == B::New) {
                Step::Try(i)
            } else if branches.iter().all(|b| *b == B::Tried) {
                Step::DecideConfirm
            } else {
                // Confirmed/cancelled branches in phase try: only an operator could do that.
                Step::DecideCancel
            }
        }
        Phase::Confirm => match branches.iter().position(|b| *b == B::Tried) {
            Some(i) => Step::Confirm(i),
            None => Step::FinishConfirmed,
        },
        Phase::Cancel => match branches
            .iter()
            .position(|b| !matches!(b, B::Cancelled | B::Refused))
        {
            Some(i) => Step::Cancel(i),
            None => Step::FinishCancelled,
        },
    }
}

impl Step {
    /// "action branch" for the coordinator in SQL, e.g. "try 1" (branches numbered from 1).
    pub fn encode(self) -> String {
        match self {
            Step::Try(i) => format!("try {}", i + 1),
            Step::Confirm(i) => format!("confirm {}", i + 1),
            Step::Cancel(i) => format!("cancel {}", i + 1),
            Step::DecideConfirm => "decide_confirm 0".into(),
            Step::DecideCancel => "decide_cancel 0".into(),
            Step::FinishConfirmed => "finish_confirmed 0".into(),
            Step::FinishCancelled => "finish_cancelled 0".into(),
        }
    }
}

/// How the coordinator treats an error from a participant's confirm or cancel: only a wallet
/// rejection (class WA) is final; anything else (a lost connection, a crash, a shutdown, a
/// serialization failure, a deadlock, an internal error, a participant without wallet_ext) is
/// retried later, since the participant's calls are idempotent and a wrong "refused" would split
/// a decided transfer. (A failed try leads to cancel either way.) WA025 is the coordinator's own
/// "unreachable" and transient too.
pub fn error_is_transient(sqlstate: &str) -> bool {
    !sqlstate.starts_with("WA") || sqlstate == "WA025"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_steps() {
        use BranchStatus as B;
        let n = |p, b: &[B], late| next_step(p, b, late);
        // Trying: branches in order, then the decision.
        assert_eq!(n(Phase::Try, &[B::New, B::New], false), Step::Try(0));
        assert_eq!(n(Phase::Try, &[B::Tried, B::New], false), Step::Try(1));
        assert_eq!(
            n(Phase::Try, &[B::Tried, B::Tried], false),
            Step::DecideConfirm
        );
        // Any failure or the deadline: cancel, even when all were tried.
        assert_eq!(
            n(Phase::Try, &[B::Failed, B::New], false),
            Step::DecideCancel
        );
        assert_eq!(
            n(Phase::Try, &[B::Tried, B::Failed], false),
            Step::DecideCancel
        );
        assert_eq!(
            n(Phase::Try, &[B::Tried, B::Tried], true),
            Step::DecideCancel
        );
        assert_eq!(n(Phase::Try, &[B::New, B::New], true), Step::DecideCancel);
        assert_eq!(
            n(Phase::Try, &[B::Tried, B::Cancelled], false),
            Step::DecideCancel
        );
        // Confirming: every tried branch, then the outcome; the deadline no longer matters.
        assert_eq!(
            n(Phase::Confirm, &[B::Tried, B::Tried], true),
            Step::Confirm(0)
        );
        assert_eq!(
            n(Phase::Confirm, &[B::Confirmed, B::Tried], false),
            Step::Confirm(1)
        );
        assert_eq!(
            n(Phase::Confirm, &[B::Confirmed, B::Confirmed], false),
            Step::FinishConfirmed
        );
        assert_eq!(
            n(Phase::Confirm, &[B::Confirmed, B::Refused], false),
            Step::FinishConfirmed
        );
        // Cancelling: every branch not cancelled, tried or not.
        assert_eq!(
            n(Phase::Cancel, &[B::New, B::Tried], false),
            Step::Cancel(0)
        );
        assert_eq!(
            n(Phase::Cancel, &[B::Cancelled, B::Failed], false),
            Step::Cancel(1)
        );
        assert_eq!(
            n(Phase::Cancel, &[B::Cancelled, B::Cancelled], false),
            Step::FinishCancelled
        );
        assert_eq!(
            n(Phase::Cancel, &[B::Refused, B::Cancelled], false),
            Step::FinishCancelled
        );
        assert_eq!(Step::Try(0).encode(), "try 1");
        assert_eq!(Step::DecideCancel.encode(), "decide_cancel 0");
        assert_eq!(Phase::parse("confirm"), Some(Phase::Confirm));
        assert_eq!(BranchStatus::parse("refused"), Some(B::Refused));
        assert_eq!(BranchStatus::parse("x"), None);
    }

    #[test]
    fn transient_errors() {
        for s in [
            "08001", "08006", "57P01", "40001", "40P01", "WA025", "XX000", "42883",
        ] {
            assert!(error_is_transient(s), "{s}");
        }
        for s in ["WA008", "WA018", "WA020", "WA021", "WA023"] {
            assert!(!error_is_transient(s), "{s}");
        }
    }
}
