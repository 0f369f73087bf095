//! The coordinator's phase-status ledger as the engine reads and writes it:
//! `wallet.global_transactions` and `wallet.branches` (sql/coordinator.sql).

use std::cell::RefCell;
use std::collections::BTreeMap;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::IntoDatum;
use wallet_core::error::WalletError;
use wallet_core::protocol::{self, BranchStatus, Leg, Phase, Posting, Protocol};

use super::calls::{gid, gtid_hash};
use super::engine::{Request, LOCAL};
use crate::commands::{query, text_datum};
use crate::error::WalletResult;
use crate::spi::{Connection, Kept};

const T: Oid = pg_sys::TEXTOID;
const I8: Oid = pg_sys::INT8OID;
const I4: Oid = pg_sys::INT4OID;
const TA: Oid = pg_sys::TEXTARRAYOID;
const IA: Oid = pg_sys::INT8ARRAYOID;
const I4A: Oid = pg_sys::INT4ARRAYOID;

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
query!(LEDGER_GET_MANY, 36, "ledger_get_many.sql", [TA], true);
query!(
    LEDGER_BRANCHES_MANY,
    37,
    "ledger_branches_many.sql",
    [TA],
    true
);
query!(
    LEDGER_BRANCH_SET_MANY,
    38,
    "ledger_branch_set_many.sql",
    [TA, I4A, TA, TA, TA, I4A],
    true,
    true
);
query!(
    LEDGER_UPDATE_MANY,
    39,
    "ledger_update_many.sql",
    [TA, TA, TA, TA, TA, TA, T, TA, TA],
    true,
    true
);
query!(
    LEDGER_INSERT_BATCH,
    47,
    "ledger_insert_batch.sql",
    [TA, TA, IA, TA, IA, IA, T, I8, T],
    false
);
query!(
    LEDGER_BRANCH_INSERT_BATCH,
    48,
    "ledger_branch_insert_batch.sql",
    [TA, I4A, TA, IA, IA, IA],
    false
);
query!(
    LEDGER_INSERT_HERE,
    49,
    "ledger_insert_here.sql",
    [T, T, TA, IA, IA, I8, I8, I8],
    false
);
query!(
    LEDGER_CANCEL_HERE,
    50,
    "ledger_cancel_here.sql",
    [T, T, T],
    false
);
query!(
    LEDGER_UPDATE_ONE,
    51,
    "ledger_update_one.sql",
    [T, T, T, T, T, T, T, T, T],
    true
);
query!(
    LEDGER_BRANCH_SET_ONE,
    52,
    "ledger_branch_set_one.sql",
    [T, I4, T, T, T, I4],
    true
);
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
    &LEDGER_GET_MANY,
    &LEDGER_BRANCHES_MANY,
    &LEDGER_BRANCH_SET_MANY,
    &LEDGER_UPDATE_MANY,
    &COORDINATOR_IDENTITY,
    &LEDGER_INSERT_BATCH,
    &LEDGER_BRANCH_INSERT_BATCH,
    &LEDGER_INSERT_HERE,
    &LEDGER_CANCEL_HERE,
    &LEDGER_UPDATE_ONE,
    &LEDGER_BRANCH_SET_ONE,
];

// ---- the ledger, as the engine reads it --------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct Branch {
    pub(super) no: i32,
    pub(super) name: String,
    pub(super) node: String,
    pub(super) postings: Vec<Posting>,
    pub(super) status: BranchStatus,
    /// The last error a participant answered for it (SQLSTATE, message).
    pub(super) error: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub(super) struct Gtx {
    pub(super) gtid: Vec<u8>,
    pub(super) protocol: Protocol,
    pub(super) phase: Phase,
    pub(super) outcome: Option<String>,
    pub(super) currency: Option<Vec<u8>>,
    pub(super) timeout_micros: i64,
    /// No confirm decision after this (microseconds since the Unix epoch).
    pub(super) decide_by_micros: i64,
    pub(super) past_deadline: bool,
    pub(super) finished: bool,
    pub(super) legs: Vec<Leg>,
    pub(super) error: Option<(String, String)>,
    pub(super) branches: Vec<Branch>,
    /// The batch it came in (transfer_across_batch), whose session drives it while it lives.
    pub(super) batch: Option<Vec<u8>>,
}

