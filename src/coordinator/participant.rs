//! The participant side of the three protocols, in batch form: each call carries any number of
//! items (branches of one or many global transactions on this node), handles each as its single
//! form would (`holds.rs`, `commands.rs`), in one transaction, and answers per item, in input
//! order, never raising for an item's rejection: a coordinator sends one call per node per phase.
//! A Postgres error (a lost lock wait, a constraint a DBA added) fails the whole call, which the
//! coordinator repeats or cancels, as its protocol says.
//!
//! * TC/C: [`tcc_try`], [`tcc_confirm`], [`tcc_cancel`] (holds);
//! * 2PC and Saga: [`post_branch`] (keyed transfers, one linked chain per global transaction, so
//!   a branch posts whole or not at all) and [`undo_branch`] (a saga's compensation: the reverse
//!   of each posting that took effect, and a bar on each that did not, so that it never will).
//!
//! Declared in sql/coordinator.sql; each returns (item integer, sqlstate text, message text,
//! value text).

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;
use wallet_core::batch::{BatchInput, BatchResult};
use wallet_core::locks::LockClass;
use wallet_core::text::Text;
use wallet_core::transfer::{self, TransferRequest};
use wallet_core::{hold, limits};

use crate::args::{Args, BOOL_ARRAY, INT8_ARRAY, INTERVAL, TEXT_ARRAY};
use crate::catalog::{Also, Tables};
use crate::commands::{self, query, text_datum, TransferCall};
use crate::entry::entry_point;
use crate::error::{WalletError, WalletResult};
use crate::spi::{Connection, Kept};
use crate::{holds, locks, settings};

query!(
    EVENT_BY_KEY,
    30,
    "event_by_key.sql",
    [pg_sys::TEXTOID],
    false
);
query!(
    POSTING_BARRED,
    31,
    "posting_barred.sql",
    [pg_sys::TEXTOID, pg_sys::TEXTOID],
    false
);

pub const KEPT: &[&Kept] = &[&EVENT_BY_KEY, &POSTING_BARRED];

/// A participant's answer for one item: a value (text), or the rejection.
pub type Reply = Result<Option<Vec<u8>>, WalletError>;

/// Most items one participant call may carry.
pub const ITEMS_MAX: usize = limits::BATCH_TRANSFERS_MAX;

fn check_items(n: usize) -> WalletResult<()> {
    if n > ITEMS_MAX {
        return Err(WalletError::invalid_argument(
            "items",
            format!("a participant call carries at most {ITEMS_MAX} items, got {n}"),
        ));
    }
    Ok(())
}

/// One try of TC/C: a hold for (gtid, branch).
pub struct TryItem<'a> {
    pub gtid: &'a [u8],
    pub branch: &'a [u8],
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: i64,
    pub timeout_micros: i64,
}

/// Places the holds (or answers repeats); the value of each is the hold's currency.
pub fn tcc_try(conn: &Connection, items: &[TryItem]) -> WalletResult<Vec<Reply>> {
    check_items(items.len())?;
    let mut replies: Vec<Option<Reply>> = items.iter().map(|_| None).collect();
    let mut indexes: Vec<usize> = Vec::new();
    let mut calls: Vec<holds::TryCall> = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let checked = hold::check_hold_key(Some(item.gtid), "gtid")
            .and_then(|_| hold::check_hold_key(Some(item.branch), "branch"))
            .and_then(|_| {
                transfer::check_amount(
                    Some(item.amount),
                    item.debit_account_id.or(item.credit_account_id),
                )
            });
        match checked {
            Err(e) => replies[k] = Some(Err(e)),
            Ok(_) => {
                indexes.push(k);
                calls.push(holds::TryCall {
                    gtid: item.gtid,
                    branch: item.branch,
                    debit_account_id: item.debit_account_id,
                    credit_account_id: item.credit_account_id,
                    amount: item.amount,
                    timeout_micros: item.timeout_micros,
                    currency: None,
                    key_lock: key_lock(items.len()),
                });
            }
        }
    }
    let keys: Vec<(&[u8], &[u8])> = calls.iter().map(|c| (c.gtid, c.branch)).collect();
    let answers: Vec<WalletResult<(i64, Text)>> = if calls.len() > 1 && distinct(&keys) {
        holds::try_many(conn, &calls)?
    } else {
        if calls.len() > 1 {
            lock_accounts_in_order(conn, items)?;
        }
        calls.iter().map(|c| holds::try_hold(conn, c)).collect()
    };
    for (k, answer) in indexes.into_iter().zip(answers) {
        replies[k] = Some(answer.map(|(_, currency)| Some(currency.0)));
    }
    Ok(replies
        .into_iter()
        .map(|r| r.expect("every item answered"))
        .collect())
}

