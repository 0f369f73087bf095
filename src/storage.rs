//! Storage: every statement Rust runs, and the commands built from them. The SQL text lives in
//! `sql/queries/*.sql`; this module binds arguments, reads results and asks `domain` to judge.

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::IntoDatum;

use crate::batch::{self, BatchInput, BatchResult};
use crate::domain::{self, AccountState, AccountStatus, StatusChange, StatusCommand};
use crate::domain::{PriorTransfer, TransferRequest};
use crate::error::{WalletError, WalletResult};
use crate::heap;
use crate::spi::{Connection, Kept, Rows};
use crate::tcc::{self, Hold, HoldAction, HoldStatus};
use std::collections::HashMap;

const I8: Oid = pg_sys::INT8OID;
const I4: Oid = pg_sys::INT4OID;
const TEXT: Oid = pg_sys::TEXTOID;
const JSONB: Oid = pg_sys::JSONBOID;
const BOOL: Oid = pg_sys::BOOLOID;
const I8_ARRAY: Oid = pg_sys::INT8ARRAYOID;
const TEXT_ARRAY: Oid = pg_sys::TEXTARRAYOID;

macro_rules! text {
    ($file:literal) => {{
        fn sql() -> String {
            include_str!(concat!("../sql/queries/", $file)).to_string()
        }
        sql
    }};
}

static TRANSFER_PRIOR: Kept = Kept {
    slot: 9,
    sql: text!("transfer_prior.sql"),
    args: &[TEXT, JSONB],
    index_only: false,
};
static BATCH_PRIOR: Kept = Kept {
    slot: 11,
    sql: text!("batch_prior.sql"),
    args: &[TEXT_ARRAY],
    index_only: false,
};
static ACCOUNT_STATE: Kept = Kept {
    slot: 2,
    sql: text!("account_state.sql"),
    args: &[I8],
    index_only: false,
};
static ACCOUNT_STATE_FOR_UPDATE: Kept = Kept {
    slot: 3,
    sql: text!("account_state_for_update.sql"),
    args: &[I8],
    index_only: false,
};
static SET_STATUS: Kept = Kept {
    slot: 4,
    sql: text!("set_status.sql"),
    args: &[I8, TEXT, TEXT],
    index_only: false,
};
static OPEN_ACCOUNT: Kept = Kept {
    slot: 5,
    sql: text!("open_account.sql"),
    args: &[TEXT, TEXT, JSONB, BOOL],
    index_only: false,
};
static CREATE_CURRENCY: Kept = Kept {
    slot: 6,
    sql: text!("create_currency.sql"),
    args: &[TEXT, I4],
    index_only: false,
};
static SYSTEM_ACCOUNT_OF: Kept = Kept {
    slot: 7,
    sql: text!("system_account_of.sql"),
    args: &[I8],
    index_only: false,
};

static HOLD_LOOKUP: Kept = Kept {
    slot: 16,
    sql: text!("hold_lookup.sql"),
    args: &[TEXT, TEXT],
    index_only: true,
};
static HOLD_EXPIRED: Kept = Kept {
    slot: 17,
    sql: text!("hold_expired.sql"),
    args: &[I4],
    index_only: true,
};
static LOCK_ACCOUNTS: Kept = Kept {
    slot: 18,
    sql: text!("lock_accounts.sql"),
    args: &[I8_ARRAY],
    index_only: false,
};
static SYSTEM_ACCOUNT_OF_CURRENCY: Kept = Kept {
    slot: 19,
    sql: text!("system_account_of_currency.sql"),
    args: &[TEXT],
    index_only: false,
};
static HOLD_PLACE: Kept = Kept {
    slot: 20,
    sql: text!("hold_place.sql"),
    args: &[TEXT, TEXT, I8, I8, I8, TEXT, I8],
    index_only: false,
};
static HOLD_CONFIRM: Kept = Kept {
    slot: 21,
    sql: text!("hold_confirm.sql"),
    args: &[I8, I8, I8, I8, I8, TEXT, TEXT, TEXT],
    index_only: true,
};
static HOLD_RELEASE: Kept = Kept {
    slot: 22,
    sql: text!("hold_release.sql"),
    args: &[I8, I8, I8, I8, TEXT, TEXT, TEXT, TEXT],
    index_only: true,
};
static HOLD_RECORD_CANCEL: Kept = Kept {
    slot: 23,
    sql: text!("hold_record_cancel.sql"),
    args: &[TEXT, TEXT],
    index_only: false,
};

