//! Global transactions across nodes: how legs become branches, and the state machine of each of
//! the three protocols: what a coordinator does next from what its phase-status ledger records,
//! and what a participant's answer makes of a branch. Pure functions; the coordinator
//! (`src/coordinator/`) carries out their answers, one durable step at a time.
//!
//! The three protocols share one ledger: a phase (`try`, `confirm`, `cancel`) per global
//! transaction and a status per branch (one branch per node). What the words mean:
//!
//! | | try | confirm | cancel |
//! |---|---|---|---|
//! | TC/C | reserve (a hold per posting) | post the holds | release the holds |
//! | 2PC | post in a transaction, then PREPARE it | COMMIT PREPARED | ROLLBACK PREPARED |
//! | Saga | post and commit, one branch after another, debits first | (nothing left to do) | post the reverse of each done branch, last first |

use std::collections::BTreeMap;

use crate::error::WalletError;
use crate::limits::{GLOBAL_LEGS_MAX, NODE_NAME_LENGTH_MAX};

/// The protocol of a global transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcc,
    TwoPhase,
    Saga,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcc, Protocol::TwoPhase, Protocol::Saga];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcc => "tcc",
            Protocol::TwoPhase => "2pc",
            Protocol::Saga => "saga",
        }
    }

    pub fn parse(text: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// Phase of a global transaction. `Try` until a decision; the decision is recorded (committed)
/// before any participant hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Try,
    Confirm,
    Cancel,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Try => "try",
            Phase::Confirm => "confirm",
            Phase::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        [Phase::Try, Phase::Confirm, Phase::Cancel]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// A branch as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchStatus {
    /// Not tried yet, or the answer to its try was lost (it may or may not have taken effect).
    New,
    /// The participant answered the try: reserved (TC/C), prepared (2PC), posted (Saga).
    Tried,
    /// The participant refused the try (or, TC/C and 2PC, could not be reached for it).
    Failed,
    /// Posted for good: confirmed (TC/C) or committed (2PC).
    Confirmed,
    /// Has no effect: released (TC/C), rolled back (2PC), compensated or never posted (Saga).
    Cancelled,
    /// The participant refused a confirm (TC/C: its hold had expired) or a compensation (Saga:
    /// the account is frozen, say) for good: the global transaction needs an operator.
    Refused,
}

impl BranchStatus {
    const NAMES: [(BranchStatus, &'static str); 6] = [
        (BranchStatus::New, "new"),
        (BranchStatus::Tried, "tried"),
        (BranchStatus::Failed, "failed"),
        (BranchStatus::Confirmed, "confirmed"),
        (BranchStatus::Cancelled, "cancelled"),
        (BranchStatus::Refused, "refused"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, n)| *n)
            .unwrap_or("new")
    }

    pub fn parse(text: &str) -> Option<BranchStatus> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == text)
            .map(|(s, _)| *s)
    }
}

/// What a participant is asked to do with a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    Try,
    Confirm,
    Cancel,
}

/// The coordinator's next durable step for one global transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the participants of these branches (all at once: one call per node).
    Call(CallKind, Vec<usize>),
    /// Mark these branches cancelled without a call: nothing of them took effect.
    Forget(Vec<usize>),
    /// 2PC with a branch on the coordinator's own node: post that branch in the transaction that
    /// records the decision (the decision is confirm if it posts, cancel if it is refused). Every
    /// other branch is prepared: this commit is the commit point, and the coordinator's node
    /// needs no prepared transaction.
    PostLocalAndDecide(usize),
    /// Record the decision (then commit, then tell the participants).
    DecideConfirm,
    DecideCancel,
    /// Every branch is final: record the outcome.
    FinishConfirmed,
    FinishCancelled,
    /// A branch was refused for good after the decision: record that an operator is needed.
    Stuck(usize),
}

/// Whether a global transaction still trying must be cancelled: its decision deadline passed,
/// or its coordinator is gone (recovery) and the protocol holds something while undecided
/// (TC/C holds, 2PC prepared transactions). A saga holds nothing: recovery goes on forwards.
pub fn stop_trying(protocol: Protocol, past_deadline: bool, recovering: bool) -> bool {
    past_deadline || (recovering && protocol != Protocol::Saga)
}