/// Whether no (gtid, branch) appears twice. A call repeating one goes item by item, so that the
/// repeat sees what its first did (the merged commands look every key up before any is written).
fn distinct(keys: &[(&[u8], &[u8])]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter().all(|k| seen.insert(*k))
}

/// A call of one item locks its key as the single call does; a call of many does not (one
/// lock-table entry per item to the transaction's end would exhaust the table for thousands of
/// items), and leaves the race of two calls for one key to the unique indexes: one of the two is
/// refused, and the coordinator asks again.
fn key_lock(items: usize) -> holds::KeyLock {
    if items > 1 {
        holds::KeyLock::Skip
    } else {
        holds::KeyLock::Take
    }
}

/// Locks every account the tries may touch (theirs, and the system accounts standing in for a
/// side left NULL) in ascending id order, before any of them is placed: two calls with many items
/// then wait for each other in one order, as two transfer batches do, never in a cycle. An
/// account that cannot be locked or does not exist is left to its item, which reports it.
fn lock_accounts_in_order(conn: &Connection, items: &[TryItem]) -> WalletResult<()> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    let named: Vec<i64> = items
        .iter()
        .flat_map(|i| [i.debit_account_id, i.credit_account_id])
        .flatten()
        .collect();
    let known = commands::settlements(conn, &named);
    let mut ids: Vec<i64> = named;
    for item in items {
        if item.debit_account_id.is_none() || item.credit_account_id.is_none() {
            let account = item.debit_account_id.or(item.credit_account_id);
            if let Some((_, settlement)) = account.and_then(|a| known.get(&a)) {
                ids.push(settlement.account_for(item.gtid));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let _ = crate::accounts::Accounts::open(&tables).lock(conn, &ids)?;
    Ok(())
}

/// Confirms the holds (all they reserved); the value of each is its posting's transfer id.
pub fn tcc_confirm(conn: &Connection, items: &[(&[u8], &[u8])]) -> WalletResult<Vec<Reply>> {
    check_items(items.len())?;
    let answers = on_keys(
        items,
        |keys| holds::confirm_many(conn, keys),
        |gtid, branch| holds::confirm_hold(conn, gtid, branch, None, key_lock(items.len())),
    )?;
    Ok(answers
        .into_iter()
        .map(|a| a.map(|seq| Some(seq.to_string().into_bytes())))
        .collect())
}

/// The answers for `items` (gtid, branch) of a confirm or cancel: the keys checked one by one,
/// then those that passed in one command (`many`) when there are several and no key is repeated,
/// else one by one (`one`).
fn on_keys(
    items: &[(&[u8], &[u8])],
    many: impl FnOnce(&[(&[u8], &[u8])]) -> WalletResult<Vec<WalletResult<i64>>>,
    one: impl Fn(&[u8], &[u8]) -> WalletResult<i64>,
) -> WalletResult<Vec<WalletResult<i64>>> {
    let mut answers: Vec<Option<WalletResult<i64>>> = items.iter().map(|_| None).collect();
    let mut indexes: Vec<usize> = Vec::new();
    let mut keys: Vec<(&[u8], &[u8])> = Vec::new();
    for (k, &(gtid, branch)) in items.iter().enumerate() {
        match hold::check_hold_key(Some(gtid), "gtid")
            .and_then(|_| hold::check_hold_key(Some(branch), "branch"))
        {
            Ok(()) => {
                indexes.push(k);
                keys.push((gtid, branch));
            }
            Err(e) => answers[k] = Some(Err(e)),
        }
    }
    let results = if keys.len() > 1 && distinct(&keys) {
        many(&keys)?
    } else {
        keys.iter()
            .map(|&(gtid, branch)| one(gtid, branch))
            .collect()
    };
    for (k, result) in indexes.into_iter().zip(results) {
        answers[k] = Some(result);
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every item answered"))
        .collect())
}

/// Cancels the holds (recording the cancel of a try that never arrived); the value is the hold id.
pub fn tcc_cancel(conn: &Connection, items: &[(&[u8], &[u8])]) -> WalletResult<Vec<Reply>> {
    check_items(items.len())?;
    let answers = on_keys(
        items,
        |keys| holds::cancel_many(conn, keys),
        |gtid, branch| holds::cancel_hold(conn, gtid, branch, key_lock(items.len())),
    )?;
    Ok(answers
        .into_iter()
        .map(|a| a.map(|id| Some(id.to_string().into_bytes())))
        .collect())
}

/// One posting of 2PC or a saga: a keyed transfer; None for this node's system account of the
/// other side's currency. `linked` ties it to the next item, as in transfer_batch.
pub struct PostItem<'a> {
    pub key: &'a [u8],
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: i64,
    pub linked: bool,
}

/// Posts the items as one batch (each global transaction's postings one linked chain); the
/// value of each is the currency posted in.
pub fn post_branch(conn: &Connection, items: &[PostItem]) -> WalletResult<Vec<Reply>> {
    check_items(items.len())?;
    let _tables = Tables::open(c"a wallet global transaction branch", Also::Nothing)?;
    // The system account standing in for a side left NULL, and each item's currency.
    let accounts: Vec<i64> = items
        .iter()
        .filter_map(|item| item.debit_account_id.or(item.credit_account_id))
        .collect();
    let known = commands::settlements(conn, &accounts);
    // A currency spread over several settlement accounts: a posting stored under its key
    // already keeps the one it settled against (their number may have grown since), so that
    // the repeat matches it. Read here, once, for the batch below too.
    let spread = known.values().any(|(_, s)| !s.further.is_empty());
    let prior = spread.then(|| commands::stored_postings(conn, items.iter().map(|i| i.key)));
    let mut resolved: Vec<Result<(i64, i64, Text), WalletError>> = Vec::with_capacity(items.len());
    for item in items {
        let account = item.debit_account_id.or(item.credit_account_id);
        resolved.push(match account {
            None => Err(WalletError::invalid_argument(
                "debit_account_ids",
                "the debit and credit accounts cannot both be NULL",
            )),
            Some(account) => match known.get(&account) {
                None => Err(WalletError::AccountNotFound {
                    account_id: account,
                }),
                Some((currency, settlement)) => {
                    let stored = prior.as_ref().and_then(|p| p.get(item.key));
                    let settles = stored_settlement(item, settlement, stored)
                        .unwrap_or_else(|| settlement.account_for(item.key));
                    Ok((
                        item.debit_account_id.unwrap_or(settles),
                        item.credit_account_id.unwrap_or(settles),
                        currency.clone(),
                    ))
                }
            },
        });
    }
    let inputs: Vec<BatchInput> = items
        .iter()
        .zip(&resolved)
        .map(|(item, r)| BatchInput {
            debit_account_id: r.as_ref().ok().map(|r| r.0),
            credit_account_id: r.as_ref().ok().map(|r| r.1),
            amount: Some(item.amount),
            idempotency_key: Some(item.key),
            linked: item.linked,
        })
        .collect();
    let results = commands::transfer_batch_with(conn, &inputs, prior)?;
    // A linked chain fails as a whole: report its failing member's reason for every member.
    let mut replies: Vec<Reply> = Vec::with_capacity(items.len());
    let mut start = 0;
    for i in 0..items.len() {
        let reply = match (&resolved[i], &results[i]) {
            (Err(e), _) => Err(e.clone()),
            (Ok((_, _, currency)), BatchResult::Ok(_) | BatchResult::Exists(_)) => {
                Ok(Some(currency.0.clone()))
            }
            (Ok(_), BatchResult::Rejected(e)) => Err(e.clone()),
            (Ok(_), BatchResult::LinkedEventFailed | BatchResult::LinkedEventChainOpen) => Err(
                WalletError::invalid_argument("linked", "another posting of the branch failed"),
            ),
        };
        replies.push(reply);
        if !items[i].linked {
            let chain = start..=i;
            if let Some(reason) = chain
                .clone()
                .find_map(|j| match (&resolved[j], &results[j]) {
                    (Err(e), _) => Some(e.clone()),
                    (_, BatchResult::Rejected(e)) => Some(e.clone()),
                    _ => None,
                })
            {
                for j in chain {
                    replies[j] = Err(reason.clone());
                }
            }
            start = i + 1;
        }
    }
    Ok(replies)
}

/// The settlement account a posting stored under the item's key settled against, when its
/// other side is the item's and it is one of the currency's settlement accounts.
fn stored_settlement(
    item: &PostItem,
    settlement: &commands::Settlement,
    stored: Option<&wallet_core::transfer::PriorTransfer>,
) -> Option<i64> {
    let stored = stored?;
    let side = match (item.debit_account_id, item.credit_account_id) {
        (None, Some(credit)) if stored.credit_account_id == Some(credit) => stored.debit_account_id,
        (Some(debit), None) if stored.debit_account_id == Some(debit) => stored.credit_account_id,
        _ => None,
    }?;
    settlement.has(side).then_some(side)
}

/// Compensates postings made under `keys`: the reverse of each that took effect (a transfer
/// with the item's undo key), a bar on each that did not (see posting_barred.sql). The value is
/// the reverse transfer's id, or NULL for a bar.
pub fn undo_branch(conn: &Connection, items: &[(&[u8], &[u8])]) -> WalletResult<Vec<Reply>> {
    check_items(items.len())?;
    let _tables = Tables::open(c"a wallet compensation", Also::Nothing)?;
    let mut replies = Vec::with_capacity(items.len());
    for &(key, undo_key) in items {
        transfer::check_idempotency_key(Some(key))?;
        transfer::check_idempotency_key(Some(undo_key))?;
        // Serialised with any single transfer presenting the same key (a call of one item; with
        // many, the unique index on the keys is the arbiter, see `key_lock`).
        if key_lock(items.len()) == holds::KeyLock::Take {
            locks::lock_for_transaction(LockClass::IdempotencyKey, key)?;
        }
        replies.push(undo_one(conn, key, undo_key));
    }
    Ok(replies)
}

fn undo_one(conn: &Connection, key: &[u8], undo_key: &[u8]) -> Reply {
    // Twice at most: a bar that finds the key taken meanwhile looks again at what took it.
    for _ in 0..2 {
        let rows = conn.execute(&EVENT_BY_KEY, &[Some(text_datum(key))]);
        if rows.is_empty() {
            let barred = conn.execute(
                &POSTING_BARRED,
                &[Some(text_datum(key)), Some(text_datum(undo_key))],
            );
            if !barred.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let event_type = rows.bytes(0, 2).unwrap_or_default();
        if event_type != b"transfer" {
            // Barred already (or the key belongs to something else, which this saga never
            // posted): nothing of the saga took effect under it.
            return Ok(None);
        }
        let (Some(debit), Some(credit), Some(amount)) = (
            rows.get::<i64>(0, 3),
            rows.get::<i64>(0, 4),
            rows.get::<i64>(0, 5),
        ) else {
            return Ok(None);
        };
        let undo_datum = text_datum(undo_key);
        let call = TransferCall {
            request: TransferRequest {
                debit_account_id: credit,
                credit_account_id: debit,
                amount,
            },
            idempotency_key: Some((undo_key, undo_datum)),
            metadata: None,
        };
        return commands::transfer(conn, &call).map(|seq| Some(seq.to_string().into_bytes()));
    }
    Err(WalletError::ConcurrentChange {
        debit_account_id: 0,
        credit_account_id: 0,
        amount: 0,
    })
}

// ---- the SQL entry points ---------------------------------------------------------------------

/// Puts replies into the tuplestore of a materialized set-returning function declared as
/// RETURNS TABLE (item integer, sqlstate text, message text, value text).
fn put_replies(args: &Args, replies: &[Reply]) {
    let fcinfo = args.fcinfo();
    // SAFETY: as the declarations in sql/coordinator.sql say; InitMaterializedSRF builds the store
    // and its descriptor in the query's memory.
    unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
        for (i, reply) in replies.iter().enumerate() {
            let (sqlstate, message, value) = match reply {
                Ok(value) => (None, None, value.as_deref()),
                Err(e) => (Some(e.sqlstate().to_string()), Some(e.to_string()), None),
            };
            let mut values = [
                Datum::from(i as i32 + 1),
                sqlstate
                    .as_deref()
                    .map_or(Datum::from(0usize), |s| s.into_datum().expect("text")),
                message
                    .as_deref()
                    .map_or(Datum::from(0usize), |m| m.into_datum().expect("text")),
                value.map_or(Datum::from(0usize), text_datum),
            ];
            let mut nulls = [
                false,
                sqlstate.is_none(),
                message.is_none(),
                value.is_none(),
            ];
            pg_sys::tuplestore_putvalues(
                (*rsinfo).setResult,
                (*rsinfo).setDesc,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
        }
    }
}

fn required<T>(value: Option<T>, argument: &'static str) -> WalletResult<T> {
    value.ok_or_else(|| WalletError::invalid_argument(argument, "must not be NULL"))
}

fn same_lengths(lengths: &[usize]) -> WalletResult<usize> {
    let n = lengths[0];
    if lengths.iter().any(|&l| l != n) {
        return Err(WalletError::invalid_argument(
            "items",
            "the arrays must all have the same length",
        ));
    }
    check_items(n)?;
    Ok(n)
}

fn key_pairs<'fc>(
    args: &Args<'fc>,
    first: &'static str,
    second: &'static str,
) -> WalletResult<Vec<(&'fc [u8], &'fc [u8])>> {
    let a = required(args.text_array(0, first)?, first)?;
    let b = required(args.text_array(1, second)?, second)?;
    let n = same_lengths(&[a.len(), b.len()])?;
    (0..n)
        .map(|i| Ok((required(a[i], first)?, required(b[i], second)?)))
        .collect()
}

entry_point!(
    wallet_tcc_try,
    pg_finfo_wallet_tcc_try,
    &[TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY, INT8_ARRAY, INT8_ARRAY, INTERVAL],
    |args| {
        let gtids = required(args.text_array(0, "gtids")?, "gtids")?;
        let branches = required(args.text_array(1, "branches")?, "branches")?;
        let debits = required(args.i64_array(2, "debit_account_ids")?, "debit_account_ids")?;
        let credits = required(
            args.i64_array(3, "credit_account_ids")?,
            "credit_account_ids",
        )?;
        let amounts = required(args.i64_array(4, "amounts")?, "amounts")?;
        let n = same_lengths(&[
            gtids.len(),
            branches.len(),
            debits.len(),
            credits.len(),
            amounts.len(),
        ])?;
        let timeout_micros = hold::hold_timeout_micros(
            args.interval_micros(5),
            settings::HOLD_TIMEOUT.get(),
            settings::HOLD_TIMEOUT_MAX.get(),
        )?;
        let items: Vec<TryItem> = (0..n)
            .map(|i| TryItem {
                gtid: gtids[i].unwrap_or_default(),
                branch: branches[i].unwrap_or_default(),
                debit_account_id: debits[i],
                credit_account_id: credits[i],
                amount: amounts[i].unwrap_or(0),
                timeout_micros,
            })
            .collect();
        let conn = Connection::open();
        // The coordinator acts on the answer: durable before it is sent.
        super::steps::commit_durably();
        let replies = tcc_try(&conn, &items)?;
        drop(conn);
        put_replies(args, &replies);
        Ok(Some(Datum::from(0usize)))
    }
);

/// A participant function on (key, key) items: the items read, the calls made, the replies
/// returned as its rows.
fn on_pairs(
    args: &crate::args::Args<'_>,
    first: &'static str,
    second: &'static str,
    call: fn(&Connection, &[(&[u8], &[u8])]) -> WalletResult<Vec<Reply>>,
) -> WalletResult<Option<Datum>> {
    let items = key_pairs(args, first, second)?;
    let conn = Connection::open();
    // The coordinator acts on the answer: durable before it is sent.
    super::steps::commit_durably();
    let replies = call(&conn, &items)?;
    drop(conn);
    put_replies(args, &replies);
    Ok(Some(Datum::from(0usize)))
}

entry_point!(
    wallet_tcc_confirm,
    pg_finfo_wallet_tcc_confirm,
    &[TEXT_ARRAY, TEXT_ARRAY],
    |args| { on_pairs(args, "gtids", "branches", tcc_confirm) }
);

entry_point!(
    wallet_tcc_cancel,
    pg_finfo_wallet_tcc_cancel,
    &[TEXT_ARRAY, TEXT_ARRAY],
    |args| { on_pairs(args, "gtids", "branches", tcc_cancel) }
);

entry_point!(
    wallet_post_branch,
    pg_finfo_wallet_post_branch,
    &[TEXT_ARRAY, INT8_ARRAY, INT8_ARRAY, INT8_ARRAY, BOOL_ARRAY],
    |args| {
        let keys = required(args.text_array(0, "keys")?, "keys")?;
        let debits = required(args.i64_array(1, "debit_account_ids")?, "debit_account_ids")?;
        let credits = required(
            args.i64_array(2, "credit_account_ids")?,
            "credit_account_ids",
        )?;
        let amounts = required(args.i64_array(3, "amounts")?, "amounts")?;
        let linked = required(args.bool_array(4, "linked")?, "linked")?;
        let n = same_lengths(&[
            keys.len(),
            debits.len(),
            credits.len(),
            amounts.len(),
            linked.len(),
        ])?;
        let items: Vec<PostItem> = (0..n)
            .map(|i| PostItem {
                key: keys[i].unwrap_or_default(),
                debit_account_id: debits[i],
                credit_account_id: credits[i],
                amount: amounts[i].unwrap_or(0),
                linked: linked[i].unwrap_or(false),
            })
            .collect();
        let conn = Connection::open();
        // The coordinator acts on the answer: durable before it is sent.
        super::steps::commit_durably();
        let replies = post_branch(&conn, &items)?;
        drop(conn);
        put_replies(args, &replies);
        Ok(Some(Datum::from(0usize)))
    }
);

entry_point!(
    wallet_undo_branch,
    pg_finfo_wallet_undo_branch,
    &[TEXT_ARRAY, TEXT_ARRAY],
    |args| { on_pairs(args, "keys", "undo_keys", undo_branch) }
);