/// Every kept statement, so a test can check that no two share a plan slot.
#[cfg(test)]
const ALL_KEPT: &[&Kept] = &[
    &TRANSFER_PRIOR,
    &BATCH_PRIOR,
    &ACCOUNT_STATE,
    &ACCOUNT_STATE_FOR_UPDATE,
    &SET_STATUS,
    &OPEN_ACCOUNT,
    &CREATE_CURRENCY,
    &SYSTEM_ACCOUNT_OF,
    &HOLD_LOOKUP,
    &HOLD_EXPIRED,
    &LOCK_ACCOUNTS,
    &SYSTEM_ACCOUNT_OF_CURRENCY,
    &HOLD_PLACE,
    &HOLD_CONFIRM,
    &HOLD_RELEASE,
    &HOLD_RECORD_CANCEL,
];

/// Namespace of the wallet's advisory locks (first key of the two-int4 form): "WALT".
const ADVISORY_LOCK_NAMESPACE: i32 = 0x5741_4C54;

/// An argument value that is already a datum (text or jsonb passed through from the caller).
pub type RawArg = Option<Datum>;

fn read_account(conn: &Connection, kept: &Kept, account_id: i64) -> Option<AccountState> {
    let rows = conn.execute(kept, &[account_id.into_datum()]);
    (!rows.is_empty()).then(|| account_state(&rows, 0))
}

/// The stored event that first used a key, from row `row` of transfer_prior.sql or
/// batch_prior.sql, whose columns seq, event_type, debit, credit, amount, same_metadata start at
/// column `first`.
fn prior_transfer(rows: &Rows, row: usize, first: usize) -> PriorTransfer {
    PriorTransfer {
        transfer_id: rows.get(row, first).expect("seq"),
        event_type: rows.get(row, first + 1).expect("event_type"),
        debit_account_id: rows.get(row, first + 2),
        credit_account_id: rows.get(row, first + 3),
        amount: rows.get(row, first + 4),
        metadata_matches: rows.get(row, first + 5).expect("same_metadata"),
    }
}

/// Row `row` of a result whose columns are those of account_state.sql.
fn account_state(rows: &Rows, row: usize) -> AccountState {
    let status: String = rows.get(row, 3).expect("status is NOT NULL");
    AccountState {
        id: rows.get(row, 1).expect("id"),
        currency: rows.get(row, 2).expect("currency"),
        status: AccountStatus::parse(&status).expect("only the wallet writes status"),
        allow_overdraft: rows.get(row, 4).expect("allow_overdraft"),
        is_system: rows.get(row, 5).expect("is_system"),
        balance: rows.get(row, 6).expect("balance"),
        pending_debit: rows.get(row, 7).expect("pending_debit"),
        pending_credit: rows.get(row, 8).expect("pending_credit"),
    }
}

/// Takes a transaction-level advisory lock on the key's hash, so two sessions presenting the
/// same key run one after the other: under READ COMMITTED a concurrent first use of the key by
/// a single transfer has committed (and is found by the look-up) or rolled back. Batches take
/// no such lock; the unique index finds their keys when the event is written
/// (`heap::EventWriter`).
fn lock_idempotency_key(key: &[u8]) {
    let hash = domain::key_hash(key);
    let folded = ((hash >> 32) ^ hash) as u32 as i32;
    // SAFETY: pg_advisory_xact_lock_int4 takes two int4 arguments and returns void.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::pg_advisory_xact_lock_int4,
            &[ADVISORY_LOCK_NAMESPACE.into_datum(), folded.into_datum()],
        );
    }
}

/// A transfer after its arguments passed `domain::check_transfer_arguments`.
pub struct TransferCall<'a> {
    pub request: TransferRequest,
    /// The key's text and its datum, when a key was given.
    pub idempotency_key: Option<(&'a str, Datum)>,
    pub metadata: RawArg,
}

