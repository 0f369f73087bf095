//! Direct table access for transfers and batches, the hot paths of the wallet.
//!
//! A transfer through SPI pays for an executor start-up and tear-down per statement (range
//! table, plan tree, result relation, its indexes, projections) to do what is, underneath, two
//! primary-key look-ups, two row locks, two in-place updates and one insert; a batch through
//! SPI descends the primary key twice per account (locking read, then update), re-checks quals
//! of rows changed concurrently, and materialises its arrays. Here those are done
//! with the table and index access methods themselves, the way Postgres's own logical
//! replication applies a change (execReplication.c), with the same guarantees as the
//! statements they replace:
//!
//! * visibility: a command counter increment and the transaction snapshot (a fresh one under
//!   READ COMMITTED, the transaction's own above it) pushed as the active snapshot, exactly as
//!   SPI does before a statement, so a transfer sees everything its transaction did before;
//! * row locking: each account row is found through `accounts_pkey` (or, for a batch with many
//!   accounts per page of the table, by one sequential scan, as a planner would choose) and
//!   locked `FOR NO KEY UPDATE` in ascending id order. Under READ COMMITTED a row updated
//!   concurrently is followed to its newest version and locked there (what UPDATE's
//!   EvalPlanQual does); the guards are evaluated on that locked version, in Rust, by
//!   `domain::check_transfer_against`. Under REPEATABLE READ and SERIALIZABLE a concurrent
//!   update is a serialization failure (40001);
//!   the index scan takes SERIALIZABLE's predicate locks and the heap update checks for
//!   conflicts, as in the executor;
//! * writes: `heap_update` (HOT whenever the page has room, as no index covers a balance; when it
//!   is not HOT the new version gets its index entries like any update) and `heap_insert` (one
//!   event) or `heap_multi_insert` (a batch's, as COPY does) followed by `ExecInsertIndexTuples`
//!   for every index of `wallet.events` (unique checks, partial indexes), WAL-logged, TOASTed
//!   and decoded by logical replication like any insert;
//! * refusals: read-only transactions, parallel mode and hot standbys are refused with
//!   Postgres's own 25006 before anything is touched.
//!
//! What is skipped: per-statement permission checks (the wallet functions are SECURITY DEFINER
//! and run as the tables' owner) and triggers (`wallet.accounts` has none; `wallet.events` has
//! only UPDATE/DELETE/TRUNCATE guards). `Tables::open` refuses to work on a table that grew an
//! INSERT or UPDATE trigger, rule or row-level security, so the shortcut cannot silently skip
//! something added later.

use std::cell::Cell;
use std::ffi::{c_char, c_int, CStr};
use std::mem::MaybeUninit;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{pg_guard, FromDatum, IntoDatum};

use crate::domain::{AccountState, AccountStatus};

/// Positions (0-based) of the columns the transfer path reads or writes.
#[derive(Clone, Copy)]
struct AccountColumns {
    id: usize,
    currency: usize,
    status: usize,
    allow_overdraft: usize,
    is_system: usize,
    balance: usize,
    pending_debit: usize,
    pending_credit: usize,
    last_seq: usize,
}

#[derive(Clone, Copy)]
struct EventColumns {
    seq: usize,
    event_type: usize,
    occurred_at: usize,
    tx_id: usize,
    debit_account_id: usize,
    credit_account_id: usize,
    amount: usize,
    currency: usize,
    debit_balance: usize,
    credit_balance: usize,
    idempotency_key: usize,
    data: usize,
    debit_prev: usize,
    credit_prev: usize,
}

/// What is looked up once per backend (and again after a relcache invalidation of one of the
/// tables, e.g. after DROP and CREATE EXTENSION in the same session).
#[derive(Clone, Copy)]
struct Catalog {
    accounts: Oid,
    accounts_pkey: Oid,
    events: Oid,
    events_seq: Oid,
    account_columns: AccountColumns,
    event_columns: EventColumns,
}