/// Decides the next step from the phase and the branches' statuses. `stop`: see
/// [`stop_trying`]. `local`: the branch on the coordinator's own node, if any (2PC posts it with
/// its decision rather than preparing it).
pub fn next_action(
    protocol: Protocol,
    phase: Phase,
    branches: &[BranchStatus],
    stop: bool,
    local: Option<usize>,
) -> Action {
    match phase {
        Phase::Try => next_try(protocol, branches, stop, local),
        Phase::Confirm => next_confirm(protocol, branches),
        Phase::Cancel => next_cancel(protocol, branches),
    }
}

/// The branches whose status is one of `wanted`, in branch order.
fn with(branches: &[BranchStatus], wanted: &[BranchStatus]) -> Vec<usize> {
    branches
        .iter()
        .enumerate()
        .filter(|(_, s)| wanted.contains(s))
        .map(|(i, _)| i)
        .collect()
}

/// Trying: decide as soon as the branches allow, else try the next ones.
fn next_try(
    protocol: Protocol,
    branches: &[BranchStatus],
    stop: bool,
    local: Option<usize>,
) -> Action {
    use BranchStatus as B;
    let failed = branches.contains(&B::Failed);
    let untried = with(branches, &[B::New]);
    if failed || (stop && !untried.is_empty()) {
        return Action::DecideCancel;
    }
    if branches.iter().all(|b| *b == B::Tried) {
        return Action::DecideConfirm;
    }
    if protocol == Protocol::TwoPhase {
        if let Some(l) = local.filter(|&l| branches[l] == B::New) {
            let others_prepared = branches
                .iter()
                .enumerate()
                .all(|(i, b)| i == l || *b == B::Tried);
            return if others_prepared {
                Action::PostLocalAndDecide(l)
            } else {
                let next = untried.into_iter().find(|&i| i != l);
                Action::Call(CallKind::Try, next.into_iter().collect())
            };
        }
    }
    if untried.is_empty() {
        // Confirmed, cancelled or refused branches while trying: only an operator could
        // have done that. Nothing is decided to confirm, so cancel.
        return Action::DecideCancel;
    }
    match protocol {
        // Tried in parallel: the try phase costs the slowest node, not the sum (a try's
        // local transaction commits at once, holding nothing while others are tried).
        Protocol::Tcc => Action::Call(CallKind::Try, untried),
        // Prepared one node after the other, in the order of the nodes' names (see
        // `plan_for`): a prepared transaction holds its rows (its node's system account
        // among them) until its commit, and two global transactions preparing at once
        // would each hold a node the other waits for; one order for every global
        // transaction makes that impossible (as one lock order does for transfers).
        Protocol::TwoPhase => Action::Call(CallKind::Try, vec![untried[0]]),
        // Linear, in branch order (debits first): never a credit before every debit.
        Protocol::Saga => Action::Call(CallKind::Try, vec![untried[0]]),
    }
}

/// Decided to confirm: confirm what is not confirmed yet. A branch that cannot be (refused by
/// its participant; failed or cancelled after the decision, which only an operator could have
/// done) does not stop the others: they follow the decision first, so that no hold stays
/// reserved and no prepared transaction keeps its rows locked while an operator settles that one
/// branch; then the global transaction is stuck on it.
fn next_confirm(protocol: Protocol, branches: &[BranchStatus]) -> Action {
    use BranchStatus as B;
    let to_confirm = match protocol {
        // A saga's branches were posted and committed while trying.
        Protocol::Saga => Vec::new(),
        Protocol::Tcc | Protocol::TwoPhase => with(branches, &[B::Tried, B::New]),
    };
    if !to_confirm.is_empty() {
        return Action::Call(CallKind::Confirm, to_confirm);
    }
    match branches
        .iter()
        .position(|b| matches!(b, B::Refused | B::Failed | B::Cancelled))
    {
        Some(i) => Action::Stuck(i),
        None => Action::FinishConfirmed,
    }
}

