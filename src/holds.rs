//! The hold commands: the participant side of Try-Confirm/Cancel on this database. Each call on a
//! (gtid, branch) takes the wallet's lock on that key, then locks the hold row, then the accounts
//! in ascending id order (through `accounts.rs`, as transfers and batches do), asks the hold
//! state machine (`wallet_core::hold`) what to do, and moves the money through the one account
//! writer and the one event writer. Hold rows themselves are kept SQL (`sql/queries/hold_*.sql`).

use std::collections::HashMap;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::IntoDatum;
use wallet_core::account::AccountState;
use wallet_core::event::MoneyEventType;
use wallet_core::hold::{self, Hold, HoldAction, HoldStatus};
use wallet_core::locks::{self as lock_keys, LockClass};
use wallet_core::text::Text;
use wallet_core::transfer;

use crate::accounts::{Accounts, LockedAccount};
use crate::catalog::{Also, Tables};
use crate::commands::{
    query, settlement_of_currency, settlements, text_array_datum, text_datum, Settlement,
};
use crate::error::{WalletError, WalletResult};
use crate::events::{self, EventWriter, MoneyEvent};
use crate::locks;
use crate::spi::{Connection, Kept, Rows};

const I8: Oid = pg_sys::INT8OID;
const I4: Oid = pg_sys::INT4OID;
const TEXT: Oid = pg_sys::TEXTOID;
const TIMESTAMPTZ: Oid = pg_sys::TIMESTAMPTZOID;
const I8_ARRAY: Oid = pg_sys::INT8ARRAYOID;
const TEXT_ARRAY: Oid = pg_sys::TEXTARRAYOID;

query!(HOLD_LOOKUP, 16, "hold_lookup.sql", [TEXT, TEXT], true);
query!(HOLD_EXPIRED, 17, "hold_expired.sql", [I4], true);
query!(
    HOLD_INSERT,
    20,
    "hold_insert.sql",
    [TEXT, TEXT, I8, I8, I8, TEXT, I8],
    false
);
query!(HOLD_FINISH, 21, "hold_finish.sql", [I8, TEXT, I8, I8], true);
query!(
    HOLD_RECORD_CANCEL,
    23,
    "hold_record_cancel.sql",
    [TEXT, TEXT],
    false
);
query!(
    HOLD_LOOKUP_MANY,
    53,
    "hold_lookup_many.sql",
    [TEXT_ARRAY, TEXT_ARRAY],
    true,
    true
);
query!(HOLD_IDS, 54, "hold_ids.sql", [I4], false);
query!(
    HOLD_INSERT_MANY,
    55,
    "hold_insert_many.sql",
    [
        I8_ARRAY,
        TEXT_ARRAY,
        TEXT_ARRAY,
        I8_ARRAY,
        I8_ARRAY,
        TEXT_ARRAY,
        I8_ARRAY,
        TIMESTAMPTZ,
        I8_ARRAY
    ],
    true
);
query!(
    HOLD_FINISH_MANY,
    56,
    "hold_finish_many.sql",
    [I8_ARRAY, TEXT_ARRAY, I8_ARRAY, I8_ARRAY],
    true,
    true
);
query!(
    SETTLEMENT_OF_ACCOUNT,
    8,
    "settlement_of_account.sql",
    [I8],
    false
);

pub const KEPT: &[&Kept] = &[
    &HOLD_LOOKUP,
    &HOLD_EXPIRED,
    &HOLD_INSERT,
    &HOLD_FINISH,
    &HOLD_RECORD_CANCEL,
    &HOLD_LOOKUP_MANY,
    &HOLD_IDS,
    &HOLD_INSERT_MANY,
    &HOLD_FINISH_MANY,
    &SETTLEMENT_OF_ACCOUNT,
];

/// Row `row` of hold_lookup.sql / hold_expired.sql.
fn hold_row(rows: &Rows, row: usize) -> WalletResult<Hold> {
    let id: i64 = rows.get(row, 1).unwrap_or_default();
    let status = rows.bytes(row, 2).unwrap_or_default();
    let status = std::str::from_utf8(&status)
        .ok()
        .and_then(HoldStatus::parse)
        .ok_or_else(|| {
            WalletError::DataCorrupted(format!(
                "wallet.holds: hold {id} has status '{}', which the wallet never writes",
                Text(status.clone())
            ))
        })?;
    Ok(Hold {
        hold_id: id,
        status,
        debit_account_id: rows.get(row, 3),
        credit_account_id: rows.get(row, 4),
        reserved: rows.get(row, 5).unwrap_or_default(),
        confirmed_amount: rows.get(row, 6),
        timed_out: rows.get(row, 7).unwrap_or(false),
        confirm_seq: rows.get(row, 8),
        gtid: Text(rows.bytes(row, 10).unwrap_or_default()),
        branch: Text(rows.bytes(row, 11).unwrap_or_default()),
    })
}

/// Whether a hold step serialises with the others of its (gtid, branch) by a lock on the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLock {
    /// A single call: a try and a cancel of the same branch arriving together run one after the
    /// other, so one of them sees the other.
    Take,
    /// One item of a participant call with many (a coordinator's batch): no lock per item, which
    /// would hold one lock-table entry per item to the end of the transaction; the unique index
    /// on (gtid, branch) is then the arbiter, as for the batch API's keys: a try and a cancel that
    /// raced end with one of them refused (23505 or 40001), never both applied.
    Skip,
}

fn lock_hold_key(gtid: &[u8], branch: &[u8], lock: KeyLock) -> WalletResult<()> {
    match lock {
        KeyLock::Take => {
            locks::lock_for_transaction(LockClass::Hold, &lock_keys::hold_key(gtid, branch))
        }
        KeyLock::Skip => Ok(()),
    }
}

fn lookup_hold(conn: &Connection, gtid: &[u8], branch: &[u8]) -> WalletResult<Option<Hold>> {
    Ok(lookup_hold_and_currency(conn, gtid, branch)?.map(|(h, _)| h))
}