thread_local! {
    static CATALOG: Cell<Option<Catalog>> = const { Cell::new(None) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_catalog(_arg: Datum, relid: Oid) {
    CATALOG.with(|cell| {
        if let Some(c) = cell.get() {
            if relid == pg_sys::InvalidOid
                || relid == c.accounts
                || relid == c.accounts_pkey
                || relid == c.events
            {
                cell.set(None);
            }
        }
    });
}

impl Catalog {
    /// Looks the tables up, checks that direct writes skip nothing on them, finds the columns,
    /// and caches the result for this backend.
    unsafe fn resolve() -> Catalog {
        let ns = pg_sys::get_namespace_oid(c"wallet".as_ptr(), false);
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let accounts_oid = relation_oid(ns, c"accounts");
        let events_oid = relation_oid(ns, c"events");
        let accounts = pg_sys::table_open(accounts_oid, lock);
        let events = pg_sys::table_open(events_oid, lock);
        check_plain_table(accounts, true);
        check_plain_table(events, false);
        let a = |name| column(accounts, name);
        let e = |name| column(events, name);
        let catalog = Catalog {
            accounts: accounts_oid,
            accounts_pkey: relation_oid(ns, c"accounts_pkey"),
            events: events_oid,
            events_seq: relation_oid(ns, c"events_seq_seq"),
            account_columns: AccountColumns {
                id: a(c"id"),
                currency: a(c"currency"),
                status: a(c"status"),
                allow_overdraft: a(c"allow_overdraft"),
                is_system: a(c"is_system"),
                balance: a(c"balance"),
                pending_debit: a(c"pending_debit"),
                pending_credit: a(c"pending_credit"),
                last_seq: a(c"last_seq"),
            },
            event_columns: EventColumns {
                seq: e(c"seq"),
                event_type: e(c"event_type"),
                occurred_at: e(c"occurred_at"),
                tx_id: e(c"tx_id"),
                debit_account_id: e(c"debit_account_id"),
                credit_account_id: e(c"credit_account_id"),
                amount: e(c"amount"),
                currency: e(c"currency"),
                debit_balance: e(c"debit_balance"),
                credit_balance: e(c"credit_balance"),
                idempotency_key: e(c"idempotency_key"),
                data: e(c"data"),
                debit_prev: e(c"debit_prev"),
                credit_prev: e(c"credit_prev"),
            },
        };
        pg_sys::table_close(events, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(accounts, pg_sys::NoLock as pg_sys::LOCKMODE);
        CATALOG.with(|cell| cell.set(Some(catalog)));
        catalog
    }
}

fn relation_oid(namespace: Oid, name: &CStr) -> Oid {
    // SAFETY: a syscache look-up by name.
    let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), namespace) };
    assert!(
        oid != pg_sys::InvalidOid,
        "wallet relation {name:?} is missing"
    );
    oid
}

/// 0-based position of a live column, by name. A column missing means the database's wallet
/// schema is older than this library (its ALTER EXTENSION ... UPDATE has not run yet).
unsafe fn column(rel: pg_sys::Relation, name: &CStr) -> usize {
    let desc = (*rel).rd_att;
    let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
    let found = attrs
        .iter()
        .position(|a| !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()) == name);
    found.unwrap_or_else(|| {
        pgrx::ereport!(
            pgrx::PgLogLevel::ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "the wallet schema of this database is older than the installed wallet_ext library {} (wallet.{} has no column {})",
                env!("CARGO_PKG_VERSION"),
                CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy(),
                name.to_string_lossy()
            ),
            "Run ALTER EXTENSION wallet_ext UPDATE in this database."
        );
        unreachable!("ereport(ERROR) does not return")
    })
}

/// Refuses to write money on a database whose wallet schema predates this library (55000).
/// The paths that write money events through SQL call it first; the direct path checks while
/// it resolves its catalog (`column`).
pub fn require_current_schema() {
    // A cached catalog was resolved on this schema, columns included (and is dropped on any
    // change of the tables): nothing to look up again.
    if CATALOG.with(Cell::get).is_some() {
        return;
    }
    // SAFETY: syscache look-ups inside a transaction; the table is opened and closed.
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"wallet".as_ptr(), false);
        let accounts = pg_sys::table_open(
            relation_oid(ns, c"accounts"),
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        column(accounts, c"last_seq");
        pg_sys::table_close(accounts, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
}

/// Refuses a table on which a direct write would skip something Postgres would have done
/// (`updated`: the path updates its rows, not only inserts).
unsafe fn check_plain_table(rel: pg_sys::Relation, updated: bool) {
    let triggers = (*rel).trigdesc;
    let has_write_triggers = !triggers.is_null()
        && ((updated && (*triggers).trig_update_before_row)
            || (*triggers).trig_insert_before_row
            || (*triggers).trig_insert_after_row
            || (*triggers).trig_insert_instead_row
            || (*triggers).trig_update_after_row
            || (*triggers).trig_update_instead_row
            || (*triggers).trig_insert_new_table
            || (*triggers).trig_update_new_table);
    let rules = !(*rel).rd_rules.is_null();
    let rls = (*(*rel).rd_rel).relrowsecurity;
    let heap = (*rel).rd_tableam == pg_sys::GetHeapamTableAmRoutine();
    if !heap || has_write_triggers || rules || rls {
        pgrx::ereport!(
            pgrx::PgLogLevel::ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "wallet.{} is no longer a plain heap table: triggers, rules, row-level security or another access method were added",
                CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy()
            ),
            "The wallet writes its tables directly; remove what was added."
        );
    }
}

