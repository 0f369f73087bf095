//! The calls of the engine to participants: to this node's own participant functions in the
//! step, and to other nodes' over the library's connections after it; and how their answers are
//! read.

use std::collections::BTreeMap;

use pgrx::pg_sys;
use pgrx::IntoDatum;
use wallet_core::error::WalletError;
use wallet_core::protocol::{self, Answer, CallKind, Protocol};

use super::ledger::Gtx;
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

/// Runs a call on a branch of this node, in the current step: the merged call of
/// [`call_locals`] with one member.
pub(super) fn call_local(
    conn: &Connection,
    g: &Gtx,
    b: usize,
    kind: CallKind,
) -> WalletResult<(Answer, Option<Vec<u8>>, Option<(String, String)>)> {
    let call = LocalCall {
        slot: 0,
        branch: b,
        kind,
        remote: Vec::new(),
    };
    let replies = call_group(
        conn,
        std::slice::from_ref(g),
        std::slice::from_ref(&call),
        &[0],
    )?;
    Ok(branch_answer(&replies))
}

/// A call the rules want of a branch on this node, kept for the step's merged call of its kind
/// (see [`call_locals`]); `remote`: the other branches of the same call, for other nodes.
pub(super) struct LocalCall {
    pub(super) slot: usize,
    pub(super) branch: usize,
    pub(super) kind: CallKind,
    pub(super) remote: Vec<usize>,
}