/// Decided to cancel: undo what any branch may have done.
fn next_cancel(protocol: Protocol, branches: &[BranchStatus]) -> Action {
    use BranchStatus as B;
    let stuck = branches
        .iter()
        .position(|b| matches!(b, B::Refused | B::Confirmed));
    match protocol {
        // TC/C: every branch not cancelled, tried or not: a try whose answer was lost may have
        // reserved, and one that never arrived is barred by the participant's record of the
        // cancel. 2PC: whatever is prepared under the branch's gid is rolled back: a lost answer
        // may have prepared, and a refused branch may have prepared its (refused, empty)
        // postings. Rolling back a gid that is not there is a success.
        // A branch whose cancel was refused (or that an operator confirmed) does not stop the
        // others, as in `next_confirm`: a cancel only releases, it never moves money.
        Protocol::Tcc | Protocol::TwoPhase => {
            let to_cancel = with(branches, &[B::New, B::Tried, B::Failed]);
            match (to_cancel.is_empty(), stuck) {
                (false, _) => Action::Call(CallKind::Cancel, to_cancel),
                (true, Some(i)) => Action::Stuck(i),
                (true, None) => Action::FinishCancelled,
            }
        }
        // Compensations in reverse order, one at a time; a refused step posted nothing
        // (its postings were one linked chain), a lost one may have: compensate it
        // (the compensation bars a forward that never arrived). A refused compensation stops
        // the others: compensating a debit while its credit stands would create money.
        Protocol::Saga => {
            if let Some(i) = stuck {
                return Action::Stuck(i);
            }
            let failed = with(branches, &[B::Failed]);
            if !failed.is_empty() {
                return Action::Forget(failed);
            }
            match with(branches, &[B::New, B::Tried]).last() {
                Some(&i) => Action::Call(CallKind::Cancel, vec![i]),
                None => Action::FinishCancelled,
            }
        }
    }
}

/// What a participant answered to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It did what was asked (or had done it: every participant call is idempotent).
    Done,
    /// It refused for good (a wallet rejection, class WA).
    Refused,
    /// No answer, or an error that is not a wallet rejection: it may or may not have acted.
    Lost,
}

/// How a participant's error is taken: only a wallet rejection (class WA) is final; anything
/// else (a lost connection, a crash, a shutdown, a serialization failure, a deadlock, a
/// participant without wallet_ext) may pass, since every participant call is idempotent and a
/// wrong "refused" would split a decided transfer. WA025 is the coordinator's own
/// "unreachable", and transient too.
pub fn answer_to_error(sqlstate: &str) -> Answer {
    if sqlstate.starts_with("WA") && sqlstate != "WA025" {
        Answer::Refused
    } else {
        Answer::Lost
    }
}

/// The branch's status after an answer; None: unchanged (the call is repeated later).
pub fn after_answer(protocol: Protocol, kind: CallKind, answer: Answer) -> Option<BranchStatus> {
    use BranchStatus as B;
    match (kind, answer) {
        (CallKind::Try, Answer::Done) => Some(B::Tried),
        (CallKind::Try, Answer::Refused) => Some(B::Failed),
        // A lost try of TC/C or 2PC ends the try phase (the cancel that follows clears up
        // whatever it did); a saga's forward step is repeated until its deadline.
        (CallKind::Try, Answer::Lost) => match protocol {
            Protocol::Saga => None,
            Protocol::Tcc | Protocol::TwoPhase => Some(B::Failed),
        },
        (CallKind::Confirm, Answer::Done) => Some(B::Confirmed),
        (CallKind::Cancel, Answer::Done) => Some(B::Cancelled),
        (CallKind::Confirm | CallKind::Cancel, Answer::Refused) => Some(B::Refused),
        (CallKind::Confirm | CallKind::Cancel, Answer::Lost) => None,
    }
}

/// Whether a call may be sent before the step it follows is durable (see the coordinator's
/// `commit_durably`): what it asks of the participant undoes itself there if the coordinator
/// forgets the global transaction (its step lost in a crash), so the two nodes cannot end up
/// disagreeing. A TC/C try: its hold expires at its timeout. A 2PC prepare: presumed abort (the
/// sweep of this coordinator's prepared transactions that no unfinished global transaction owns
/// rolls it back). Everything else takes effect for good once it arrives: a confirm, a commit, a
/// cancel (a forgotten cancel could be followed by a confirm), a saga's posting or compensation.
pub fn undone_if_forgotten(protocol: Protocol, kind: CallKind) -> bool {
    matches!(
        (protocol, kind),
        (Protocol::Tcc | Protocol::TwoPhase, CallKind::Try)
    )
}

/// A global transaction's id travels to every node, whatever their encodings: printable ASCII
/// (every server encoding holds it unchanged), so that no node can fail to read it and leave the
/// global transaction unfinishable.
pub fn check_gtid_travels(gtid: &[u8]) -> Result<(), WalletError> {
    if gtid.iter().all(|b| (0x20..=0x7e).contains(b)) {
        Ok(())
    } else {
        Err(WalletError::invalid_argument(
            "gtid",
            "a global transaction id must be printable ASCII (it is sent to every node)",
        ))
    }
}