pub(super) fn corrupt(what: &str) -> WalletError {
    WalletError::DataCorrupted(format!(
        "wallet.global_transactions: {what}, which the wallet never writes"
    ))
}

/// A text[] datum of `items` (bytes in the database encoding; None for NULL).
pub(super) fn texts<'a>(items: impl Iterator<Item = Option<&'a [u8]>>) -> Datum {
    let (datums, nulls): (Vec<Datum>, Vec<bool>) = items
        .map(|t| match t {
            Some(b) => (text_datum(b), false),
            None => (Datum::from(0usize), true),
        })
        .unzip();
    let mut datums = datums;
    let mut nulls = nulls;
    let mut dims = [datums.len() as i32];
    let mut lbs = [1i32];
    // SAFETY: construct_md_array copies the datums (text, by reference) into a new
    // one-dimensional text[] in the current memory context; dims and nulls match them.
    unsafe {
        Datum::from(pg_sys::construct_md_array(
            datums.as_mut_ptr(),
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            pg_sys::TEXTOID,
            -1,
            false,
            b'i' as std::ffi::c_char,
        ))
    }
}

/// The global transaction `gtid`, locked for this step; None if there is none.
pub(super) fn load(conn: &Connection, gtid: &[u8]) -> WalletResult<Option<Gtx>> {
    Ok(load_many(conn, std::slice::from_ref(&gtid.to_vec()))?
        .pop()
        .flatten())
}

/// The global transactions `gtids` (in their order; None for one that does not exist), locked
/// for this step, with their branches: two statements whatever their number.
pub(super) fn load_many(conn: &Connection, gtids: &[Vec<u8>]) -> WalletResult<Vec<Option<Gtx>>> {
    let ids = texts(gtids.iter().map(|g| Some(g.as_slice())));
    let rows = conn.execute(&LEDGER_GET_MANY, &[Some(ids)]);
    let mut found: std::collections::HashMap<Vec<u8>, Gtx> = std::collections::HashMap::new();
    for r in 0..rows.len() {
        let g = gtx_of_row(&rows, r)?;
        found.insert(g.gtid.clone(), g);
    }
    if found.is_empty() {
        return Ok(gtids.iter().map(|_| None).collect());
    }
    let rows = conn.execute(&LEDGER_BRANCHES_MANY, &[Some(ids)]);
    attach_branches(&rows, &mut found)?;
    Ok(gtids.iter().map(|g| found.remove(g)).collect())
}

/// Rows of wallet.branches (columns as ledger_branches_many.sql), each added to its global
/// transaction in `gtxs`, in branch order.
fn attach_branches(
    rows: &crate::spi::Rows,
    gtxs: &mut std::collections::HashMap<Vec<u8>, Gtx>,
) -> WalletResult<()> {
    for r in 0..rows.len() {
        let gtid = rows.bytes(r, 1).unwrap_or_default();
        if let Some(g) = gtxs.get_mut(&gtid) {
            g.branches.push(branch_of_row(rows, r)?);
        }
    }
    for g in gtxs.values_mut() {
        g.branches.sort_by_key(|b| b.no);
    }
    Ok(())
}

impl Gtx {
    /// Whether its decision deadline has passed, now.
    pub(super) fn check_deadline(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| d.as_micros() as i64);
        self.past_deadline = now > self.decide_by_micros;
    }
}