/// Runs the local calls of one step, one participant call per protocol and kind whatever the
/// number of global transactions (`gtxs[call.slot]`); answers in the calls' order.
///
/// For several global transactions (a batch, a group of recovery) each merged call runs in a
/// subtransaction: a Postgres ERROR in it (a constraint a DBA added, a lock wait that timed out,
/// a deadlock) rolls it back and its calls run again one by one, each in a subtransaction of its
/// own, so that the ERROR becomes the answer of the branch that raised it alone, as a remote
/// node's would be (`read_merged`), and never the fate of the others. A single global
/// transaction's ERROR stops its step, as before.
pub(super) fn call_locals(
    conn: &Connection,
    gtxs: &[Gtx],
    calls: &[LocalCall],
) -> WalletResult<Vec<BranchReply>> {
    let mut answers: Vec<Option<BranchReply>> = vec![None; calls.len()];
    let mut groups: BTreeMap<(&'static str, &'static str), Vec<usize>> = BTreeMap::new();
    for (c, call) in calls.iter().enumerate() {
        let protocol = gtxs[call.slot].protocol;
        groups
            .entry((protocol.as_str(), kind_name(call.kind)))
            .or_default()
            .push(c);
    }
    let isolated = |members: &[usize]| {
        super::steps::subtransaction(|| call_group(conn, gtxs, calls, members), |r| r.is_ok())
    };
    for members in groups.values() {
        if gtxs.len() == 1 {
            let replies = call_group(conn, gtxs, calls, members)?;
            put(&mut answers, gtxs, calls, members, &replies);
            continue;
        }
        match isolated(members) {
            Ok(replies) => put(&mut answers, gtxs, calls, members, &replies),
            Err(e) if members.len() == 1 => answers[members[0]] = Some(branch_answer(&[Err(e)])),
            Err(_) => {
                // One by one, for at most about twice wallet.node_timeout: behind a lock that
                // others wait for too (a prepared transaction's, say), each would wait its own
                // lock_timeout in turn, and the step (with the decisions it makes) would last
                // minutes; those not reached count as not answered this round.
                let started = std::time::Instant::now();
                for &c in members {
                    if started.elapsed() >= nodes::call_timeout() * 2 {
                        let later = WalletError::Remote {
                            sqlstate: "55P03".into(),
                            message:
                                "not called in this round: the calls before it waited for locks"
                                    .into(),
                        };
                        answers[c] = Some(branch_answer(&[Err(later)]));
                        continue;
                    }
                    match isolated(&[c]) {
                        Ok(replies) => put(&mut answers, gtxs, calls, &[c], &replies),
                        Err(e) => answers[c] = Some(branch_answer(&[Err(e)])),
                    }
                }
            }
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every local call answered"))
        .collect())
}

/// The answers of `members` from the replies of their postings, member after member.
fn put(
    answers: &mut [Option<BranchReply>],
    gtxs: &[Gtx],
    calls: &[LocalCall],
    members: &[usize],
    replies: &[Reply],
) {
    let mut start = 0;
    for &c in members {
        let n = gtxs[calls[c].slot].branches[calls[c].branch].postings.len();
        answers[c] = Some(branch_answer(&replies[start..start + n]));
        start += n;
    }
}

/// One participant call for `members` (calls of one protocol and kind): the replies of their
/// postings, member after member.
fn call_group(
    conn: &Connection,
    gtxs: &[Gtx],
    calls: &[LocalCall],
    members: &[usize],
) -> WalletResult<Vec<Reply>> {
    let first = &calls[members[0]];
    let protocol = gtxs[first.slot].protocol;
    // Each member's items: (gtid, posting id, key, posting, linked, timeout).
    let mut owned: Vec<(Vec<u8>, Vec<u8>, Vec<u8>, protocol::Posting, bool, i64)> = Vec::new();
    for &c in members {
        let g = &gtxs[calls[c].slot];
        let branch = &g.branches[calls[c].branch];
        let n = branch.postings.len();
        let hash = gtid_hash(&g.gtid);
        for (k, p) in branch.postings.iter().enumerate() {
            owned.push((
                g.gtid.clone(),
                protocol::posting_id(&branch.name, k, n).into_bytes(),
                posting_key(&hash, branch.no, k),
                p.clone(),
                k + 1 < n,
                g.timeout_micros,
            ));
        }
    }
    Ok(match (protocol, first.kind) {
        (Protocol::Tcc, CallKind::Try) => {
            let items: Vec<TryItem> = owned
                .iter()
                .map(|(gtid, id, _, p, _, timeout)| TryItem {
                    gtid,
                    branch: id,
                    debit_account_id: p.debit_account_id,
                    credit_account_id: p.credit_account_id,
                    amount: p.amount,
                    timeout_micros: *timeout,
                })
                .collect();
            participant::tcc_try(conn, &items)?
        }
        (Protocol::Tcc, CallKind::Confirm | CallKind::Cancel) => {
            let items: Vec<(&[u8], &[u8])> = owned
                .iter()
                .map(|(gtid, id, ..)| (gtid.as_slice(), id.as_slice()))
                .collect();
            if first.kind == CallKind::Confirm {
                participant::tcc_confirm(conn, &items)?
            } else {
                participant::tcc_cancel(conn, &items)?
            }
        }
        // The 2PC local branch is posted with the decision (PostLocalAndDecide); cancelled, it
        // never posted anything. A saga's confirm has nothing to do.
        (Protocol::TwoPhase, CallKind::Cancel) | (Protocol::Saga, CallKind::Confirm) => {
            owned.iter().map(|_| Ok(None)).collect()
        }
        (Protocol::TwoPhase, CallKind::Try | CallKind::Confirm)
        | (Protocol::Saga, CallKind::Try) => {
            let items: Vec<PostItem> = owned
                .iter()
                .map(|(_, _, key, p, linked, _)| PostItem {
                    key,
                    debit_account_id: p.debit_account_id,
                    credit_account_id: p.credit_account_id,
                    amount: p.amount,
                    linked: *linked,
                })
                .collect();
            participant::post_branch(conn, &items)?
        }
        (Protocol::Saga, CallKind::Cancel) => {
            let undo: Vec<Vec<u8>> = owned.iter().map(|(_, _, key, ..)| undo_key(key)).collect();
            let items: Vec<(&[u8], &[u8])> = owned
                .iter()
                .zip(&undo)
                .map(|((_, _, key, ..), u)| (key.as_slice(), u.as_slice()))
                .collect();
            participant::undo_branch(conn, &items)?
        }
    })
}

fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Try => "try",
        CallKind::Confirm => "confirm",
        CallKind::Cancel => "cancel",
    }
}

