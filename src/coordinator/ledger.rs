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
    true
);
query!(
    LEDGER_DECIDE_MANY,
    39,
    "ledger_decide_many.sql",
    [TA, TA, TA, TA],
    true
);
query!(
    LEDGER_NOTE_MANY,
    40,
    "ledger_note_many.sql",
    [TA, TA, TA, TA],
    true
);
query!(
    LEDGER_FINISH_MANY,
    41,
    "ledger_finish_many.sql",
    [TA, TA, T, TA, TA],
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
    &LEDGER_DECIDE_MANY,
    &LEDGER_NOTE_MANY,
    &LEDGER_FINISH_MANY,
    &COORDINATOR_IDENTITY,
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
    pub(super) past_deadline: bool,
    pub(super) finished: bool,
    pub(super) legs: Vec<Leg>,
    pub(super) error: Option<(String, String)>,
    pub(super) branches: Vec<Branch>,
}

pub(super) fn corrupt(what: &str) -> WalletError {
    WalletError::DataCorrupted(format!(
        "wallet.global_transactions: {what}, which the wallet never writes"
    ))
}

/// A text[] datum of `items` (bytes in the database encoding; None for NULL).
fn texts<'a>(items: impl Iterator<Item = Option<&'a [u8]>>) -> Datum {
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
    let rows = conn.execute(&LEDGER_BRANCHES_MANY, &[Some(ids)]);
    for r in 0..rows.len() {
        let gtid = rows.bytes(r, 1).unwrap_or_default();
        if let Some(g) = found.get_mut(&gtid) {
            g.branches.push(branch_of_row(&rows, r)?);
        }
    }
    Ok(gtids.iter().map(|g| found.remove(g)).collect())
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
        past_deadline: rows.get(r, 7).unwrap_or(true),
        finished: rows.get(r, 8).unwrap_or(false),
        legs,
        error,
        branches: Vec::new(),
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
/// [`flush`] in four statements whatever the number of global transactions, or dropped by
/// [`discard`] when the step rolls back.
#[derive(Default)]
struct Writes {
    /// (gtid, branch_no) -> (status, the last error, answers recorded)
    branches: BTreeMap<(Vec<u8>, i32), (BranchStatus, Error, i32)>,
    /// gtid -> (the first currency, the first error)
    notes: BTreeMap<Vec<u8>, (Option<Vec<u8>>, Error)>,
    /// gtid -> (the phase decided, the first reason)
    decides: BTreeMap<Vec<u8>, (Phase, Error)>,
    /// gtid -> (outcome, the error of a stuck one)
    finishes: BTreeMap<Vec<u8>, (String, Error)>,
    /// whether recovery finishes them (else their coordinator)
    by_recovery: bool,
}

thread_local! {
    static WRITES: RefCell<Writes> = RefCell::new(Writes::default());
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
    WRITES.with(|w| {
        let mut w = w.borrow_mut();
        let entry = w.notes.entry(g.gtid.clone()).or_insert((None, None));
        if entry.0.is_none() {
            entry.0 = currency.map(<[u8]>::to_vec);
        }
        if entry.1.is_none() {
            entry.1 = error.cloned();
        }
    });
}

pub(super) fn decide(g: &mut Gtx, phase: Phase, reason: Option<(String, String)>) {
    g.phase = phase;
    if g.error.is_none() {
        g.error = reason.clone();
    }
    WRITES.with(|w| {
        let mut w = w.borrow_mut();
        let entry = w.decides.entry(g.gtid.clone()).or_insert((phase, None));
        entry.0 = phase;
        if entry.1.is_none() {
            entry.1 = reason;
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
    WRITES.with(|w| {
        let mut w = w.borrow_mut();
        w.by_recovery = recovering;
        w.finishes
            .insert(g.gtid.clone(), (outcome.to_string(), error));
    });
}

/// Writes what the step changed: the notes first, then the decisions, the ends and the branches
/// (the order in which each global transaction learnt them).
pub(super) fn flush(conn: &Connection) {
    let w = WRITES.with(|w| std::mem::take(&mut *w.borrow_mut()));
    let sqlstates = |e: &Error| e.as_ref().map(|e| e.0.as_bytes().to_vec());
    let messages = |e: &Error| e.as_ref().map(|e| e.1.as_bytes().to_vec());
    if !w.notes.is_empty() {
        let (gtids, rest): (Vec<&Vec<u8>>, Vec<&(Option<Vec<u8>>, Error)>) = w.notes.iter().unzip();
        conn.execute(
            &LEDGER_NOTE_MANY,
            &[
                Some(texts(gtids.iter().map(|g| Some(g.as_slice())))),
                Some(texts(rest.iter().map(|(c, _)| c.as_deref()))),
                Some(texts(
                    rest.iter()
                        .map(|(_, e)| sqlstates(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
                Some(texts(
                    rest.iter()
                        .map(|(_, e)| messages(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
            ],
        );
    }
    if !w.decides.is_empty() {
        let (gtids, rest): (Vec<&Vec<u8>>, Vec<&(Phase, Error)>) = w.decides.iter().unzip();
        conn.execute(
            &LEDGER_DECIDE_MANY,
            &[
                Some(texts(gtids.iter().map(|g| Some(g.as_slice())))),
                Some(texts(rest.iter().map(|(p, _)| Some(p.as_str().as_bytes())))),
                Some(texts(
                    rest.iter()
                        .map(|(_, e)| sqlstates(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
                Some(texts(
                    rest.iter()
                        .map(|(_, e)| messages(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
            ],
        );
    }
    if !w.finishes.is_empty() {
        let (gtids, rest): (Vec<&Vec<u8>>, Vec<&(String, Error)>) = w.finishes.iter().unzip();
        conn.execute(
            &LEDGER_FINISH_MANY,
            &[
                Some(texts(gtids.iter().map(|g| Some(g.as_slice())))),
                Some(texts(rest.iter().map(|(o, _)| Some(o.as_bytes())))),
                (if w.by_recovery {
                    "recovery"
                } else {
                    "coordinator"
                })
                .into_datum(),
                Some(texts(
                    rest.iter()
                        .map(|(_, e)| sqlstates(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
                Some(texts(
                    rest.iter()
                        .map(|(_, e)| messages(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
            ],
        );
    }
    if !w.branches.is_empty() {
        let (keys, rest): (Vec<&(Vec<u8>, i32)>, Vec<&(BranchStatus, Error, i32)>) =
            w.branches.iter().unzip();
        let numbers: Vec<Option<i32>> = keys.iter().map(|(_, n)| Some(*n)).collect();
        let answers: Vec<Option<i32>> = rest.iter().map(|(_, _, n)| Some(*n)).collect();
        conn.execute(
            &LEDGER_BRANCH_SET_MANY,
            &[
                Some(texts(keys.iter().map(|(g, _)| Some(g.as_slice())))),
                numbers.into_datum(),
                Some(texts(
                    rest.iter().map(|(s, _, _)| Some(s.as_str().as_bytes())),
                )),
                Some(texts(
                    rest.iter()
                        .map(|(_, e, _)| sqlstates(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
                Some(texts(
                    rest.iter()
                        .map(|(_, e, _)| messages(e))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|v| v.as_deref()),
                )),
                answers.into_datum(),
            ],
        );
    }
}

/// Drops what the step changed (it rolls back).
pub(super) fn discard() {
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