/// The row of this account could not be locked in the state this transaction's snapshot saw:
/// a serialization failure for the caller to report (40001).
pub struct Conflict(pub i64);

/// An index scan of `accounts_pkey`, ended when dropped.
struct IndexScan(pg_sys::IndexScanDesc);

impl Drop for IndexScan {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: begun by index_beginscan and ended once.
            unsafe { pg_sys::index_endscan(self.0) };
        }
    }
}

/// The open tables of one transfer. Created by `Tables::open`; dropping it closes them and pops
/// the snapshot (on an ERROR the abort does both).
pub struct Tables {
    catalog: Catalog,
    accounts: pg_sys::Relation,
    accounts_pkey: pg_sys::Relation,
}

/// `Tables::lock_accounts` finds its rows by a sequential scan when there are at least this many
/// ids per page of wallet.accounts. An index look-up costs about 1 µs per id, reading a page
/// about 1-3 µs (bench/RESULTS.md, section 3).
const SCAN_IDS_PER_PAGE: u64 = 3;

/// A tuple slot, dropped (and its buffer pin released) with this value.
struct Slot(*mut pg_sys::TupleTableSlot);

impl Drop for Slot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: the slot was made by table_slot_create and is dropped once.
            unsafe { pg_sys::ExecDropSingleTupleTableSlot(self.0) };
        }
    }
}

/// One account row, locked by this transaction, with the state the domain rules need.
///
/// It holds a copy of the locked row version, not a slot: a batch locks thousands of rows, and
/// every slot pins its tuple descriptor and buffer in the resource owner, whose look-up table
/// probes linearly through equal entries (quadratic in the number of rows; measured at 11% of
/// a batch's time).
pub struct LockedAccount {
    /// A copy of the locked version; `t_self` is its tid.
    tuple: pg_sys::HeapTuple,
    /// The currency column, pointing into `tuple`.
    currency: Datum,
    pub state: AccountState,
    /// The account's newest money event, the link its next event points back to.
    pub last_seq: Option<i64>,
}

impl LockedAccount {
    /// The account's currency as stored, a text datum (valid while this value lives).
    pub fn currency(&self) -> Datum {
        self.currency
    }
}

impl Tables {
    /// Opens `wallet.accounts` for a transfer. `command` names it in Postgres's own refusals.
    pub fn open(command: &CStr) -> Tables {
        // SAFETY: plain backend calls; every one may raise an ERROR, which pgrx turns into a
        // panic that aborts the call as a whole.
        unsafe {
            pg_sys::PreventCommandIfReadOnly(command.as_ptr());
            pg_sys::PreventCommandIfParallelMode(command.as_ptr());
            pg_sys::PreventCommandDuringRecovery(command.as_ptr());
            // What SPI does before each statement of a volatile function.
            pg_sys::CommandCounterIncrement();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::UpdateActiveSnapshotCommandId();

            if !CALLBACK_REGISTERED.with(Cell::get) {
                pg_sys::CacheRegisterRelcacheCallback(Some(forget_catalog), Datum::from(0usize));
                CALLBACK_REGISTERED.with(|c| c.set(true));
            }
            let catalog = match CATALOG.with(Cell::get) {
                Some(catalog) => catalog,
                None => Catalog::resolve(),
            };
            let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
            let accounts = pg_sys::table_open(catalog.accounts, lock);
            let accounts_pkey = pg_sys::index_open(catalog.accounts_pkey, lock);
            Tables {
                catalog,
                accounts,
                accounts_pkey,
            }
        }
    }