/// The commands one remote call sends (a pipeline for a 2PC prepare), and how to read them.
pub(super) struct Remote {
    pub(super) wanted: Wanted,
    pub(super) commands: Vec<Command>,
    /// 2PC commit or rollback: the gid, for a second look when the node does not know it.
    pub(super) keys: Vec<Vec<u8>>,
    /// For a call of a participant function on items: the items, so that the calls of many
    /// global transactions to one node go as one call (see [`call_remote`]).
    pub(super) items: Option<Items>,
}

/// The items of a participant function's call, column by column (each a value per item, in
/// text form; None for NULL), and the parameters after them that every item shares.
pub(super) struct Items {
    pub(super) columns: Vec<Vec<Option<Vec<u8>>>>,
    pub(super) shared: Vec<Option<Vec<u8>>>,
}

impl Items {
    fn count(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }
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

/// A branch's postings as the participant functions take them: a column per argument, a value
/// per posting in text form (None for NULL).
struct BranchColumns {
    gtids: Column,
    ids: Column,
    keys: Vec<Vec<u8>>,
    debits: Column,
    credits: Column,
    amounts: Column,
    linked: Column,
}

type Column = Vec<Option<Vec<u8>>>;

impl BranchColumns {
    fn of(g: &Gtx, b: usize) -> BranchColumns {
        let branch = &g.branches[b];
        let n = branch.postings.len();
        let hash = gtid_hash(&g.gtid);
        let int = |v: Option<i64>| v.map(|v| v.to_string().into_bytes());
        BranchColumns {
            gtids: (0..n).map(|_| Some(g.gtid.clone())).collect(),
            ids: (0..n)
                .map(|k| Some(protocol::posting_id(&branch.name, k, n).into_bytes()))
                .collect(),
            keys: (0..n).map(|k| posting_key(&hash, branch.no, k)).collect(),
            debits: branch
                .postings
                .iter()
                .map(|p| int(p.debit_account_id))
                .collect(),
            credits: branch
                .postings
                .iter()
                .map(|p| int(p.credit_account_id))
                .collect(),
            amounts: branch
                .postings
                .iter()
                .map(|p| int(Some(p.amount)))
                .collect(),
            linked: (0..n)
                .map(|k| {
                    Some(if k + 1 < n {
                        b"t".to_vec()
                    } else {
                        b"f".to_vec()
                    })
                })
                .collect(),
        }
    }

    fn key_column(&self) -> Column {
        self.keys.iter().cloned().map(Some).collect()
    }

    fn undo_column(&self) -> Column {
        self.keys.iter().map(|k| Some(undo_key(k))).collect()
    }

    /// The columns of the participant function of `protocol`'s `kind` call, in its argument
    /// order, or None for a call that is not a participant function (2PC's, a saga's confirm).
    fn arguments(&self, protocol: Protocol, kind: CallKind) -> Option<Vec<Column>> {
        Some(match (protocol, kind) {
            (Protocol::Tcc, CallKind::Try) => vec![
                self.gtids.clone(),
                self.ids.clone(),
                self.debits.clone(),
                self.credits.clone(),
                self.amounts.clone(),
            ],
            (Protocol::Tcc, CallKind::Confirm | CallKind::Cancel) => {
                vec![self.gtids.clone(), self.ids.clone()]
            }
            (Protocol::Saga, CallKind::Try) => self.posting_arguments(),
            (Protocol::Saga, CallKind::Cancel) => vec![self.key_column(), self.undo_column()],
            _ => return None,
        })
    }

