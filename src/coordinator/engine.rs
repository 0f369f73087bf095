//! The engine that carries out global transactions: one durable step after another, for any
//! number of them at once (a caller's one, or recovery's list), whatever their protocol.
//!
//! A round is one local transaction (a *step*) and then, if the step left calls for other nodes,
//! one round trip to each of those nodes, all at once. In the step, for every global transaction
//! of the set, the engine records the answers of the previous round's calls, asks the rules
//! (`wallet_core::protocol`) what comes next, and does all that needs no other node: decisions,
//! outcomes, and the calls to branches on this very node, which run in the step itself (so a
//! local branch's effect and its record commit together). What the rules want of other nodes is
//! sent once the step has committed: the ledger is durable before any participant hears of it,
//! and a decision before any participant hears of it.
//!
//! Each step runs as the extension's owner (the caller of `transfer_across` only needs EXECUTE on
//! it) with search_path pinned, at READ COMMITTED; the caller's user id is back before the step
//! commits, so no transaction ever starts or ends as the owner.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::{self, Oid};
use pgrx::{IntoDatum, PgTryBuilder};
use wallet_core::error::WalletError;
use wallet_core::locks::LockClass;
use wallet_core::protocol::{self, Action, Answer, BranchStatus, CallKind, Leg, Phase, Protocol};
use wallet_core::text::Text;

use super::calls::*;
use super::ledger::*;
use super::libpq::CallError;
use super::nodes;
use super::participant::PostItem;
use super::steps::*;
use crate::commands::{query, text_datum};
use crate::error::WalletResult;
use crate::ledger_row::LedgerRow;
use crate::locks;
use crate::spi::{Connection, Kept};

const T: Oid = pg_sys::TEXTOID;
const I4: Oid = pg_sys::INT4OID;

query!(LEDGER_GID, 45, "ledger_gid.sql", [T], true);
query!(LEDGER_NODES, 46, "ledger_nodes.sql", [], false);
query!(LEDGER_CANDIDATES, 42, "ledger_candidates.sql", [I4], true);
query!(LEDGER_UNFINISHED, 43, "ledger_unfinished.sql", [], true);

pub const KEPT: &[&Kept] = &[
    &LEDGER_CANDIDATES,
    &LEDGER_UNFINISHED,
    &LEDGER_GID,
    &LEDGER_NODES,
];

/// Most rounds one drive takes before it leaves what is left to recovery. A global transaction
/// needs a handful (a saga one per branch and per compensation).
const ROUNDS_MAX: usize = 4 * wallet_core::limits::GLOBAL_LEGS_MAX + 8;

/// The name of this database among the nodes.
pub const LOCAL: &str = protocol::LOCAL_NODE;

/// A global transaction as asked for, checked.
pub struct Request {
    pub gtid: Vec<u8>,
    pub protocol: Protocol,
    pub legs: Vec<Leg>,
    pub timeout_micros: i64,
}

/// How a drive left a global transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    /// Decided to confirm; a participant still has to hear it (recovery will tell it).
    ConfirmedPending,
    /// Cancelled (or decided so, `finished` false while a participant still has to hear it),
    /// for this reason.
    Cancelled {
        sqlstate: String,
        message: String,
        finished: bool,
    },
    /// A participant refused a decided step for good: an operator is needed.
    Stuck {
        sqlstate: String,
        message: String,
    },
    /// Still trying (a saga whose node does not answer): recovery goes on with it.
    Pending,
    /// Not driven: another session drives it.
    Busy,
    /// Not driven: one of a batch whose session is driving it.
    InBatch,
    /// Not driven: another session has been driving it for longer than wallet.node_timeout.
    DrivenElsewhere,
}

// ---- fault injection ---------------------------------------------------------------------------