/// One leg of a global transaction: an amount out of (negative) or into (positive) an account of
/// a node. A node's legs net against its system account of the currency, so that every node's
/// books stay balanced on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub node: String,
    pub account_id: i64,
    pub amount: i64,
}

/// One posting on a node: None for the node's system account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: i64,
}

/// A node's part of a global transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchPlan {
    pub node: String,
    pub postings: Vec<Posting>,
}

/// The name of the coordinator's own database among the nodes.
pub const LOCAL_NODE: &str = "local";

/// Whether the plan's every leg is on the coordinator's own node. Then no other node has anything
/// to hear, before or after, and whatever the protocol the global transaction is one local
/// transaction: its postings (keyed transfers, as 2PC and a saga post), its record and its outcome
/// commit together, so no crash can leave it half done and recovery never sees it unfinished.
pub fn here_alone(plan: &[BranchPlan]) -> bool {
    matches!(plan, [only] if only.node == LOCAL_NODE)
}

/// A node name: `local` (this database) or a registered node's name, [a-z_][a-z0-9_]*.
pub fn check_node_name(name: &str, argument: &'static str) -> Result<(), WalletError> {
    let ok = !name.is_empty()
        && name.len() <= NODE_NAME_LENGTH_MAX
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(WalletError::invalid_argument(
            argument,
            format!("a node name is 1 to {NODE_NAME_LENGTH_MAX} characters a-z, 0-9, _ (not starting with a digit), got \"{name}\""),
        ))
    }
}

/// The branches of `legs` for `protocol`: [`plan`]'s, and for 2PC in the order of the nodes'
/// names, the order it prepares them in (see [`next_action`]).
pub fn plan_for(legs: &[Leg], protocol: Protocol) -> Result<Vec<BranchPlan>, WalletError> {
    let mut branches = plan(legs)?;
    if protocol == Protocol::TwoPhase {
        branches.sort_by(|a, b| a.node.cmp(&b.node));
    }
    Ok(branches)
}

/// Checks the legs and makes them branches: one per node, in the order a saga runs them (the
/// nodes that pay out first, then those that take in; by name among equals), each with its
/// postings: the node's debits matched with its credits, the rest against its system account.
pub fn plan(legs: &[Leg]) -> Result<Vec<BranchPlan>, WalletError> {
    if legs.len() < 2 || legs.len() > GLOBAL_LEGS_MAX {
        return Err(WalletError::invalid_argument(
            "legs",
            format!(
                "a global transaction has 2 to {GLOBAL_LEGS_MAX} legs, got {}",
                legs.len()
            ),
        ));
    }
    let mut total: i128 = 0;
    let mut by_node: BTreeMap<&str, Vec<&Leg>> = BTreeMap::new();
    for (i, leg) in legs.iter().enumerate() {
        check_node_name(&leg.node, "legs")?;
        if leg.amount == 0 || leg.amount == i64::MIN {
            return Err(WalletError::InvalidAmount {
                amount: Some(leg.amount),
                account_id: Some(leg.account_id),
            });
        }
        if legs[..i]
            .iter()
            .any(|l| l.node == leg.node && l.account_id == leg.account_id)
        {
            return Err(WalletError::invalid_argument(
                "legs",
                format!(
                    "account {} on node {} has two legs",
                    leg.account_id, leg.node
                ),
            ));
        }
        total += i128::from(leg.amount);
        by_node.entry(leg.node.as_str()).or_default().push(leg);
    }
    if total != 0 {
        return Err(WalletError::invalid_argument(
            "legs",
            format!(
                "the legs' amounts must sum to 0 (debits negative, credits positive), got {total}"
            ),
        ));
    }
    let mut branches: Vec<(i128, BranchPlan)> = by_node
        .into_iter()
        .map(|(node, legs)| {
            let net: i128 = legs.iter().map(|l| i128::from(l.amount)).sum();
            (
                net,
                BranchPlan {
                    node: node.to_string(),
                    postings: match_postings(&legs),
                },
            )
        })
        .collect();
    branches.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.node.cmp(&y.node)));
    Ok(branches.into_iter().map(|(_, b)| b).collect())
}