    /// post_branch's columns (2PC's try and a saga's).
    fn posting_arguments(&self) -> Vec<Column> {
        vec![
            self.key_column(),
            self.debits.clone(),
            self.credits.clone(),
            self.amounts.clone(),
            self.linked.clone(),
        ]
    }
}

/// Each column as one array literal parameter.
fn array_params(columns: &[Column]) -> Vec<Option<Vec<u8>>> {
    columns
        .iter()
        .map(|column| Some(array_literal(column.iter().map(|v| v.as_deref()))))
        .collect()
}

pub(super) fn remote_commands(g: &Gtx, b: usize, kind: CallKind, coordinator: &str) -> Remote {
    let columns = BranchColumns::of(g, b);
    let timeout = Some(format!("{} microseconds", g.timeout_micros).into_bytes());
    let shared = match (g.protocol, kind) {
        (Protocol::Tcc, CallKind::Try) => vec![timeout],
        _ => vec![],
    };
    let arguments = columns.arguments(g.protocol, kind);
    let call = |name: &'static str, sql: &str| {
        let mut params = array_params(arguments.as_deref().unwrap_or_default());
        params.extend(shared.iter().cloned());
        Command {
            name: Some(name),
            sql: sql.to_string(),
            params,
        }
    };
    let text = |sql: String| Command {
        name: None,
        sql,
        params: vec![],
    };
    // Only 2PC names a prepared transaction (and hashing the gtid costs).
    let gid = || gid(coordinator, &gtid_hash(&g.gtid), g.branches[b].no);
    let commands = match (g.protocol, kind) {
        (Protocol::Tcc, CallKind::Try) => vec![call("wallet_tcc_try", TCC_TRY)],
        (Protocol::Tcc, CallKind::Confirm) => vec![call("wallet_tcc_confirm", TCC_CONFIRM)],
        (Protocol::Tcc, CallKind::Cancel) => vec![call("wallet_tcc_cancel", TCC_CANCEL)],
        // The postings may take wallet.node_timeout / 2 at most, as one lock wait may: the
        // PREPARE then comes (or does not) while the coordinator still listens, never after it
        // gave up on the call and went on to roll back a gid the node did not have yet.
        (Protocol::TwoPhase, CallKind::Try) => vec![
            text("BEGIN".into()),
            text(format!(
                "SET LOCAL statement_timeout = {}",
                nodes::participant_wait_ms()
            )),
            Command {
                name: Some("wallet_post_branch"),
                sql: POST_BRANCH.to_string(),
                params: array_params(&columns.posting_arguments()),
            },
            text(format!("PREPARE TRANSACTION '{}'", gid())),
        ],
        (Protocol::TwoPhase, CallKind::Confirm) => {
            vec![text(format!("COMMIT PREPARED '{}'", gid()))]
        }
        (Protocol::TwoPhase, CallKind::Cancel) => {
            vec![text(format!("ROLLBACK PREPARED '{}'", gid()))]
        }
        (Protocol::Saga, CallKind::Try) => vec![call("wallet_post_branch", POST_BRANCH)],
        (Protocol::Saga, CallKind::Cancel) => vec![call("wallet_undo_branch", UNDO_BRANCH)],
        (Protocol::Saga, CallKind::Confirm) => vec![],
    };
    Remote {
        wanted: Wanted {
            gtx: 0,
            branch: b,
            kind,
        },
        commands,
        keys: columns.keys,
        items: arguments.map(|columns| Items { columns, shared }),
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

/// What goes to one node in one call: a participant function's call carrying the items of
/// several global transactions' branches (`parts`: each remote and its number of items), or one
/// remote's own commands (`commands` empty).
struct Unit {
    commands: Vec<Command>,
    parts: Vec<(Remote, usize)>,
    merged: bool,
}

/// The units of one node's calls: the calls of one participant function with the same shared
/// parameters become one call; every other call (2PC's) stays as it is.
fn units(remotes: Vec<Remote>) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut by_function: BTreeMap<(&'static str, Vec<Option<Vec<u8>>>), usize> = BTreeMap::new();
    for r in remotes {
        let name = r.commands.first().and_then(|c| c.name);
        match (name, &r.items) {
            (Some(name), Some(items)) if r.commands.len() == 1 => {
                let key = (name, items.shared.clone());
                let count = items.count();
                match by_function.get(&key) {
                    Some(&u) => units[u].parts.push((r, count)),
                    None => {
                        by_function.insert(key, units.len());
                        units.push(Unit {
                            commands: Vec::new(),
                            parts: vec![(r, count)],
                            merged: true,
                        });
                    }
                }
            }
            _ => units.push(Unit {
                commands: Vec::new(),
                parts: vec![(r, 0)],
                merged: false,
            }),
        }
    }
    for u in units.iter_mut().filter(|u| u.merged) {
        let first = &u.parts[0].0;
        let template = &first.commands[0];
        let width = first.items.as_ref().map_or(0, |i| i.columns.len());
        let mut params: Vec<Option<Vec<u8>>> = (0..width)
            .map(|c| {
                Some(array_literal(u.parts.iter().flat_map(|(r, _)| {
                    r.items.as_ref().expect("merged").columns[c]
                        .iter()
                        .map(Option::as_deref)
                })))
            })
            .collect();
        params.extend(first.items.as_ref().expect("merged").shared.iter().cloned());
        u.commands = vec![Command {
            name: template.name,
            sql: template.sql.clone(),
            params,
        }];
    }
    // Sent in the order of `send_order` (`call_remote` takes them from the end): what releases
    // locks on the node first, so that no call of the round waits for a lock that a later call of
    // the same round would have released.
    units.sort_by_key(|u| std::cmp::Reverse(send_order(u)));
    units
}

/// 0: a 2PC commit or rollback (ends a prepared transaction, releasing its row locks; waits for
/// none); 1: a confirm or cancel (takes row locks for a moment, releases a reservation); 2: a try
/// (a hold, a posting, a PREPARE: takes locks, a PREPARE keeps them).
fn send_order(unit: &Unit) -> u8 {
    let ends = matches!(
        unit.parts[0].0.wanted.kind,
        CallKind::Confirm | CallKind::Cancel
    );
    // Only 2PC's calls are not merged (see `units`).
    match (ends, unit.merged) {
        (true, false) => 0,
        (true, true) => 1,
        (false, _) => 2,
    }
}

/// Sends every remote call of a round and reads the answers: one connection per node, the
/// nodes at once, and to each node one call per participant function whatever the number of
/// global transactions (2PC's prepares and commits one after the other).
pub(super) fn call_remote(remotes: Vec<(String, Remote)>) -> Vec<Answered> {
    let mut by_node: BTreeMap<String, Vec<Remote>> = BTreeMap::new();
    for (node, r) in remotes {
        by_node.entry(node).or_default().push(r);
    }
    let timeout = nodes::call_timeout();
    let mut answers = Vec::new();
    let mut leases: Vec<(String, Result<nodes::Lease, CallError>, Vec<Unit>)> = by_node
        .into_iter()
        .map(|(node, calls)| {
            let lease = nodes::lease(&node);
            (node, lease, units(calls))
        })
        .collect();
    loop {
        let mut in_flight: Vec<(usize, Unit)> = Vec::new();
        for (i, (node, lease, units)) in leases.iter_mut().enumerate() {
            let Some(unit) = units.pop() else { continue };
            match lease {
                Err(e) => all_lost(&mut answers, &unit, e, node),
                Ok(lease) => match lease.connection().send_pipeline_or_one(unit.to_send()) {
                    Ok(()) => in_flight.push((i, unit)),
                    Err(e) => all_lost(&mut answers, &unit, &e, node),
                },
            }
        }
        if in_flight.is_empty() && leases.iter().all(|(_, _, units)| units.is_empty()) {
            break;
        }
        for (i, unit) in in_flight {
            let (node, lease, _) = &mut leases[i];
            let lease = lease.as_mut().expect("sent on it");
            if unit.merged {
                read_merged(lease, &unit, timeout, node, &mut answers);
            } else {
                let remote = &unit.parts[0].0;
                let answer = match read_answer(lease, remote, timeout) {
                    Ok(a) => a,
                    Err(e) => lost(&e, node),
                };
                answers.push(answered(&remote.wanted, answer));
            }
        }
    }
    answers
}

/// A remote's own call, built from its items (as a merged call of one part).
fn single(r: &Remote) -> Vec<Command> {
    let items = r.items.as_ref().expect("a call on items");
    let template = &r.commands[0];
    let mut params: Vec<Option<Vec<u8>>> = items
        .columns
        .iter()
        .map(|c| Some(array_literal(c.iter().map(Option::as_deref))))
        .collect();
    params.extend(items.shared.iter().cloned());
    vec![Command {
        name: template.name,
        sql: template.sql.clone(),
        params,
    }]
}

impl Unit {
    fn to_send(&self) -> &[Command] {
        if self.merged {
            &self.commands
        } else {
            &self.parts[0].0.commands
        }
    }
}

fn all_lost(answers: &mut Vec<Answered>, unit: &Unit, e: &CallError, node: &str) {
    for (r, _) in &unit.parts {
        answers.push(answered(&r.wanted, lost(e, node)));
    }
}

/// The answer of a merged call, split back into its parts' (items in the order sent).
fn read_merged(
    lease: &mut nodes::Lease,
    unit: &Unit,
    timeout: std::time::Duration,
    node: &str,
    answers: &mut Vec<Answered>,
) {
    // A call of many items may take longer than one of one: wallet.node_timeout for each
    // started thousand items (a slow node's big call would otherwise be cut off every round).
    let expected: usize = unit.parts.iter().map(|(_, n)| n).sum();
    let thousands = u32::try_from(expected / 1000 + 1).unwrap_or(u32::MAX);
    let whole = timeout.saturating_mul(thousands);
    let table = match lease.connection().finish(whole) {
        Ok(table) => table,
        // An ERROR of the node's own (not a lost connection, nor a timeout) stops a call as a
        // whole: one item's (a DBA's constraint, say) must not cost the others theirs, so
        // each goes again alone, for wallet.node_timeout at most. When the ERROR was a lock wait
        // that timed out, every part touching the locked row (the node's system account: all of
        // them) would wait as long again, one after the other; those the time does not reach
        // are answered as lost, and go again in a later round.
        Err(e)
            if unit.parts.len() > 1 && !e.sqlstate.starts_with("08") && e.sqlstate != "WA025" =>
        {
            let budget = std::time::Instant::now() + timeout;
            for (r, _) in &unit.parts {
                if std::time::Instant::now() > budget {
                    answers.push(answered(&r.wanted, lost(&e, node)));
                    continue;
                }
                let sent = lease
                    .connection()
                    .send_pipeline_or_one(&single(r))
                    .and_then(|()| lease.connection().finish(timeout));
                let answer = match sent {
                    Ok(table) => branch_answer(&replies(&table)),
                    Err(e) => lost(&e, node),
                };
                answers.push(answered(&r.wanted, answer));
            }
            return;
        }
        Err(e) => return all_lost(answers, unit, &e, node),
    };
    let all = replies(&table);
    if all.len() != expected {
        let e = CallError {
            sqlstate: "WA025".into(),
            message: format!("answered {} items of {expected}", all.len()),
        };
        return all_lost(answers, unit, &e, node);
    }
    let mut start = 0;
    for (r, n) in &unit.parts {
        answers.push(answered(&r.wanted, branch_answer(&all[start..start + n])));
        start += n;
    }
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
        // 2PC prepare (see `remote_commands`): what opens the transaction, then the postings
        // and PREPARE TRANSACTION, the last two.
        let answers = conn.finish_pipeline(remote.commands.len(), timeout)?;
        let [.., postings, prepared] = answers.as_slice() else {
            unreachable!("a 2PC prepare sends more than one command")
        };
        let result = match (postings, prepared) {
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