/// A row of ledger_get_many.sql.
fn gtx_of_row(rows: &crate::spi::Rows, r: usize) -> WalletResult<Gtx> {
    let text = |c: usize| {
        rows.bytes(r, c)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let protocol = text(2)
        .as_deref()
        .and_then(Protocol::parse)
        .ok_or_else(|| corrupt("an unknown protocol"))?;
    let phase = text(3)
        .as_deref()
        .and_then(Phase::parse)
        .ok_or_else(|| corrupt("an unknown phase"))?;
    let nodes: Vec<Option<String>> = rows.get(r, 9).unwrap_or_default();
    let accounts: Vec<Option<i64>> = rows.get(r, 10).unwrap_or_default();
    let amounts: Vec<Option<i64>> = rows.get(r, 11).unwrap_or_default();
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
    let error = match (text(12), text(13)) {
        (Some(s), Some(m)) => Some((s, m)),
        _ => None,
    };
    Ok(Gtx {
        gtid: rows.bytes(r, 1).unwrap_or_default(),
        protocol,
        phase,
        outcome: text(4),
        currency: rows.bytes(r, 5),
        timeout_micros: rows.get(r, 6).unwrap_or(0),
        decide_by_micros: rows.get(r, 7).unwrap_or(0),
        past_deadline: true,
        finished: rows.get(r, 8).unwrap_or(false),
        legs,
        error,
        branches: Vec::new(),
        batch: rows.bytes(r, 14),
    })
    .map(|mut g: Gtx| {
        g.check_deadline();
        g
    })
}

/// A row of ledger_branches_many.sql.
fn branch_of_row(rows: &crate::spi::Rows, r: usize) -> WalletResult<Branch> {
    let text = |c: usize| {
        rows.bytes(r, c)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let debits: Vec<Option<i64>> = rows.get(r, 5).unwrap_or_default();
    let credits: Vec<Option<i64>> = rows.get(r, 6).unwrap_or_default();
    let amounts: Vec<Option<i64>> = rows.get(r, 7).unwrap_or_default();
    let status = text(8)
        .as_deref()
        .and_then(BranchStatus::parse)
        .ok_or_else(|| corrupt("a branch with an unknown status"))?;
    Ok(Branch {
        no: rows.get(r, 2).unwrap_or_default(),
        name: text(3).unwrap_or_default(),
        node: text(4).unwrap_or_default(),
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
        error: match (text(9), text(10)) {
            (Some(s), Some(m)) => Some((s, m)),
            _ => None,
        },
    })
}

// ---- the ledger's writes: kept with the in-memory state, written set-wise at the step's end ----

type Error = Option<(String, String)>;

/// What one step changes in the ledger, per global transaction and branch, merged: written by
/// [`flush`] in two statements whatever the number of global transactions, or dropped by
/// [`discard`] when the step rolls back.
#[derive(Default)]
struct Writes {
    /// (gtid, branch_no) -> (status, the last error, answers recorded)
    branches: BTreeMap<(Vec<u8>, i32), (BranchStatus, Error, i32)>,
    /// gtid -> what the step changed of it
    gtxs: BTreeMap<Vec<u8>, GtxWrite>,
    /// whether recovery finishes them (else their coordinator)
    by_recovery: bool,
}

/// A step's changes of one global transaction: the first currency and reason learnt, the
/// decision, the end (with a stuck one's error).
#[derive(Default)]
struct GtxWrite {
    currency: Option<Vec<u8>>,
    reason: Error,
    phase: Option<Phase>,
    outcome: Option<String>,
    stuck: Error,
}

thread_local! {
    static WRITES: RefCell<Writes> = RefCell::new(Writes::default());
    /// The step under way leaves its changes to the next one ([`defer`]).
    static DEFER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The last step committed left its changes to the next one, which writes them with its own.
    static CARRIED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(super) fn set_branch(
    g: &mut Gtx,
    b: usize,
    status: BranchStatus,
    error: Option<&(String, String)>,
) {
    g.branches[b].status = status;
    if let Some(e) = error {
        g.branches[b].error = Some(e.clone());
    }
    let key = (g.gtid.clone(), g.branches[b].no);
    WRITES.with(|w| {
        let mut w = w.borrow_mut();
        let entry = w.branches.entry(key).or_insert((status, None, 0));
        entry.0 = status;
        if error.is_some() {
            entry.1 = error.cloned();
        }
        entry.2 += 1;
    });
}

pub(super) fn note(g: &mut Gtx, currency: Option<&[u8]>, error: Option<&(String, String)>) {
    if g.currency.is_none() {
        g.currency = currency.map(<[u8]>::to_vec);
    }
    if g.error.is_none() {
        g.error = error.cloned();
    }
    change(g, |w| {
        if w.currency.is_none() {
            w.currency = currency.map(<[u8]>::to_vec);
        }
        if w.reason.is_none() {
            w.reason = error.cloned();
        }
    });
}

pub(super) fn decide(g: &mut Gtx, phase: Phase, reason: Option<(String, String)>) {
    g.phase = phase;
    if g.error.is_none() {
        g.error = reason.clone();
    }
    change(g, |w| {
        w.phase = Some(phase);
        if w.reason.is_none() {
            w.reason = reason;
        }
    });
}

pub(super) fn finish(
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
    WRITES.with(|w| w.borrow_mut().by_recovery = recovering);
    change(g, |w| {
        w.outcome = Some(outcome.to_string());
        w.stuck = if outcome == "stuck" { error } else { None };
    });
}

fn change(g: &Gtx, f: impl FnOnce(&mut GtxWrite)) {
    WRITES.with(|w| f(w.borrow_mut().gtxs.entry(g.gtid.clone()).or_default()));
}

/// Up to this many rows a step's changes are written one statement per row (scalar parameters):
/// a statement over `unnest` of its arrays starts a table function per column and a hash join,
/// about five times the instructions of a keyed UPDATE for one row (callgrind of a single
/// cross-node transfer); from a batch on, the arrays' one statement is cheaper.
const ROWS_ONE_BY_ONE: usize = 3;

/// Whether all the step changed is what answers to calls of this node's own taught: branches
/// tried (a currency learnt with them), nothing decided, refused or finished. Every participant
/// call is keyed, so the same call again answers the same (a try its hold, a posting its event);
/// and the rules already reckon with a branch tried whose answer the ledger lacks (a lost
/// answer): TC/C cancels and a saga compensates untried branches too, and a try or posting
/// repeated takes effect once. Such a step may leave its changes to the next one.
pub(super) fn replayable() -> bool {
    WRITES.with(|w| {
        let w = w.borrow();
        w.gtxs.values().all(|g| {
            g.reason.is_none() && g.phase.is_none() && g.outcome.is_none() && g.stuck.is_none()
        }) && w
            .branches
            .values()
            .all(|(status, error, _)| *status == BranchStatus::Tried && error.is_none())
    })
}

/// The step under way writes nothing of its changes ([`replayable`] ones): the next step writes
/// them with its own. Its commit still makes its calls' effects durable and releases their locks.
pub(super) fn defer() {
    DEFER.with(|d| d.set(true));
}

/// At a step's start: what an earlier step that an ERROR ended left unwritten is dropped, not
/// what the step before left to this one.
pub(super) fn begin_step() {
    DEFER.with(|d| d.set(false));
    if !CARRIED.with(|c| c.replace(false)) {
        WRITES.with(|w| *w.borrow_mut() = Writes::default());
    }
}

/// Writes what the step changed (with what the step before left to it): each global
/// transaction's row once, then the branches'. A deferred step writes nothing and leaves it all
/// to the next.
pub(super) fn flush(conn: &Connection) {
    if DEFER.with(|d| d.replace(false)) {
        CARRIED.with(|c| c.set(true));
        return;
    }
    let w = WRITES.with(|w| std::mem::take(&mut *w.borrow_mut()));
    let by = if w.by_recovery {
        "recovery"
    } else {
        "coordinator"
    };
    let part = |e: &Error, k: usize| {
        e.as_ref()
            .map(|e| if k == 0 { e.0.clone() } else { e.1.clone() }.into_bytes())
    };
    // Per global transaction: gtid, currency, reason (SQLSTATE, message), phase, outcome, stuck
    // (SQLSTATE, message): the parameters $1-$6, $8, $9 of ledger_update_{one,many}.sql.
    let gtxs: Vec<[Option<Vec<u8>>; 8]> = w
        .gtxs
        .iter()
        .map(|(gtid, r)| {
            [
                Some(gtid.clone()),
                r.currency.clone(),
                part(&r.reason, 0),
                part(&r.reason, 1),
                r.phase.map(|p| p.as_str().as_bytes().to_vec()),
                r.outcome.clone().map(String::into_bytes),
                part(&r.stuck, 0),
                part(&r.stuck, 1),
            ]
        })
        .collect();
    if gtxs.len() <= ROWS_ONE_BY_ONE {
        for row in &gtxs {
            let mut args: Vec<Option<Datum>> =
                row.iter().map(|v| v.as_deref().map(text_datum)).collect();
            args.insert(6, by.into_datum());
            conn.execute(&LEDGER_UPDATE_ONE, &args);
        }
    } else {
        let mut args: Vec<Option<Datum>> = (0..8)
            .map(|c| Some(texts(gtxs.iter().map(|row| row[c].as_deref()))))
            .collect();
        args.insert(6, by.into_datum());
        conn.execute(&LEDGER_UPDATE_MANY, &args);
    }
    if w.branches.is_empty() {
        return;
    }
    if w.branches.len() <= ROWS_ONE_BY_ONE {
        for ((gtid, no), (status, error, answers)) in &w.branches {
            conn.execute(
                &LEDGER_BRANCH_SET_ONE,
                &[
                    Some(text_datum(gtid)),
                    no.into_datum(),
                    status.as_str().into_datum(),
                    part(error, 0).as_deref().map(text_datum),
                    part(error, 1).as_deref().map(text_datum),
                    answers.into_datum(),
                ],
            );
        }
        return;
    }
    let (keys, rest): (Vec<&(Vec<u8>, i32)>, Vec<&(BranchStatus, Error, i32)>) =
        w.branches.iter().unzip();
    let numbers: Vec<Option<i32>> = keys.iter().map(|(_, n)| Some(*n)).collect();
    let answers: Vec<Option<i32>> = rest.iter().map(|(_, _, n)| Some(*n)).collect();
    let errors =
        |k: usize| -> Vec<Option<Vec<u8>>> { rest.iter().map(|(_, e, _)| part(e, k)).collect() };
    let (sqlstates, messages) = (errors(0), errors(1));
    conn.execute(
        &LEDGER_BRANCH_SET_MANY,
        &[
            Some(texts(keys.iter().map(|(g, _)| Some(g.as_slice())))),
            numbers.into_datum(),
            Some(texts(
                rest.iter().map(|(s, _, _)| Some(s.as_str().as_bytes())),
            )),
            Some(texts(sqlstates.iter().map(Option::as_deref))),
            Some(texts(messages.iter().map(Option::as_deref))),
            answers.into_datum(),
        ],
    );
}

/// At the end of a drive: what its last step left to a next one that did not come (a call
/// failed) is dropped, never written later by an unrelated step (it would overwrite what
/// recovery wrote meanwhile); repeating the calls learns it again.
pub(super) fn drop_carried() {
    if CARRIED.with(|c| c.replace(false)) {
        WRITES.with(|w| *w.borrow_mut() = Writes::default());
    }
}

/// Drops what the step changed (it rolls back), and what an earlier one left to it: all of it
/// can be learnt again by repeating the calls.
pub(super) fn discard() {
    DEFER.with(|d| d.set(false));
    CARRIED.with(|c| c.set(false));
    WRITES.with(|w| *w.borrow_mut() = Writes::default());
}

/// This coordinator's id (see coordinator_identity.sql). Two sessions making it at once: the
/// one whose insert lost waited for the other's commit, but its statement's snapshot predates
/// that commit and sees no row; the next statement does (at most two tries).
pub(super) fn coordinator_id(conn: &Connection) -> String {
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

pub(super) fn insert(
    conn: &Connection,
    request: &Request,
    plan: &[protocol::BranchPlan],
) -> WalletResult<()> {
    let rows = conn.execute(&LEDGER_INSERT, &record_args(request));
    if rows.is_empty() {
        return Err(recorded_meanwhile(request));
    }
    // Only 2PC's branches on other nodes have a gid.
    let named = request.protocol == Protocol::TwoPhase && plan.iter().any(|b| b.node != LOCAL);
    let (coordinator, hash) = if named {
        (coordinator_id(conn), gtid_hash(&request.gtid))
    } else {
        (String::new(), String::new())
    };
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

/// Records a new global transaction of this node alone (see `run_here`) as confirmed, before
/// its posting; false when the gtid exists.
pub(super) fn insert_here(conn: &Connection, request: &Request) -> bool {
    let mut args = record_args(request);
    args.push(first_account(request, true).into_datum());
    !conn.execute(&LEDGER_INSERT_HERE, &args).is_empty()
}

/// The row of a global transaction of this node alone whose posting took effect, for the direct
/// insert (`ledger_row.rs`), in the order of `catalog::LEDGER_COLUMNS`: what
/// ledger_insert_here.sql writes, `currency` being the one the transfer moved.
pub(super) fn here_row(request: &Request, currency: &[u8]) -> [Datum; 15] {
    // The values both statements take: the gtid, the protocol, the legs, the amount moved.
    let args = record_args(request);
    let [gtid, protocol, nodes, accounts, amounts, moved, _] = args.as_slice() else {
        unreachable!("record_args gives seven parameters")
    };
    let by = |d: &Option<Datum>| d.expect("a datum");
    let micros = request.timeout_micros;
    // SAFETY: clock_timestamp(), and an interval built in the current memory context.
    let (now, timeout) = unsafe {
        let interval =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::Interval>()) as *mut pg_sys::Interval;
        (*interval).time = micros;
        (pg_sys::GetCurrentTimestamp(), Datum::from(interval))
    };
    // decide_by = now + timeout / 2, as interval division rounds (to the nearest, ties to even).
    let half = (micros as f64 / 2.0).round_ties_even() as i64;
    [
        by(gtid),
        by(protocol),
        text_datum(b"confirm"),
        text_datum(b"confirmed"),
        by(nodes),
        by(accounts),
        by(amounts),
        by(moved),
        text_datum(currency),
        timeout,
        Datum::from(now),
        Datum::from(now.saturating_add(half)),
        Datum::from(now),
        Datum::from(now),
        text_datum(b"coordinator"),
    ]
}

/// The parameters $1-$7 of ledger_insert.sql and ledger_insert_here.sql: the gtid, the protocol,
/// the legs (nodes, accounts, amounts), the amount that moves, the hold timeout.
fn record_args(request: &Request) -> Vec<Option<Datum>> {
    let legs = &request.legs;
    let accounts: Vec<Option<i64>> = legs.iter().map(|l| Some(l.account_id)).collect();
    let amounts: Vec<Option<i64>> = legs.iter().map(|l| Some(l.amount)).collect();
    vec![
        Some(text_datum(&request.gtid)),
        request.protocol.as_str().into_datum(),
        Some(texts(legs.iter().map(|l| Some(l.node.as_bytes())))),
        accounts.into_datum(),
        amounts.into_datum(),
        moved(request).into_datum(),
        request.timeout_micros.into_datum(),
    ]
}

/// What a global transaction moves: the sum of its credits.
fn moved(request: &Request) -> i64 {
    request
        .legs
        .iter()
        .filter(|l| l.amount > 0)
        .map(|l| l.amount)
        .sum()
}

/// The account of the first leg that pays (`out`) or receives; 0 if there is none.
fn first_account(request: &Request, out: bool) -> i64 {
    request
        .legs
        .iter()
        .find(|l| (l.amount < 0) == out)
        .map_or(0, |l| l.account_id)
}

/// Records that the posting of a global transaction of this node alone was refused.
pub(super) fn cancel_here(conn: &Connection, gtid: &[u8], refusal: &(String, String)) {
    conn.execute(
        &LEDGER_CANCEL_HERE,
        &[
            Some(text_datum(gtid)),
            refusal.0.as_str().into_datum(),
            refusal.1.as_str().into_datum(),
        ],
    );
}

/// A gtid recorded meanwhile (by a batch, which records without the gtid's claim): a 40001
/// naming the legs' first accounts; the retry finds it.
fn recorded_meanwhile(request: &Request) -> WalletError {
    WalletError::ConcurrentChange {
        debit_account_id: first_account(request, true),
        credit_account_id: first_account(request, false),
        amount: moved(request),
    }
}

/// Records a batch's new global transactions (two legs each) and their branches, set-wise;
/// returns those that were new (the others existed already), as [`load_many`] would read them.
pub(super) fn insert_batch(
    conn: &Connection,
    protocol: Protocol,
    timeout_micros: i64,
    batch: &[u8],
    items: &[(&Request, &[protocol::BranchPlan])],
) -> WalletResult<std::collections::HashMap<Vec<u8>, Gtx>> {
    let leg = |r: &Request, k: usize| r.legs[k].clone();
    let gtids = texts(items.iter().map(|(r, _)| Some(r.gtid.as_slice())));
    let from_nodes = texts(items.iter().map(|(r, _)| Some(r.legs[0].node.as_bytes())));
    let to_nodes = texts(items.iter().map(|(r, _)| Some(r.legs[1].node.as_bytes())));
    let from_accounts: Vec<Option<i64>> = items
        .iter()
        .map(|(r, _)| Some(leg(r, 0).account_id))
        .collect();
    let to_accounts: Vec<Option<i64>> = items
        .iter()
        .map(|(r, _)| Some(leg(r, 1).account_id))
        .collect();
    let amounts: Vec<Option<i64>> = items.iter().map(|(r, _)| Some(leg(r, 1).amount)).collect();
    let rows = conn.execute(
        &LEDGER_INSERT_BATCH,
        &[
            Some(gtids),
            Some(from_nodes),
            from_accounts.into_datum(),
            Some(to_nodes),
            to_accounts.into_datum(),
            amounts.into_datum(),
            protocol.as_str().into_datum(),
            timeout_micros.into_datum(),
            Some(text_datum(batch)),
        ],
    );
    let mut new = std::collections::HashMap::with_capacity(rows.len());
    for r in 0..rows.len() {
        let g = gtx_of_row(&rows, r)?;
        new.insert(g.gtid.clone(), g);
    }
    let mut b_gtids: Vec<&[u8]> = Vec::new();
    let mut b_numbers: Vec<Option<i32>> = Vec::new();
    let mut b_nodes: Vec<&[u8]> = Vec::new();
    let mut b_debits: Vec<Option<i64>> = Vec::new();
    let mut b_credits: Vec<Option<i64>> = Vec::new();
    let mut b_amounts: Vec<Option<i64>> = Vec::new();
    for (r, plan) in items.iter().filter(|(r, _)| new.contains_key(&r.gtid)) {
        for (i, b) in plan.iter().enumerate() {
            // Two legs make one posting per branch.
            let p = &b.postings[0];
            b_gtids.push(&r.gtid);
            b_numbers.push(Some(i as i32 + 1));
            b_nodes.push(b.node.as_bytes());
            b_debits.push(p.debit_account_id);
            b_credits.push(p.credit_account_id);
            b_amounts.push(Some(p.amount));
        }
    }
    if !b_gtids.is_empty() {
        let rows = conn.execute(
            &LEDGER_BRANCH_INSERT_BATCH,
            &[
                Some(texts(b_gtids.into_iter().map(Some))),
                b_numbers.into_datum(),
                Some(texts(b_nodes.into_iter().map(Some))),
                b_debits.into_datum(),
                b_credits.into_datum(),
                b_amounts.into_datum(),
            ],
        );
        attach_branches(&rows, &mut new)?;
    }
    Ok(new)
}
