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

use std::collections::BTreeMap;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{IntoDatum, PgTryBuilder};
use wallet_core::error::WalletError;
use wallet_core::locks::LockClass;
use wallet_core::protocol::{
    self, Action, Answer, BranchStatus, CallKind, Leg, Phase, Posting, Protocol,
};
use wallet_core::text::Text;

use super::libpq::{array_literal, CallError, Command, Table};
use super::nodes;
use super::participant::{self, PostItem, Reply, TryItem};
use crate::commands::{query, text_datum};
use crate::error::WalletResult;
use crate::locks;
use crate::spi::{Connection, Kept};

const T: Oid = pg_sys::TEXTOID;
const I8: Oid = pg_sys::INT8OID;
const I4: Oid = pg_sys::INT4OID;
const TA: Oid = pg_sys::TEXTARRAYOID;
const IA: Oid = pg_sys::INT8ARRAYOID;

query!(
    LEDGER_INSERT,
    34,
    "ledger_insert.sql",
    [T, T, TA, IA, IA, I8, I8],
    false
);
query!(
    LEDGER_BRANCH_INSERT,
    35,
    "ledger_branch_insert.sql",
    [T, I4, T, T, IA, IA, IA, T],
    false
);
query!(LEDGER_GID, 45, "ledger_gid.sql", [T], true);
query!(LEDGER_NODES, 46, "ledger_nodes.sql", [], false);
query!(LEDGER_GET, 36, "ledger_get.sql", [T], true);
query!(LEDGER_BRANCHES, 37, "ledger_branches.sql", [T], true);
query!(
    LEDGER_BRANCH_SET,
    38,
    "ledger_branch_set.sql",
    [T, I4, T, T, T],
    true
);
query!(LEDGER_DECIDE, 39, "ledger_decide.sql", [T, T, T, T], true);
query!(LEDGER_NOTE, 40, "ledger_note.sql", [T, T, T, T], true);
query!(
    LEDGER_FINISH,
    41,
    "ledger_finish.sql",
    [T, T, T, T, T],
    true
);
query!(LEDGER_CANDIDATES, 42, "ledger_candidates.sql", [I4], true);
query!(LEDGER_UNFINISHED, 43, "ledger_unfinished.sql", [], true);
query!(
    COORDINATOR_IDENTITY,
    44,
    "coordinator_identity.sql",
    [],
    false
);