    /// Finds accounts `ids` (ascending, distinct) and locks their rows (FOR NO KEY UPDATE) in that
    /// order. `None` for an id with no account. `Conflict` names the account whose row could not
    /// be locked.
    ///
    /// All rows are found before the first is locked, so a batch waiting for another's locks has
    /// already done its look-ups; a row updated meanwhile is followed to its newest version when
    /// it is locked (READ COMMITTED) or is a conflict (above it), as when found and locked at once.
    /// When the ids outnumber the table's pages `SCAN_IDS_PER_PAGE` times over, one sequential
    /// pass over the table finds them for less than an index descent per id (a batch touching most
    /// accounts); SERIALIZABLE keeps the index, whose predicate locks cover only the keys read.
    pub fn lock_accounts(&self, ids: &[i64]) -> Result<Vec<Option<LockedAccount>>, Conflict> {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
        // SAFETY: the relation is open and locked; XactIsoLevel is read in the backend's thread.
        // Fewer ids than SCAN_IDS_PER_PAGE (a single transfer) never scan a table that has an
        // account, so they skip counting its pages (outside recovery, a seek on its file).
        let scan = ids.len() as u64 >= SCAN_IDS_PER_PAGE
            && unsafe {
                pg_sys::XactIsoLevel != pg_sys::XACT_SERIALIZABLE as c_int
                    && ids.len() as u64
                        >= u64::from(pg_sys::RelationGetNumberOfBlocksInFork(
                            self.accounts,
                            pg_sys::ForkNumber::MAIN_FORKNUM,
                        )) * SCAN_IDS_PER_PAGE
            };
        // SAFETY: the slot belongs to wallet.accounts and is dropped by its guard.
        let slot = unsafe {
            Slot(pg_sys::table_slot_create(
                self.accounts,
                std::ptr::null_mut(),
            ))
        };
        let tids = if scan {
            self.find_by_scan(ids)
        } else {
            self.find_by_index(ids, slot.0)
        };
        ids.iter()
            .zip(tids)
            .map(|(&id, tid)| match tid {
                None => Ok(None),
                Some(tid) => self.lock_found(slot.0, tid).map_err(|_| Conflict(id)),
            })
            .collect()
    }

    /// The tid of the version of each of `ids` this snapshot sees, by one `accounts_pkey` scan
    /// restarted per id. `slot` (of wallet.accounts) is left empty.
    fn find_by_index(
        &self,
        ids: &[i64],
        slot: *mut pg_sys::TupleTableSlot,
    ) -> Vec<Option<pg_sys::ItemPointerData>> {
        // SAFETY: relations are open and locked; the scan is ended by its guard.
        let scan = unsafe {
            IndexScan(pg_sys::index_beginscan(
                self.accounts,
                self.accounts_pkey,
                pg_sys::GetActiveSnapshot(),
                1,
                0,
            ))
        };
        ids.iter()
            .map(|&id| {
                // SAFETY: the scan belongs to accounts_pkey; the slot to wallet.accounts.
                unsafe {
                    let mut key = MaybeUninit::<pg_sys::ScanKeyData>::zeroed();
                    pg_sys::ScanKeyInit(
                        key.as_mut_ptr(),
                        1,
                        pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                        pg_sys::Oid::from(pg_sys::F_INT8EQ),
                        Datum::from(id),
                    );
                    pg_sys::index_rescan(scan.0, key.as_mut_ptr(), 1, std::ptr::null_mut(), 0);
                    let found = pg_sys::index_getnext_slot(
                        scan.0,
                        pg_sys::ScanDirection::ForwardScanDirection,
                        slot,
                    );
                    let tid = (*slot).tts_tid;
                    pg_sys::ExecClearTuple(slot);
                    found.then_some(tid)
                }
            })
            .collect()
    }