/// The hold stored under (gtid, branch), locked, with its currency (None for an empty cancel).
fn lookup_hold_and_currency(
    conn: &Connection,
    gtid: &[u8],
    branch: &[u8],
) -> WalletResult<Option<(Hold, Option<Text>)>> {
    let rows = conn.execute(
        &HOLD_LOOKUP,
        &[Some(text_datum(gtid)), Some(text_datum(branch))],
    );
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some((hold_row(&rows, 0)?, rows.bytes(0, 9).map(Text))))
}

/// A hold found under its key, with its currency (None for an empty cancel).
type Stored = Option<(Hold, Option<Text>)>;

/// The holds stored under `keys` (distinct), locked, in one statement: beside each key its hold
/// and currency, as [`lookup_hold_and_currency`] finds them one by one.
fn lookup_many(conn: &Connection, keys: &[(&[u8], &[u8])]) -> WalletResult<Vec<Stored>> {
    let gtids: Vec<Datum> = keys.iter().map(|k| text_datum(k.0)).collect();
    let branches: Vec<Datum> = keys.iter().map(|k| text_datum(k.1)).collect();
    let rows = conn.execute(
        &HOLD_LOOKUP_MANY,
        &[
            Some(text_array_datum(&gtids)),
            Some(text_array_datum(&branches)),
        ],
    );
    let mut found: Vec<Stored> = keys.iter().map(|_| None).collect();
    for r in 0..rows.len() {
        let i: i64 = rows.get(r, 12).unwrap_or_default();
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| found.get_mut(i))
            .expect("hold_lookup_many.sql answers a key's place");
        *slot = Some((hold_row(&rows, r)?, rows.bytes(r, 9).map(Text)));
    }
    Ok(found)
}

/// A try after `hold::check_hold_key` and `transfer::check_amount` passed.
pub struct TryCall<'a> {
    pub gtid: &'a [u8],
    pub branch: &'a [u8],
    /// None: the system account of `currency` (or of the other account's currency).
    pub debit_account_id: Option<i64>,
    pub credit_account_id: Option<i64>,
    pub amount: i64,
    pub timeout_micros: i64,
    pub currency: Option<&'a [u8]>,
    pub key_lock: KeyLock,
}

/// Where currencies settle, as one command looked them up, by currency code and by an account of
/// the currency: a participant call with many tries asks the same question for every item (a
/// currency keeps its system account, an account its currency; settlement accounts added by a
/// concurrent spread_settlement count from the next command on).
#[derive(Default)]
struct Systems {
    by_currency: HashMap<Vec<u8>, Settlement>,
    by_account: HashMap<i64, Settlement>,
}

/// The system account standing in for a side left NULL: one of the currency's settlement
/// accounts, chosen by the hold's gtid (`key`).
fn resolve_side(
    conn: &Connection,
    systems: &mut Systems,
    side: Option<i64>,
    other: Option<i64>,
    currency: Option<&[u8]>,
    key: &[u8],
) -> WalletResult<i64> {
    if let Some(id) = side {
        return Ok(id);
    }
    if let Some(code) = currency {
        if let Some(s) = systems.by_currency.get(code) {
            return Ok(s.account_for(key));
        }
        let s = settlement_of_currency(conn, code)?;
        let id = s.account_for(key);
        systems.by_currency.insert(code.to_vec(), s);
        return Ok(id);
    }
    let other = other.ok_or_else(|| {
        WalletError::invalid_argument(
            "debit_account_id",
            "the debit and credit accounts cannot both be NULL",
        )
    })?;
    if let Some(s) = systems.by_account.get(&other) {
        return Ok(s.account_for(key));
    }
    let rows = conn.execute(&SETTLEMENT_OF_ACCOUNT, &[other.into_datum()]);
    if rows.is_empty() {
        return Err(WalletError::AccountNotFound { account_id: other });
    }
    let s = Settlement::of_row(&rows, 0, 1)
        .ok_or(WalletError::AccountNotFound { account_id: other })?;
    let id = s.account_for(key);
    systems.by_account.insert(other, s);
    Ok(id)
}

/// Locks the accounts of a hold (distinct) in ascending id order: (debit, credit).
fn lock_pair(
    accounts: &Accounts,
    conn: &Connection,
    debit: i64,
    credit: i64,
    amount: i64,
) -> WalletResult<(Option<LockedAccount>, Option<LockedAccount>)> {
    let ids = if debit < credit {
        [debit, credit]
    } else {
        [credit, debit]
    };
    let mut locked = accounts
        .lock(conn, &ids)?
        .map_err(|_| WalletError::ConcurrentChange {
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
        })?;
    let second = locked.pop().flatten();
    let first = locked.pop().flatten();
    Ok(if debit < credit {
        (first, second)
    } else {
        (second, first)
    })
}

/// The jsonb data of a hold event, valid until the command ends: `{"hold_id", "gtid", "branch"}`
/// and `expires_at` (hold_placed) or `reserved` (hold_confirmed, hold_cancelled, hold_expired),
/// exactly what `jsonb_build_object` makes of them (a timestamp as JSON encodes it, ISO 8601),
/// built as text and read by `jsonb_in`: a statement per hold step cost more.
fn event_data(h: &HoldIds, expires_at: Option<Datum>, reserved: Option<i64>) -> Datum {
    // SAFETY: text datums of the hold's key, copied out as C strings; JSON text built in a
    // StringInfo of the current memory context and parsed by jsonb_in, which allocates there too.
    unsafe {
        let buf = pg_sys::makeStringInfo();
        let append = |text: &str| {
            let c = std::ffi::CString::new(text).expect("no NUL in the JSON skeleton");
            pg_sys::appendStringInfoString(buf, c.as_ptr());
        };
        append(&format!("{{\"hold_id\": {}, \"gtid\": ", h.hold_id));
        pg_sys::escape_json(buf, pg_sys::text_to_cstring(h.gtid.cast_mut_ptr()));
        append(", \"branch\": ");
        pg_sys::escape_json(buf, pg_sys::text_to_cstring(h.branch.cast_mut_ptr()));
        match (expires_at, reserved) {
            (Some(at), _) => {
                append(", \"expires_at\": ");
                let encoded = pg_sys::JsonEncodeDateTime(
                    std::ptr::null_mut(),
                    at,
                    pg_sys::TIMESTAMPTZOID,
                    std::ptr::null(),
                );
                pg_sys::escape_json(buf, encoded);
            }
            (None, Some(amount)) => append(&format!(", \"reserved\": {amount}")),
            (None, None) => append(", \"reserved\": null"),
        }
        append("}");
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::jsonb_in,
            &[Some(Datum::from((*buf).data))],
        )
        .expect("jsonb_in never returns NULL")
    }
}

