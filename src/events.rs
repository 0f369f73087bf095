//! The one writer of money events (transfers, and every step of a hold), for single calls and
//! batches alike, and the one place where their sequence numbers are drawn.
//!
//! On the direct path (`catalog.rs`) rows are appended the way COPY FROM does: gathered in slots
//! and written together by `heap_multi_insert` (one WAL record per page instead of one per row;
//! a single row goes through `heap_insert`), then each gets its index entries from
//! `ExecInsertIndexTuples`: unique checks, exclusion constraints, partial indexes and
//! expressions, each with Postgres's own SQLSTATE. WAL-logged, TOASTed and decoded by logical
//! replication like any insert. Only the unique index of the idempotency keys is an arbiter: a
//! row whose key it already holds (committed, or being written, by a concurrent transaction after
//! the caller looked the key up) raises nothing there; [`EventWriter::finish`] returns the first
//! such row, and the caller answers with a serialization failure, whose ERROR takes that row back
//! with everything else. On the executor path every event is one `INSERT ... ON CONFLICT DO
//! NOTHING` (sql/queries/executor_event_insert.sql), with the same answer for a taken key.

use std::ffi::c_int;

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;
use wallet_core::event::MoneyEventType;

use crate::catalog::{EventColumns, Tables};
use crate::spi::{Connection, Kept};

/// One money event, as `wallet.events` stores it. Datums (currency, key, data) must stay valid
/// until the writer's `finish`.
pub struct MoneyEvent {
    pub seq: i64,
    pub event_type: MoneyEventType,
    pub debit_account_id: i64,
    pub credit_account_id: i64,
    /// The posted amount (0 for a hold event other than its confirm).
    pub amount: i64,
    /// The currency as stored on the accounts (a text datum).
    pub currency: Datum,
    /// Posted balances after the event.
    pub debit_balance: i64,
    pub credit_balance: i64,
    pub idempotency_key: Option<Datum>,
    pub data: Option<Datum>,
    /// Change of the debit account's pending_debit and the credit account's pending_credit.
    pub pending_delta: Option<i64>,
    /// The accounts' previous money events (their `last_seq` before this one).
    pub debit_prev: Option<i64>,
    pub credit_prev: Option<i64>,
}

/// A new event sequence number. Drawn after this transaction has its id (see "Postings" in
/// sql/chain.sql: wallet.seal() relies on every money event's number being drawn by a
/// transaction that already has one), and while the accounts' rows are locked, so every
/// account's events are numbered in the order its balance moved.
pub fn next_seq(tables: &Tables) -> i64 {
    // SAFETY: plain backend calls inside a transaction that writes.
    unsafe {
        pg_sys::GetTopTransactionId();
        pgrx::direct_function_call(
            pg_sys::nextval_oid,
            &[tables.catalog.events_seq.into_datum()],
        )
        .expect("nextval is never NULL")
    }
}

static EXECUTOR_INSERT: Kept = Kept {
    slot: 26,
    sql: || include_str!("../sql/queries/executor_event_insert.sql").to_string(),
    args: &[
        pg_sys::INT8OID,
        pg_sys::TEXTOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::XID8OID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::TEXTOID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::TEXTOID,
        pg_sys::JSONBOID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
    ],
    index_only: false,
    hash_join: false,
};

pub const KEPT: &[&Kept] = &[&EXECUTOR_INSERT];

/// Appends money events; see the module comment.
pub struct EventWriter<'c> {
    conn: &'c Connection,
    direct: Option<Direct>,
    /// Rows appended so far.
    appended: usize,
    first_conflict: Option<usize>,
    /// Each event type's text datum, made when first written (in the call's memory context).
    event_types: [Option<Datum>; 5],
    tx_id: Datum,
}

struct Direct {
    columns: EventColumns,
    events: pg_sys::Relation,
    indexes: IndexWriter,
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    /// Slots filled and not written yet.
    used: usize,
}

impl<'c> EventWriter<'c> {
    /// A writer that gathers up to `capacity` rows per write (direct path).
    pub fn open(tables: &Tables, conn: &'c Connection, capacity: usize) -> EventWriter<'c> {
        let catalog = &tables.catalog;
        // SAFETY: the transaction writes (Tables::open refused a read-only one).
        let tx_id = Datum::from(unsafe { pg_sys::GetTopFullTransactionId() }.value);
        let direct = catalog.events_path.is_direct().then(|| {
            // SAFETY: wallet.events is locked by Tables::open.
            unsafe {
                // Tables::open holds its RowExclusiveLock: no second look-up in the lock table.
                let events = pg_sys::table_open(catalog.events, pg_sys::NoLock as pg_sys::LOCKMODE);
                // A copy of the descriptor is not reference-counted: the slots do not register
                // in the resource owner (see accounts::LockedAccount).
                let desc = pg_sys::CreateTupleDescCopy((*events).rd_att);
                let slots = (0..capacity.max(1))
                    .map(|_| pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple))
                    .collect();
                Direct {
                    columns: catalog.event_columns,
                    events,
                    indexes: IndexWriter::open(events, Some(catalog.idempotency_index)),
                    slots,
                    used: 0,
                }
            }
        });
        EventWriter {
            conn,
            direct,
            appended: 0,
            first_conflict: None,
            event_types: [None; 5],
            tx_id,
        }
    }