    /// The tid of the version of each of `ids` this snapshot sees, by one sequential scan of
    /// wallet.accounts (page at a time, as a SeqScan node reads it).
    fn find_by_scan(&self, ids: &[i64]) -> Vec<Option<pg_sys::ItemPointerData>> {
        let mut tids = vec![None; ids.len()];
        let id_column = self.catalog.account_columns.id as i32 + 1;
        // SAFETY: the relation is open and locked; the scan is ended below or by the abort.
        unsafe {
            let desc = (*self.accounts).rd_att;
            let scan = pg_sys::table_beginscan(
                self.accounts,
                pg_sys::GetActiveSnapshot(),
                0,
                std::ptr::null_mut(),
            );
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let mut null = false;
                let id = pg_sys::heap_getattr(tuple, id_column, desc, &mut null).value() as i64;
                if let Ok(i) = ids.binary_search(&id) {
                    tids[i] = Some((*tuple).t_self);
                }
            }
            pg_sys::table_endscan(scan);
        }
        tids
    }

    /// Locks the row version at `tid` (found by this snapshot) and reads it.
    fn lock_found(
        &self,
        slot: *mut pg_sys::TupleTableSlot,
        mut tid: pg_sys::ItemPointerData,
    ) -> Result<Option<LockedAccount>, ()> {
        // SAFETY: the slot belongs to wallet.accounts; tid was read by this snapshot.
        unsafe {
            let snapshot = pg_sys::GetActiveSnapshot();
            let transaction_snapshot =
                pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as c_int;
            let flags = if transaction_snapshot {
                0
            } else {
                pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8
            };
            let mut failure = MaybeUninit::<pg_sys::TM_FailureData>::zeroed();
            let result = pg_sys::table_tuple_lock(
                self.accounts,
                &mut tid,
                snapshot,
                slot,
                pg_sys::GetCurrentCommandId(false),
                pg_sys::LockTupleMode::LockTupleNoKeyExclusive,
                pg_sys::LockWaitPolicy::LockWaitBlock,
                flags,
                failure.as_mut_ptr(),
            );
            match result {
                pg_sys::TM_Result::TM_Ok => {}
                // Deleted since the look-up (accounts are never deleted by the wallet).
                pg_sys::TM_Result::TM_Deleted if !transaction_snapshot => return Ok(None),
                // Changed by a transaction this snapshot cannot see (REPEATABLE READ and up),
                // or by a later command of this one: the transaction must start over.
                _ => return Err(()),
            }
            // The locked version, copied; the slot lets go of its buffer.
            let tuple = pg_sys::ExecCopySlotHeapTuple(slot);
            pg_sys::ExecClearTuple(slot);
            let desc = (*self.accounts).rd_att;
            let natts = (*desc).natts as usize;
            let mut values = vec![Datum::from(0usize); natts];
            let mut nulls = vec![true; natts];
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let c = &self.catalog.account_columns;
            let value = |i: usize| values[i];
            let text = |i: usize| String::from_datum(value(i), false).expect("NOT NULL column");
            let int = |i: usize| value(i).value() as i64;
            let status = text(c.status);
            let state = AccountState {
                id: int(c.id),
                currency: text(c.currency),
                status: AccountStatus::parse(&status).expect("only the wallet writes status"),
                allow_overdraft: value(c.allow_overdraft).value() != 0,
                is_system: value(c.is_system).value() != 0,
                balance: int(c.balance),
                pending_debit: int(c.pending_debit),
                pending_credit: int(c.pending_credit),
            };
            let last_seq = (!nulls[c.last_seq]).then(|| int(c.last_seq));
            Ok(Some(LockedAccount {
                tuple,
                currency: value(c.currency),
                state,
                last_seq,
            }))
        }
    }

    /// A new event sequence number. Drawn after this transaction has its id (see "Postings"
    /// in sql/chain.sql: wallet.seal() relies on every money event's number being drawn by a
    /// transaction that already has one).
    pub fn next_event_seq(&self) -> i64 {
        // SAFETY: plain backend calls inside a transaction that writes.
        unsafe {
            pg_sys::GetTopTransactionId();
            pgrx::direct_function_call(pg_sys::nextval_oid, &[self.catalog.events_seq.into_datum()])
                .expect("nextval is never NULL")
        }
    }

    /// Sets the posted balance of a locked account and makes event `seq` its newest.
    pub fn set_balance(&self, account: &LockedAccount, balance: i64, seq: i64) {
        // SAFETY: the tuple is a copy of the row version this transaction locked.
        unsafe {
            let old = account.tuple;
            let c = &self.catalog.account_columns;
            let mut columns = [(c.balance + 1) as c_int, (c.last_seq + 1) as c_int];
            let mut values = [Datum::from(balance), Datum::from(seq)];
            let mut nulls = [false, false];
            let new = pg_sys::heap_modify_tuple_by_cols(
                old,
                (*self.accounts).rd_att,
                2,
                columns.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
            pg_sys::simple_heap_update(self.accounts, &mut (*old).t_self, new);
            if (*(*new).t_data).t_infomask2 as u32 & pg_sys::HEAP_ONLY_TUPLE == 0 {
                insert_index_entries(self.accounts, new);
            }
            pg_sys::heap_freetuple(new);
        }
    }

    /// Appends event `seq`, the `transfer` of a posted transfer, linked to the accounts'
    /// previous events (read before `set_balance`). False: its idempotency key is already in
    /// the index (see `EventWriter`).
    pub fn insert_transfer_event(
        &self,
        seq: i64,
        posted: &Posted,
        idempotency_key: Option<Datum>,
        metadata: Option<Datum>,
    ) -> bool {
        let mut writer = self.event_writer(1);
        writer.append(seq, posted, idempotency_key, metadata);
        writer.finish().is_none()
    }

    /// A writer of `transfer` events that gathers up to `capacity` rows per write.
    pub fn event_writer(&self, capacity: usize) -> EventWriter {
        // SAFETY: inside the transaction that opened these tables.
        unsafe { EventWriter::open(&self.catalog, capacity.max(1)) }
    }
}