/// What identifies a hold in its events: its id and key, as datums.
struct HoldIds {
    hold_id: i64,
    gtid: Datum,
    branch: Datum,
}

/// A try to place: its accounts (a side left NULL resolved to its system account) and the
/// transfer it reserves, checked without stored state.
struct Placement {
    debit: i64,
    credit: i64,
    request: transfer::TransferRequest,
}

/// Judges a try against the hold stored under its key (`stored`, looked up and locked): a
/// placement, or the answer of a repeat (the first hold id and its currency).
fn placement(
    conn: &Connection,
    systems: &mut Systems,
    call: &TryCall,
    stored: Stored,
) -> WalletResult<Result<Placement, (i64, Text)>> {
    let (stored, currency) = match stored {
        Some((h, c)) => (Some(h), c),
        None => (None, None),
    };
    match hold::judge_try(
        stored.as_ref(),
        call.debit_account_id,
        call.credit_account_id,
        call.amount,
    )? {
        HoldAction::Place => {}
        _ => {
            return Ok(Err((
                stored.map_or(0, |h| h.hold_id),
                currency.unwrap_or_default(),
            )))
        }
    }
    let debit = resolve_side(
        conn,
        systems,
        call.debit_account_id,
        call.credit_account_id,
        call.currency,
        call.gtid,
    )?;
    let credit = resolve_side(
        conn,
        systems,
        call.credit_account_id,
        Some(debit),
        call.currency,
        call.gtid,
    )?;
    let request =
        transfer::check_transfer_arguments(Some(debit), Some(credit), Some(call.amount), None)?;
    Ok(Ok(Placement {
        debit,
        credit,
        request,
    }))
}

/// Judges a placement against the accounts the ledger holds locked (None: no such account), as
/// the ledger's earlier moves left them: the currency of the hold, or the refusal of this try
/// alone (nothing written).
fn judge_place(
    conn: &Connection,
    ledger: &HoldLedger,
    found: &HashMap<i64, &LockedAccount>,
    call: &TryCall,
    p: &Placement,
) -> WalletResult<Text> {
    let (d, c) = (found.get(&p.debit), found.get(&p.credit));
    transfer::check_transfer_against(
        &p.request,
        d.map(|_| ledger.state(p.debit)),
        c.map(|_| ledger.state(p.credit)),
    )?;
    let (debit, credit) = (ledger.state(p.debit), ledger.state(p.credit));
    if let Some(code) = call.currency {
        if debit.currency.as_bytes() != code {
            // Both accounts share a currency (checked above), just not the one asked for.
            return Err(
                match resolve_side(
                    conn,
                    &mut Systems::default(),
                    None,
                    None,
                    Some(code),
                    call.gtid,
                ) {
                    Ok(system) => WalletError::CurrencyMismatch {
                        debit_account_id: debit.id,
                        debit_currency: debit.currency.clone(),
                        credit_account_id: system,
                        credit_currency: Text::from(code),
                        amount: call.amount,
                    },
                    Err(e) => e,
                },
            );
        }
    }
    transfer::check_reservation_bounds(debit, credit, call.amount)?;
    Ok(debit.currency.clone())
}

/// The hold_placed move of hold `hold_id` (its row written or about to be), pending until
/// `expires_at` (a timestamptz).
fn place_move(
    ledger: &mut HoldLedger,
    call: &TryCall,
    p: &Placement,
    hold_id: i64,
    expires_at: Option<Datum>,
) -> WalletResult<()> {
    let ids = HoldIds {
        hold_id,
        gtid: text_datum(call.gtid),
        branch: text_datum(call.branch),
    };
    let data = event_data(&ids, expires_at, None);
    ledger.apply(
        p.debit,
        p.credit,
        &Move {
            event_type: MoneyEventType::HoldPlaced,
            amount: 0,
            pending_delta: call.amount,
            data,
        },
    )?;
    Ok(())
}

/// Places one hold (judged by [`judge_place`]), its row written by its own statement. The inner
/// error refuses this try alone, having written nothing; the outer one the whole command.
fn place(
    conn: &Connection,
    ledger: &mut HoldLedger,
    found: &HashMap<i64, &LockedAccount>,
    call: &TryCall,
    p: &Placement,
) -> WalletResult<WalletResult<(i64, Text)>> {
    let currency = match judge_place(conn, ledger, found, call, p) {
        Ok(currency) => currency,
        Err(e) => return Ok(Err(e)),
    };
    let rows = conn.execute(
        &HOLD_INSERT,
        &[
            Some(text_datum(call.gtid)),
            Some(text_datum(call.branch)),
            p.debit.into_datum(),
            p.credit.into_datum(),
            call.amount.into_datum(),
            Some(found[&p.debit].currency),
            call.timeout_micros.into_datum(),
        ],
    );
    if rows.is_empty() {
        return Ok(Err(p.request.concurrent_change()));
    }
    let hold_id: i64 = rows.get(0, 1).unwrap_or_default();
    // A timestamptz, passed by value.
    let expires_at = rows.get::<i64>(0, 2).map(Datum::from);
    place_move(ledger, call, p, hold_id, expires_at)?;
    Ok(Ok((hold_id, currency)))
}