/// A node's legs as postings: debits matched with credits in order (greedily), what remains of
/// either side against the node's system account.
fn match_postings(legs: &[&Leg]) -> Vec<Posting> {
    let mut debits: Vec<(i64, i64)> = legs
        .iter()
        .filter(|l| l.amount < 0)
        .map(|l| (l.account_id, -l.amount))
        .collect();
    let mut credits: Vec<(i64, i64)> = legs
        .iter()
        .filter(|l| l.amount > 0)
        .map(|l| (l.account_id, l.amount))
        .collect();
    let mut postings = Vec::new();
    let (mut d, mut c) = (0, 0);
    while d < debits.len() && c < credits.len() {
        let amount = debits[d].1.min(credits[c].1);
        postings.push(Posting {
            debit_account_id: Some(debits[d].0),
            credit_account_id: Some(credits[c].0),
            amount,
        });
        debits[d].1 -= amount;
        credits[c].1 -= amount;
        if debits[d].1 == 0 {
            d += 1;
        }
        if credits[c].1 == 0 {
            c += 1;
        }
    }
    for &(account, amount) in &debits[d..] {
        if amount > 0 {
            postings.push(Posting {
                debit_account_id: Some(account),
                credit_account_id: None,
                amount,
            });
        }
    }
    for &(account, amount) in &credits[c..] {
        if amount > 0 {
            postings.push(Posting {
                debit_account_id: None,
                credit_account_id: Some(account),
                amount,
            });
        }
    }
    postings
}