/// Appends `transfer` events to `wallet.events` the way COPY FROM does: rows are gathered in
/// slots and written together by `heap_multi_insert` (one WAL record per page instead of one
/// per row; a single row goes through `heap_insert`), then each gets its index entries from
/// `ExecInsertIndexTuples`. A row whose idempotency key is already in the unique index
/// (committed, or being written, by a concurrent transaction after the caller looked the key
/// up) raises nothing here: `finish` returns the first such row, and the caller answers with a
/// serialization failure, whose ERROR takes that row back with everything else.
pub struct EventWriter {
    columns: EventColumns,
    events: pg_sys::Relation,
    indexes: IndexWriter,
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    /// Slots filled and not written yet.
    used: usize,
    /// Rows appended so far.
    appended: usize,
    first_conflict: Option<usize>,
    event_type: Datum,
    tx_id: Datum,
}

impl EventWriter {
    unsafe fn open(catalog: &Catalog, capacity: usize) -> EventWriter {
        let events =
            pg_sys::table_open(catalog.events, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        // A copy of the descriptor is not reference-counted: the slots do not register in the
        // resource owner (see `LockedAccount`).
        let desc = pg_sys::CreateTupleDescCopy((*events).rd_att);
        let slots = (0..capacity)
            .map(|_| pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple))
            .collect();
        EventWriter {
            columns: catalog.event_columns,
            events,
            indexes: IndexWriter::open(events),
            slots,
            used: 0,
            appended: 0,
            first_conflict: None,
            event_type: Datum::from(pg_sys::cstring_to_text(
                c"transfer".as_ptr() as *const c_char
            )),
            tx_id: Datum::from(pg_sys::GetTopFullTransactionId().value),
        }
    }