/// Try: reserves the amount (or answers a repeat with the first hold id); returns the hold id
/// and its currency.
pub fn try_hold(conn: &Connection, call: &TryCall) -> WalletResult<(i64, Text)> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    lock_hold_key(call.gtid, call.branch, call.key_lock)?;
    let stored = lookup_hold_and_currency(conn, call.gtid, call.branch)?;
    let p = match placement(conn, &mut Systems::default(), call, stored)? {
        Ok(p) => p,
        Err(repeat) => return Ok(repeat),
    };
    let accounts = Accounts::open(&tables);
    let (d, c) = lock_pair(&accounts, conn, p.debit, p.credit, call.amount)?;
    let found: HashMap<i64, &LockedAccount> = [d.as_ref(), c.as_ref()]
        .into_iter()
        .flatten()
        .map(|a| (a.state.id, a))
        .collect();
    let mut ledger = HoldLedger::open(&tables, &accounts, conn, found.values().copied(), 1);
    let placed = place(conn, &mut ledger, &found, call, &p)??;
    ledger.finish();
    Ok(placed)
}

/// The place in `ids` of the first hold a statement over them did not return (its `RETURNING
/// hold_id`, column 1, lists those it wrote); None when it wrote them all.
fn first_unwritten(ids: &[i64], rows: &Rows) -> Option<usize> {
    if rows.len() == ids.len() {
        return None;
    }
    let written: std::collections::HashSet<i64> =
        (0..rows.len()).filter_map(|r| rows.get(r, 1)).collect();
    ids.iter().position(|id| !written.contains(id))
}

/// The rows of the holds a command with many tries places, written by one statement
/// (hold_insert_many.sql) once every try is judged.
#[derive(Default)]
struct NewHolds {
    ids: Vec<i64>,
    gtids: Vec<Datum>,
    branches: Vec<Datum>,
    debits: Vec<Option<i64>>,
    credits: Vec<Option<i64>>,
    currencies: Vec<Datum>,
    amounts: Vec<Option<i64>>,
    timeouts: Vec<Option<i64>>,
    requests: Vec<transfer::TransferRequest>,
}

impl NewHolds {
    fn push(&mut self, hold_id: i64, call: &TryCall, p: &Placement, currency: &Text) {
        self.ids.push(hold_id);
        self.gtids.push(text_datum(call.gtid));
        self.branches.push(text_datum(call.branch));
        self.debits.push(Some(p.debit));
        self.credits.push(Some(p.credit));
        self.currencies.push(text_datum(currency.as_bytes()));
        self.amounts.push(Some(call.amount));
        self.timeouts.push(Some(call.timeout_micros));
        self.requests.push(p.request.clone());
    }

    /// Writes the rows, all created at `created` (a timestamptz); every one must be written.
    fn insert(self, conn: &Connection, created: i64) -> WalletResult<()> {
        let n = self.ids.len();
        if n == 0 {
            return Ok(());
        }
        let rows = conn.execute(
            &HOLD_INSERT_MANY,
            &[
                self.ids.clone().into_datum(),
                Some(text_array_datum(&self.gtids)),
                Some(text_array_datum(&self.branches)),
                self.debits.into_datum(),
                self.credits.into_datum(),
                Some(text_array_datum(&self.currencies)),
                self.amounts.into_datum(),
                Some(Datum::from(created)),
                self.timeouts.into_datum(),
            ],
        );
        if let Some(k) = first_unwritten(&self.ids, &rows) {
            // A racing call took a key after the look-up (hold_insert.sql): the moves of this
            // command are in its events already, so it fails as a whole and writes nothing.
            return Err(self.requests[k].concurrent_change());
        }
        Ok(())
    }
}

/// New hold ids from the holds' sequence, `n` of them in one statement.
fn new_hold_ids(conn: &Connection, n: usize) -> Vec<i64> {
    if n == 0 {
        return Vec::new();
    }
    let count = i32::try_from(n).expect("a participant call's items fit an int4");
    let rows = conn.execute(&HOLD_IDS, &[count.into_datum()]);
    (0..rows.len())
        .map(|r| rows.get(r, 1).expect("nextval returns a value"))
        .collect()
}

/// The system accounts of the accounts of tries with a side left NULL and no currency named,
/// looked up in one statement (an account missing from the answer is looked up again, alone, by
/// [`resolve_side`], which reports it).
fn prefetched_systems(conn: &Connection, calls: &[TryCall]) -> Systems {
    let others: Vec<i64> = calls
        .iter()
        .filter(|c| c.currency.is_none())
        .filter(|c| c.debit_account_id.is_none() || c.credit_account_id.is_none())
        .filter_map(|c| c.debit_account_id.or(c.credit_account_id))
        .collect();
    let mut systems = Systems::default();
    if !others.is_empty() {
        for (id, (_, settlement)) in settlements(conn, &others) {
            systems.by_account.insert(id, settlement);
        }
    }
    systems
}

