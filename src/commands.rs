//! The commands on accounts and transfers: each one locks what it needs (`catalog::Tables`, the
//! wallet's own key locks), asks the rules of `wallet_core` to judge, and writes through the one
//! account writer (`accounts.rs`) and the one event writer (`events.rs`). Statements that only
//! read or that write lifecycle rows are kept SQL (`sql/queries/`).

use std::collections::HashMap;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::IntoDatum;
use wallet_core::account::{self, AccountState, StatusChange, StatusCommand};
use wallet_core::batch::{self, BatchInput, BatchResult};
use wallet_core::event::MoneyEventType;
use wallet_core::locks::LockClass;
use wallet_core::text::Text;
use wallet_core::transfer::{self, PriorTransfer, TransferRequest};

use crate::accounts::{Accounts, LockedAccount};
use crate::catalog::{Also, Tables};
use crate::error::{WalletError, WalletResult};
use crate::events::{self, EventWriter, MoneyEvent};
use crate::locks;
use crate::spi::{Connection, Kept, Rows};

const I8: Oid = pg_sys::INT8OID;
const I4: Oid = pg_sys::INT4OID;
const TEXT: Oid = pg_sys::TEXTOID;
const JSONB: Oid = pg_sys::JSONBOID;
const BOOL: Oid = pg_sys::BOOLOID;
const TEXT_ARRAY: Oid = pg_sys::TEXTARRAYOID;

/// A kept statement whose text is `sql/queries/$file`.
macro_rules! query {
    ($name:ident, $slot:expr, $file:literal, [$($arg:expr),*], $index_only:expr) => {
        query!($name, $slot, $file, [$($arg),*], $index_only, false);
    };
    ($name:ident, $slot:expr, $file:literal, [$($arg:expr),*], $index_only:expr, $hash_join:expr) => {
        pub(crate) static $name: Kept = Kept {
            slot: $slot,
            sql: || include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $file)).to_string(),
            args: &[$($arg),*],
            index_only: $index_only,
            hash_join: $hash_join,
        };
    };
}
pub(crate) use query;

query!(
    TRANSFER_PRIOR,
    9,
    "transfer_prior.sql",
    [TEXT, JSONB],
    false
);
query!(BATCH_PRIOR, 11, "batch_prior.sql", [TEXT_ARRAY], false);
query!(ACCOUNT_STATE, 2, "account_state.sql", [I8], false);
query!(
    ACCOUNT_STATE_FOR_UPDATE,
    3,
    "account_state_for_update.sql",
    [I8],
    false
);
query!(SET_STATUS, 4, "set_status.sql", [I8, TEXT, TEXT], false);
query!(
    OPEN_ACCOUNT,
    5,
    "open_account.sql",
    [TEXT, TEXT, JSONB, BOOL],
    false
);
query!(CREATE_CURRENCY, 6, "create_currency.sql", [TEXT, I4], false);
query!(SYSTEM_ACCOUNT_OF, 7, "system_account_of.sql", [I8], false);
query!(
    ACCOUNT_SETTLEMENT,
    29,
    "account_settlement.sql",
    [pg_sys::INT8ARRAYOID],
    false
);
query!(
    SYSTEM_ACCOUNT_OF_CURRENCY,
    19,
    "system_account_of_currency.sql",
    [TEXT],
    false
);

query!(
    SETTLEMENT_CURRENCY,
    57,
    "settlement_currency.sql",
    [TEXT],
    false
);
query!(
    SETTLEMENT_OPEN,
    58,
    "settlement_open.sql",
    [TEXT, I4],
    false
);

pub const KEPT: &[&Kept] = &[
    &SETTLEMENT_CURRENCY,
    &SETTLEMENT_OPEN,
    &TRANSFER_PRIOR,
    &BATCH_PRIOR,
    &ACCOUNT_STATE,
    &ACCOUNT_STATE_FOR_UPDATE,
    &SET_STATUS,
    &OPEN_ACCOUNT,
    &CREATE_CURRENCY,
    &SYSTEM_ACCOUNT_OF,
    &SYSTEM_ACCOUNT_OF_CURRENCY,
    &ACCOUNT_SETTLEMENT,
];