/// Posts a transfer (or returns the first answer for a repeated idempotency key). The two
/// account rows are locked in ascending id order (so two transfers never deadlock each other),
/// judged by `domain::check_transfer_against` on their locked versions, updated, and the event
/// is appended: all through `heap` (direct table access, no executor), except the key's
/// look-up.
pub fn transfer(conn: &Connection, call: &TransferCall) -> WalletResult<i64> {
    let r = &call.request;
    if let Some((key, key_datum)) = call.idempotency_key {
        lock_idempotency_key(key.as_bytes());
        let rows = conn.execute(&TRANSFER_PRIOR, &[Some(key_datum), call.metadata]);
        if !rows.is_empty() {
            return domain::replay_answer(key, r, &prior_transfer(&rows, 0, 1));
        }
    }
    let tables = heap::Tables::open(c"a wallet transfer");
    let debit_first = r.debit_account_id < r.credit_account_id;
    let (first_id, second_id) = if debit_first {
        (r.debit_account_id, r.credit_account_id)
    } else {
        (r.credit_account_id, r.debit_account_id)
    };
    let mut locked = tables
        .lock_accounts(&[first_id, second_id])
        .map_err(|_| r.concurrent_change())?;
    let second = locked.pop().expect("two look-ups");
    let first = locked.pop().expect("two look-ups");
    let (debit, credit) = if debit_first {
        (first, second)
    } else {
        (second, first)
    };
    domain::check_transfer_against(
        r,
        debit.as_ref().map(|a| &a.state),
        credit.as_ref().map(|a| &a.state),
    )?;
    let (debit, credit) = (
        debit.expect("checked: exists"),
        credit.expect("checked: exists"),
    );
    let (debit_balance, credit_balance) =
        domain::balances_after(&debit.state, &credit.state, r.amount);
    let seq = tables.next_event_seq();
    tables.set_balance(&debit, debit_balance, seq);
    tables.set_balance(&credit, credit_balance, seq);
    let posted = heap::Posted {
        debit_account_id: r.debit_account_id,
        credit_account_id: r.credit_account_id,
        amount: r.amount,
        currency: debit.currency(),
        debit_balance,
        credit_balance,
        debit_prev: debit.last_seq,
        credit_prev: credit.last_seq,
    };
    let key = call.idempotency_key.map(|(_, datum)| datum);
    if !tables.insert_transfer_event(seq, &posted, key, call.metadata) {
        // A batch (which takes no advisory lock) committed the key after the look-up above,
        // or, above READ COMMITTED, a transaction this snapshot cannot see did: only a retry
        // can give the first answer (the error undoes the balances set above).
        return Err(r.concurrent_change());
    }
    Ok(seq)
}

/// The system account that deposits and withdrawals of this account settle against.
pub fn system_account_of(conn: &Connection, account_id: i64) -> WalletResult<i64> {
    let rows = conn.execute(&SYSTEM_ACCOUNT_OF, &[account_id.into_datum()]);
    if rows.is_empty() {
        return Err(WalletError::AccountNotFound { account_id });
    }
    Ok(rows.get(0, 1).expect("system_account_id is NOT NULL"))
}

/// The account's state, or AccountNotFound.
pub fn account(conn: &Connection, account_id: i64) -> WalletResult<AccountState> {
    read_account(conn, &ACCOUNT_STATE, account_id)
        .ok_or(WalletError::AccountNotFound { account_id })
}

/// Applies a status command; returns whether the account changed (and an event was recorded).
pub fn change_status(
    conn: &Connection,
    account_id: i64,
    command: StatusCommand,
) -> WalletResult<bool> {
    let state = read_account(conn, &ACCOUNT_STATE_FOR_UPDATE, account_id)
        .ok_or(WalletError::AccountNotFound { account_id })?;
    match domain::apply_status_command(&state, command)? {
        StatusChange::Unchanged => Ok(false),
        StatusChange::Changed(target) => {
            let rows = conn.execute(
                &SET_STATUS,
                &[
                    account_id.into_datum(),
                    target.as_str().into_datum(),
                    command.event_type().into_datum(),
                ],
            );
            assert_eq!(rows.len(), 1, "the locked account row was updated");
            Ok(true)
        }
    }
}

/// Opens an account; returns its id.
pub fn open_account(
    conn: &Connection,
    currency: &str,
    owner: RawArg,
    metadata: Datum,
    allow_overdraft: bool,
) -> WalletResult<i64> {
    let rows = conn.execute(
        &OPEN_ACCOUNT,
        &[
            currency.into_datum(),
            owner,
            Some(metadata),
            allow_overdraft.into_datum(),
        ],
    );
    if rows.is_empty() {
        return Err(WalletError::CurrencyNotFound {
            code: currency.to_string(),
        });
    }
    Ok(rows.get(0, 1).expect("id"))
}