/// Places many holds in one command (a participant call with many items, whose keys are
/// distinct): every key is looked up at once, every account of every try locked once, in
/// ascending id order, before any hold is placed; the tries are judged in input order against
/// the accounts as the earlier ones left them, each account row is written once, at the end,
/// and the new holds' rows by one statement. Before, each try locked and wrote its accounts
/// itself: the node's system account, on one side of every try, got a new row version per try,
/// and each later try walked all of them (bench/RESULTS.md section 9); and each try's look-up
/// and row were a statement of their own (section 13).
pub fn try_many(
    conn: &Connection,
    calls: &[TryCall],
) -> WalletResult<Vec<WalletResult<(i64, Text)>>> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    let mut answers: Vec<Option<WalletResult<(i64, Text)>>> = calls.iter().map(|_| None).collect();
    let mut places: Vec<(usize, Placement)> = Vec::new();
    let keys: Vec<(&[u8], &[u8])> = calls.iter().map(|c| (c.gtid, c.branch)).collect();
    let stored = lookup_many(conn, &keys)?;
    let mut systems = prefetched_systems(conn, calls);
    for ((k, call), stored) in calls.iter().enumerate().zip(stored) {
        match placement(conn, &mut systems, call, stored) {
            Ok(Ok(p)) => places.push((k, p)),
            Ok(Err(repeat)) => answers[k] = Some(Ok(repeat)),
            Err(e) => answers[k] = Some(Err(e)),
        }
    }
    let moves: Vec<(i64, i64, i64)> = places
        .iter()
        .map(|(k, p)| (p.debit, p.credit, calls[*k].amount))
        .collect();
    let accounts = Accounts::open(&tables);
    let locked = lock_all(&accounts, conn, &moves)?;
    let found = found_by_id(&locked);
    let mut ledger = HoldLedger::open(
        &tables,
        &accounts,
        conn,
        found.values().copied(),
        places.len(),
    );
    let hold_ids = new_hold_ids(conn, places.len());
    // One reading of the clock for the command: each hold's expires_at is it plus its timeout,
    // as hold_insert_many.sql computes it for the row.
    // SAFETY: reads the clock.
    let created = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut rows = NewHolds::default();
    for ((k, p), hold_id) in places.iter().zip(hold_ids) {
        let call = &calls[*k];
        answers[*k] = Some(match judge_place(conn, &ledger, &found, call, p) {
            Err(e) => Err(e),
            Ok(currency) => {
                let expires_at = created.checked_add(call.timeout_micros).ok_or_else(|| {
                    WalletError::invalid_argument("timeout", "ends past the last timestamp")
                })?;
                place_move(&mut ledger, call, p, hold_id, Some(Datum::from(expires_at)))?;
                rows.push(hold_id, call, p, &currency);
                Ok((hold_id, currency))
            }
        });
    }
    rows.insert(conn, created)?;
    ledger.finish();
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every try answered"))
        .collect())
}

/// Locks the accounts of `moves` (debit, credit, amount; any order, repeats allowed) in
/// ascending id order, as every writer locks; beside each distinct id its row, None for no such
/// account. A row changed under a snapshot that cannot see it (40001) is reported with the first
/// move on that account.
fn lock_all(
    accounts: &Accounts,
    conn: &Connection,
    moves: &[(i64, i64, i64)],
) -> WalletResult<Vec<(i64, Option<LockedAccount>)>> {
    let mut ids: Vec<i64> = moves.iter().flat_map(|&(d, c, _)| [d, c]).collect();
    ids.sort_unstable();
    ids.dedup();
    let locked = accounts.lock(conn, &ids)?.map_err(|c| {
        let (debit, credit, amount) = moves
            .iter()
            .copied()
            .find(|&(d, cr, _)| d == c.0 || cr == c.0)
            .unwrap_or((c.0, c.0, 0));
        WalletError::ConcurrentChange {
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
        }
    })?;
    Ok(ids.into_iter().zip(locked).collect())
}

fn found_by_id(locked: &[(i64, Option<LockedAccount>)]) -> HashMap<i64, &LockedAccount> {
    locked
        .iter()
        .filter_map(|(id, a)| Some((*id, a.as_ref()?)))
        .collect()
}

/// One hold event on a pair of locked accounts: the posted amount and the change of the pending
/// amounts (debit's pending_debit, credit's pending_credit).
struct Move {
    event_type: MoneyEventType,
    amount: i64,
    pending_delta: i64,
    data: Datum,
}

/// Rows one event write gathers at most.
const EVENTS_PER_WRITE: usize = 1000;

/// What a hold command's moves make of the accounts it locked: each account's state and newest
/// event in memory, one event per move through one event writer, and each moved account's row
/// written once, with its final state, by [`HoldLedger::finish`]. Every hold step moves money
/// through it (and through nothing else).
struct HoldLedger<'a, 'c> {
    tables: &'a Tables,
    accounts: &'a Accounts<'a>,
    conn: &'c Connection,
    entries: HashMap<i64, LedgerEntry<'a>>,
    writer: EventWriter<'c>,
}

struct LedgerEntry<'a> {
    state: AccountState,
    /// The newest money event of the account, the link its next event points back to.
    last_seq: Option<i64>,
    row: &'a LockedAccount,
    moved: bool,
}

impl<'a, 'c> HoldLedger<'a, 'c> {
    /// Over `locked` (locked by this transaction), for about `moves` moves.
    fn open(
        tables: &'a Tables,
        accounts: &'a Accounts<'a>,
        conn: &'c Connection,
        locked: impl IntoIterator<Item = &'a LockedAccount>,
        moves: usize,
    ) -> HoldLedger<'a, 'c> {
        let mut entries = HashMap::new();
        for row in locked {
            entries.entry(row.state.id).or_insert_with(|| LedgerEntry {
                state: row.state.clone(),
                last_seq: row.last_seq,
                row,
                moved: false,
            });
        }
        HoldLedger {
            tables,
            accounts,
            conn,
            entries,
            writer: EventWriter::open(tables, conn, moves.clamp(1, EVENTS_PER_WRITE)),
        }
    }

    /// Locked account `id` as the moves so far left it.
    fn state(&self, id: i64) -> &AccountState {
        &self.entries[&id].state
    }

    /// One move from debit `d` to credit `c` (both locked, distinct): one event, linked into both
    /// accounts' chains. Returns the event's seq.
    fn apply(&mut self, d: i64, c: i64, m: &Move) -> WalletResult<i64> {
        let mut debit = self.entries[&d].state.clone();
        let mut credit = self.entries[&c].state.clone();
        apply_move(&mut debit, &mut credit, m.amount, m.pending_delta)?;
        let seq = events::next_seq(self.tables);
        self.writer.append(&MoneyEvent {
            seq,
            event_type: m.event_type,
            debit_account_id: d,
            credit_account_id: c,
            amount: m.amount,
            currency: self.entries[&d].row.currency,
            debit_balance: debit.balance,
            credit_balance: credit.balance,
            idempotency_key: None,
            data: Some(m.data),
            pending_delta: Some(m.pending_delta),
            debit_prev: self.entries[&d].last_seq,
            credit_prev: self.entries[&c].last_seq,
        });
        for (id, state) in [(d, debit), (c, credit)] {
            let entry = self.entries.get_mut(&id).expect("locked");
            entry.state = state;
            entry.last_seq = Some(seq);
            entry.moved = true;
        }
        Ok(seq)
    }