/// A text datum made from caller bytes (valid in the database encoding, as they came).
pub fn text_datum(bytes: &[u8]) -> Datum {
    // SAFETY: cstring_to_text_with_len copies `len` bytes into a new text in the current context.
    unsafe {
        Datum::from(pg_sys::cstring_to_text_with_len(
            bytes.as_ptr() as *const std::ffi::c_char,
            bytes.len() as i32,
        ))
    }
}

/// Row `row` of a result whose columns 1-8 are those of account_state.sql.
fn account_state(rows: &Rows, row: usize) -> WalletResult<AccountState> {
    let id: i64 = rows.get(row, 1).unwrap_or_default();
    let missing = |column: &str| {
        WalletError::DataCorrupted(format!(
            "wallet.accounts: account {id} has NULL in column {column}, which the wallet never writes"
        ))
    };
    let status = rows.bytes(row, 3).ok_or_else(|| missing("status"))?;
    let status = std::str::from_utf8(&status)
        .ok()
        .and_then(account::AccountStatus::parse)
        .ok_or_else(|| {
            WalletError::DataCorrupted(format!(
                "wallet.accounts: account {id} has status '{}', which the wallet never writes",
                Text(status.clone())
            ))
        })?;
    Ok(AccountState {
        id,
        currency: Text(rows.bytes(row, 2).ok_or_else(|| missing("currency"))?),
        status,
        allow_overdraft: rows.get(row, 4).ok_or_else(|| missing("allow_overdraft"))?,
        is_system: rows.get(row, 5).ok_or_else(|| missing("is_system"))?,
        balance: rows.get(row, 6).ok_or_else(|| missing("balance"))?,
        pending_debit: rows.get(row, 7).ok_or_else(|| missing("pending_debit"))?,
        pending_credit: rows.get(row, 8).ok_or_else(|| missing("pending_credit"))?,
    })
}

fn read_account(
    conn: &Connection,
    kept: &Kept,
    account_id: i64,
) -> WalletResult<Option<AccountState>> {
    let rows = conn.execute(kept, &[account_id.into_datum()]);
    if rows.is_empty() {
        return Ok(None);
    }
    account_state(&rows, 0).map(Some)
}

/// The stored event that first used a key, from row `row` of transfer_prior.sql or
/// batch_prior.sql, whose columns seq, event_type, debit, credit, amount, same_metadata start at
/// column `first`.
fn prior_transfer(rows: &Rows, row: usize, first: usize) -> PriorTransfer {
    let event_type = rows
        .bytes(row, first + 1)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    PriorTransfer {
        transfer_id: rows.get(row, first).unwrap_or_default(),
        event_type,
        debit_account_id: rows.get(row, first + 2),
        credit_account_id: rows.get(row, first + 3),
        amount: rows.get(row, first + 4),
        metadata_matches: rows.get(row, first + 5).unwrap_or(false),
    }
}

/// A transfer after its arguments passed `transfer::check_transfer_arguments`.
pub struct TransferCall<'a> {
    pub request: TransferRequest,
    /// The key's bytes and its datum, when a key was given.
    pub idempotency_key: Option<(&'a [u8], Datum)>,
    pub metadata: Option<Datum>,
}

/// Locks `a` and `b` (distinct) in ascending id order; returns them in the order asked.
fn lock_two(
    accounts: &Accounts,
    conn: &Connection,
    a: i64,
    b: i64,
) -> WalletResult<Result<(Option<LockedAccount>, Option<LockedAccount>), i64>> {
    let a_first = a < b;
    let ids = if a_first { [a, b] } else { [b, a] };
    let mut locked = match accounts.lock(conn, &ids)? {
        Ok(locked) => locked,
        Err(conflict) => return Ok(Err(conflict.0)),
    };
    let second = locked.pop().flatten();
    let first = locked.pop().flatten();
    Ok(Ok(if a_first {
        (first, second)
    } else {
        (second, first)
    }))
}

/// Posts a transfer (or returns the first answer for a repeated idempotency key). The two
/// account rows are locked in ascending id order (so two transfers never deadlock each other),
/// judged on their locked versions, updated, and the event appended.
pub fn transfer(conn: &Connection, call: &TransferCall) -> WalletResult<i64> {
    transfer_in(conn, call).map(|(seq, _)| seq)
}