/// Creates a currency; returns its system account id.
pub fn create_currency(conn: &Connection, code: &str, scale: i32) -> WalletResult<i64> {
    let rows = conn.execute(&CREATE_CURRENCY, &[code.into_datum(), scale.into_datum()]);
    if rows.is_empty() {
        return Err(WalletError::CurrencyExists {
            code: code.to_string(),
        });
    }
    Ok(rows.get(0, 1).expect("system_account_id"))
}

/// Posts a batch: looks its keys up, locks and reads its accounts (ascending id order, the
/// order single transfers lock in, so neither deadlocks the other), lets `batch::judge` apply it
/// in memory, then writes the final balances and the events through `heap`, as the single
/// transfer does. Returns one result per input transfer, with its transfer id.
pub fn transfer_batch(conn: &Connection, inputs: &[BatchInput]) -> WalletResult<Vec<BatchResult>> {
    let checked = batch::check_arguments(inputs);
    // Before any row lock, to keep the locks short: a key committed by a concurrent
    // transaction after this look-up is found by the unique index when the event is written.
    let keys: Vec<&str> = inputs.iter().filter_map(|t| t.idempotency_key).collect();
    let mut prior: HashMap<String, PriorTransfer> = HashMap::new();
    if !keys.is_empty() {
        let rows = conn.execute(&BATCH_PRIOR, &[keys.into_datum()]);
        for row in 0..rows.len() {
            let key: String = rows.get(row, 1).expect("key");
            prior.insert(key, prior_transfer(&rows, row, 2));
        }
    }

    let mut ids: Vec<i64> = checked
        .iter()
        .flatten()
        .flat_map(|r| [r.debit_account_id, r.credit_account_id])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let tables = heap::Tables::open(c"a wallet transfer batch");
    let locked = tables.lock_accounts(&ids).map_err(|heap::Conflict(id)| {
        let touching = checked
            .iter()
            .flatten()
            .find(|r| r.debit_account_id == id || r.credit_account_id == id);
        touching
            .expect("a locked id comes from a transfer")
            .concurrent_change()
    })?;
    // `locked` stays beside `ids` (ascending) and is walked in that order, where a map of whole
    // rows missed the cache on most look-ups (perf, bench/RESULTS.md section 3).
    let mut accounts: HashMap<i64, AccountState> = ids
        .iter()
        .zip(&locked)
        .filter_map(|(&id, account)| Some((id, account.as_ref()?.state.clone())))
        .collect();
    let mut last_seq: HashMap<i64, Option<i64>> = ids
        .iter()
        .zip(&locked)
        .filter_map(|(&id, account)| Some((id, account.as_ref()?.last_seq)))
        .collect();

    let judgement = batch::judge(inputs, &checked, &prior, &mut accounts);
    let postings = &judgement.postings;
    let mut seq_of_input: Vec<i64> = vec![0; inputs.len()];
    if !postings.is_empty() {
        // Drawn under the row locks, so every account's events are numbered in the order its
        // balance moved.
        let seqs: Vec<i64> = postings.iter().map(|_| tables.next_event_seq()).collect();
        let pairs: Vec<(i64, i64)> = postings
            .iter()
            .map(|p| (p.request.debit_account_id, p.request.credit_account_id))
            .collect();
        let links = batch::chain_links(&pairs, &seqs, &mut last_seq);
        let mut changed: Vec<i64> = pairs.iter().flat_map(|&(d, c)| [d, c]).collect();
        changed.sort_unstable();
        changed.dedup();
        // `changed` is a subset of `ids`, both ascending.
        let mut rows = ids.iter().zip(&locked);
        for id in &changed {
            let (_, row) = rows
                .find(|(locked_id, _)| *locked_id == id)
                .expect("a changed account was locked");
            let row = row.as_ref().expect("a changed account exists");
            let newest = last_seq[id].expect("a posting set it");
            tables.set_balance(row, accounts[id].balance, newest);
        }

        let currencies: Vec<Datum> = judgement
            .currencies
            .iter()
            .map(|c| c.as_str().into_datum().expect("text"))
            .collect();
        const ROWS_PER_WRITE: usize = 1000;
        let mut writer = tables.event_writer(postings.len().min(ROWS_PER_WRITE));
        for ((posting, &seq), &(debit_prev, credit_prev)) in postings.iter().zip(&seqs).zip(&links)
        {
            let r = &posting.request;
            let posted = heap::Posted {
                debit_account_id: r.debit_account_id,
                credit_account_id: r.credit_account_id,
                amount: r.amount,
                currency: currencies[posting.currency],
                debit_balance: posting.debit_balance,
                credit_balance: posting.credit_balance,
                debit_prev,
                credit_prev,
            };
            let key = inputs[posting.index].idempotency_key;
            writer.append(seq, &posted, key.into_datum(), None);
        }
        if let Some(i) = writer.finish() {
            // Its key was committed by a concurrent transaction after the look-up above.
            return Err(postings[i].request.concurrent_change());
        }
        for (posting, seq) in postings.iter().zip(seqs) {
            seq_of_input[posting.index] = seq;
        }
    }
    Ok(judgement
        .results
        .into_iter()
        .enumerate()
        .map(|(i, result)| match result {
            BatchResult::Ok(_) => BatchResult::Ok(seq_of_input[i]),
            BatchResult::Exists(id) if id < 0 => {
                BatchResult::Exists(seq_of_input[(-id - 1) as usize])
            }
            other => other,
        })
        .collect())
}