    /// Writes each moved account once (ascending id), then the events.
    fn finish(self) {
        let mut moved: Vec<LedgerEntry> = self.entries.into_values().filter(|e| e.moved).collect();
        moved.sort_by_key(|e| e.state.id);
        for e in moved {
            self.accounts.write(
                self.conn,
                e.row,
                e.state.balance,
                e.state.pending_debit,
                e.state.pending_credit,
                e.last_seq.expect("a moved account got an event"),
            );
        }
        // Hold events carry no idempotency key: no conflict is possible.
        self.writer.finish();
    }
}

/// Moves `amount` from debit to credit and `pending_delta` onto their pending amounts, within
/// bigint: the bounds were judged at try and at confirm (`transfer::check_posting_bounds`), and a
/// pending amount never goes below zero unless someone changed the table by hand.
fn apply_move(
    debit: &mut AccountState,
    credit: &mut AccountState,
    amount: i64,
    pending_delta: i64,
) -> WalletResult<()> {
    let broken = |account: &AccountState| {
        WalletError::DataCorrupted(format!(
            "wallet.accounts: the pending amounts of account {} (debit {}, credit {}) do not hold the hold being released: someone changed them by hand",
            account.id, account.pending_debit, account.pending_credit
        ))
    };
    let (debit_balance, credit_balance) = transfer::balances_after(debit, credit, amount);
    let pending_debit = debit
        .pending_debit
        .checked_add(pending_delta)
        .filter(|p| *p >= 0);
    let pending_credit = credit
        .pending_credit
        .checked_add(pending_delta)
        .filter(|p| *p >= 0);
    debit.pending_debit = pending_debit.ok_or_else(|| broken(debit))?;
    credit.pending_credit = pending_credit.ok_or_else(|| broken(credit))?;
    debit.balance = debit_balance;
    credit.balance = credit_balance;
    Ok(())
}

/// The accounts of a pending hold (a hold without them is a recorded empty cancel, never
/// pending).
fn hold_accounts(h: &Hold) -> WalletResult<(i64, i64)> {
    match (h.debit_account_id, h.credit_account_id) {
        (Some(d), Some(c)) => Ok((d, c)),
        _ => Err(WalletError::DataCorrupted(format!(
            "wallet.holds: pending hold {} has no accounts",
            h.hold_id
        ))),
    }
}

fn locked_hold_accounts(
    accounts: &Accounts,
    conn: &Connection,
    h: &Hold,
) -> WalletResult<(LockedAccount, LockedAccount)> {
    let (debit_id, credit_id) = hold_accounts(h)?;
    match lock_pair(accounts, conn, debit_id, credit_id, h.reserved)? {
        (Some(d), Some(c)) => Ok((d, c)),
        _ => Err(missing_account(h, debit_id, credit_id)),
    }
}

fn finish_hold(
    conn: &Connection,
    hold_id: i64,
    status: HoldStatus,
    confirmed: Option<(i64, i64)>,
) -> WalletResult<()> {
    let rows = conn.execute(
        &HOLD_FINISH,
        &[
            hold_id.into_datum(),
            status.as_str().into_datum(),
            confirmed.map(|c| c.0).into_datum(),
            confirmed.map(|c| c.1).into_datum(),
        ],
    );
    if rows.is_empty() {
        return Err(WalletError::TableShape(format!(
            "the update of hold {hold_id} was skipped by something added to wallet.holds (a trigger, rule or policy): nothing was written"
        )));
    }
    Ok(())
}

/// The ends of holds a command with many items reaches, written by one statement
/// (hold_finish_many.sql) once every hold is judged.
#[derive(Default)]
struct Finishes {
    ids: Vec<i64>,
    statuses: Vec<Datum>,
    amounts: Vec<Option<i64>>,
    seqs: Vec<Option<i64>>,
}

impl Finishes {
    fn push(&mut self, hold_id: i64, status: HoldStatus, confirmed: Option<(i64, i64)>) {
        self.ids.push(hold_id);
        self.statuses.push(text_datum(status.as_str().as_bytes()));
        self.amounts.push(confirmed.map(|c| c.0));
        self.seqs.push(confirmed.map(|c| c.1));
    }

    /// Writes them; every one must be written (as [`finish_hold`]).
    fn write(self, conn: &Connection) -> WalletResult<()> {
        let n = self.ids.len();
        if n == 0 {
            return Ok(());
        }
        let rows = conn.execute(
            &HOLD_FINISH_MANY,
            &[
                self.ids.clone().into_datum(),
                Some(text_array_datum(&self.statuses)),
                self.amounts.into_datum(),
                self.seqs.into_datum(),
            ],
        );
        if let Some(k) = first_unwritten(&self.ids, &rows) {
            return Err(WalletError::TableShape(format!(
                "the update of hold {} ({} of the {n} holds of the call) was skipped by something added to wallet.holds (a trigger, rule or policy): nothing was written",
                self.ids[k],
                n - rows.len()
            )));
        }
        Ok(())
    }
}

