//! The coordinator's phase-status ledger as the engine reads and writes it:
//! `wallet.global_transactions` and `wallet.branches` (sql/coordinator.sql).

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

pub(super) fn load(conn: &Connection, gtid: &[u8]) -> WalletResult<Option<Gtx>> {
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

pub(super) fn opt_text(value: Option<&str>) -> Option<Datum> {
    value.map(|v| text_datum(v.as_bytes()))
}

pub(super) fn set_branch(
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

pub(super) fn note(
    conn: &Connection,
    g: &mut Gtx,
    currency: Option<&[u8]>,
    error: Option<&(String, String)>,
) {
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

pub(super) fn decide(
    conn: &Connection,
    g: &mut Gtx,
    phase: Phase,
    reason: Option<(String, String)>,
) {
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

pub(super) fn finish(
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