// ---- holds (Try-Confirm/Cancel participant) ---------------------------------------------------

/// Row `row` of hold_lookup.sql / hold_expired.sql.
fn hold_row(rows: &Rows, row: usize) -> Hold {
    let status: String = rows.get(row, 2).expect("status is NOT NULL");
    Hold {
        hold_id: rows.get(row, 1).expect("hold_id"),
        status: HoldStatus::parse(&status).expect("only the wallet writes status"),
        debit_account_id: rows.get(row, 3),
        credit_account_id: rows.get(row, 4),
        reserved: rows.get(row, 5).expect("reserved"),
        confirmed_amount: rows.get(row, 6),
        timed_out: rows.get(row, 7).unwrap_or(false),
        confirm_seq: rows.get(row, 8),
        gtid: rows.get(row, 10).expect("gtid"),
        branch: rows.get(row, 11).expect("branch"),
    }
}

/// The hold's currency (row `row` of hold_lookup.sql / hold_expired.sql).
fn hold_currency(rows: &Rows, row: usize) -> String {
    rows.get(row, 9)
        .expect("a hold with accounts has a currency")
}

/// Serialises the calls for one (gtid, branch), like an idempotency key: a try and a cancel of
/// the same branch arriving together run one after the other, so one of them sees the other.
fn lock_hold_key(gtid: &str, branch: &str) {
    let mut key = Vec::with_capacity(gtid.len() + branch.len() + 6);
    key.extend_from_slice(b"hold\0");
    key.extend_from_slice(gtid.as_bytes());
    key.push(0);
    key.extend_from_slice(branch.as_bytes());
    lock_idempotency_key(&key);
}

fn lookup_hold(conn: &Connection, gtid: &str, branch: &str) -> (Option<Hold>, Option<String>) {
    let rows = conn.execute(&HOLD_LOOKUP, &[gtid.into_datum(), branch.into_datum()]);
    if rows.is_empty() {
        return (None, None);
    }
    let currency = rows.get::<String>(0, 9);
    (Some(hold_row(&rows, 0)), currency)
}

/// Locks two accounts in ascending id order and returns their states (debit, credit).
fn lock_pair(
    conn: &Connection,
    debit_account_id: i64,
    credit_account_id: i64,
) -> (Option<AccountState>, Option<AccountState>) {
    let lower = debit_account_id.min(credit_account_id);
    let higher = debit_account_id.max(credit_account_id);
    let first = read_account(conn, &ACCOUNT_STATE_FOR_UPDATE, lower);
    let second = read_account(conn, &ACCOUNT_STATE_FOR_UPDATE, higher);
    if lower == debit_account_id {
        (first, second)
    } else {
        (second, first)
    }
}

/// A try after `tcc::check_hold_key` and `domain::check_amount` passed.
pub struct TryCall<'a> {
    pub gtid: &'a str,
    pub branch: &'a str,
    /// None: the system account of `currency` (or of the other account's currency).
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: i64,
    pub timeout_micros: i64,
    pub currency: Option<&'a str>,
}

