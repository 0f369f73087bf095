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
use super::steps::*;
use crate::commands::{query, text_datum};
use crate::error::WalletResult;
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
pub const LOCAL: &str = "local";

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
fn advance(
    conn: &Connection,
    g: &mut Gtx,
    recovering: bool,
    coordinator: &str,
    out: &mut Vec<(String, Remote)>,
    index: usize,
) -> WalletResult<()> {
    // Ledger-only actions and this node's own calls, a bounded number of times.
    for _ in 0..ROUNDS_MAX {
        if g.finished || g.outcome.as_deref() == Some("stuck") {
            return Ok(());
        }
        let statuses: Vec<BranchStatus> = g.branches.iter().map(|b| b.status).collect();
        let stop = protocol::stop_trying(g.protocol, g.past_deadline, recovering);
        match protocol::next_action(g.protocol, g.phase, &statuses, stop, local_branch(g)) {
            Action::DecideConfirm => decide(g, Phase::Confirm, None),
            Action::DecideCancel => {
                let reason = g.error.clone().or_else(|| {
                    Some(if recovering && g.protocol != Protocol::Saga {
                        ("WA021".into(), format!("global transaction {} was cancelled by recovery: its coordinator stopped before deciding", Text(g.gtid.clone())))
                    } else {
                        ("WA021".into(), format!("global transaction {} passed its decision deadline before every branch was tried", Text(g.gtid.clone())))
                    })
                });
                decide(g, Phase::Cancel, reason);
            }
            Action::PostLocalAndDecide(b) => {
                // The posting stays only if it is the one that confirms: a refusal, or a currency
                // other than the nodes', decides cancel, and a 2PC cancel of this node's branch
                // has nothing to undo.
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
            }
            Action::FinishConfirmed => return Ok(finish(g, "confirmed", recovering, None)),
            Action::FinishCancelled => return Ok(finish(g, "cancelled", recovering, None)),
            Action::Stuck(b) => {
                // The participant's own SQLSTATE and message, and what an operator must do.
                let (sqlstate, why) = g.branches[b]
                    .error
                    .clone()
                    .unwrap_or_else(|| ("WA025".into(), "refused".into()));
                let error = Some((
                    sqlstate,
                    format!(
                        "the {} of branch {} on node {} was refused for good ({why}); settle that, then SELECT wallet.resume_global_transaction(gtid)",
                        if g.phase == Phase::Confirm { "confirm" } else { "compensation" },
                        b + 1,
                        g.branches[b].node,
                    ),
                ));
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
                let mut progressed = false;
                for b in local {
                    let before = g.branches[b].status;
                    let answer = call_local(conn, g, b, kind)?;
                    record(
                        g,
                        &answered(
                            &Wanted {
                                gtx: index,
                                branch: b,
                                kind,
                            },
                            answer,
                        ),
                    );
                    progressed |= g.branches[b].status != before || g.phase != Phase::Try;
                }
                if !remote.is_empty() {
                    for b in remote {
                        let mut r = remote_commands(g, b, kind, coordinator);
                        r.wanted.gtx = index;
                        out.push((g.branches[b].node.clone(), r));
                    }
                    return Ok(());
                }
                if !progressed {
                    return Ok(()); // a local call that could not be answered now: later
                }
            }
        }
    }
    Ok(())
}

/// Drives the global transactions `gtids` (this session holds their claims) as far as they go:
/// until each is finished, stuck, or waits for a node that does not answer.
fn drive(owner: Oid, gtids: &[Vec<u8>], recovering: bool) -> WalletResult<Vec<Option<Gtx>>> {
    let n = gtids.len();
    let mut state: Vec<Option<Gtx>> = vec![None; n];
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
        let ids: Vec<Vec<u8>> = active.iter().map(|&i| gtids[i].clone()).collect();
        let body = |conn: &Connection| {
            let coordinator = coordinator.clone().unwrap_or_else(|| coordinator_id(conn));
            let mut remotes = Vec::new();
            let mut now = Vec::with_capacity(active.len());
            for (&i, g) in active.iter().zip(load_many(conn, &ids)?) {
                let Some(mut g) = g else {
                    now.push(None);
                    continue;
                };
                for a in &answers[i] {
                    record(&mut g, a);
                }
                // What the ledger alone decides is always done; calls to nodes that did not
                // answer twice are left to recovery.
                let called_before = remotes.len();
                advance(conn, &mut g, recovering, &coordinator, &mut remotes, i)?;
                if lost_rounds[i] >= 2 {
                    remotes.truncate(called_before);
                }
                now.push(Some(g));
            }
            Ok((coordinator, remotes, now))
        };
        // Recovery must not stop at one global transaction's ERROR (see `guarded`).
        let (id, remotes, now) = if recovering {
            step(owner, |conn| guarded(|| body(conn)))?
        } else {
            step(owner, body)?
        };
        coordinator = Some(id);
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
    Ok(state)
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

/// A session claim on a global transaction: the lock that says who drives it.
struct Claim<'a>(&'a [u8]);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = locks::unlock_session(LockClass::GlobalTransaction, self.0);
        }
    }
}