/// The fault asked for at `point` by the superuser-only setting wallet.fault (`point:error`, or
/// `point:kill`; for tests): `error` raises an ERROR here, as a coordinator failing between two
/// steps would, leaving the ledger as committed; `kill` ends this backend with SIGKILL, which
/// Postgres takes for a crash (every backend is reset and the server recovers).
pub fn fault(point: &str) -> WalletResult<()> {
    let setting = crate::settings::FAULT.get();
    let Some(setting) = setting.as_ref().map(|c| c.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    let (at, action) = setting
        .split_once(':')
        .unwrap_or((setting.as_str(), "error"));
    if at != point {
        return Ok(());
    }
    if action == "kill" {
        // SAFETY: sends SIGKILL to this process: a crash, on purpose.
        unsafe { libc_kill(std::process::id() as i32, 9) };
    }
    Err(WalletError::Remote {
        sqlstate: "57P01".into(),
        message: format!("wallet.fault: the coordinator stopped at {point}"),
    })
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Whether the answers to calls of `kind` are to be lost (wallet.fault = lose_answers:try,
/// lose_answers:confirm, lose_answers:cancel, or lose_answers for all): the calls are sent and
/// done, their answers dropped, as when a connection breaks after sending.
pub(super) fn losing_answers(kind: CallKind) -> bool {
    let setting = crate::settings::FAULT.get();
    let Some(setting) = setting.as_ref().map(|c| c.to_string_lossy().into_owned()) else {
        return false;
    };
    let (point, which) = setting.split_once(':').unwrap_or((setting.as_str(), "all"));
    point == "lose_answers"
        && match kind {
            CallKind::Try => which == "all" || which == "try",
            CallKind::Confirm => which == "all" || which == "confirm",
            CallKind::Cancel => which == "all" || which == "cancel",
        }
}

// ---- driving -----------------------------------------------------------------------------------

/// The index of the branch on this node, if any.
fn local_branch(g: &Gtx) -> Option<usize> {
    g.branches.iter().position(|b| b.node == LOCAL)
}

/// Whether a branch that answered in `now` posts in another currency than the nodes before it.
fn currency_mismatch(first: &Option<Vec<u8>>, now: &Option<Vec<u8>>) -> bool {
    matches!((first, now), (Some(first), Some(now)) if first != now)
}

/// Records an answer, and what follows from it for the global transaction.
fn record(g: &mut Gtx, a: &Answered) {
    let before = g.branches[a.branch].status;
    if a.kind == CallKind::Try && a.answer == Answer::Done {
        // Every node must post in the currency of the first to answer.
        if currency_mismatch(&g.currency, &a.currency) {
            let first = Text(g.currency.clone().unwrap_or_default());
            let now = Text(a.currency.clone().unwrap_or_default());
            let error = (
                "WA005".to_string(),
                format!(
                    "currency mismatch: node {} posts {} in {now}, another node of global transaction {} in {first}",
                    g.branches[a.branch].node,
                    g.legs.iter().filter(|l| l.amount > 0).map(|l| l.amount).sum::<i64>(),
                    Text(g.gtid.clone())
                ),
            );
            // It did take effect: tried, and the global transaction is cancelled.
            set_branch(g, a.branch, BranchStatus::Tried, Some(&error));
            note(g, None, Some(&error));
            if g.phase == Phase::Try {
                decide(g, Phase::Cancel, Some(error));
            }
            return;
        }
        note(g, a.currency.as_deref(), None);
    }
    let after = protocol::after_answer(g.protocol, a.kind, a.answer).unwrap_or(before);
    set_branch(g, a.branch, after, a.error.as_ref());
    if a.kind == CallKind::Try && after == BranchStatus::Failed {
        note(g, None, a.error.as_ref());
    }
}

/// Advances one global transaction as far as it goes without another node; returns the calls it
/// wants of other nodes.
/// Advances one global transaction as far as it goes without a call; the calls it wants are
/// left in `out` (for other nodes) and `locals` (for this node, run by the step together with
/// the other global transactions' of the same kind).
fn advance(
    conn: &Connection,
    g: &mut Gtx,
    recovering: bool,
    coordinator: &str,
    out: &mut Vec<(String, Remote)>,
    locals: &mut Vec<LocalCall>,
    index: usize,
    slot: usize,
) -> WalletResult<()> {
    // Ledger-only actions and this node's own calls, a bounded number of times.
    for _ in 0..ROUNDS_MAX {
        if g.finished || g.outcome.as_deref() == Some("stuck") {
            return Ok(());
        }
        // The deadline as of now, not as of the step's start: this node's calls in the step can
        // take a while (lock waits), and a decision to confirm after the deadline would reach
        // holds that expire before their confirm.
        g.check_deadline();
        let statuses: Vec<BranchStatus> = g.branches.iter().map(|b| b.status).collect();
        let stop = protocol::stop_trying(g.protocol, g.past_deadline, recovering);
        match protocol::next_action(g.protocol, g.phase, &statuses, stop, local_branch(g)) {
            Action::DecideConfirm => decide(g, Phase::Confirm, None),
            Action::DecideCancel => {
                let reason = g
                    .error
                    .clone()
                    .or_else(|| Some(cancel_reason(g, recovering)));
                decide(g, Phase::Cancel, reason);
            }
            Action::PostLocalAndDecide(b) => post_local_and_decide(conn, g, b, index)?,
            Action::FinishConfirmed => return Ok(finish(g, "confirmed", recovering, None)),
            Action::FinishCancelled => return Ok(finish(g, "cancelled", recovering, None)),
            Action::Stuck(b) => {
                let error = Some(stuck_error(g, b));
                return Ok(finish(g, "stuck", recovering, error));
            }
            Action::Forget(list) => {
                for b in list {
                    set_branch(g, b, BranchStatus::Cancelled, None);
                }
            }
            Action::Call(kind, list) => {
                let (local, remote): (Vec<usize>, Vec<usize>) =
                    list.into_iter().partition(|&b| g.branches[b].node == LOCAL);
                if let Some(&b) = local.first() {
                    // This node's branch first (the rules give at most one), in the step.
                    locals.push(LocalCall {
                        slot,
                        branch: b,
                        kind,
                        remote,
                    });
                    return Ok(());
                }
                push_remote(g, &remote, kind, coordinator, index, out);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Why a global transaction is cancelled when no branch gave a reason.
fn cancel_reason(g: &Gtx, recovering: bool) -> (String, String) {
    let gtid = Text(g.gtid.clone());
    if recovering && g.protocol != Protocol::Saga {
        ("WA021".into(), format!("global transaction {gtid} was cancelled by recovery: its coordinator stopped before deciding"))
    } else {
        ("WA021".into(), format!("global transaction {gtid} passed its decision deadline before every branch was tried"))
    }
}

/// 2PC's branch on this node, posted in the step that decides: the posting stays only if it is
/// the one that confirms (a refusal, or a currency other than the nodes', decides cancel, and a
/// 2PC cancel of this node's branch has nothing to undo).
fn post_local_and_decide(
    conn: &Connection,
    g: &mut Gtx,
    b: usize,
    index: usize,
) -> WalletResult<()> {
    let currency = g.currency.clone();
    let answer = subtransaction(
        || call_local(conn, g, b, CallKind::Try),
        |r| matches!(r, Ok((Answer::Done, now, _)) if !currency_mismatch(&currency, now)),
    )?;
    let answered = answered(
        &Wanted {
            gtx: index,
            branch: b,
            kind: CallKind::Try,
        },
        answer,
    );
    record(g, &answered);
    if g.branches[b].status == BranchStatus::Tried && g.phase == Phase::Try {
        // Posted with the decision: confirmed at the same commit.
        set_branch(g, b, BranchStatus::Confirmed, None);
        decide(g, Phase::Confirm, None);
    } else if g.phase == Phase::Try {
        let reason = g.error.clone();
        decide(g, Phase::Cancel, reason);
    }
    Ok(())
}

/// A branch refused for good: the participant's own SQLSTATE and message, and what an operator
/// must do.
fn stuck_error(g: &Gtx, b: usize) -> (String, String) {
    let (sqlstate, why) = g.branches[b]
        .error
        .clone()
        .unwrap_or_else(|| ("WA025".into(), "refused".into()));
    (
        sqlstate,
        format!(
            "the {} of branch {} on node {} was refused for good ({why}); settle that, then SELECT wallet.resume_global_transaction(gtid)",
            if g.phase == Phase::Confirm { "confirm" } else { "compensation" },
            b + 1,
            g.branches[b].node,
        ),
    )
}

fn push_remote(
    g: &Gtx,
    branches: &[usize],
    kind: CallKind,
    coordinator: &str,
    index: usize,
    out: &mut Vec<(String, Remote)>,
) {
    for &b in branches {
        let mut r = remote_commands(g, b, kind, coordinator);
        r.wanted.gtx = index;
        out.push((g.branches[b].node.clone(), r));
    }
}

/// One step's work on the global transactions loaded for it (`gtxs`, at `indexes` of the
/// drive): each advanced as far as it goes; this node's calls of all of them run together, one
/// participant call per kind, and whoever they moved on is advanced again; the calls for other
/// nodes are returned.
fn work(
    conn: &Connection,
    gtxs: &mut [Gtx],
    indexes: &[usize],
    recovering: bool,
    coordinator: &str,
    lost_rounds: &[u32],
) -> WalletResult<Vec<(String, Remote)>> {
    let mut remotes = Vec::new();
    let mut locals = Vec::new();
    let mut todo: Vec<usize> = (0..gtxs.len()).collect();
    for _ in 0..ROUNDS_MAX {
        for &slot in &todo {
            let index = indexes[slot];
            // Calls to nodes that did not answer twice are left to recovery; what the ledger
            // alone decides is always done.
            let called_before = remotes.len();
            advance(
                conn,
                &mut gtxs[slot],
                recovering,
                coordinator,
                &mut remotes,
                &mut locals,
                index,
                slot,
            )?;
            if lost_rounds[index] >= 2 {
                remotes.truncate(called_before);
            }
        }
        if locals.is_empty() {
            break;
        }
        let answers = call_locals(conn, gtxs, &locals)?;
        todo.clear();
        for (call, answer) in std::mem::take(&mut locals).into_iter().zip(answers) {
            let g = &mut gtxs[call.slot];
            let (before, phase) = (g.branches[call.branch].status, g.phase);
            let a = answered(
                &Wanted {
                    gtx: indexes[call.slot],
                    branch: call.branch,
                    kind: call.kind,
                },
                answer,
            );
            record(g, &a);
            if g.branches[call.branch].status != before || g.phase != phase {
                todo.push(call.slot);
            } else {
                // Not answered now (it is repeated later): the other nodes' part of the call goes.
                push_remote(
                    g,
                    &call.remote,
                    call.kind,
                    coordinator,
                    indexes[call.slot],
                    &mut remotes,
                );
            }
        }
    }
    Ok(remotes)
}

/// Drives the global transactions `gtids` (this session holds their claims) as far as they go:
/// until each is finished, stuck, or waits for a node that does not answer. Those in `recorded`
/// (a batch's, as its recording step wrote them) are not read again.
fn drive(
    owner: Oid,
    gtids: &[Vec<u8>],
    recovering: bool,
    recorded: std::collections::HashMap<Vec<u8>, Gtx>,
) -> WalletResult<Vec<Option<Gtx>>> {
    Ok(drive_from(owner, gtids, recovering, recorded, None)?
        .expect("a drive without a recording step is never answered by it"))
}

/// What a drive's first step runs before it reads the ledger (a single call's recording):
/// Some(outcome) answers the call at once (the step commits, nothing is driven).
type Recording<'a> = &'a mut dyn FnMut(&Connection) -> WalletResult<Option<Outcome>>;

/// [`drive`], its first step starting with `recording` when there is one; Err(outcome): what the
/// recording answered instead.
fn drive_from(
    owner: Oid,
    gtids: &[Vec<u8>],
    recovering: bool,
    recorded: std::collections::HashMap<Vec<u8>, Gtx>,
    mut recording: Option<Recording>,
) -> WalletResult<Result<Vec<Option<Gtx>>, Outcome>> {
    let n = gtids.len();
    /// Drops what a step left to a next one when the drive ends without it.
    struct Carried;
    impl Drop for Carried {
        fn drop(&mut self) {
            super::ledger::drop_carried();
        }
    }
    let _carried = Carried;
    let mut recorded = recorded;
    let mut state: Vec<Option<Gtx>> = gtids.iter().map(|g| recorded.remove(g)).collect();
    // The global transactions this round works on: all of them first, then those whose calls
    // the last round made (the others finished, or wait for recovery).
    let mut active: Vec<usize> = (0..n).collect();
    let mut answers: Vec<Vec<Answered>> = vec![Vec::new(); n];
    let mut lost_rounds = vec![0u32; n];
    let mut coordinator: Option<String> = None;
    for round in 0..ROUNDS_MAX {
        if active.is_empty() {
            break;
        }
        let phases_before: Vec<Option<Phase>> = active
            .iter()
            .map(|&i| state[i].as_ref().map(|g| g.phase))
            .collect();
        // The first round reads the ledger (and locks the rows), but for a batch's new global
        // transactions, which its recording step returned as it wrote them; later rounds go on
        // from what the drive holds in memory. The claims (a batch's lock for its own) keep
        // every other driver away meanwhile.
        let ids: Vec<Vec<u8>> = active.iter().map(|&i| gtids[i].clone()).collect();
        let known: Vec<Option<Gtx>> = active.iter().map(|&i| state[i].clone()).collect();
        let first = if round == 0 { recording.take() } else { None };
        let body = |conn: &Connection| {
            if let Some(recording) = first {
                if let Some(answer) = recording(conn)? {
                    return Ok(Err(answer));
                }
            }
            let mut gtxs = Vec::with_capacity(active.len());
            let mut indexes = Vec::with_capacity(active.len());
            let mut present = Vec::with_capacity(active.len());
            let loaded: Vec<Option<Gtx>> = if round == 0 {
                let unread: Vec<Vec<u8>> = ids
                    .iter()
                    .zip(&known)
                    .filter(|(_, k)| k.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                let mut read = if unread.is_empty() {
                    Vec::new()
                } else {
                    load_many(conn, &unread)?
                }
                .into_iter();
                known
                    .iter()
                    .map(|k| k.clone().or_else(|| read.next().flatten()))
                    .collect()
            } else {
                known.clone()
            };
            for (&i, g) in active.iter().zip(loaded) {
                present.push(g.is_some());
                if let Some(mut g) = g {
                    g.check_deadline();
                    for a in &answers[i] {
                        record(&mut g, a);
                    }
                    gtxs.push(g);
                    indexes.push(i);
                }
            }
            // This coordinator's id names 2PC's prepared transactions, and nothing else.
            let coordinator = match &coordinator {
                Some(id) => id.clone(),
                None if gtxs.iter().any(|g| g.protocol == Protocol::TwoPhase) => {
                    coordinator_id(conn)
                }
                None => String::new(),
            };
            let remotes = work(
                conn,
                &mut gtxs,
                &indexes,
                recovering,
                &coordinator,
                &lost_rounds,
            )?;
            // A step that only learnt what this node's own calls did (its first, as a rule:
            // this node's tries or postings done, the others' calls to come) leaves that to the
            // step after the calls, which writes it with their answers: a ledger write per row
            // fewer. Its commit still makes those calls durable and ends their locks. A crash in
            // between leaves the ledger as if their answers were lost, which the rules handle
            // (the calls are repeated or undone, and keyed: once).
            if !recovering && !remotes.is_empty() && super::ledger::replayable() {
                super::ledger::defer();
            }
            // The calls act on what this step commits: durable before they are sent, unless
            // each of them undoes itself at its node should this step be lost (a TC/C try, a
            // 2PC prepare: the next step, the decision, is durable, and flushes this one too).
            let protocols: std::collections::HashMap<usize, Protocol> = indexes
                .iter()
                .zip(&gtxs)
                .map(|(&i, g)| (i, g.protocol))
                .collect();
            if remotes.iter().any(|(_, r)| {
                !protocols
                    .get(&r.wanted.gtx)
                    .is_some_and(|&p| protocol::undone_if_forgotten(p, r.wanted.kind))
            }) {
                commit_durably();
            }
            let mut gtxs = gtxs.into_iter();
            let now: Vec<Option<Gtx>> = present
                .into_iter()
                .map(|p| if p { gtxs.next() } else { None })
                .collect();
            Ok(Ok((coordinator, remotes, now)))
        };
        // Recovery must not stop at one global transaction's ERROR (see `guarded`).
        let stepped = if recovering {
            step(owner, |conn| guarded(|| body(conn)))?
        } else {
            step(owner, body)?
        };
        let (id, remotes, now) = match stepped {
            Ok(went) => went,
            Err(answer) => return Ok(Err(answer)),
        };
        coordinator = (!id.is_empty()).then_some(id);
        let decided = now.iter().zip(&phases_before).any(|(g, before)| {
            g.as_ref()
                .is_some_and(|g| g.phase != Phase::Try && *before != Some(g.phase))
        });
        for (&i, g) in active.iter().zip(now) {
            state[i] = g;
        }
        if round == 0 && !recovering {
            fault("after_record")?;
        }
        if decided {
            fault("after_decide")?;
        }
        if remotes.is_empty() {
            break;
        }
        let mut next: Vec<usize> = remotes.iter().map(|(_, r)| r.wanted.gtx).collect();
        next.sort_unstable();
        next.dedup();
        let mut pending = call_remote(remotes);
        faults_after_calls(&mut pending)?;
        answers = vec![Vec::new(); n];
        for a in pending {
            answers[a.gtx].push(a);
        }
        for &i in &next {
            if answers[i].iter().any(|a| a.answer == Answer::Lost) {
                lost_rounds[i] += 1;
            }
        }
        active = next;
    }
    Ok(Ok(state))
}

/// The test faults (`wallet.fault`) of a round's calls, once they answered: a fault point per
/// kind of call that reached its node, and answers of a kind set to be lost.
fn faults_after_calls(pending: &mut [Answered]) -> WalletResult<()> {
    for kind in [CallKind::Try, CallKind::Confirm, CallKind::Cancel] {
        if pending
            .iter()
            .any(|a| a.kind == kind && a.answer != Answer::Lost)
        {
            fault(match kind {
                CallKind::Try => "after_remote_try",
                CallKind::Confirm => "after_remote_confirm",
                CallKind::Cancel => "after_remote_cancel",
            })?;
        }
    }
    for a in pending.iter_mut().filter(|a| losing_answers(a.kind)) {
        a.answer = Answer::Lost;
        a.currency = None;
        a.error = Some(("08006".into(), "wallet.fault: the answer was lost".into()));
    }
    Ok(())
}

fn outcome_of(g: &Gtx) -> Outcome {
    let (sqlstate, message) = g
        .error
        .clone()
        .unwrap_or_else(|| ("WA021".into(), "cancelled".into()));
    match (g.outcome.as_deref(), g.phase) {
        (Some("confirmed"), _) => Outcome::Confirmed,
        (Some("stuck"), _) => Outcome::Stuck { sqlstate, message },
        (Some(_), _) => Outcome::Cancelled {
            sqlstate,
            message,
            finished: true,
        },
        (None, Phase::Confirm) => Outcome::ConfirmedPending,
        (None, Phase::Try) => Outcome::Pending,
        (None, Phase::Cancel) => Outcome::Cancelled {
            sqlstate,
            message,
            finished: false,
        },
    }
}

/// Runs a global transaction to its end (or as far as its nodes let it): records it (or finds
/// it, for a repeat with the same gtid) in the first step of its drive, which also tries this
/// node's branch.
pub fn run(owner: Oid, request: &Request) -> WalletResult<Outcome> {
    let plan = protocol::plan_for(&request.legs, request.protocol)?;
    let here_alone = protocol::here_alone(&plan);
    if request.protocol == Protocol::TwoPhase && !here_alone {
        step(owner, |_| check_prepared_transactions(&plan))?;
    }
    // Whether this call holds the claim. Every way out of the call (its outcome, an answer
    // without driving, a refusal, a Postgres ERROR such as a lock wait that timed out) releases
    // it below, or this session would keep the gtid from recovery until it ends (a session lock
    // outlives the transaction).
    let holding = AssertUnwindSafe(std::cell::Cell::new(false));
    let release = || {
        if holding.replace(false) {
            let _ = locks::unlock_session(LockClass::GlobalTransaction, &request.gtid);
        }
    };
    // The recording is the first step of the drive: the global transaction recorded (or found,
    // for a repeat) and this node's branch tried in one commit.
    let mut recording = |conn: &Connection| -> WalletResult<Option<Outcome>> {
        for b in &plan {
            if b.node != LOCAL && !nodes::exists(&b.node) {
                return Err(WalletError::UnknownNode {
                    node: Text::from(b.node.as_str()),
                });
            }
        }
        // The claim first: a repeat waits for a session still driving the same gtid, up to
        // wallet.node_timeout, and then answers `pending` (it is driven elsewhere).
        if !claim_within(&request.gtid, nodes::call_timeout())? {
            return Ok(Some(Outcome::DrivenElsewhere));
        }
        holding.set(true);
        if here_alone {
            if let Some(outcome) = run_here(conn, request, &plan[0])? {
                return Ok(Some(outcome));
            }
        }
        match load(conn, &request.gtid)? {
            Some(existing) => {
                let same = existing.protocol == request.protocol && existing.legs == request.legs;
                if !same {
                    return Err(WalletError::GtidReused {
                        gtid: Text(request.gtid.clone()),
                        existing: describe(&existing.protocol, &existing.legs),
                    });
                }
                if existing.finished {
                    return Ok(Some(outcome_of(&existing)));
                }
                // One of a batch: its outcome when finished; while the batch's session is
                // at work, `pending` (never a wait here: this step holds the ledger row the
                // batch's next step needs); once that session is gone, driven here.
                if let Some(batch) = &existing.batch {
                    if !locks::lock_for_session(LockClass::Batch, batch, false)? {
                        return Ok(Some(Outcome::InBatch));
                    }
                    locks::unlock_session(LockClass::Batch, batch)?;
                }
            }
            None => insert(conn, request, &plan)?,
        }
        Ok(None)
    };
    let driven = PgTryBuilder::new(AssertUnwindSafe(|| {
        drive_from(
            owner,
            std::slice::from_ref(&request.gtid),
            false,
            Default::default(),
            Some(&mut recording),
        )
    }))
    .catch_others(|e| {
        // An ERROR of Postgres (a cancel, a lost lock wait): give the transaction to recovery.
        release();
        e.rethrow()
    })
    .execute();
    release();
    Ok(match driven? {
        Err(answer) => answer,
        Ok(state) => state
            .first()
            .cloned()
            .flatten()
            .map_or(Outcome::Busy, |g| outcome_of(&g)),
    })
}

/// A new global transaction whose every leg is on this node (`protocol::here_alone`), whatever
/// its protocol, in the recording step itself: recorded as confirmed, its branch posted, and on a
/// refusal recorded as cancelled, all in one commit. None: the gtid is recorded already (the
/// caller goes the way of a repeat). A Postgres ERROR rolls all of it back: nothing is recorded.
///
/// One posting (two legs) is a single transfer whose event carries `{"gtid": ...}` as its data,
/// its link to the ledger; it needs no idempotency key, since the ledger row inserted in the same
/// transaction already makes it happen once (and a key's look-up, lock and index entry cost a
/// fifth of the call). Its row is written directly (`ledger_row.rs`) when the table allows:
/// the gtid looked up first, the transfer posted, then the row inserted with the currency it
/// moved. More postings are posted as 2PC's and a saga's are: keyed transfers, one linked chain,
/// after the row is recorded by SQL.
fn run_here(
    conn: &Connection,
    request: &Request,
    branch: &protocol::BranchPlan,
) -> WalletResult<Option<Outcome>> {
    let single = match branch.postings.as_slice() {
        [protocol::Posting {
            debit_account_id: Some(debit_account_id),
            credit_account_id: Some(credit_account_id),
            amount,
        }] => Some(crate::commands::TransferCall {
            request: wallet_core::transfer::TransferRequest {
                debit_account_id: *debit_account_id,
                credit_account_id: *credit_account_id,
                amount: *amount,
            },
            idempotency_key: None,
            metadata: pgrx::JsonB(serde_json::json!({
                "gtid": String::from_utf8_lossy(&request.gtid)
            }))
            .into_datum(),
        }),
        _ => None,
    };
    let Some(call) = single else {
        if !insert_here(conn, request) {
            return Ok(None);
        }
        return Ok(Some(here_outcome(
            conn,
            request,
            post_chain(conn, &request.gtid, branch)?,
        )));
    };
    let direct = match LedgerRow::open()? {
        Some(row) if row.recorded(crate::commands::text_datum(&request.gtid)) => return Ok(None),
        Some(row) => Some(row),
        None if !insert_here(conn, request) => return Ok(None),
        None => None,
    };
    let refusal = match crate::commands::transfer_in(conn, &call) {
        Ok((_, currency)) => {
            if let Some(row) = &direct {
                let currency = currency.expect("an unkeyed transfer moved its currency");
                if !row.insert(&here_row(request, currency.as_bytes())) {
                    // Recorded meanwhile by a writer that takes no claim (a batch): the ERROR
                    // takes back the transfer and this row; a retry answers as a repeat.
                    return Err(call.request.concurrent_change());
                }
            }
            None
        }
        // Retryable, not a refusal: the step ends and nothing is recorded.
        Err(e @ WalletError::ConcurrentChange { .. }) => return Err(e),
        Err(e) => Some((e.sqlstate().to_string(), e.to_string())),
    };
    if refusal.is_some() && direct.is_some() && !insert_here(conn, request) {
        return Err(call.request.concurrent_change());
    }
    Ok(Some(here_outcome(conn, request, refusal)))
}

/// The outcome of `run_here`'s posting: confirmed, or on a refusal the cancel recorded.
fn here_outcome(
    conn: &Connection,
    request: &Request,
    refusal: Option<(String, String)>,
) -> Outcome {
    match refusal {
        None => Outcome::Confirmed,
        Some(refusal) => {
            cancel_here(conn, &request.gtid, &refusal);
            let (sqlstate, message) = refusal;
            Outcome::Cancelled {
                sqlstate,
                message,
                finished: true,
            }
        }
    }
}

/// The postings of `run_here`'s branch as one linked chain of keyed transfers; its refusal, if
/// any.
fn post_chain(
    conn: &Connection,
    gtid: &[u8],
    branch: &protocol::BranchPlan,
) -> WalletResult<Option<(String, String)>> {
    let hash = gtid_hash(gtid);
    let n = branch.postings.len();
    let keys: Vec<Vec<u8>> = (0..n).map(|k| posting_key(&hash, 1, k)).collect();
    let items: Vec<PostItem> = branch
        .postings
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(k, (p, key))| PostItem {
            key,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount: p.amount,
            linked: k + 1 < n,
        })
        .collect();
    let replies = super::participant::post_branch(conn, &items)?;
    Ok(match branch_answer(&replies) {
        (Answer::Done, ..) => None,
        (_, _, error) => Some(error.unwrap_or_else(|| ("WA025".into(), "refused".into()))),
    })
}

/// What a batch answers for one item: its outcome (`confirmed`, `cancelled`, `pending`, `stuck`,
/// or `rejected` when it was refused before anything was recorded), with the SQLSTATE and
/// message of a refusal or cancel.
#[derive(Debug, Clone)]
pub struct ItemOutcome {
    pub outcome: &'static str,
    pub sqlstate: Option<String>,
    pub message: Option<String>,
}

impl ItemOutcome {
    fn rejected(e: &WalletError) -> ItemOutcome {
        ItemOutcome {
            outcome: "rejected",
            sqlstate: Some(e.sqlstate().to_string()),
            message: Some(e.to_string()),
        }
    }

    fn of(outcome: &Outcome) -> ItemOutcome {
        let plain = |o, message: Option<&str>| ItemOutcome {
            outcome: o,
            sqlstate: None,
            message: message.map(str::to_string),
        };
        match outcome {
            Outcome::Confirmed => plain("confirmed", None),
            Outcome::ConfirmedPending => plain(
                "confirmed",
                Some("decided and durable; a participant has yet to hear it, and recovery will tell it"),
            ),
            Outcome::Pending => plain(
                "pending",
                Some("still under way: a node does not answer, and recovery will drive it on"),
            ),
            Outcome::Busy | Outcome::InBatch | Outcome::DrivenElsewhere => plain(
                "pending",
                Some("another session is driving it; its outcome will be in wallet.global_transactions"),
            ),
            Outcome::Stuck { sqlstate, message } => ItemOutcome {
                outcome: "stuck",
                sqlstate: Some(sqlstate.clone()),
                message: Some(message.clone()),
            },
            Outcome::Cancelled {
                sqlstate, message, ..
            } => ItemOutcome {
                outcome: "cancelled",
                sqlstate: Some(sqlstate.clone()),
                message: Some(message.clone()),
            },
        }
    }
}

/// A batch's session lock: held from before its global transactions are recorded to the end of
/// its drive, so that recovery leaves them to it.
fn new_batch_id() -> Vec<u8> {
    let mut bytes = [0u8; 8];
    // SAFETY: fills the buffer with random bytes.
    let ok = unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) };
    assert!(ok, "no random bytes");
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// Runs a batch of two-leg global transactions of one protocol (TC/C or Saga) as one drive:
/// recorded set-wise, then every round one call per node and participant function for all of
/// them. Each item keeps every guarantee of a global transaction of its own (its gtid, its
/// outcome, its recovery); an item refused before anything is recorded answers `rejected`.
pub fn run_batch(
    owner: Oid,
    items: Vec<Result<Request, WalletError>>,
    protocol: Protocol,
    timeout_micros: i64,
) -> WalletResult<Vec<ItemOutcome>> {
    let (mut answers, planned) = plan_batch(items, protocol);
    let batch = new_batch_id();
    // The session locks taken for the batch: its own, and a claim for each repeat driven again;
    // released on every way out, an ERROR's included (session locks outlive transactions).
    let claimed = AssertUnwindSafe(RefCell::new(Vec::<Vec<u8>>::new()));
    let release = || {
        let _ = locks::unlock_session(LockClass::Batch, &batch);
        for g in claimed.borrow_mut().drain(..) {
            let _ = locks::unlock_session(LockClass::GlobalTransaction, &g);
        }
    };
    let record = || {
        step(owner, |conn| {
            let recording = BatchRecording {
                protocol,
                timeout_micros,
                batch: &batch,
                planned: &planned,
                claimed: &claimed,
            };
            recording.record(conn, &mut answers)
        })
    };
    let recorded = PgTryBuilder::new(AssertUnwindSafe(record))
        .catch_others(|e| {
            release();
            e.rethrow()
        })
        .execute();
    let new = match recorded {
        Ok(new) => new,
        Err(e) => {
            release();
            return Err(e);
        }
    };
    let driven_ids: Vec<Vec<u8>> = planned
        .iter()
        .filter(|(k, r, _)| {
            answers[*k].is_none()
                && (new.contains_key(&r.gtid) || claimed.borrow().contains(&r.gtid))
        })
        .map(|(_, r, _)| r.gtid.clone())
        .collect();
    // The new ones go on from the rows just recorded; the repeats driven again are read.
    let driven = PgTryBuilder::new(AssertUnwindSafe(|| drive(owner, &driven_ids, false, new)))
        .catch_others(|e| {
            // An ERROR of Postgres: the batch's global transactions go to recovery.
            release();
            e.rethrow()
        })
        .execute();
    release();
    let state = driven?;
    let by_gtid: std::collections::HashMap<&[u8], &Gtx> = state
        .iter()
        .flatten()
        .map(|g| (g.gtid.as_slice(), g))
        .collect();
    for (k, r, _) in &planned {
        if answers[*k].is_none() {
            answers[*k] = Some(match by_gtid.get(r.gtid.as_slice()) {
                Some(g) => ItemOutcome::of(&outcome_of(g)),
                None => ItemOutcome::of(&Outcome::Busy),
            });
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every item answered"))
        .collect())
}

/// A batch item that passed its own checks: its place in the batch, its request, its plan.
type Planned = (usize, Request, Vec<protocol::BranchPlan>);

/// Checks each item on its own (a gtid twice in the batch, a plan for its legs): the answers of
/// those refused, and the others planned.
fn plan_batch(
    items: Vec<Result<Request, WalletError>>,
    protocol: Protocol,
) -> (Vec<Option<ItemOutcome>>, Vec<Planned>) {
    let mut answers: Vec<Option<ItemOutcome>> = vec![None; items.len()];
    let mut planned: Vec<Planned> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, item) in items.into_iter().enumerate() {
        let checked = item.and_then(|r| {
            if !seen.insert(r.gtid.clone()) {
                return Err(WalletError::invalid_argument(
                    "gtids",
                    format!("{} appears twice in the batch", Text(r.gtid.clone())),
                ));
            }
            let plan = protocol::plan_for(&r.legs, protocol)?;
            Ok((r, plan))
        });
        match checked {
            Ok((r, plan)) => planned.push((k, r, plan)),
            Err(e) => answers[k] = Some(ItemOutcome::rejected(&e)),
        }
    }
    (answers, planned)
}

/// The recording step of a batch: what it records and the claims it takes.
struct BatchRecording<'a> {
    protocol: Protocol,
    timeout_micros: i64,
    batch: &'a [u8],
    planned: &'a [Planned],
    /// The claims taken on repeats driven again (released by run_batch on every way out).
    claimed: &'a RefCell<Vec<Vec<u8>>>,
}

impl BatchRecording<'_> {
    /// Records the batch's new global transactions (returns them, as the ledger holds them) and
    /// answers the items that will not be driven: an unknown node, a reused gtid, a finished or
    /// busy repeat.
    fn record(
        &self,
        conn: &Connection,
        answers: &mut [Option<ItemOutcome>],
    ) -> WalletResult<std::collections::HashMap<Vec<u8>, Gtx>> {
        let mut known: std::collections::HashMap<String, bool> = Default::default();
        let mut valid = Vec::new();
        for (k, r, plan) in self.planned {
            let unknown = plan.iter().map(|b| b.node.as_str()).find(|&node| {
                node != LOCAL
                    && !*known
                        .entry(node.to_string())
                        .or_insert_with(|| nodes::exists(node))
            });
            match unknown {
                Some(node) => {
                    answers[*k] = Some(ItemOutcome::rejected(&WalletError::UnknownNode {
                        node: Text::from(node),
                    }))
                }
                None => valid.push((*k, r, plan.as_slice())),
            }
        }
        locks::lock_for_session(LockClass::Batch, self.batch, true)?;
        // Inserted in gtid order: two batches sharing new gtids wait for each other in one
        // order, never in a cycle.
        let mut rows: Vec<(&Request, &[protocol::BranchPlan])> =
            valid.iter().map(|(_, r, p)| (*r, *p)).collect();
        rows.sort_by(|a, b| a.0.gtid.cmp(&b.0.gtid));
        let new = insert_batch(conn, self.protocol, self.timeout_micros, self.batch, &rows)?;
        // The others are repeats: the same global transaction again, or another under its gtid.
        let repeats: Vec<(usize, &Request)> = valid
            .iter()
            .filter(|(_, r, _)| !new.contains_key(&r.gtid))
            .map(|(k, r, _)| (*k, *r))
            .collect();
        if repeats.is_empty() {
            return Ok(new);
        }
        let ids: Vec<Vec<u8>> = repeats.iter().map(|(_, r)| r.gtid.clone()).collect();
        for ((k, r), existing) in repeats.iter().zip(load_many(conn, &ids)?) {
            let Some(existing) = existing else { continue };
            if existing.protocol != self.protocol || existing.legs != r.legs {
                answers[*k] = Some(ItemOutcome::rejected(&WalletError::GtidReused {
                    gtid: Text(r.gtid.clone()),
                    existing: describe(&existing.protocol, &existing.legs),
                }));
            } else if existing.finished || existing.outcome.is_some() {
                answers[*k] = Some(ItemOutcome::of(&outcome_of(&existing)));
            } else if claim_for_recovery(&r.gtid, existing.batch.as_deref())? {
                self.claimed.borrow_mut().push(r.gtid.clone());
            } else {
                answers[*k] = Some(ItemOutcome::of(&Outcome::Busy));
            }
        }
        Ok(new)
    }
}

fn describe(protocol: &Protocol, legs: &[Leg]) -> String {
    let legs: Vec<String> = legs
        .iter()
        .map(|l| {
            format!(
                "{} on account {} of node {}",
                l.amount, l.account_id, l.node
            )
        })
        .collect();
    format!("{}: {}", protocol.as_str(), legs.join(", "))
}

/// A node refuses 2PC when it cannot prepare transactions: refused before anything is recorded.
fn check_prepared_transactions(plan: &[protocol::BranchPlan]) -> WalletResult<()> {
    for b in plan.iter().filter(|b| b.node != LOCAL) {
        if !nodes::exists(&b.node) {
            return Err(WalletError::UnknownNode {
                node: Text::from(b.node.as_str()),
            });
        }
        let unreachable = |e: CallError| WalletError::NodeUnreachable {
            node: Text::from(b.node.as_str()),
            sqlstate: e.sqlstate,
            message: e.message,
        };
        let mut lease = nodes::lease(&b.node).map_err(unreachable)?;
        let table = lease
            .connection()
            .call(
                None,
                "SELECT current_setting('max_prepared_transactions')::int",
                &[],
                nodes::call_timeout(),
            )
            .map_err(unreachable)?;
        if table.int(0, 0).unwrap_or(0) == 0 {
            return Err(WalletError::PreparedTransactionsDisabled {
                node: Text::from(b.node.as_str()),
            });
        }
    }
    Ok(())
}

/// Rolls back (or commits) this coordinator's prepared transactions that no unfinished global
/// transaction holds: a gid the ledger does not know, or one of a finished global transaction (a
/// PREPARE that landed after its branch was rolled back, say). What an unfinished global
/// transaction holds is its drive's business. Returns how many it resolved.
fn sweep_prepared(owner: Oid) -> WalletResult<i64> {
    let (coordinator, node_names) = step(owner, |conn| {
        let rows = conn.execute(&LEDGER_NODES, &[]);
        let names: Vec<String> = (0..rows.len())
            .filter_map(|r| {
                rows.bytes(r, 1)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .collect();
        Ok((coordinator_id(conn), names))
    })?;
    let prefix = format!("wallet:{coordinator}:%");
    let mut resolved = 0;
    for node in node_names {
        let Ok(mut lease) = nodes::lease(&node) else {
            continue;
        };
        let Ok(table) = lease.connection().call(
            None,
            "SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid LIKE $1 AND database = current_database()",
            &[Some(prefix.clone().into_bytes())],
            nodes::call_timeout(),
        ) else {
            continue;
        };
        for r in 0..table.rows.len() {
            let Some(gid) = table
                .text(r, 0)
                .map(|g| String::from_utf8_lossy(g).into_owned())
            else {
                continue;
            };
            let verdict = step(owner, |conn| {
                let rows = conn.execute(&LEDGER_GID, &[Some(text_datum(gid.as_bytes()))]);
                if rows.is_empty() {
                    return Ok(Some(false));
                }
                let finished: bool = rows.get(0, 2).unwrap_or(false);
                let confirmed = rows.bytes(0, 3).as_deref() == Some(b"confirmed".as_slice());
                Ok(finished.then_some(confirmed))
            })?;
            let Some(commit) = verdict else {
                continue;
            };
            let sql = format!(
                "{} PREPARED '{gid}'",
                if commit { "COMMIT" } else { "ROLLBACK" }
            );
            if lease
                .connection()
                .call(None, &sql, &[], nodes::call_timeout())
                .is_ok()
            {
                resolved += 1;
            }
        }
    }
    Ok(resolved)
}

/// Global transactions recovery drives together (their calls to a node go as one).
const RECOVERY_GROUP: usize = 64;

/// Recovery: drives every unfinished global transaction no session is driving (at most
/// `limit`), in groups; returns how many finished and how many are still unfinished.
///
/// The prepared transactions no unfinished global transaction holds are resolved first (and
/// again at the end): one that outlived its global transaction (a PREPARE that reached its node
/// after the coordinator had given up on it, or after recovery rolled back a gid the node did not
/// have yet) holds the row locks of its postings, the node's system account among them, and every
/// call to that node would wait for them while the drives below run.
pub fn recover(owner: Oid, limit: i32) -> WalletResult<(i64, i64)> {
    sweep_prepared(owner)?;
    let candidates: Vec<(Vec<u8>, Option<Vec<u8>>, bool)> = step(owner, |conn| {
        let rows = conn.execute(&LEDGER_CANDIDATES, &[limit.into_datum()]);
        Ok((0..rows.len())
            .filter_map(|r| {
                let two_phase = rows.get::<bool>(r, 3).unwrap_or(false);
                rows.bytes(r, 1).map(|g| (g, rows.bytes(r, 2), two_phase))
            })
            .collect())
    })?;
    let mut finished = 0;
    // 2PC's in groups of their own (they come first): their drive has no call of this node's to
    // make, so its step cannot wait for a row that another coordinator's prepared transaction
    // holds here, while that coordinator's recovery waits, on its node, for one of ours that
    // this drive's ROLLBACK or COMMIT PREPARED would release.
    let groups = candidates
        .chunk_by(|a, b| a.2 == b.2)
        .flat_map(|same| same.chunks(RECOVERY_GROUP));
    for group in groups {
        let claimed: Vec<Vec<u8>> = step(owner, |_| {
            let mut claimed = Vec::new();
            for (gtid, batch, _) in group {
                if claim_for_recovery(gtid, batch.as_deref())? {
                    claimed.push(gtid.clone());
                }
            }
            Ok(claimed)
        })?;
        finished += recover_group(owner, &claimed)?;
    }
    sweep_prepared(owner)?;
    let unfinished = step(owner, |conn| {
        let rows = conn.execute(&LEDGER_UNFINISHED, &[]);
        Ok(rows.get::<i64>(0, 1).unwrap_or(0))
    })?;
    Ok((finished, unfinished))
}

/// Takes the session claim on `gtid` if it comes free within `patience` (polled, so that a long
/// wait ends in an answer rather than in a lock timeout's ERROR).
fn claim_within(gtid: &[u8], patience: std::time::Duration) -> WalletResult<bool> {
    let start = std::time::Instant::now();
    loop {
        if locks::lock_for_session(LockClass::GlobalTransaction, gtid, false)? {
            return Ok(true);
        }
        if start.elapsed() >= patience {
            return Ok(false);
        }
        // SAFETY: a plain sleep of the backend, then the usual check for a cancel or a
        // termination (which raises, ending the call as any statement would).
        unsafe {
            pg_sys::pg_usleep(5_000);
        }
        pgrx::check_for_interrupts!();
    }
}

/// Claims a global transaction for recovery: no session drives it, neither its coordinator nor
/// (for one of a batch) the batch's session.
fn claim_for_recovery(gtid: &[u8], batch: Option<&[u8]>) -> WalletResult<bool> {
    if !locks::lock_for_session(LockClass::GlobalTransaction, gtid, false)? {
        return Ok(false); // its coordinator (or another recovery) is at work
    }
    if let Some(batch) = batch {
        if !locks::lock_for_session(LockClass::Batch, batch, false)? {
            locks::unlock_session(LockClass::GlobalTransaction, gtid)?;
            return Ok(false); // its batch's session is at work
        }
        // Gone: that session cannot come back.
        locks::unlock_session(LockClass::Batch, batch)?;
    }
    Ok(true)
}

/// Drives a group of claimed global transactions together, then releases them; one whose step
/// meets a Postgres ERROR is driven again alone, so that it cannot hold the others back. Returns
/// how many finished.
fn recover_group(owner: Oid, claimed: &[Vec<u8>]) -> WalletResult<i64> {
    let release = |gtids: &[Vec<u8>]| {
        for g in gtids {
            let _ = locks::unlock_session(LockClass::GlobalTransaction, g);
        }
    };
    let driven = PgTryBuilder::new(|| drive(owner, claimed, true, Default::default()))
        .catch_others(|e| {
            release(claimed);
            e.rethrow()
        })
        .execute();
    let result = match driven {
        Ok(state) => Ok(state.iter().flatten().map(|g| i64::from(g.finished)).sum()),
        Err(WalletError::Remote { .. }) if claimed.len() > 1 => {
            // Each alone, for wallet.node_timeout at most: when the ERROR was a lock wait that
            // timed out, every one of them touching the locked row would wait as long again,
            // and recovery's next round (the prepared transactions swept first) must come soon.
            let budget = std::time::Instant::now() + nodes::call_timeout();
            let mut finished = 0;
            for gtid in claimed {
                if std::time::Instant::now() > budget {
                    break;
                }
                finished += recover_one(owner, gtid)?;
            }
            Ok(finished)
        }
        Err(WalletError::Remote { sqlstate, message }) => {
            warn_stopped(&claimed[0], &sqlstate, &message);
            Ok(0)
        }
        Err(e) => Err(e),
    };
    release(claimed);
    result
}

/// One global transaction of a group that met an ERROR, driven alone (still claimed).
fn recover_one(owner: Oid, gtid: &[u8]) -> WalletResult<i64> {
    let driven = PgTryBuilder::new(|| drive(owner, &[gtid.to_vec()], true, Default::default()))
        .catch_others(|e| {
            let _ = locks::unlock_session(LockClass::GlobalTransaction, gtid);
            e.rethrow()
        })
        .execute();
    match driven {
        Ok(state) => Ok(state.iter().flatten().map(|g| i64::from(g.finished)).sum()),
        // An ERROR of Postgres in one of its steps: left for the next round, the others go on.
        Err(WalletError::Remote { sqlstate, message }) => {
            warn_stopped(gtid, &sqlstate, &message);
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

fn warn_stopped(gtid: &[u8], sqlstate: &str, message: &str) {
    pgrx::warning!(
        "recovery of global transaction {} stopped for this round ({sqlstate}): {message}",
        Text(gtid.to_vec())
    );
}