/// The system account standing in for a side left NULL.
fn resolve_side(
    conn: &Connection,
    side: Option<i64>,
    other: Option<i64>,
    currency: Option<&str>,
) -> WalletResult<i64> {
    if let Some(id) = side {
        return Ok(id);
    }
    if let Some(code) = currency {
        let rows = conn.execute(&SYSTEM_ACCOUNT_OF_CURRENCY, &[code.into_datum()]);
        if rows.is_empty() {
            return Err(WalletError::CurrencyNotFound { code: code.into() });
        }
        return Ok(rows.get(0, 1).expect("system_account_id"));
    }
    let other = other.ok_or(WalletError::InvalidArgument {
        argument: "debit_account_id",
        reason: "the debit and credit accounts cannot both be NULL".into(),
    })?;
    system_account_of(conn, other)
}

/// Try: reserves the amount (or answers a repeat with the first hold id).
pub fn try_hold(conn: &Connection, call: &TryCall) -> WalletResult<i64> {
    heap::require_current_schema();
    lock_hold_key(call.gtid, call.branch);
    let (stored, _) = lookup_hold(conn, call.gtid, call.branch);
    match tcc::judge_try(
        stored.as_ref(),
        call.debit_account_id,
        call.credit_account_id,
        call.amount,
    )? {
        HoldAction::Place => {}
        _ => return Ok(stored.expect("a repeat has a stored hold").hold_id),
    }
    let debit = resolve_side(
        conn,
        call.debit_account_id,
        call.credit_account_id,
        call.currency,
    )?;
    let credit = resolve_side(conn, call.credit_account_id, Some(debit), call.currency)?;
    let request =
        domain::check_transfer_arguments(Some(debit), Some(credit), Some(call.amount), None)?;
    let (d, c) = lock_pair(conn, debit, credit);
    domain::check_transfer_against(&request, d.as_ref(), c.as_ref())?;
    let (d, c) = (d.expect("checked"), c.expect("checked"));
    if let Some(code) = call.currency {
        if d.currency != code {
            // Both accounts share a currency (checked above), just not the one asked for.
            let system = resolve_side(conn, None, None, Some(code))?;
            return Err(WalletError::CurrencyMismatch {
                debit_account_id: d.id,
                debit_currency: d.currency.clone(),
                credit_account_id: system,
                credit_currency: code.into(),
                amount: call.amount,
            });
        }
    }
    domain::check_reservation_bounds(&d, &c, call.amount)?;
    let rows = conn.execute(
        &HOLD_PLACE,
        &[
            call.gtid.into_datum(),
            call.branch.into_datum(),
            debit.into_datum(),
            credit.into_datum(),
            call.amount.into_datum(),
            d.currency.as_str().into_datum(),
            call.timeout_micros.into_datum(),
        ],
    );
    if rows.is_empty() {
        return Err(WalletError::ConcurrentChange {
            debit_account_id: debit,
            credit_account_id: credit,
            amount: call.amount,
        });
    }
    Ok(rows.get(0, 1).expect("hold_id"))
}

/// Confirm: posts `amount` (None = all reserved); returns the posting's transfer id (event seq),
/// the first one for a repeat.
pub fn confirm_hold(
    conn: &Connection,
    gtid: &str,
    branch: &str,
    amount: Option<i64>,
) -> WalletResult<i64> {
    heap::require_current_schema();
    lock_hold_key(gtid, branch);
    let (stored, currency) = lookup_hold(conn, gtid, branch);
    let action = tcc::judge_confirm(stored.as_ref(), gtid, branch, amount)?;
    let h = stored.expect("judged");
    let amount = match action {
        HoldAction::Confirm { amount } => amount,
        _ => return Ok(h.confirm_seq.expect("a confirmed hold has its posting")),
    };
    let (debit_id, credit_id) = (
        h.debit_account_id.expect("a pending hold has accounts"),
        h.credit_account_id.expect("a pending hold has accounts"),
    );
    // The reservation was granted at try: status and funds are not judged again (a frozen
    // account's confirmed hold still posts). Only the bigint bounds are.
    let (d, c) = lock_pair(conn, debit_id, credit_id);
    let (d, c) = (
        d.expect("held accounts exist"),
        c.expect("held accounts exist"),
    );
    domain::check_posting_bounds(&d, &c, amount)?;
    let rows = conn.execute(
        &HOLD_CONFIRM,
        &[
            h.hold_id.into_datum(),
            debit_id.into_datum(),
            credit_id.into_datum(),
            amount.into_datum(),
            h.reserved.into_datum(),
            currency.into_datum(),
            gtid.into_datum(),
            branch.into_datum(),
        ],
    );
    Ok(rows.get(0, 1).expect("the locked hold was confirmed"))
}