    /// Adds event `seq` of a posted transfer, with its idempotency key and metadata (text and
    /// jsonb datums, valid until `finish`).
    pub fn append(
        &mut self,
        seq: i64,
        posted: &Posted,
        idempotency_key: Option<Datum>,
        metadata: Option<Datum>,
    ) {
        if self.used == self.slots.len() {
            self.flush();
        }
        let c = &self.columns;
        // SAFETY: the slot belongs to wallet.events; values and nulls cover its descriptor.
        unsafe {
            let slot = self.slots[self.used];
            pg_sys::ExecClearTuple(slot);
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            nulls.fill(true);
            let mut set = |i: usize, v: Datum| {
                values[i] = v;
                nulls[i] = false;
            };
            set(c.seq, Datum::from(seq));
            set(c.event_type, self.event_type);
            // clock_timestamp(), the column's default: taken while the accounts are locked.
            set(c.occurred_at, Datum::from(pg_sys::GetCurrentTimestamp()));
            set(c.tx_id, self.tx_id);
            set(c.debit_account_id, Datum::from(posted.debit_account_id));
            set(c.credit_account_id, Datum::from(posted.credit_account_id));
            set(c.amount, Datum::from(posted.amount));
            set(c.currency, posted.currency);
            set(c.debit_balance, Datum::from(posted.debit_balance));
            set(c.credit_balance, Datum::from(posted.credit_balance));
            let optional = [
                (c.idempotency_key, idempotency_key),
                (c.data, metadata),
                (c.debit_prev, posted.debit_prev.map(Datum::from)),
                (c.credit_prev, posted.credit_prev.map(Datum::from)),
            ];
            for (i, value) in optional {
                if let Some(v) = value {
                    set(i, v);
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
        self.used += 1;
        self.appended += 1;
    }

    fn flush(&mut self) {
        if self.used == 0 {
            return;
        }
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
            let first = self.appended - self.used;
            for (i, &slot) in self.slots[..self.used].iter().enumerate() {
                let unique = self.indexes.insert(slot, false, true);
                if !unique && self.first_conflict.is_none() {
                    self.first_conflict = Some(first + i);
                }
                pg_sys::ExecClearTuple(slot);
            }
        }
        self.used = 0;
    }

    /// Writes what is gathered. `Some(i)`: the `i`th row appended (from 0) met its idempotency
    /// key already in the index.
    pub fn finish(mut self) -> Option<usize> {
        self.flush();
        self.first_conflict
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: made in `open`, released once (the indexes before the table, by hand);
            // the table lock stays to the transaction's end.
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

/// A transfer posted on two locked accounts: what its event records.
pub struct Posted {
    pub debit_account_id: i64,
    pub credit_account_id: i64,
    pub amount: i64,
    /// The currency as stored (`LockedAccount::currency`).
    pub currency: Datum,
    pub debit_balance: i64,
    pub credit_balance: i64,
    /// The accounts' previous money events (`LockedAccount::last_seq` before the update).
    pub debit_prev: Option<i64>,
    pub credit_prev: Option<i64>,
}

impl Drop for Tables {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: opened in `open`; the locks stay until the transaction ends.
            unsafe {
                pg_sys::index_close(self.accounts_pkey, pg_sys::NoLock as pg_sys::LOCKMODE);
                pg_sys::table_close(self.accounts, pg_sys::NoLock as pg_sys::LOCKMODE);
                pg_sys::PopActiveSnapshot();
            }
        }
    }
}

/// The indexes of one table, open for inserting entries as the executor does: unique checks,
/// partial-index predicates and expressions included.
struct IndexWriter {
    estate: *mut pg_sys::EState,
    info: *mut pg_sys::ResultRelInfo,
}

impl IndexWriter {
    unsafe fn open(rel: pg_sys::Relation) -> IndexWriter {
        let estate = pg_sys::CreateExecutorState();
        let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
            as *mut pg_sys::ResultRelInfo;
        pg_sys::InitResultRelInfo(info, rel, 0, std::ptr::null_mut(), 0);
        pg_sys::ExecOpenIndices(info, false);
        IndexWriter { estate, info }
    }

    /// Adds the entries of the heap tuple in `slot` (its tid set; `update`: a new version that
    /// was not HOT). A key a unique index already holds raises Postgres's unique violation,
    /// unless `report_duplicates`: then the entry is added all the same (`UNIQUE_CHECK_PARTIAL`,
    /// as speculative insertion does), this returns false, and the caller must raise an ERROR
    /// that takes it back.
    unsafe fn insert(
        &self,
        slot: *mut pg_sys::TupleTableSlot,
        update: bool,
        report_duplicates: bool,
    ) -> bool {
        let mut conflict = false;
        let conflicts = pg_sys::ExecInsertIndexTuples(
            self.info,
            slot,
            self.estate,
            update,
            report_duplicates,
            &mut conflict,
            std::ptr::null_mut(),
        );
        let context = (*self.estate).es_per_tuple_exprcontext;
        if !context.is_null() {
            pg_sys::MemoryContextReset((*context).ecxt_per_tuple_memory);
        }
        conflicts.is_null()
    }

    unsafe fn close(&self) {
        pg_sys::ExecCloseIndices(self.info);
        pg_sys::FreeExecutorState(self.estate);
    }
}

/// Inserts the index entries of a new version of an account row that was not HOT.
unsafe fn insert_index_entries(rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) {
    let indexes = IndexWriter::open(rel);
    let slot = pg_sys::MakeSingleTupleTableSlot((*rel).rd_att, &pg_sys::TTSOpsHeapTuple);
    pg_sys::ExecStoreHeapTuple(tuple, slot, false);
    indexes.insert(slot, true, false);
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    indexes.close();
}