/// As [`transfer`]; beside the event's sequence number the currency it moved (None for the
/// answer of a repeated key).
pub fn transfer_in(conn: &Connection, call: &TransferCall) -> WalletResult<(i64, Option<Text>)> {
    let r = &call.request;
    let tables = Tables::open(c"a wallet transfer", Also::Nothing)?;
    if let Some((key, key_datum)) = call.idempotency_key {
        // Two sessions presenting the same key run one after the other: under READ COMMITTED
        // the second finds the first's event (or proceeds if it rolled back).
        locks::lock_for_transaction(LockClass::IdempotencyKey, key)?;
        let rows = conn.execute(&TRANSFER_PRIOR, &[Some(key_datum), call.metadata]);
        if !rows.is_empty() {
            return transfer::replay_answer(key, r, &prior_transfer(&rows, 0, 1))
                .map(|seq| (seq, None));
        }
    }
    let accounts = Accounts::open(&tables);
    let (debit, credit) = lock_two(&accounts, conn, r.debit_account_id, r.credit_account_id)?
        .map_err(|_| r.concurrent_change())?;
    transfer::check_transfer_against(
        r,
        debit.as_ref().map(|a| &a.state),
        credit.as_ref().map(|a| &a.state),
    )?;
    let (Some(debit), Some(credit)) = (debit, credit) else {
        unreachable!("check_transfer_against refuses a missing account")
    };
    let (debit_balance, credit_balance) =
        transfer::balances_after(&debit.state, &credit.state, r.amount);
    let seq = events::next_seq(&tables);
    accounts.write(
        conn,
        &debit,
        debit_balance,
        debit.state.pending_debit,
        debit.state.pending_credit,
        seq,
    );
    accounts.write(
        conn,
        &credit,
        credit_balance,
        credit.state.pending_debit,
        credit.state.pending_credit,
        seq,
    );
    let mut writer = EventWriter::open(&tables, conn, 1);
    writer.append(&MoneyEvent {
        seq,
        event_type: MoneyEventType::Transfer,
        debit_account_id: r.debit_account_id,
        credit_account_id: r.credit_account_id,
        amount: r.amount,
        currency: debit.currency,
        debit_balance,
        credit_balance,
        idempotency_key: call.idempotency_key.map(|(_, datum)| datum),
        data: call.metadata,
        pending_delta: None,
        debit_prev: debit.last_seq,
        credit_prev: credit.last_seq,
    });
    if writer.finish().is_some() {
        // A batch (which takes no key lock) committed the key after the look-up above, or,
        // above READ COMMITTED, a transaction this snapshot cannot see did: only a retry can
        // give the first answer (the error undoes the balances set above).
        return Err(r.concurrent_change());
    }
    Ok((seq, Some(debit.state.currency.clone())))
}

/// The system account that deposits and withdrawals of this account settle against.
pub fn system_account_of(conn: &Connection, account_id: i64) -> WalletResult<i64> {
    let _tables = Tables::open(c"a wallet deposit or withdrawal", Also::Nothing)?;
    let rows = conn.execute(&SYSTEM_ACCOUNT_OF, &[account_id.into_datum()]);
    if rows.is_empty() {
        return Err(WalletError::AccountNotFound { account_id });
    }
    rows.get(0, 1).ok_or_else(|| {
        WalletError::DataCorrupted(format!(
            "wallet.currencies: the currency of account {account_id} has no system account"
        ))
    })
}

/// Where a currency's cross-node postings and holds settle: its system account, and the further
/// accounts its settlement is spread over (`wallet.spread_settlement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub system: i64,
    pub further: Vec<i64>,
}

impl Settlement {
    /// The account that settles the posting or hold under `key`.
    pub fn account_for(&self, key: &[u8]) -> i64 {
        wallet_core::settlement::settlement_account(key, self.system, &self.further)
    }

    /// Whether `account` is one of them.
    pub fn has(&self, account: i64) -> bool {
        account == self.system || self.further.contains(&account)
    }

    /// Columns `column` (the system account) and `column + 1` (the further ones) of `row`.
    pub(crate) fn of_row(rows: &Rows, row: usize, column: usize) -> Option<Settlement> {
        let system = rows.get::<i64>(row, column)?;
        let further = ids_of(rows, row, column + 1);
        Some(Settlement { system, further })
    }
}