/// Releases a pending hold whose row and accounts this transaction has locked.
fn release_hold(conn: &Connection, h: &Hold, currency: &str, status: HoldStatus) -> i64 {
    let rows = conn.execute(
        &HOLD_RELEASE,
        &[
            h.hold_id.into_datum(),
            h.debit_account_id.into_datum(),
            h.credit_account_id.into_datum(),
            h.reserved.into_datum(),
            currency.into_datum(),
            status.as_str().into_datum(),
            h.gtid.as_str().into_datum(),
            h.branch.as_str().into_datum(),
        ],
    );
    rows.get(0, 1).expect("the locked hold was released")
}

/// Cancel: releases the hold, or records a cancel whose try never arrived; returns the hold id.
pub fn cancel_hold(conn: &Connection, gtid: &str, branch: &str) -> WalletResult<i64> {
    heap::require_current_schema();
    lock_hold_key(gtid, branch);
    let (stored, currency) = lookup_hold(conn, gtid, branch);
    match tcc::judge_cancel(stored.as_ref())? {
        HoldAction::RecordEmptyCancel => {
            let rows = conn.execute(
                &HOLD_RECORD_CANCEL,
                &[gtid.into_datum(), branch.into_datum()],
            );
            if rows.is_empty() {
                return Err(WalletError::ConcurrentChange {
                    debit_account_id: 0,
                    credit_account_id: 0,
                    amount: 0,
                });
            }
            Ok(rows.get(0, 1).expect("hold_id"))
        }
        HoldAction::Release => {
            let h = stored.expect("judged");
            lock_pair(
                conn,
                h.debit_account_id.expect("accounts"),
                h.credit_account_id.expect("accounts"),
            );
            let currency = currency.expect("a pending hold has a currency");
            Ok(release_hold(conn, &h, &currency, HoldStatus::Cancelled))
        }
        _ => Ok(stored.expect("a repeat has a stored hold").hold_id),
    }
}

/// Releases up to `max_holds` pending holds past their timeout; returns how many.
pub fn expire_holds(conn: &Connection, max_holds: i32) -> WalletResult<i64> {
    heap::require_current_schema();
    let rows = conn.execute(&HOLD_EXPIRED, &[max_holds.into_datum()]);
    let holds: Vec<(Hold, String)> = (0..rows.len())
        .map(|i| (hold_row(&rows, i), hold_currency(&rows, i)))
        .collect();
    if holds.is_empty() {
        return Ok(0);
    }
    let accounts: Vec<i64> = holds
        .iter()
        .flat_map(|(h, _)| [h.debit_account_id, h.credit_account_id])
        .flatten()
        .collect();
    conn.execute(&LOCK_ACCOUNTS, &[accounts.into_datum()]);
    let mut expired = 0;
    for (h, currency) in &holds {
        if tcc::judge_expiry(h) == Some(HoldAction::Release) {
            release_hold(conn, h, currency, HoldStatus::Expired);
            expired += 1;
        }
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kept_statement_has_its_own_plan_slot() {
        let mut slots: Vec<usize> = ALL_KEPT.iter().map(|k| k.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(
            slots.len(),
            ALL_KEPT.len(),
            "two kept statements share a slot"
        );
        assert!(slots.iter().all(|&s| s < crate::spi::PLANS_MAX));
        for kept in ALL_KEPT {
            let sql = (kept.sql)();
            // Parameters used by the statement itself, not mentioned in its comments.
            let code: String = sql
                .lines()
                .map(|line| line.split("--").next().unwrap_or(""))
                .collect();
            let highest = (1..=crate::spi::ARGS_MAX)
                .rev()
                .find(|n| code.contains(&format!("${n}")));
            assert_eq!(highest.unwrap_or(0), kept.args.len(), "parameters of {sql}");
        }
    }
}