/// Confirm: posts `amount` (None = all reserved); returns the posting's transfer id (event seq),
/// the first one for a repeat.
pub fn confirm_hold(
    conn: &Connection,
    gtid: &[u8],
    branch: &[u8],
    amount: Option<i64>,
    key_lock: KeyLock,
) -> WalletResult<i64> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    lock_hold_key(gtid, branch, key_lock)?;
    let stored = lookup_hold(conn, gtid, branch)?;
    let action = hold::judge_confirm(stored.as_ref(), gtid, branch, amount)?;
    let Some(h) = stored else {
        unreachable!("judge_confirm refuses a missing hold")
    };
    let amount = match action {
        HoldAction::Confirm { amount } => amount,
        _ => return Ok(h.confirm_seq.unwrap_or_default()),
    };
    // The reservation was granted at try: status and funds are not judged again (a frozen
    // account's confirmed hold still posts). Only the bigint bounds are.
    let accounts = Accounts::open(&tables);
    let (d, c) = locked_hold_accounts(&accounts, conn, &h)?;
    transfer::check_posting_bounds(&d.state, &c.state, amount)?;
    let ids = HoldIds {
        hold_id: h.hold_id,
        gtid: text_datum(gtid),
        branch: text_datum(branch),
    };
    let data = event_data(&ids, None, Some(h.reserved));
    let mut ledger = HoldLedger::open(&tables, &accounts, conn, [&d, &c], 1);
    let seq = ledger.apply(
        d.state.id,
        c.state.id,
        &Move {
            event_type: MoneyEventType::HoldConfirmed,
            amount,
            pending_delta: -h.reserved,
            data,
        },
    )?;
    ledger.finish();
    finish_hold(conn, h.hold_id, HoldStatus::Confirmed, Some((amount, seq)))?;
    Ok(seq)
}

/// Cancel: releases the hold, or records a cancel whose try never arrived; returns the hold id.
pub fn cancel_hold(
    conn: &Connection,
    gtid: &[u8],
    branch: &[u8],
    key_lock: KeyLock,
) -> WalletResult<i64> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    lock_hold_key(gtid, branch, key_lock)?;
    let stored = lookup_hold(conn, gtid, branch)?;
    match hold::judge_cancel(stored.as_ref())? {
        HoldAction::RecordEmptyCancel => record_empty_cancel(conn, gtid, branch),
        HoldAction::Release => {
            let h = stored.expect("judged: a stored hold");
            let accounts = Accounts::open(&tables);
            let (d, c) = locked_hold_accounts(&accounts, conn, &h)?;
            release(
                &tables,
                &accounts,
                conn,
                &[(&h, &d, &c)],
                HoldStatus::Cancelled,
            )?;
            Ok(h.hold_id)
        }
        _ => Ok(stored.map_or(0, |h| h.hold_id)),
    }
}

fn missing_account(h: &Hold, debit_id: i64, credit_id: i64) -> WalletError {
    WalletError::DataCorrupted(format!(
        "wallet.accounts: an account of hold {} (accounts {debit_id} and {credit_id}) is missing",
        h.hold_id
    ))
}

/// A hold of a command with many items, pending, with its two accounts.
fn pending_pair<'a>(
    found: &HashMap<i64, &'a LockedAccount>,
    h: &Hold,
) -> WalletResult<(&'a LockedAccount, &'a LockedAccount)> {
    let (debit_id, credit_id) = hold_accounts(h)?;
    match (found.get(&debit_id), found.get(&credit_id)) {
        (Some(d), Some(c)) => Ok((d, c)),
        _ => Err(missing_account(h, debit_id, credit_id)),
    }
}

/// The accounts of pending holds `holds`, locked at once in ascending id order.
fn lock_holds_accounts(
    accounts: &Accounts,
    conn: &Connection,
    holds: &[&Hold],
) -> WalletResult<Vec<(i64, Option<LockedAccount>)>> {
    let moves: Vec<(i64, i64, i64)> = holds
        .iter()
        .filter_map(|h| hold_accounts(h).ok().map(|(d, c)| (d, c, h.reserved)))
        .collect();
    lock_all(accounts, conn, &moves)
}

/// Confirms many holds (all they reserved) in one command, a participant call with many items
/// (distinct keys): the holds are looked up and judged in input order, their accounts locked at
/// once in ascending id order, each posting judged against the accounts as the earlier ones left
/// them, each account row written once. The inner error refuses one item, having written
/// nothing for it.
pub fn confirm_many(
    conn: &Connection,
    keys: &[(&[u8], &[u8])],
) -> WalletResult<Vec<WalletResult<i64>>> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    let mut answers: Vec<Option<WalletResult<i64>>> = keys.iter().map(|_| None).collect();
    let mut confirming: Vec<(usize, Hold, i64)> = Vec::new();
    let stored = lookup_many(conn, keys)?;
    for ((k, &(gtid, branch)), stored) in keys.iter().enumerate().zip(stored) {
        let stored = stored.map(|(h, _)| h);
        let judged = hold::judge_confirm(stored.as_ref(), gtid, branch, None).map(|action| {
            (
                stored.expect("judge_confirm refuses a missing hold"),
                action,
            )
        });
        match judged {
            Ok((h, HoldAction::Confirm { amount })) => confirming.push((k, h, amount)),
            Ok((h, _)) => answers[k] = Some(Ok(h.confirm_seq.unwrap_or_default())),
            Err(e) => answers[k] = Some(Err(e)),
        }
    }
    let accounts = Accounts::open(&tables);
    let holds: Vec<&Hold> = confirming.iter().map(|(_, h, _)| h).collect();
    let locked = lock_holds_accounts(&accounts, conn, &holds)?;
    let found = found_by_id(&locked);
    let mut ledger = HoldLedger::open(
        &tables,
        &accounts,
        conn,
        found.values().copied(),
        confirming.len(),
    );
    let mut finishes = Finishes::default();
    for (k, h, amount) in &confirming {
        let (d, c) = match pending_pair(&found, h) {
            Ok(pair) => pair,
            Err(e) => {
                answers[*k] = Some(Err(e));
                continue;
            }
        };
        // As confirm_hold: only the bigint bounds are judged again.
        let (debit, credit) = (ledger.state(d.state.id), ledger.state(c.state.id));
        if let Err(e) = transfer::check_posting_bounds(debit, credit, *amount) {
            answers[*k] = Some(Err(e));
            continue;
        }
        let ids = HoldIds {
            hold_id: h.hold_id,
            gtid: text_datum(h.gtid.as_bytes()),
            branch: text_datum(h.branch.as_bytes()),
        };
        let data = event_data(&ids, None, Some(h.reserved));
        let m = Move {
            event_type: MoneyEventType::HoldConfirmed,
            amount: *amount,
            pending_delta: -h.reserved,
            data,
        };
        let seq = ledger.apply(d.state.id, c.state.id, &m)?;
        finishes.push(h.hold_id, HoldStatus::Confirmed, Some((*amount, seq)));
        answers[*k] = Some(Ok(seq));
    }
    finishes.write(conn)?;
    ledger.finish();
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every confirm answered"))
        .collect())
}