/// A bigint[] column of account ids (NULL, and NULL elements, left out).
fn ids_of(rows: &Rows, row: usize, column: usize) -> Vec<i64> {
    rows.get::<Vec<Option<i64>>>(row, column)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// Where a currency settles.
pub fn settlement_of_currency(conn: &Connection, code: &[u8]) -> WalletResult<Settlement> {
    let rows = conn.execute(&SYSTEM_ACCOUNT_OF_CURRENCY, &[Some(text_datum(code))]);
    if rows.is_empty() {
        return Err(WalletError::CurrencyNotFound {
            code: Text::from(code),
        });
    }
    Settlement::of_row(&rows, 0, 1).ok_or_else(|| {
        WalletError::DataCorrupted(format!(
            "wallet.currencies: currency {} has no system account",
            Text::from(code)
        ))
    })
}

/// Spreads a currency's cross-node settlement over `accounts` system accounts in all (its
/// system account and further ones opened here, each with its account_opened event): the node's
/// concurrent cross-node calls then lock one of them each, chosen by their key, instead of all
/// the same row. Only more: fewer than it has is refused. Returns all of them, the system
/// account first.
pub fn spread_settlement(
    conn: &Connection,
    code: &[u8],
    accounts: Option<i32>,
) -> WalletResult<Vec<i64>> {
    let _tables = Tables::open(c"a wallet settlement spread", Also::Nothing)?;
    let rows = conn.execute(&SETTLEMENT_CURRENCY, &[Some(text_datum(code))]);
    if rows.is_empty() {
        return Err(WalletError::CurrencyNotFound {
            code: Text::from(code),
        });
    }
    let system: i64 = rows.get(0, 1).ok_or_else(|| {
        WalletError::DataCorrupted(format!(
            "wallet.currencies: currency {} has no system account",
            Text::from(code)
        ))
    })?;
    let mut further = ids_of(&rows, 0, 2);
    let open = wallet_core::settlement::accounts_to_open(further.len() + 1, accounts)?;
    if open > 0 {
        let rows = conn.execute(
            &SETTLEMENT_OPEN,
            &[Some(text_datum(code)), (open as i32).into_datum()],
        );
        further = if rows.is_empty() {
            Vec::new()
        } else {
            ids_of(&rows, 0, 1)
        };
    }
    let mut all = vec![system];
    all.extend(further);
    Ok(all)
}

/// The account's state, or AccountNotFound.
pub fn account(conn: &Connection, account_id: i64) -> WalletResult<AccountState> {
    lock_for_reading()?;
    read_account(conn, &ACCOUNT_STATE, account_id)?
        .ok_or(WalletError::AccountNotFound { account_id })
}

/// A read that must not answer "not found" for a row an ALTER waited on has rewritten: the table
/// is locked before the statement's snapshot is taken (see catalog::Tables::open).
fn lock_for_reading() -> WalletResult<()> {
    let catalog = crate::catalog::current()?;
    // SAFETY: locks a relation by oid.
    unsafe {
        pg_sys::LockRelationOid(
            catalog.accounts,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        )
    };
    Ok(())
}

/// Applies a status command; returns whether the account changed (and an event was recorded).
pub fn change_status(
    conn: &Connection,
    account_id: i64,
    command: StatusCommand,
) -> WalletResult<bool> {
    let _tables = Tables::open(c"a wallet account status change", Also::Nothing)?;
    let state = read_account(conn, &ACCOUNT_STATE_FOR_UPDATE, account_id)?
        .ok_or(WalletError::AccountNotFound { account_id })?;
    match account::apply_status_command(&state, command)? {
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
            if rows.len() != 1 {
                return Err(account_changed_under_us(account_id));
            }
            Ok(true)
        }
    }
}

/// A row this transaction locked was not updated by the statement that followed: something a
/// DBA added (a BEFORE trigger returning NULL, a rule, a policy) skipped it.
fn account_changed_under_us(account_id: i64) -> WalletError {
    WalletError::TableShape(format!(
        "the update of account {account_id} was skipped by something added to wallet.accounts (a trigger, rule or policy): nothing was written"
    ))
}

/// Opens an account; returns its id.
pub fn open_account(
    conn: &Connection,
    currency: &[u8],
    owner: Option<Datum>,
    metadata: Datum,
    allow_overdraft: bool,
) -> WalletResult<i64> {
    let _tables = Tables::open(c"a wallet account opening", Also::Nothing)?;
    let rows = conn.execute(
        &OPEN_ACCOUNT,
        &[
            Some(text_datum(currency)),
            owner,
            Some(metadata),
            allow_overdraft.into_datum(),
        ],
    );
    if rows.is_empty() {
        return Err(WalletError::CurrencyNotFound {
            code: Text::from(currency),
        });
    }
    rows.get(0, 1).ok_or_else(|| account_changed_under_us(0))
}