    fn event_type(&mut self, t: MoneyEventType) -> Datum {
        let i = MoneyEventType::ALL
            .iter()
            .position(|x| *x == t)
            .expect("listed");
        *self.event_types[i].get_or_insert_with(|| t.as_str().into_datum().expect("text"))
    }

    pub fn append(&mut self, event: &MoneyEvent) {
        // clock_timestamp(), the column's default: taken while the accounts are locked, so per
        // account the time grows with seq.
        // SAFETY: reads the clock.
        let now = Datum::from(unsafe { pg_sys::GetCurrentTimestamp() });
        let event_type = self.event_type(event.event_type);
        let values: [Option<Datum>; 15] = [
            Some(Datum::from(event.seq)),
            Some(event_type),
            Some(now),
            Some(self.tx_id),
            Some(Datum::from(event.debit_account_id)),
            Some(Datum::from(event.credit_account_id)),
            Some(Datum::from(event.amount)),
            Some(event.currency),
            Some(Datum::from(event.debit_balance)),
            Some(Datum::from(event.credit_balance)),
            event.idempotency_key,
            event.data,
            event.pending_delta.map(Datum::from),
            event.debit_prev.map(Datum::from),
            event.credit_prev.map(Datum::from),
        ];
        let index = self.appended;
        self.appended += 1;
        match &mut self.direct {
            Some(direct) => {
                if let Some(conflict) = direct.append(&values, index) {
                    self.first_conflict.get_or_insert(conflict);
                }
            }
            None => {
                let rows = self.conn.execute(&EXECUTOR_INSERT, &values);
                if rows.is_empty() {
                    self.first_conflict.get_or_insert(index);
                }
            }
        }
    }

    /// Writes what is gathered. `Some(i)`: the `i`th event appended (from 0) met its idempotency
    /// key already in the index.
    pub fn finish(mut self) -> Option<usize> {
        if let Some(direct) = &mut self.direct {
            if let Some(conflict) = direct.flush(self.appended) {
                self.first_conflict.get_or_insert(conflict);
            }
        }
        self.first_conflict
    }
}