/// Runs a global transaction to its end (or as far as its nodes let it): records it (or finds
/// it, for a repeat with the same gtid), then drives it.
pub fn run(owner: Oid, request: &Request) -> WalletResult<Outcome> {
    let plan = protocol::plan_for(&request.legs, request.protocol)?;
    if request.protocol == Protocol::TwoPhase {
        step(owner, |_| check_prepared_transactions(&plan))?;
    }
    let claimed = step(owner, |conn| {
        for b in &plan {
            if b.node != LOCAL && !nodes::exists(&b.node) {
                return Err(WalletError::UnknownNode {
                    node: Text::from(b.node.as_str()),
                });
            }
        }
        // The claim first: a repeat waits for a session still driving the same gtid.
        locks::lock_for_session(LockClass::GlobalTransaction, &request.gtid, true)?;
        let claim = Claim(&request.gtid);
        match load(conn, &request.gtid)? {
            Some(existing) => {
                let same = existing.protocol == request.protocol && existing.legs == request.legs;
                if !same {
                    return Err(WalletError::GtidReused {
                        gtid: Text(request.gtid.clone()),
                        existing: describe(&existing.protocol, &existing.legs),
                    });
                }
            }
            None => insert(conn, request, &plan)?,
        }
        Ok(claim)
    });
    let claim = claimed?;
    let driven = PgTryBuilder::new(|| drive(owner, std::slice::from_ref(&request.gtid), false))
        .catch_others(|e| {
            // An ERROR of Postgres (a cancel, a lost lock wait): give the transaction to recovery.
            let _ = locks::unlock_session(LockClass::GlobalTransaction, &request.gtid);
            e.rethrow()
        })
        .execute();
    drop(claim);
    let state = driven?;
    Ok(state
        .first()
        .cloned()
        .flatten()
        .map_or(Outcome::Busy, |g| outcome_of(&g)))
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

/// Recovery: drives every unfinished global transaction no session is driving (at most
/// `limit`), one at a time; returns how many finished and how many are still unfinished.
pub fn recover(owner: Oid, limit: i32) -> WalletResult<(i64, i64)> {
    let candidates: Vec<Vec<u8>> = step(owner, |conn| {
        let rows = conn.execute(&LEDGER_CANDIDATES, &[limit.into_datum()]);
        Ok((0..rows.len()).filter_map(|r| rows.bytes(r, 1)).collect())
    })?;
    let mut finished = 0;
    for gtid in candidates {
        let claimed = step(owner, |_| {
            locks::lock_for_session(LockClass::GlobalTransaction, &gtid, false)
        })?;
        if !claimed {
            continue; // its coordinator (or another recovery) is at work
        }
        let claim = Claim(&gtid);
        let driven = PgTryBuilder::new(|| drive(owner, std::slice::from_ref(&gtid), true))
            .catch_others(|e| {
                let _ = locks::unlock_session(LockClass::GlobalTransaction, &gtid);
                e.rethrow()
            })
            .execute();
        drop(claim);
        match driven {
            Ok(state) => {
                if let Some(Some(g)) = state.first() {
                    finished += i64::from(g.finished);
                }
            }
            // An ERROR of Postgres in one of its steps: left for the next round, the others
            // go on.
            Err(WalletError::Remote { sqlstate, message }) => pgrx::warning!(
                "recovery of global transaction {} stopped for this round ({sqlstate}): {message}",
                Text(gtid.clone())
            ),
            Err(e) => return Err(e),
        }
    }
    sweep_prepared(owner)?;
    let unfinished = step(owner, |conn| {
        let rows = conn.execute(&LEDGER_UNFINISHED, &[]);
        Ok(rows.get::<i64>(0, 1).unwrap_or(0))
    })?;
    Ok((finished, unfinished))
}