/// Creates a currency; returns its system account id.
pub fn create_currency(conn: &Connection, code: &[u8], scale: i32) -> WalletResult<i64> {
    let _tables = Tables::open(c"a wallet currency creation", Also::Nothing)?;
    let rows = conn.execute(
        &CREATE_CURRENCY,
        &[Some(text_datum(code)), scale.into_datum()],
    );
    if rows.is_empty() {
        return Err(WalletError::CurrencyExists {
            code: Text::from(code),
        });
    }
    rows.get(0, 1).ok_or_else(|| account_changed_under_us(0))
}

/// Posts a batch: looks its keys up, locks and reads its accounts (ascending id order, the
/// order single transfers lock in, so neither deadlocks the other), lets `batch::judge` apply it
/// in memory, then writes the final balances and the events, as the single transfer does.
/// Returns one result per input transfer, with its transfer id.
pub fn transfer_batch(conn: &Connection, inputs: &[BatchInput]) -> WalletResult<Vec<BatchResult>> {
    transfer_batch_with(conn, inputs, None)
}

/// [`transfer_batch`], with the stored events of its keys when the caller read them already
/// ([`stored_postings`]).
pub fn transfer_batch_with(
    conn: &Connection,
    inputs: &[BatchInput],
    prior: Option<HashMap<Vec<u8>, PriorTransfer>>,
) -> WalletResult<Vec<BatchResult>> {
    let tables = Tables::open(c"a wallet transfer batch", Also::Nothing)?;
    let checked = batch::check_arguments(inputs);
    let prior = prior.unwrap_or_else(|| batch_prior(conn, inputs));
    let mut ids: Vec<i64> = checked
        .iter()
        .flatten()
        .flat_map(|r| [r.debit_account_id, r.credit_account_id])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let accounts = Accounts::open(&tables);
    let locked = accounts.lock(conn, &ids)?.map_err(|conflict| {
        let id = conflict.0;
        checked
            .iter()
            .flatten()
            .find(|r| r.debit_account_id == id || r.credit_account_id == id)
            .map_or(
                WalletError::ConcurrentChange {
                    debit_account_id: id,
                    credit_account_id: id,
                    amount: 0,
                },
                TransferRequest::concurrent_change,
            )
    })?;
    // `locked` stays beside `ids` (ascending) and is walked in that order, where a map of whole
    // rows missed the cache on most look-ups (perf, bench/RESULTS.md section 3).
    let mut states: HashMap<i64, AccountState> = ids
        .iter()
        .zip(&locked)
        .filter_map(|(&id, account)| Some((id, account.as_ref()?.state.clone())))
        .collect();
    let judgement = batch::judge(inputs, &checked, &prior, &mut states);
    let batch = LockedBatch {
        tables: &tables,
        accounts: &accounts,
        ids: &ids,
        locked: &locked,
    };
    let seqs = batch.post(conn, inputs, &judgement, &states)?;
    Ok(judgement.answers(&seqs))
}

/// The stored events of a batch's keys. Read before any row lock, to keep the locks short: a key
/// committed by a concurrent transaction after this look-up is found by the unique index when
/// the event is written.
fn batch_prior(conn: &Connection, inputs: &[BatchInput]) -> HashMap<Vec<u8>, PriorTransfer> {
    stored_postings(conn, inputs.iter().filter_map(|t| t.idempotency_key))
}

/// The stored events of these idempotency keys, by key.
pub fn stored_postings<'k>(
    conn: &Connection,
    keys: impl Iterator<Item = &'k [u8]>,
) -> HashMap<Vec<u8>, PriorTransfer> {
    let keys: Vec<Datum> = keys.map(text_datum).collect();
    let mut prior = HashMap::new();
    if !keys.is_empty() {
        let rows = conn.execute(&BATCH_PRIOR, &[Some(text_array_datum(&keys))]);
        for row in 0..rows.len() {
            if let Some(key) = rows.bytes(row, 1) {
                prior.insert(key, prior_transfer(&rows, row, 2));
            }
        }
    }
    prior
}

/// A batch's accounts, locked: `ids` ascending, `locked` beside them (None: no such account).
struct LockedBatch<'a, 't> {
    tables: &'a Tables,
    accounts: &'a Accounts<'t>,
    ids: &'a [i64],
    locked: &'a [Option<LockedAccount>],
}