pub const KEPT: &[&Kept] = &[
    &LEDGER_INSERT,
    &LEDGER_BRANCH_INSERT,
    &LEDGER_GET,
    &LEDGER_BRANCHES,
    &LEDGER_BRANCH_SET,
    &LEDGER_DECIDE,
    &LEDGER_NOTE,
    &LEDGER_FINISH,
    &LEDGER_CANDIDATES,
    &LEDGER_UNFINISHED,
    &COORDINATOR_IDENTITY,
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

// ---- the steps: local transactions, as the owner ------------------------------------------------

/// search_path pinned to `pg_catalog, pg_temp`, and a bounded lock wait, until dropped: every
/// statement the engine runs, in a step or between steps, resolves names and operators the same
/// way whatever the caller's (or the database's) search_path.
struct Pinned {
    nest_level: i32,
}

impl Pinned {
    fn enter() -> Pinned {
        // SAFETY: GUC settings at a new nest level, popped by Drop (or by the transaction's
        // abort, which pops every level it started).
        unsafe {
            let nest_level = pg_sys::NewGUCNestLevel();
            set_guc(c"search_path", c"pg_catalog, pg_temp");
            // A step waits for a row lock at most wallet.node_timeout (unless the caller's
            // lock_timeout is shorter): a lock may be held by a prepared transaction whose
            // coordinator waits, on its own node, for a lock a prepared transaction of ours
            // holds there. No deadlock detector sees such a cycle across nodes; the timeout
            // breaks it (the step's ERROR leaves the global transaction to recovery).
            let node_timeout = crate::settings::NODE_TIMEOUT.get().max(1);
            if pg_sys::LockTimeout == 0 || pg_sys::LockTimeout > node_timeout {
                let value = std::ffi::CString::new(format!("{node_timeout}ms")).expect("digits");
                set_guc(c"lock_timeout", &value);
            }
            Pinned { nest_level }
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: pops the level `enter` pushed, on the normal path only (an ERROR's abort pops
        // it).
        if !std::thread::panicking() {
            unsafe { pg_sys::AtEOXact_GUC(true, self.nest_level) };
        }
    }
}

/// Sets a user-settable GUC for the current nest level.
///
/// # Safety
/// Inside a transaction, at a nest level the caller pops.
unsafe fn set_guc(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    // SAFETY: as the caller promises; both strings are NUL-terminated.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// The owner's identity, with the statements pinned (see [`Pinned`]), for the scope of one step.
struct AsOwner {
    user: Oid,
    context: i32,
    _pinned: Pinned,
}

impl AsOwner {
    fn enter(owner: Oid) -> AsOwner {
        // SAFETY: plain reads and writes of this backend's user id, restored by Drop (or by the
        // transaction's abort, which restores it to the value the transaction started with: the
        // caller's).
        unsafe {
            let (mut user, mut context) = (Oid::INVALID, 0);
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
            AsOwner {
                user,
                context,
                _pinned: Pinned::enter(),
            }
        }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` between steps (no step's transaction work, no owner yet): with a snapshot and the
/// statements pinned.
pub(crate) fn between_steps<R>(f: impl FnOnce() -> R) -> R {
    with_snapshot(|| {
        let _pinned = Pinned::enter();
        f()
    })
}

/// Runs `f` with an active snapshot: its own when none is set. A CALL from a client would get
/// one from its portal after each commit, but the background worker's CALL has no portal, and
/// SPI refuses to run SQL without either (SPI still takes a fresh snapshot for each statement
/// at READ COMMITTED).
fn with_snapshot<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: between statements; what is pushed here is popped before returning (an ERROR's
    // abort pops it otherwise).
    let pushed = unsafe {
        let push = !pg_sys::ActiveSnapshotSet();
        if push {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        push
    };
    let result = f();
    // SAFETY: pops what was pushed above.
    unsafe {
        if pushed && pg_sys::ActiveSnapshotSet() {
            pg_sys::PopActiveSnapshot();
        }
    }
    result
}

/// Runs `f` in the current transaction as the owner, then commits it (or rolls it back when `f`
/// refused), and starts the next one at READ COMMITTED.
fn step<R>(owner: Oid, f: impl FnOnce(&Connection) -> WalletResult<R>) -> WalletResult<R> {
    let result = with_snapshot(|| {
        let _owner = AsOwner::enter(owner);
        let conn = Connection::open();
        f(&conn)
    });
    // SAFETY: the procedure's SPI connection is non-atomic (see `Procedure`); SPI starts the
    // next transaction at once, before any snapshot, so its isolation level can be set.
    unsafe {
        if result.is_ok() {
            pg_sys::SPI_commit();
        } else {
            pg_sys::SPI_rollback();
        }
        pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
    }
    result
}

/// Runs `f` in an internal subtransaction: a Postgres ERROR inside it (a lock wait that timed
/// out, a deadlock, a cancelled statement) rolls back the subtransaction alone and comes back as
/// that error's SQLSTATE and message, so that recovery can leave one global transaction for a
/// later round and go on with the others.
fn guarded<R>(f: impl FnOnce() -> WalletResult<R>) -> WalletResult<R> {
    subtransaction(f, |_| true)
}

/// Runs `f` in an internal subtransaction, kept when `keep` says so of its result and rolled
/// back otherwise; a Postgres ERROR inside rolls it back and comes back as that error (a Rust
/// panic, a bug, stops the whole call).
fn subtransaction<R>(
    f: impl FnOnce() -> WalletResult<R>,
    keep: impl FnOnce(&WalletResult<R>) -> bool,
) -> WalletResult<R> {
    // SAFETY: a subtransaction of the step's transaction, ended on every path below; memory
    // context and resource owner restored as PL/pgSQL's exception blocks do.
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    // SAFETY (both): ends the subtransaction begun above, then restores what it changed.
    let release = move || unsafe {
        pg_sys::ReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    let rollback = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    let f = std::panic::AssertUnwindSafe(f);
    let keep = std::panic::AssertUnwindSafe(keep);
    PgTryBuilder::new(move || {
        let keep = keep; // the whole wrapper moves in (a closure would capture its field alone)
        let result = f();
        if (keep.0)(&result) {
            release();
        } else {
            rollback();
        }
        result
    })
    .catch_others(|e| {
        let report = match &e {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r,
            pgrx::pg_sys::panic::CaughtError::RustPanic { .. } => e.rethrow(),
        };
        let error = WalletError::Remote {
            sqlstate: crate::error::unpack_sqlstate(report.sql_error_code() as i32),
            message: report.message().to_string(),
        };
        rollback();
        Err(error)
    })
    .execute()
}

/// A non-atomic SPI connection of a procedure (CALL outside a transaction block), which may
/// commit; finished when dropped.
pub struct Procedure {
    /// The extension's owner, whom every step runs as.
    pub owner: Oid,
}

impl Procedure {
    /// Opens it, refusing (2D000) a call from inside a transaction block or a function, and
    /// ends the caller's transaction (which has done nothing yet) so that every step is a
    /// transaction of the engine's own.
    pub fn open(fcinfo: pg_sys::FunctionCallInfo, name: &str) -> WalletResult<Procedure> {
        // SAFETY: the context of a procedure's call is a CallContext.
        let atomic = unsafe {
            let context = (*fcinfo).context;
            context.is_null()
                || (*context).type_ != pg_sys::NodeTag::T_CallContext
                || (*(context as *mut pg_sys::CallContext)).atomic
        };
        if atomic {
            return Err(WalletError::InvalidTransactionTermination {
                procedure: name.to_string(),
            });
        }
        Ok(Procedure::connect())
    }

    /// The background worker's, in a transaction the worker started: the worker calls the
    /// engine directly, since a CALL through SPI has no portal, which Postgres needs to return
    /// a procedure's record after the procedure committed.
    pub fn in_worker() -> Procedure {
        Procedure::connect()
    }

    fn connect() -> Procedure {
        // SAFETY: connects SPI in non-atomic mode (a procedure CALLed at top level, or the
        // worker between its own transactions), so that the steps may commit.
        unsafe {
            let status = pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32);
            assert!(status >= 0, "SPI_connect_ext failed: {status}");
            pg_sys::SPI_commit();
            pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
        }
        Procedure {
            owner: between_steps(nodes::extension_owner),
        }
    }
}

impl Drop for Procedure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: connected in `open`.
            unsafe { pg_sys::SPI_finish() };
        }
    }
}

// ---- the ledger, as the engine reads it --------------------------------------------------------

#[derive(Debug, Clone)]
struct Branch {
    no: i32,
    name: String,
    node: String,
    postings: Vec<Posting>,
    status: BranchStatus,
    /// The last error a participant answered for it (SQLSTATE, message).
    error: Option<(String, String)>,
}

#[derive(Debug, Clone)]
struct Gtx {
    gtid: Vec<u8>,
    protocol: Protocol,
    phase: Phase,
    outcome: Option<String>,
    currency: Option<Vec<u8>>,
    timeout_micros: i64,
    past_deadline: bool,
    finished: bool,
    legs: Vec<Leg>,
    error: Option<(String, String)>,
    branches: Vec<Branch>,
}

fn corrupt(what: &str) -> WalletError {
    WalletError::DataCorrupted(format!(
        "wallet.global_transactions: {what}, which the wallet never writes"
    ))
}

fn load(conn: &Connection, gtid: &[u8]) -> WalletResult<Option<Gtx>> {
    let rows = conn.execute(&LEDGER_GET, &[Some(text_datum(gtid))]);
    if rows.is_empty() {
        return Ok(None);
    }
    let text = |c: usize| {
        rows.bytes(0, c)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let protocol = text(1)
        .as_deref()
        .and_then(Protocol::parse)
        .ok_or_else(|| corrupt("an unknown protocol"))?;
    let phase = text(2)
        .as_deref()
        .and_then(Phase::parse)
        .ok_or_else(|| corrupt("an unknown phase"))?;
    let nodes: Vec<Option<String>> = rows.get(0, 8).unwrap_or_default();
    let accounts: Vec<Option<i64>> = rows.get(0, 9).unwrap_or_default();
    let amounts: Vec<Option<i64>> = rows.get(0, 10).unwrap_or_default();
    let legs = nodes
        .into_iter()
        .zip(accounts)
        .zip(amounts)
        .map(|((n, a), m)| Leg {
            node: n.unwrap_or_default(),
            account_id: a.unwrap_or_default(),
            amount: m.unwrap_or_default(),
        })
        .collect();
    let error = match (text(11), text(12)) {
        (Some(s), Some(m)) => Some((s, m)),
        _ => None,
    };
    let mut g = Gtx {
        gtid: gtid.to_vec(),
        protocol,
        phase,
        outcome: text(3),
        currency: rows.bytes(0, 4),
        timeout_micros: rows.get(0, 5).unwrap_or(0),
        past_deadline: rows.get(0, 6).unwrap_or(true),
        finished: rows.get(0, 7).unwrap_or(false),
        legs,
        error,
        branches: Vec::new(),
    };
    let rows = conn.execute(&LEDGER_BRANCHES, &[Some(text_datum(gtid))]);
    for r in 0..rows.len() {
        let debits: Vec<Option<i64>> = rows.get(r, 4).unwrap_or_default();
        let credits: Vec<Option<i64>> = rows.get(r, 5).unwrap_or_default();
        let amounts: Vec<Option<i64>> = rows.get(r, 6).unwrap_or_default();
        let status = rows
            .bytes(r, 7)
            .and_then(|b| BranchStatus::parse(&String::from_utf8_lossy(&b)))
            .ok_or_else(|| corrupt("a branch with an unknown status"))?;
        g.branches.push(Branch {
            no: rows.get(r, 1).unwrap_or_default(),
            name: rows
                .bytes(r, 2)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            node: rows
                .bytes(r, 3)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            postings: debits
                .into_iter()
                .zip(credits)
                .zip(amounts)
                .map(|((d, c), a)| Posting {
                    debit_account_id: d,
                    credit_account_id: c,
                    amount: a.unwrap_or(0),
                })
                .collect(),
            status,
            error: match (rows.bytes(r, 8), rows.bytes(r, 9)) {
                (Some(s), Some(m)) => Some((
                    String::from_utf8_lossy(&s).into_owned(),
                    String::from_utf8_lossy(&m).into_owned(),
                )),
                _ => None,
            },
        });
    }
    Ok(Some(g))
}

fn opt_text(value: Option<&str>) -> Option<Datum> {
    value.map(|v| text_datum(v.as_bytes()))
}

fn set_branch(
    conn: &Connection,
    g: &mut Gtx,
    b: usize,
    status: BranchStatus,
    error: Option<&(String, String)>,
) {
    g.branches[b].status = status;
    if let Some(e) = error {
        g.branches[b].error = Some(e.clone());
    }
    conn.execute(
        &LEDGER_BRANCH_SET,
        &[
            Some(text_datum(&g.gtid)),
            g.branches[b].no.into_datum(),
            status.as_str().into_datum(),
            opt_text(error.map(|e| e.0.as_str())),
            opt_text(error.map(|e| e.1.as_str())),
        ],
    );
}

fn note(conn: &Connection, g: &mut Gtx, currency: Option<&[u8]>, error: Option<&(String, String)>) {
    if g.currency.is_none() {
        g.currency = currency.map(<[u8]>::to_vec);
    }
    if g.error.is_none() {
        g.error = error.cloned();
    }
    conn.execute(
        &LEDGER_NOTE,
        &[
            Some(text_datum(&g.gtid)),
            currency.map(text_datum),
            opt_text(error.map(|e| e.0.as_str())),
            opt_text(error.map(|e| e.1.as_str())),
        ],
    );
}

fn decide(conn: &Connection, g: &mut Gtx, phase: Phase, reason: Option<(String, String)>) {
    g.phase = phase;
    if g.error.is_none() {
        g.error = reason.clone();
    }
    conn.execute(
        &LEDGER_DECIDE,
        &[
            Some(text_datum(&g.gtid)),
            phase.as_str().into_datum(),
            opt_text(reason.as_ref().map(|e| e.0.as_str())),
            opt_text(reason.as_ref().map(|e| e.1.as_str())),
        ],
    );
}

fn finish(
    conn: &Connection,
    g: &mut Gtx,
    outcome: &str,
    recovering: bool,
    error: Option<(String, String)>,
) {
    g.outcome = Some(outcome.to_string());
    g.finished = outcome != "stuck";
    if outcome == "stuck" {
        g.error = error.clone();
    }
    conn.execute(
        &LEDGER_FINISH,
        &[
            Some(text_datum(&g.gtid)),
            outcome.into_datum(),
            (if recovering {
                "recovery"
            } else {
                "coordinator"
            })
            .into_datum(),
            opt_text(error.as_ref().map(|e| e.0.as_str())),
            opt_text(error.as_ref().map(|e| e.1.as_str())),
        ],
    );
}

// ---- participant calls -------------------------------------------------------------------------

/// A call the rules want of one branch.
#[derive(Debug, Clone)]
struct Wanted {
    gtx: usize,
    branch: usize,
    kind: CallKind,
}

/// A branch's answer to a call.
#[derive(Debug, Clone)]
struct Answered {
    gtx: usize,
    branch: usize,
    kind: CallKind,
    answer: Answer,
    /// The currency it posted or reserved in (try), when it answered.
    currency: Option<Vec<u8>>,
    error: Option<(String, String)>,
}

/// The idempotency key of posting `k` of branch `no` (2PC and Saga): the gtid's hash keeps it
/// within the keys' 128 bytes whatever the gtid.
fn posting_key(gtid_hash: &str, no: i32, k: usize) -> Vec<u8> {
    format!("gtx:{gtid_hash}:{no}.{}", k + 1).into_bytes()
}

fn undo_key(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.extend_from_slice(b":undo");
    k
}

/// 32 hex digits of sha256(gtid).
fn gtid_hash(gtid: &[u8]) -> String {
    let bytea = gtid.into_datum().expect("bytea");
    // SAFETY: sha256(bytea) of Postgres's own, with one non-NULL bytea; its result is a bytea.
    let hash = unsafe {
        let datum = pgrx::direct_function_call_as_datum(pg_sys::sha256_bytea, &[Some(bytea)])
            .expect("sha256 is never NULL");
        crate::args::varlena_bytes(datum).to_vec()
    };
    hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The gid of a 2PC branch's prepared transaction: ASCII, unique per coordinator, gtid and branch.
fn gid(coordinator: &str, gtid_hash: &str, no: i32) -> String {
    format!("wallet:{coordinator}:{gtid_hash}:{no}")
}

/// The reply of a branch as a whole from its items' replies: done when every item is; refused
/// with the first refusal; else lost.
fn branch_answer(replies: &[Reply]) -> (Answer, Option<Vec<u8>>, Option<(String, String)>) {
    if let Some(e) = replies.iter().find_map(|r| r.as_ref().err()) {
        let answer = protocol::answer_to_error(e.sqlstate());
        return (
            answer,
            None,
            Some((e.sqlstate().to_string(), e.to_string())),
        );
    }
    let currency = replies
        .iter()
        .find_map(|r| r.as_ref().ok().cloned().flatten());
    (Answer::Done, currency, None)
}

fn lost(error: &CallError, node: &str) -> (Answer, Option<Vec<u8>>, Option<(String, String)>) {
    let answer = protocol::answer_to_error(&error.sqlstate);
    let message = format!("node {node}: {} ({})", error.message, error.sqlstate);
    let sqlstate = if answer == Answer::Lost {
        "WA025".to_string()
    } else {
        error.sqlstate.clone()
    };
    (answer, None, Some((sqlstate, message)))
}

/// Runs a call on a branch of this node, in the current step.
fn call_local(
    conn: &Connection,
    g: &Gtx,
    b: usize,
    kind: CallKind,
) -> WalletResult<(Answer, Option<Vec<u8>>, Option<(String, String)>)> {
    let branch = &g.branches[b];
    let n = branch.postings.len();
    let hash = gtid_hash(&g.gtid);
    let ids: Vec<Vec<u8>> = (0..n)
        .map(|k| protocol::posting_id(&branch.name, k, n).into_bytes())
        .collect();
    let keys: Vec<Vec<u8>> = (0..n).map(|k| posting_key(&hash, branch.no, k)).collect();
    let replies = match (g.protocol, kind) {
        (Protocol::Tcc, CallKind::Try) => {
            let items: Vec<TryItem> = branch
                .postings
                .iter()
                .zip(&ids)
                .map(|(p, id)| TryItem {
                    gtid: &g.gtid,
                    branch: id,
                    debit_account_id: p.debit_account_id,
                    credit_account_id: p.credit_account_id,
                    amount: p.amount,
                    timeout_micros: g.timeout_micros,
                })
                .collect();
            participant::tcc_try(conn, &items)?
        }
        (Protocol::Tcc, CallKind::Confirm) => {
            let items: Vec<(&[u8], &[u8])> = ids
                .iter()
                .map(|id| (g.gtid.as_slice(), id.as_slice()))
                .collect();
            participant::tcc_confirm(conn, &items)?
        }
        (Protocol::Tcc, CallKind::Cancel) => {
            let items: Vec<(&[u8], &[u8])> = ids
                .iter()
                .map(|id| (g.gtid.as_slice(), id.as_slice()))
                .collect();
            participant::tcc_cancel(conn, &items)?
        }
        // The 2PC local branch is posted with the decision (PostLocalAndDecide); cancelled, it
        // never posted anything.
        (Protocol::TwoPhase, CallKind::Cancel) => vec![Ok(None)],
        (Protocol::TwoPhase, CallKind::Try | CallKind::Confirm)
        | (Protocol::Saga, CallKind::Try) => {
            participant::post_branch(conn, &post_items(branch, &keys))?
        }
        (Protocol::Saga, CallKind::Cancel) => {
            let undo: Vec<Vec<u8>> = keys.iter().map(|k| undo_key(k)).collect();
            let items: Vec<(&[u8], &[u8])> = keys
                .iter()
                .zip(&undo)
                .map(|(k, u)| (k.as_slice(), u.as_slice()))
                .collect();
            participant::undo_branch(conn, &items)?
        }
        (Protocol::Saga, CallKind::Confirm) => vec![Ok(None)],
    };
    Ok(branch_answer(&replies))
}

fn post_items<'a>(branch: &Branch, keys: &'a [Vec<u8>]) -> Vec<PostItem<'a>> {
    let n = branch.postings.len();
    branch
        .postings
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(k, (p, key))| PostItem {
            key,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount: p.amount,
            linked: k + 1 < n,
        })
        .collect()
}

/// The commands one remote call sends (a pipeline for a 2PC prepare), and how to read them.
struct Remote {
    wanted: Wanted,
    commands: Vec<Command>,
    /// 2PC commit or rollback: the gid, for a second look when the node does not know it.
    keys: Vec<Vec<u8>>,
}

const TCC_TRY: &str = "SELECT item, sqlstate, message, value FROM wallet.tcc_try($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::interval)";
const TCC_CONFIRM: &str =
    "SELECT item, sqlstate, message, value FROM wallet.tcc_confirm($1::text[], $2::text[])";
const TCC_CANCEL: &str =
    "SELECT item, sqlstate, message, value FROM wallet.tcc_cancel($1::text[], $2::text[])";
const POST_BRANCH: &str = "SELECT item, sqlstate, message, value FROM wallet.post_branch($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[])";
const UNDO_BRANCH: &str =
    "SELECT item, sqlstate, message, value FROM wallet.undo_branch($1::text[], $2::text[])";
const KEYS_POSTED: &str = "SELECT count(*) FROM wallet.events WHERE idempotency_key = ANY ($1::text[]) AND event_type = 'transfer'";

fn ints(values: impl Iterator<Item = Option<i64>>) -> Option<Vec<u8>> {
    Some(array_literal(
        values.map(|v| v.map(|v| v.to_string().into_bytes())),
    ))
}

fn remote_commands(g: &Gtx, b: usize, kind: CallKind, coordinator: &str) -> Remote {
    let branch = &g.branches[b];
    let n = branch.postings.len();
    let hash = gtid_hash(&g.gtid);
    let ids: Vec<Vec<u8>> = (0..n)
        .map(|k| protocol::posting_id(&branch.name, k, n).into_bytes())
        .collect();
    let gtids = Some(array_literal((0..n).map(|_| Some(g.gtid.as_slice()))));
    let id_array = Some(array_literal(ids.iter().map(|i| Some(i.as_slice()))));
    let keys: Vec<Vec<u8>> = (0..n).map(|k| posting_key(&hash, branch.no, k)).collect();
    let key_array = Some(array_literal(keys.iter().map(|k| Some(k.as_slice()))));
    let debits = ints(branch.postings.iter().map(|p| p.debit_account_id));
    let credits = ints(branch.postings.iter().map(|p| p.credit_account_id));
    let amounts = ints(branch.postings.iter().map(|p| Some(p.amount)));
    let linked = Some(array_literal(
        (0..n).map(|k| Some(if k + 1 < n { "t" } else { "f" })),
    ));
    let gid = gid(coordinator, &hash, branch.no);
    let command = |name: &'static str, sql: &str, params: Vec<Option<Vec<u8>>>| Command {
        name: Some(name),
        sql: sql.to_string(),
        params,
    };
    let text = |sql: String| Command {
        name: None,
        sql,
        params: vec![],
    };
    let commands = match (g.protocol, kind) {
        (Protocol::Tcc, CallKind::Try) => vec![command(
            "wallet_tcc_try",
            TCC_TRY,
            vec![
                gtids,
                id_array,
                debits,
                credits,
                amounts,
                Some(format!("{} microseconds", g.timeout_micros).into_bytes()),
            ],
        )],
        (Protocol::Tcc, CallKind::Confirm) => vec![command(
            "wallet_tcc_confirm",
            TCC_CONFIRM,
            vec![gtids, id_array],
        )],
        (Protocol::Tcc, CallKind::Cancel) => vec![command(
            "wallet_tcc_cancel",
            TCC_CANCEL,
            vec![gtids, id_array],
        )],
        (Protocol::TwoPhase, CallKind::Try) => vec![
            text("BEGIN".into()),
            command(
                "wallet_post_branch",
                POST_BRANCH,
                vec![key_array, debits, credits, amounts, linked],
            ),
            text(format!("PREPARE TRANSACTION '{gid}'")),
        ],
        (Protocol::TwoPhase, CallKind::Confirm) => vec![text(format!("COMMIT PREPARED '{gid}'"))],
        (Protocol::TwoPhase, CallKind::Cancel) => vec![text(format!("ROLLBACK PREPARED '{gid}'"))],
        (Protocol::Saga, CallKind::Try) => {
            vec![command(
                "wallet_post_branch",
                POST_BRANCH,
                vec![key_array, debits, credits, amounts, linked],
            )]
        }
        (Protocol::Saga, CallKind::Cancel) => {
            let undo = Some(array_literal(keys.iter().map(|k| Some(undo_key(k)))));
            vec![command(
                "wallet_undo_branch",
                UNDO_BRANCH,
                vec![key_array, undo],
            )]
        }
        (Protocol::Saga, CallKind::Confirm) => vec![],
    };
    Remote {
        wanted: Wanted {
            gtx: 0,
            branch: b,
            kind,
        },
        commands,
        keys,
    }
}

/// A participant function's rows as replies.
fn replies(table: &Table) -> Vec<Reply> {
    (0..table.rows.len())
        .map(|r| match (table.text(r, 1), table.text(r, 2)) {
            (Some(sqlstate), message) => Err(WalletError::Remote {
                sqlstate: String::from_utf8_lossy(sqlstate).into_owned(),
                message: message
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default(),
            }),
            (None, _) => Ok(table.text(r, 3).map(<[u8]>::to_vec)),
        })
        .collect()
}

/// Sends every remote call of a round (one connection per node, all in flight at once) and reads
/// the answers.
fn call_remote(remotes: Vec<(String, Remote)>) -> Vec<Answered> {
    let mut by_node: BTreeMap<String, Vec<Remote>> = BTreeMap::new();
    for (node, r) in remotes {
        by_node.entry(node).or_default().push(r);
    }
    let timeout = nodes::call_timeout();
    let mut answers = Vec::new();
    // Calls to one node go one after the other on its connection; to different nodes at once.
    let mut leases: Vec<(String, Result<nodes::Lease, CallError>, Vec<Remote>)> = by_node
        .into_iter()
        .map(|(node, calls)| {
            let lease = nodes::lease(&node);
            (node, lease, calls)
        })
        .collect();
    loop {
        let mut in_flight: Vec<(usize, Remote)> = Vec::new();
        for (i, (node, lease, calls)) in leases.iter_mut().enumerate() {
            let Some(remote) = calls.pop() else { continue };
            match lease {
                Err(e) => answers.push(answered(&remote.wanted, lost(e, node))),
                Ok(lease) => match lease.connection().send_pipeline_or_one(&remote.commands) {
                    Ok(()) => in_flight.push((i, remote)),
                    Err(e) => answers.push(answered(&remote.wanted, lost(&e, node))),
                },
            }
        }
        if in_flight.is_empty() && leases.iter().all(|(_, _, calls)| calls.is_empty()) {
            break;
        }
        for (i, remote) in in_flight {
            let (node, lease, _) = &mut leases[i];
            let lease = lease.as_mut().expect("sent on it");
            let answer = read_answer(lease, &remote, timeout);
            let answer = match answer {
                Ok(a) => a,
                Err(e) => lost(&e, node),
            };
            answers.push(answered(&remote.wanted, answer));
        }
    }
    answers
}

fn answered(
    w: &Wanted,
    (answer, currency, error): (Answer, Option<Vec<u8>>, Option<(String, String)>),
) -> Answered {
    Answered {
        gtx: w.gtx,
        branch: w.branch,
        kind: w.kind,
        answer,
        currency,
        error,
    }
}

impl super::libpq::Connection {
    fn send_pipeline_or_one(&mut self, commands: &[Command]) -> Result<(), CallError> {
        match commands {
            [one] => self.send(one.name, &one.sql, &one.params),
            many => self.send_pipeline(many),
        }
    }
}

type BranchReply = (Answer, Option<Vec<u8>>, Option<(String, String)>);

fn read_answer(
    lease: &mut nodes::Lease,
    remote: &Remote,
    timeout: std::time::Duration,
) -> Result<BranchReply, CallError> {
    let conn = lease.connection();
    if remote.commands.len() > 1 {
        // 2PC prepare: BEGIN, the postings, PREPARE TRANSACTION.
        let answers = conn.finish_pipeline(remote.commands.len(), timeout)?;
        let result = match (&answers[1], &answers[2]) {
            (Ok(table), Ok(_)) => Ok(branch_answer(&replies(table))),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e.clone()),
        };
        if !conn.is_idle() {
            // The transaction failed before PREPARE took it: end it, so the connection is usable.
            let _ = conn.call(None, "ROLLBACK", &[], timeout);
        }
        return result;
    }
    let result = conn.finish(timeout);
    match (remote.wanted.kind, &result) {
        // COMMIT PREPARED of a gid the node no longer has: committed before (an earlier answer
        // was lost) if the postings are there; someone rolled it back if not.
        (CallKind::Confirm, Err(e))
            if e.sqlstate == "42704"
                && !remote.keys.is_empty()
                && remote.commands[0].name.is_none() =>
        {
            let keys = Some(array_literal(
                remote.keys.iter().map(|k| Some(k.as_slice())),
            ));
            let table = conn.call(None, KEYS_POSTED, &[keys], timeout)?;
            if table.int(0, 0) == Some(remote.keys.len() as i64) {
                Ok((Answer::Done, None, None))
            } else {
                Ok((
                    Answer::Refused,
                    None,
                    Some(("WA025".into(), format!("the prepared transaction of branch {} is gone and its postings are not there: it was rolled back by someone", remote.wanted.branch + 1))),
                ))
            }
        }
        // ROLLBACK PREPARED of a gid the node does not have: nothing is prepared.
        (CallKind::Cancel, Err(e))
            if e.sqlstate == "42704" && remote.commands[0].name.is_none() =>
        {
            Ok((Answer::Done, None, None))
        }
        (_, Ok(table)) if remote.commands[0].name.is_some() => Ok(branch_answer(&replies(table))),
        (_, Ok(_)) => Ok((Answer::Done, None, None)),
        (_, Err(e)) => Err(e.clone()),
    }
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
fn losing_answers(kind: CallKind) -> bool {
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
fn record(conn: &Connection, g: &mut Gtx, a: &Answered) {
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
            set_branch(conn, g, a.branch, BranchStatus::Tried, Some(&error));
            note(conn, g, None, Some(&error));
            if g.phase == Phase::Try {
                decide(conn, g, Phase::Cancel, Some(error));
            }
            return;
        }
        note(conn, g, a.currency.as_deref(), None);
    }
    let after = protocol::after_answer(g.protocol, a.kind, a.answer).unwrap_or(before);
    set_branch(conn, g, a.branch, after, a.error.as_ref());
    if a.kind == CallKind::Try && after == BranchStatus::Failed {
        note(conn, g, None, a.error.as_ref());
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
            Action::DecideConfirm => decide(conn, g, Phase::Confirm, None),
            Action::DecideCancel => {
                let reason = g.error.clone().or_else(|| {
                    Some(if recovering && g.protocol != Protocol::Saga {
                        ("WA021".into(), format!("global transaction {} was cancelled by recovery: its coordinator stopped before deciding", Text(g.gtid.clone())))
                    } else {
                        ("WA021".into(), format!("global transaction {} passed its decision deadline before every branch was tried", Text(g.gtid.clone())))
                    })
                });
                decide(conn, g, Phase::Cancel, reason);
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
                record(conn, g, &answered);
                if g.branches[b].status == BranchStatus::Tried && g.phase == Phase::Try {
                    // Posted with the decision: confirmed at the same commit.
                    set_branch(conn, g, b, BranchStatus::Confirmed, None);
                    decide(conn, g, Phase::Confirm, None);
                } else if g.phase == Phase::Try {
                    let reason = g.error.clone();
                    decide(conn, g, Phase::Cancel, reason);
                }
            }
            Action::FinishConfirmed => return Ok(finish(conn, g, "confirmed", recovering, None)),
            Action::FinishCancelled => return Ok(finish(conn, g, "cancelled", recovering, None)),
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
                return Ok(finish(conn, g, "stuck", recovering, error));
            }
            Action::Forget(list) => {
                for b in list {
                    set_branch(conn, g, b, BranchStatus::Cancelled, None);
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
                        conn,
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

/// This coordinator's id (see coordinator_identity.sql). Two sessions making it at once: the
/// one whose insert lost waited for the other's commit, but its statement's snapshot predates
/// that commit and sees no row; the next statement does (at most two tries).
fn coordinator_id(conn: &Connection) -> String {
    for _ in 0..2 {
        let rows = conn.execute(&COORDINATOR_IDENTITY, &[]);
        if let Some(id) = (!rows.is_empty()).then(|| rows.bytes(0, 1)).flatten() {
            return String::from_utf8_lossy(&id).into_owned();
        }
        // SAFETY: what SPI does between statements; the next one takes a fresh snapshot.
        unsafe { pg_sys::CommandCounterIncrement() };
    }
    panic!("wallet.coordinator_identity has no row after making it")
}

/// Drives the global transactions `gtids` (this session holds their claims) as far as they go:
/// until each is finished, stuck, or waits for a node that does not answer.
fn drive(owner: Oid, gtids: &[Vec<u8>], recovering: bool) -> WalletResult<Vec<Option<Gtx>>> {
    let mut state: Vec<Option<Gtx>> = vec![None; gtids.len()];
    let mut pending: Vec<Answered> = Vec::new();
    let mut lost_rounds = vec![0u32; gtids.len()];
    for round in 0..ROUNDS_MAX {
        let phases_before: Vec<Option<Phase>> =
            state.iter().map(|g| g.as_ref().map(|g| g.phase)).collect();
        let body = |conn: &Connection| {
            let coordinator = coordinator_id(conn);
            let mut remotes = Vec::new();
            let mut now = Vec::with_capacity(gtids.len());
            for (i, gtid) in gtids.iter().enumerate() {
                let Some(mut g) = load(conn, gtid)? else {
                    now.push(None);
                    continue;
                };
                for a in pending.iter().filter(|a| a.gtx == i) {
                    record(conn, &mut g, a);
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
            Ok((remotes, now))
        };
        // Recovery must not stop at one global transaction's ERROR (see `guarded`).
        let (remotes, now) = if recovering {
            step(owner, |conn| guarded(|| body(conn)))?
        } else {
            step(owner, body)?
        };
        state = now;
        if round == 0 && !recovering {
            fault("after_record")?;
        }
        let decided = state.iter().zip(&phases_before).any(|(g, before)| {
            g.as_ref()
                .is_some_and(|g| g.phase != Phase::Try && *before != Some(g.phase))
        });
        if decided {
            fault("after_decide")?;
        }
        if remotes.is_empty() {
            break;
        }
        pending = call_remote(remotes);
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
        for (i, lost) in lost_rounds.iter_mut().enumerate() {
            if pending
                .iter()
                .any(|a| a.gtx == i && a.answer == Answer::Lost)
            {
                *lost += 1;
            }
        }
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

fn insert(conn: &Connection, request: &Request, plan: &[protocol::BranchPlan]) -> WalletResult<()> {
    let legs = &request.legs;
    let nodes: Vec<Option<String>> = legs.iter().map(|l| Some(l.node.clone())).collect();
    let accounts: Vec<Option<i64>> = legs.iter().map(|l| Some(l.account_id)).collect();
    let amounts: Vec<Option<i64>> = legs.iter().map(|l| Some(l.amount)).collect();
    let moved: i64 = legs.iter().filter(|l| l.amount > 0).map(|l| l.amount).sum();
    let rows = conn.execute(
        &LEDGER_INSERT,
        &[
            Some(text_datum(&request.gtid)),
            request.protocol.as_str().into_datum(),
            nodes.into_datum(),
            accounts.into_datum(),
            amounts.into_datum(),
            moved.into_datum(),
            request.timeout_micros.into_datum(),
        ],
    );
    if rows.is_empty() {
        return Err(WalletError::ConcurrentChange {
            debit_account_id: 0,
            credit_account_id: 0,
            amount: moved,
        });
    }
    let coordinator = coordinator_id(conn);
    let hash = gtid_hash(&request.gtid);
    for (i, b) in plan.iter().enumerate() {
        let no = i as i32 + 1;
        let gid = (request.protocol == Protocol::TwoPhase && b.node != LOCAL)
            .then(|| gid(&coordinator, &hash, no));
        let debits: Vec<Option<i64>> = b.postings.iter().map(|p| p.debit_account_id).collect();
        let credits: Vec<Option<i64>> = b.postings.iter().map(|p| p.credit_account_id).collect();
        let amounts: Vec<Option<i64>> = b.postings.iter().map(|p| Some(p.amount)).collect();
        conn.execute(
            &LEDGER_BRANCH_INSERT,
            &[
                Some(text_datum(&request.gtid)),
                no.into_datum(),
                format!("b{no}").into_datum(),
                b.node.as_str().into_datum(),
                debits.into_datum(),
                credits.into_datum(),
                amounts.into_datum(),
                gid.into_datum(),
            ],
        );
    }
    Ok(())
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