impl Direct {
    /// Puts event `index` into a slot (writing the gathered ones first when all are full).
    fn append(&mut self, values: &[Option<Datum>; 15], index: usize) -> Option<usize> {
        let conflict = if self.used == self.slots.len() {
            self.flush(index)
        } else {
            None
        };
        let c = &self.columns;
        let positions = [
            c.seq,
            c.event_type,
            c.occurred_at,
            c.tx_id,
            c.debit_account_id,
            c.credit_account_id,
            c.amount,
            c.currency,
            c.debit_balance,
            c.credit_balance,
            c.idempotency_key,
            c.data,
            c.pending_delta,
            c.debit_prev,
            c.credit_prev,
        ];
        // SAFETY: the slot belongs to wallet.events; values and nulls cover its descriptor; a
        // column the events do not write stays NULL (catalog.rs checked that such a column has no
        // default and allows NULL).
        unsafe {
            let slot = self.slots[self.used];
            pg_sys::ExecClearTuple(slot);
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            let datums = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            nulls.fill(true);
            for (&i, value) in positions.iter().zip(values) {
                if let Some(v) = value {
                    datums[i] = *v;
                    nulls[i] = false;
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
        self.used += 1;
        conflict
    }

    /// Writes the gathered rows, the last of which is event `end - 1`; returns the first whose
    /// idempotency key was taken.
    fn flush(&mut self, end: usize) -> Option<usize> {
        if self.used == 0 {
            return None;
        }
        let mut conflict = None;
        // SAFETY: the first `used` slots hold virtual tuples of wallet.events.
        unsafe {
            let command = pg_sys::GetCurrentCommandId(true);
            if self.used == 1 {
                let slot = self.slots[0];
                let tuple = pg_sys::ExecFetchSlotHeapTuple(slot, true, std::ptr::null_mut());
                pg_sys::heap_insert(self.events, tuple, command, 0, std::ptr::null_mut());
                (*slot).tts_tid = (*tuple).t_self;
            } else {
                pg_sys::heap_multi_insert(
                    self.events,
                    self.slots.as_mut_ptr(),
                    self.used as c_int,
                    command,
                    0,
                    std::ptr::null_mut(),
                );
            }
            let first = end - self.used;
            for (i, &slot) in self.slots[..self.used].iter().enumerate() {
                if !self.indexes.insert(slot, false) && conflict.is_none() {
                    conflict = Some(first + i);
                }
                pg_sys::ExecClearTuple(slot);
            }
        }
        self.used = 0;
        conflict
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: made in `open`, released once (the indexes before the table, by hand); the
            // table lock stays to the transaction's end.
            unsafe {
                for &slot in &self.slots {
                    pg_sys::ExecDropSingleTupleTableSlot(slot);
                }
                self.indexes.close();
                pg_sys::table_close(self.events, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
        }
    }
}

/// The indexes of one table, open for inserting entries as the executor does: unique checks,
/// exclusion constraints, partial-index predicates and expressions included.
pub(crate) struct IndexWriter {
    estate: *mut pg_sys::EState,
    info: *mut pg_sys::ResultRelInfo,
    /// The one index whose conflicts are reported rather than raised (as ON CONFLICT's arbiter).
    arbiters: *mut pg_sys::List,
}

impl IndexWriter {
    /// # Safety
    /// `rel` is open and locked for writing.
    pub(crate) unsafe fn open(rel: pg_sys::Relation, arbiter: Option<pg_sys::Oid>) -> IndexWriter {
        // SAFETY: as the caller promises.
        unsafe { Self::open_for(rel, arbiter, false) }
    }

    /// As `open`; `speculative`: ready for [`IndexWriter::check`] too (the unique indexes'
    /// operators looked up, as ON CONFLICT does).
    ///
    /// # Safety
    /// `rel` is open and locked for writing.
    pub(crate) unsafe fn open_for(
        rel: pg_sys::Relation,
        arbiter: Option<pg_sys::Oid>,
        speculative: bool,
    ) -> IndexWriter {
        // SAFETY: as the caller promises; everything is allocated in the current context.
        unsafe {
            let estate = pg_sys::CreateExecutorState();
            let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                as *mut pg_sys::ResultRelInfo;
            pg_sys::InitResultRelInfo(info, rel, 0, std::ptr::null_mut(), 0);
            pg_sys::ExecOpenIndices(info, speculative);
            let arbiters = match arbiter {
                Some(oid) => pg_sys::lappend_oid(std::ptr::null_mut(), oid),
                None => std::ptr::null_mut(),
            };
            IndexWriter {
                estate,
                info,
                arbiters,
            }
        }
    }

    /// Adds the entries of the heap tuple in `slot` (its tid set; `update`: a new version that
    /// was not HOT). False: the arbiter index already holds the key (the entry is added all the
    /// same, `UNIQUE_CHECK_PARTIAL`, as speculative insertion does), and the caller must raise an
    /// ERROR that takes it back. Any other index's violation raises its own error.
    ///
    /// # Safety
    /// `slot` holds a tuple of this writer's table, stored at its tid.
    pub(crate) unsafe fn insert(&self, slot: *mut pg_sys::TupleTableSlot, update: bool) -> bool {
        // SAFETY: as the caller promises.
        unsafe {
            let mut conflict = false;
            let report = !self.arbiters.is_null();
            let conflicts = pg_sys::ExecInsertIndexTuples(
                self.info,
                slot,
                self.estate,
                update,
                report,
                &mut conflict,
                self.arbiters,
            );
            let context = (*self.estate).es_per_tuple_exprcontext;
            if !context.is_null() {
                pg_sys::MemoryContextReset((*context).ecxt_per_tuple_memory);
            }
            conflicts.is_null()
        }
    }

    /// Whether the arbiter index holds no entry with the key of the row in `slot`, as ON
    /// CONFLICT's first look finds it: a row of a transaction still in progress is waited for
    /// (its end decides), a committed one is there whatever the snapshot. Only the arbiter's key
    /// columns of `slot` are read.
    ///
    /// # Safety
    /// Opened with `speculative` and an arbiter; `slot` holds a tuple of this writer's table.
    pub(crate) unsafe fn check(&self, slot: *mut pg_sys::TupleTableSlot) -> bool {
        // SAFETY: as the caller promises.
        unsafe {
            let mut conflict_tid: pg_sys::ItemPointerData = std::mem::zeroed();
            let free = pg_sys::ExecCheckIndexConstraints(
                self.info,
                slot,
                self.estate,
                &mut conflict_tid,
                self.arbiters,
            );
            let context = (*self.estate).es_per_tuple_exprcontext;
            if !context.is_null() {
                pg_sys::MemoryContextReset((*context).ecxt_per_tuple_memory);
            }
            free
        }
    }

    /// # Safety
    /// Called once, before the table is closed.
    pub(crate) unsafe fn close(&self) {
        // SAFETY: as the caller promises.
        unsafe {
            pg_sys::ExecCloseIndices(self.info);
            pg_sys::FreeExecutorState(self.estate);
        }
    }
}

/// Inserts the index entries of a new version of an account row that was not HOT.
///
/// # Safety
/// `rel` is open and locked for writing; `tuple` is its new version, just stored.
pub unsafe fn insert_index_entries(rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) {
    // SAFETY: as the caller promises.
    unsafe {
        let indexes = IndexWriter::open(rel, None);
        let slot = pg_sys::MakeSingleTupleTableSlot((*rel).rd_att, &pg_sys::TTSOpsHeapTuple);
        pg_sys::ExecStoreHeapTuple(tuple, slot, false);
        indexes.insert(slot, true);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        indexes.close();
    }
}
