//! The calls of the engine to participants: to this node's own participant functions in the
//! step, and to other nodes' over the library's connections after it; and how their answers are
//! read.

use std::collections::BTreeMap;

use pgrx::pg_sys;
use pgrx::IntoDatum;
use wallet_core::error::WalletError;
use wallet_core::protocol::{self, Answer, CallKind, Protocol};

use super::ledger::{Branch, Gtx};
use super::libpq::{array_literal, CallError, Command, Table};
use super::nodes;
use super::participant::{self, PostItem, Reply, TryItem};
use crate::error::WalletResult;
use crate::spi::Connection;

// ---- participant calls -------------------------------------------------------------------------

/// A call the rules want of one branch.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    pub(super) gtx: usize,
    pub(super) branch: usize,
    pub(super) kind: CallKind,
}

/// A branch's answer to a call.
#[derive(Debug, Clone)]
pub(super) struct Answered {
    pub(super) gtx: usize,
    pub(super) branch: usize,
    pub(super) kind: CallKind,
    pub(super) answer: Answer,
    /// The currency it posted or reserved in (try), when it answered.
    pub(super) currency: Option<Vec<u8>>,
    pub(super) error: Option<(String, String)>,
}

/// The idempotency key of posting `k` of branch `no` (2PC and Saga): the gtid's hash keeps it
/// within the keys' 128 bytes whatever the gtid.
pub(super) fn posting_key(gtid_hash: &str, no: i32, k: usize) -> Vec<u8> {
    format!("gtx:{gtid_hash}:{no}.{}", k + 1).into_bytes()
}

pub(super) fn undo_key(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.extend_from_slice(b":undo");
    k
}

/// 32 hex digits of sha256(gtid).
pub(super) fn gtid_hash(gtid: &[u8]) -> String {
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
pub(super) fn gid(coordinator: &str, gtid_hash: &str, no: i32) -> String {
    format!("wallet:{coordinator}:{gtid_hash}:{no}")
}

/// The reply of a branch as a whole from its items' replies: done when every item is; refused
/// with the first refusal; else lost.
pub(super) fn branch_answer(
    replies: &[Reply],
) -> (Answer, Option<Vec<u8>>, Option<(String, String)>) {
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

pub(super) fn lost(
    error: &CallError,
    node: &str,
) -> (Answer, Option<Vec<u8>>, Option<(String, String)>) {
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
pub(super) fn call_local(
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

pub(super) fn post_items<'a>(branch: &Branch, keys: &'a [Vec<u8>]) -> Vec<PostItem<'a>> {
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
pub(super) struct Remote {
    pub(super) wanted: Wanted,
    pub(super) commands: Vec<Command>,
    /// 2PC commit or rollback: the gid, for a second look when the node does not know it.
    pub(super) keys: Vec<Vec<u8>>,
}

pub(super) const TCC_TRY: &str = "SELECT item, sqlstate, message, value FROM wallet.tcc_try($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::interval)";
pub(super) const TCC_CONFIRM: &str =
    "SELECT item, sqlstate, message, value FROM wallet.tcc_confirm($1::text[], $2::text[])";
pub(super) const TCC_CANCEL: &str =
    "SELECT item, sqlstate, message, value FROM wallet.tcc_cancel($1::text[], $2::text[])";
pub(super) const POST_BRANCH: &str = "SELECT item, sqlstate, message, value FROM wallet.post_branch($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[])";
pub(super) const UNDO_BRANCH: &str =
    "SELECT item, sqlstate, message, value FROM wallet.undo_branch($1::text[], $2::text[])";
pub(super) const KEYS_POSTED: &str = "SELECT count(*) FROM wallet.events WHERE idempotency_key = ANY ($1::text[]) AND event_type = 'transfer'";

pub(super) fn ints(values: impl Iterator<Item = Option<i64>>) -> Option<Vec<u8>> {
    Some(array_literal(
        values.map(|v| v.map(|v| v.to_string().into_bytes())),
    ))
}

pub(super) fn remote_commands(g: &Gtx, b: usize, kind: CallKind, coordinator: &str) -> Remote {
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
pub(super) fn replies(table: &Table) -> Vec<Reply> {
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
pub(super) fn call_remote(remotes: Vec<(String, Remote)>) -> Vec<Answered> {
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

pub(super) fn answered(
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

pub(super) type BranchReply = (Answer, Option<Vec<u8>>, Option<(String, String)>);

pub(super) fn read_answer(
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