impl LockedBatch<'_, '_> {
    /// Writes the judged postings: each changed account once, at its final state, then the
    /// events, linked into their accounts' chains. Returns each posting's event seq.
    fn post(
        &self,
        conn: &Connection,
        inputs: &[BatchInput],
        judgement: &batch::Judgement,
        states: &HashMap<i64, AccountState>,
    ) -> WalletResult<Vec<i64>> {
        let postings = &judgement.postings;
        if postings.is_empty() {
            return Ok(Vec::new());
        }
        let mut last_seq: HashMap<i64, Option<i64>> = self
            .ids
            .iter()
            .zip(self.locked)
            .filter_map(|(&id, account)| Some((id, account.as_ref()?.last_seq)))
            .collect();
        let seqs: Vec<i64> = postings
            .iter()
            .map(|_| events::next_seq(self.tables))
            .collect();
        let pairs: Vec<(i64, i64)> = postings
            .iter()
            .map(|p| (p.request.debit_account_id, p.request.credit_account_id))
            .collect();
        let links = batch::chain_links(&pairs, &seqs, &mut last_seq);
        let mut changed: Vec<i64> = pairs.iter().flat_map(|&(d, c)| [d, c]).collect();
        changed.sort_unstable();
        changed.dedup();
        // `changed` is a subset of `ids`, both ascending.
        let mut rows = self.ids.iter().zip(self.locked);
        for id in &changed {
            let Some((_, Some(row))) = rows.find(|(locked_id, _)| *locked_id == id) else {
                unreachable!("a changed account was locked and exists")
            };
            let state = &states[id];
            let newest = last_seq[id].expect("a posting set it");
            self.accounts.write(
                conn,
                row,
                state.balance,
                state.pending_debit,
                state.pending_credit,
                newest,
            );
        }
        let currencies: Vec<Datum> = judgement
            .currencies
            .iter()
            .map(|c| text_datum(c.as_bytes()))
            .collect();
        const ROWS_PER_WRITE: usize = 1000;
        let mut writer = EventWriter::open(self.tables, conn, postings.len().min(ROWS_PER_WRITE));
        for ((posting, &seq), &(debit_prev, credit_prev)) in postings.iter().zip(&seqs).zip(&links)
        {
            let r = &posting.request;
            writer.append(&MoneyEvent {
                seq,
                event_type: MoneyEventType::Transfer,
                debit_account_id: r.debit_account_id,
                credit_account_id: r.credit_account_id,
                amount: r.amount,
                currency: currencies[posting.currency],
                debit_balance: posting.debit_balance,
                credit_balance: posting.credit_balance,
                idempotency_key: inputs[posting.index].idempotency_key.map(text_datum),
                data: None,
                pending_delta: None,
                debit_prev,
                credit_prev,
            });
        }
        if let Some(i) = writer.finish() {
            // Its key was committed by a concurrent transaction after the look-up above.
            return Err(postings[i].request.concurrent_change());
        }
        Ok(seqs)
    }
}

/// The accounts' currencies and where their currencies settle, in one statement.
pub(crate) fn settlements(
    conn: &Connection,
    account_ids: &[i64],
) -> HashMap<i64, (Text, Settlement)> {
    let ids: Vec<Option<i64>> = account_ids.iter().copied().map(Some).collect();
    let rows = conn.execute(&ACCOUNT_SETTLEMENT, &[ids.into_datum()]);
    (0..rows.len())
        .filter_map(|r| {
            match (
                rows.get::<i64>(r, 1),
                rows.bytes(r, 2),
                Settlement::of_row(&rows, r, 3),
            ) {
                (Some(id), Some(currency), Some(s)) => Some((id, (Text(currency), s))),
                _ => None,
            }
        })
        .collect()
}

/// A text[] datum of `items` (text datums).
pub fn text_array_datum(items: &[Datum]) -> Datum {
    // SAFETY: construct_array copies the datums into a new one-dimensional text[] in the
    // current memory context.
    unsafe {
        let mut items = items.to_vec();
        Datum::from(pg_sys::construct_array(
            items.as_mut_ptr(),
            items.len() as i32,
            pg_sys::TEXTOID,
            -1,
            false,
            b'i' as std::ffi::c_char,
        ))
    }
}