/// Cancels many holds in one command, a participant call with many items (distinct keys):
/// cancels whose try never arrived are recorded one by one; the pending holds are released
/// together, their accounts locked at once in ascending id order and each written once.
pub fn cancel_many(
    conn: &Connection,
    keys: &[(&[u8], &[u8])],
) -> WalletResult<Vec<WalletResult<i64>>> {
    let tables = Tables::open(c"a wallet hold", Also::Holds)?;
    let mut answers: Vec<Option<WalletResult<i64>>> = keys.iter().map(|_| None).collect();
    let mut releasing: Vec<(usize, Hold)> = Vec::new();
    let stored = lookup_many(conn, keys)?;
    for ((k, &(gtid, branch)), stored) in keys.iter().enumerate().zip(stored) {
        let stored = stored.map(|(h, _)| h);
        let judged = hold::judge_cancel(stored.as_ref()).map(|action| (action, stored));
        answers[k] = match judged {
            Ok((HoldAction::RecordEmptyCancel, _)) => Some(record_empty_cancel(conn, gtid, branch)),
            Ok((HoldAction::Release, Some(h))) => {
                releasing.push((k, h));
                None
            }
            Ok((_, stored)) => Some(Ok(stored.map_or(0, |h| h.hold_id))),
            Err(e) => Some(Err(e)),
        };
    }
    let accounts = Accounts::open(&tables);
    let holds: Vec<&Hold> = releasing.iter().map(|(_, h)| h).collect();
    let locked = lock_holds_accounts(&accounts, conn, &holds)?;
    let found = found_by_id(&locked);
    let mut releases = Vec::with_capacity(releasing.len());
    for (k, h) in &releasing {
        match pending_pair(&found, h) {
            Ok((d, c)) => {
                releases.push((h, d, c));
                answers[*k] = Some(Ok(h.hold_id));
            }
            Err(e) => answers[*k] = Some(Err(e)),
        }
    }
    release(&tables, &accounts, conn, &releases, HoldStatus::Cancelled)?;
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every cancel answered"))
        .collect())
}

/// Records the cancel of a try that never arrived (it bars that try); returns its hold id.
fn record_empty_cancel(conn: &Connection, gtid: &[u8], branch: &[u8]) -> WalletResult<i64> {
    let rows = conn.execute(
        &HOLD_RECORD_CANCEL,
        &[Some(text_datum(gtid)), Some(text_datum(branch))],
    );
    if rows.is_empty() {
        return Err(WalletError::ConcurrentChange {
            debit_account_id: 0,
            credit_account_id: 0,
            amount: 0,
        });
    }
    Ok(rows.get(0, 1).unwrap_or_default())
}

/// Releases pending holds whose rows and accounts this transaction has locked: per hold one
/// event, per account one write with its final state.
fn release(
    tables: &Tables,
    accounts: &Accounts,
    conn: &Connection,
    holds: &[(&Hold, &LockedAccount, &LockedAccount)],
    status: HoldStatus,
) -> WalletResult<()> {
    let event_type = if status == HoldStatus::Expired {
        MoneyEventType::HoldExpired
    } else {
        MoneyEventType::HoldCancelled
    };
    let rows = holds.iter().flat_map(|&(_, d, c)| [d, c]);
    let mut ledger = HoldLedger::open(tables, accounts, conn, rows, holds.len());
    let mut finishes = Finishes::default();
    for &(h, d, c) in holds {
        let ids = HoldIds {
            hold_id: h.hold_id,
            gtid: text_datum(h.gtid.as_bytes()),
            branch: text_datum(h.branch.as_bytes()),
        };
        let data = event_data(&ids, None, Some(h.reserved));
        let m = Move {
            event_type,
            amount: 0,
            pending_delta: -h.reserved,
            data,
        };
        ledger.apply(d.state.id, c.state.id, &m)?;
        finishes.push(h.hold_id, status, None);
    }
    finishes.write(conn)?;
    ledger.finish();
    Ok(())
}

/// Releases up to `max_holds` pending holds past their timeout; returns how many.
pub fn expire_holds(conn: &Connection, max_holds: i32) -> WalletResult<i64> {
    let tables = Tables::open(c"a wallet hold expiry", Also::Holds)?;
    let rows = conn.execute(&HOLD_EXPIRED, &[max_holds.into_datum()]);
    let holds: Vec<Hold> = (0..rows.len())
        .map(|i| hold_row(&rows, i))
        .collect::<WalletResult<_>>()?;
    let due: Vec<&Hold> = holds
        .iter()
        .filter(|h| hold::judge_expiry(h) == Some(HoldAction::Release))
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    for h in &due {
        hold_accounts(h)?;
    }
    // All their accounts at once, in ascending id order, as every writer locks.
    let accounts = Accounts::open(&tables);
    let locked = lock_holds_accounts(&accounts, conn, &due)?;
    let found = found_by_id(&locked);
    let mut releases = Vec::with_capacity(due.len());
    for h in &due {
        let (d, c) = pending_pair(&found, h)?;
        releases.push((*h, d, c));
    }
    release(&tables, &accounts, conn, &releases, HoldStatus::Expired)?;
    Ok(releases.len() as i64)
}