/// The participant-side id of posting `k` of branch `branch` (its hold's branch id, or the tail
/// of its idempotency key): the branch itself when it has one posting, else `branch.k`.
pub fn posting_id(branch: &str, k: usize, postings: usize) -> String {
    if postings == 1 {
        branch.to_string()
    } else {
        format!("{branch}.{}", k + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tentative_calls_may_follow_a_step_that_is_not_yet_durable() {
        // Tentative at the participant, undone there by a timeout or presumed abort.
        assert!(undone_if_forgotten(Protocol::Tcc, CallKind::Try));
        assert!(undone_if_forgotten(Protocol::TwoPhase, CallKind::Try));
        // For good once they arrive.
        for kind in [CallKind::Confirm, CallKind::Cancel] {
            for protocol in Protocol::ALL {
                assert!(
                    !undone_if_forgotten(protocol, kind),
                    "{protocol:?} {kind:?}"
                );
            }
        }
        assert!(!undone_if_forgotten(Protocol::Saga, CallKind::Try));
    }

    #[test]
    fn a_gtid_is_printable_ascii_so_that_every_node_can_read_it() {
        assert!(check_gtid_travels(b"order-5512 / eu").is_ok());
        assert!(check_gtid_travels(b"caf\xc3\xa9").is_err());
        assert!(check_gtid_travels(b"\xe2\x82").is_err());
        assert!(check_gtid_travels(b"tab\there").is_err());
    }
    use BranchStatus as B;

    fn leg(node: &str, account_id: i64, amount: i64) -> Leg {
        Leg {
            node: node.into(),
            account_id,
            amount,
        }
    }

    #[test]
    fn a_two_leg_transfer_between_nodes_is_a_debit_branch_then_a_credit_branch() {
        let plan = plan(&[leg("b_node", 7, 500), leg("a_node", 3, -500)]).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].node, "a_node");
        assert_eq!(
            plan[0].postings,
            vec![Posting {
                debit_account_id: Some(3),
                credit_account_id: None,
                amount: 500
            }]
        );
        assert_eq!(
            plan[1].postings,
            vec![Posting {
                debit_account_id: None,
                credit_account_id: Some(7),
                amount: 500
            }]
        );
    }

    #[test]
    fn legs_on_one_node_become_one_posting_between_the_accounts() {
        let plan = plan(&[leg("local", 3, -500), leg("local", 7, 500)]).unwrap();
        assert_eq!(
            plan,
            vec![BranchPlan {
                node: "local".into(),
                postings: vec![Posting {
                    debit_account_id: Some(3),
                    credit_account_id: Some(7),
                    amount: 500
                }],
            }]
        );
    }

    #[test]
    fn only_legs_all_on_this_node_run_as_one_local_transaction() {
        let here = plan(&[
            leg("local", 3, -500),
            leg("local", 7, 400),
            leg("local", 9, 100),
        ]);
        assert!(here_alone(&here.unwrap()));
        let across = plan(&[leg("local", 3, -500), leg("n2", 7, 500)]).unwrap();
        assert!(!here_alone(&across));
        // One branch, but on another node: its calls go there.
        let there = plan(&[leg("n2", 3, -500), leg("n2", 7, 500)]).unwrap();
        assert!(!here_alone(&there));
    }

    #[test]
    fn a_payment_with_a_fee_on_three_nodes_keeps_every_node_balanced() {
        // A customer on a pays a merchant on b and a fee account on c.
        let plan = plan(&[leg("a", 1, -100), leg("b", 2, 97), leg("c", 3, 3)]).unwrap();
        let nodes: Vec<&str> = plan.iter().map(|b| b.node.as_str()).collect();
        assert_eq!(
            nodes,
            ["a", "c", "b"],
            "the paying node first, then by what each takes in"
        );
        for b in &plan {
            assert_eq!(b.postings.len(), 1, "{b:?}");
        }
        // And within one node: a debit split across two credits, the rest to the system account.
        let plan = super::plan(&[leg("a", 1, -100), leg("a", 2, 60), leg("b", 3, 40)]).unwrap();
        assert_eq!(
            plan[0].postings,
            vec![
                Posting {
                    debit_account_id: Some(1),
                    credit_account_id: Some(2),
                    amount: 60
                },
                Posting {
                    debit_account_id: Some(1),
                    credit_account_id: None,
                    amount: 40
                },
            ]
        );
    }

    #[test]
    fn bad_legs_are_refused() {
        assert!(plan(&[leg("a", 1, -5)]).is_err(), "one leg");
        assert!(
            plan(&[leg("a", 1, -5), leg("b", 2, 4)]).is_err(),
            "does not sum to 0"
        );
        assert!(
            plan(&[leg("a", 1, 0), leg("b", 2, 0)]).is_err(),
            "zero amounts"
        );
        assert!(
            plan(&[leg("a", 1, -5), leg("a", 1, 5)]).is_err(),
            "same account twice"
        );
        assert!(
            plan(&[leg("A", 1, -5), leg("b", 2, 5)]).is_err(),
            "bad node name"
        );
        assert!(
            plan(&[leg("a", 1, i64::MIN), leg("b", 2, 1)]).is_err(),
            "no negation"
        );
        let many: Vec<Leg> = (0..=GLOBAL_LEGS_MAX as i64)
            .map(|i| leg("a", i, if i == 0 { -(GLOBAL_LEGS_MAX as i64) } else { 1 }))
            .collect();
        assert!(plan(&many).is_err(), "too many legs");
    }

    #[test]
    fn tcc_tries_every_branch_at_once_2pc_prepares_one_node_after_the_other() {
        let tcc = |b: &[B]| next_action(Protocol::Tcc, Phase::Try, b, false, None);
        let two = |b: &[B]| next_action(Protocol::TwoPhase, Phase::Try, b, false, None);
        assert_eq!(
            tcc(&[B::New, B::New, B::New]),
            Action::Call(CallKind::Try, vec![0, 1, 2])
        );
        assert_eq!(
            two(&[B::New, B::New, B::New]),
            Action::Call(CallKind::Try, vec![0])
        );
        assert_eq!(
            two(&[B::Tried, B::New, B::New]),
            Action::Call(CallKind::Try, vec![1])
        );
        // With a branch here (0): the others in order, then this one with the decision.
        let here = |b: &[B]| next_action(Protocol::TwoPhase, Phase::Try, b, false, Some(0));
        assert_eq!(
            here(&[B::New, B::New, B::New]),
            Action::Call(CallKind::Try, vec![1])
        );
        assert_eq!(
            here(&[B::New, B::Tried, B::New]),
            Action::Call(CallKind::Try, vec![2])
        );
        assert_eq!(
            here(&[B::New, B::Tried, B::Tried]),
            Action::PostLocalAndDecide(0)
        );
    }

    #[test]
    fn a_2pc_plan_is_in_the_order_of_the_nodes_names() {
        let legs = [leg("zeta", 1, -5), leg("alpha", 2, 3), leg("mid", 3, 2)];
        let names = |p: Protocol| -> Vec<String> {
            plan_for(&legs, p)
                .unwrap()
                .into_iter()
                .map(|b| b.node)
                .collect()
        };
        assert_eq!(
            names(Protocol::Saga),
            ["zeta", "mid", "alpha"],
            "the largest payer first"
        );
        assert_eq!(names(Protocol::TwoPhase), ["alpha", "mid", "zeta"]);
    }

    #[test]
    fn tcc_and_2pc_decide_when_all_answered() {
        for p in [Protocol::Tcc, Protocol::TwoPhase] {
            let n = |b: &[B], stop| next_action(p, Phase::Try, b, stop, None);
            assert_eq!(
                n(&[B::Tried, B::New], false),
                Action::Call(CallKind::Try, vec![1])
            );
            assert_eq!(n(&[B::Tried, B::Tried], false), Action::DecideConfirm);
            assert_eq!(n(&[B::Failed, B::New], false), Action::DecideCancel);
            assert_eq!(
                n(&[B::Tried, B::New], true),
                Action::DecideCancel,
                "deadline or coordinator gone"
            );
            assert_eq!(
                n(&[B::Tried, B::Tried], true),
                Action::DecideConfirm,
                "all tried: nothing waits"
            );
        }
    }

    #[test]
    fn two_phase_commit_posts_the_coordinators_own_branch_with_its_decision() {
        let n = |b: &[B]| next_action(Protocol::TwoPhase, Phase::Try, b, false, Some(0));
        assert_eq!(
            n(&[B::New, B::New]),
            Action::Call(CallKind::Try, vec![1]),
            "only the others are prepared"
        );
        assert_eq!(n(&[B::New, B::Tried]), Action::PostLocalAndDecide(0));
        assert_eq!(
            n(&[B::Failed, B::Tried]),
            Action::DecideCancel,
            "refused with the decision: cancel"
        );
        assert_eq!(
            next_action(
                Protocol::TwoPhase,
                Phase::Try,
                &[B::New, B::New],
                true,
                Some(0)
            ),
            Action::DecideCancel,
            "the deadline passed before every other branch was prepared"
        );
    }

    #[test]
    fn a_saga_runs_one_branch_at_a_time_and_goes_on_after_its_coordinator_died() {
        let n = |b: &[B], stop| next_action(Protocol::Saga, Phase::Try, b, stop, None);
        assert_eq!(
            n(&[B::New, B::New], false),
            Action::Call(CallKind::Try, vec![0])
        );
        assert_eq!(
            n(&[B::Tried, B::New], false),
            Action::Call(CallKind::Try, vec![1])
        );
        assert!(
            !stop_trying(Protocol::Saga, false, true),
            "recovery resumes a saga forwards"
        );
        assert!(
            stop_trying(Protocol::Tcc, false, true) && stop_trying(Protocol::TwoPhase, false, true)
        );
        assert!(
            stop_trying(Protocol::Saga, true, false),
            "until its deadline"
        );
        assert_eq!(n(&[B::Tried, B::Failed], false), Action::DecideCancel);
        assert_eq!(n(&[B::Tried, B::Tried], false), Action::DecideConfirm);
        assert_eq!(
            next_action(
                Protocol::Saga,
                Phase::Confirm,
                &[B::Tried, B::Tried],
                false,
                None
            ),
            Action::FinishConfirmed
        );
    }

    #[test]
    fn confirming_goes_to_every_tried_branch_and_a_refusal_needs_an_operator() {
        for p in [Protocol::Tcc, Protocol::TwoPhase] {
            let n = |b: &[B]| next_action(p, Phase::Confirm, b, true, None);
            assert_eq!(
                n(&[B::Tried, B::Tried]),
                Action::Call(CallKind::Confirm, vec![0, 1])
            );
            assert_eq!(
                n(&[B::Confirmed, B::Tried]),
                Action::Call(CallKind::Confirm, vec![1])
            );
            assert_eq!(n(&[B::Confirmed, B::Confirmed]), Action::FinishConfirmed);
            assert_eq!(n(&[B::Confirmed, B::Refused]), Action::Stuck(1));
            // The others follow the decision before the global transaction is stuck.
            assert_eq!(
                n(&[B::Refused, B::Tried]),
                Action::Call(CallKind::Confirm, vec![1])
            );
            assert_eq!(
                n(&[B::Cancelled, B::New, B::Confirmed]),
                Action::Call(CallKind::Confirm, vec![1])
            );
            assert_eq!(n(&[B::Refused, B::Confirmed]), Action::Stuck(0));
        }
    }

    #[test]
    fn a_refused_cancel_leaves_no_other_branch_reserved_or_prepared() {
        for p in [Protocol::Tcc, Protocol::TwoPhase] {
            let n = |b: &[B]| next_action(p, Phase::Cancel, b, true, None);
            assert_eq!(
                n(&[B::Confirmed, B::Tried]),
                Action::Call(CallKind::Cancel, vec![1])
            );
            assert_eq!(
                n(&[B::Refused, B::Failed, B::New]),
                Action::Call(CallKind::Cancel, vec![1, 2])
            );
            assert_eq!(n(&[B::Confirmed, B::Cancelled]), Action::Stuck(0));
            assert_eq!(n(&[B::Cancelled, B::Refused]), Action::Stuck(1));
        }
        let saga = |b: &[B]| next_action(Protocol::Saga, Phase::Cancel, b, true, None);
        assert_eq!(
            saga(&[B::Tried, B::Refused]),
            Action::Stuck(1),
            "a saga stops at a refused compensation"
        );
    }

    #[test]
    fn cancelling_clears_whatever_a_lost_answer_may_have_left() {
        let tcc = |b: &[B]| next_action(Protocol::Tcc, Phase::Cancel, b, true, None);
        assert_eq!(
            tcc(&[B::New, B::Tried]),
            Action::Call(CallKind::Cancel, vec![0, 1])
        );
        assert_eq!(
            tcc(&[B::Failed, B::Cancelled]),
            Action::Call(CallKind::Cancel, vec![0])
        );
        assert_eq!(tcc(&[B::Cancelled, B::Cancelled]), Action::FinishCancelled);
        let two = |b: &[B]| next_action(Protocol::TwoPhase, Phase::Cancel, b, true, None);
        assert_eq!(
            two(&[B::Failed, B::Tried]),
            Action::Call(CallKind::Cancel, vec![0, 1]),
            "roll back whatever is prepared"
        );
        assert_eq!(
            two(&[B::Cancelled, B::New]),
            Action::Call(CallKind::Cancel, vec![1])
        );
        let saga = |b: &[B]| next_action(Protocol::Saga, Phase::Cancel, b, true, None);
        assert_eq!(
            saga(&[B::Tried, B::Tried, B::Failed]),
            Action::Forget(vec![2])
        );
        assert_eq!(
            saga(&[B::Tried, B::New, B::Cancelled]),
            Action::Call(CallKind::Cancel, vec![1]),
            "last first"
        );
        assert_eq!(
            saga(&[B::Tried, B::Cancelled]),
            Action::Call(CallKind::Cancel, vec![0])
        );
        assert_eq!(
            saga(&[B::Tried, B::Refused]),
            Action::Stuck(1),
            "a compensation refused: an operator"
        );
        assert_eq!(saga(&[B::Cancelled, B::Cancelled]), Action::FinishCancelled);
    }

    #[test]
    fn answers_move_branches_and_only_wallet_rejections_are_final() {
        assert_eq!(answer_to_error("WA008"), Answer::Refused);
        for s in [
            "08006", "57P01", "40001", "40P01", "WA025", "XX000", "42883",
        ] {
            assert_eq!(answer_to_error(s), Answer::Lost, "{s}");
        }
        use CallKind as K;
        assert_eq!(
            after_answer(Protocol::Tcc, K::Try, Answer::Lost),
            Some(B::Failed)
        );
        assert_eq!(
            after_answer(Protocol::Saga, K::Try, Answer::Lost),
            None,
            "a saga step is repeated"
        );
        assert_eq!(
            after_answer(Protocol::TwoPhase, K::Confirm, Answer::Lost),
            None,
            "a decided confirm is repeated"
        );
        assert_eq!(
            after_answer(Protocol::Saga, K::Cancel, Answer::Refused),
            Some(B::Refused)
        );
        assert_eq!(
            after_answer(Protocol::Tcc, K::Cancel, Answer::Done),
            Some(B::Cancelled)
        );
    }

    #[test]
    fn names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
        }
        for (s, n) in BranchStatus::NAMES {
            assert_eq!(BranchStatus::parse(n), Some(s));
            assert_eq!(s.as_str(), n);
        }
        assert_eq!(Phase::parse("confirm"), Some(Phase::Confirm));
        assert_eq!(posting_id("b1", 0, 1), "b1");
        assert_eq!(posting_id("b1", 1, 3), "b1.2");
        assert!(check_node_name("eu_2", "n").is_ok());
        assert!(check_node_name("2eu", "n").is_err());
    }
}
