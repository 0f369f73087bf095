//! The row of a global transaction of this node alone (`engine::run_here`), written with the table
//! access methods, as `events.rs` writes money events: an `INSERT ... ON CONFLICT (gtid) DO
//! NOTHING` through the executor cost as much as the transfer it records (executor start-up of
//! an INSERT with an arbiter, bench/RESULTS.md section 11).
//!
//! It is exactly that statement only while wallet.global_transactions has the shape the
//! extension gave it (`catalog::ledger` decides, once per relcache invalidation: no trigger
//! firing on INSERT, no rule, no CHECK, no default or NOT NULL on a column it does not write, the
//! primary key on (gtid) immediate); otherwise [`LedgerRow::open`] answers None and the caller writes the row by SQL,
//! which Postgres judges. As ON CONFLICT does, it looks for the gtid first
//! ([`LedgerRow::recorded`]: a writer still in progress is waited for), and inserts the index
//! entries with the primary key as the arbiter ([`LedgerRow::insert`]: a gtid recorded in between
//! is reported, and the caller's ERROR takes the row back).

use std::ffi::c_int;

use pgrx::pg_sys::{self, Datum};

use crate::catalog::{self, LEDGER_COLUMNS};
use crate::events::IndexWriter;

/// wallet.global_transactions, open for one direct insert.
pub struct LedgerRow {
    rel: pg_sys::Relation,
    indexes: IndexWriter,
    slot: *mut pg_sys::TupleTableSlot,
    columns: [usize; 15],
}

impl LedgerRow {
    /// The table, locked for writing, when the direct path may write it; None: write the row by
    /// SQL (the table's shape asks for the executor, or the transaction runs above READ
    /// COMMITTED, where ON CONFLICT judges a row its snapshot cannot see).
    pub fn open() -> crate::error::WalletResult<Option<LedgerRow>> {
        let command = c"a global transaction's record";
        // SAFETY: what an INSERT refuses before it runs; each may raise an ERROR.
        unsafe {
            pg_sys::PreventCommandIfReadOnly(command.as_ptr());
            pg_sys::PreventCommandIfParallelMode(command.as_ptr());
            pg_sys::PreventCommandDuringRecovery(command.as_ptr());
            if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as c_int {
                return Ok(None);
            }
        }
        let before = catalog::current()?;
        // SAFETY: locks a relation by oid, as the INSERT would.
        unsafe {
            pg_sys::LockRelationOid(
                before.global_transactions,
                pg_sys::RowExclusiveLock as pg_sys::LOCKMODE,
            )
        };
        // Taking the lock processed what a concurrent ALTER left: decide on the catalog now.
        let now = catalog::current()?;
        if now.global_transactions != before.global_transactions {
            return Ok(None);
        }
        let ledger = catalog::ledger(now.global_transactions);
        if !ledger.path.is_direct() {
            return Ok(None);
        }
        // SAFETY: the table is locked above; its indexes are opened as the executor opens them
        // for ON CONFLICT; the slot uses a copy of the descriptor (not reference-counted).
        unsafe {
            let rel =
                pg_sys::table_open(now.global_transactions, pg_sys::NoLock as pg_sys::LOCKMODE);
            let indexes = IndexWriter::open_for(rel, Some(ledger.pkey), true);
            let desc = pg_sys::CreateTupleDescCopy((*rel).rd_att);
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple);
            Ok(Some(LedgerRow {
                rel,
                indexes,
                slot,
                columns: ledger.columns,
            }))
        }
    }

    /// Puts `values` (in the order of `LEDGER_COLUMNS`; None: NULL) into the slot, every other
    /// column NULL.
    fn fill(&self, values: &[Option<Datum>; 15]) {
        // SAFETY: the slot belongs to the table; values and nulls cover its descriptor.
        unsafe {
            let slot = self.slot;
            pg_sys::ExecClearTuple(slot);
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            let datums = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
            nulls.fill(true);
            for (&i, value) in self.columns.iter().zip(values) {
                if let Some(v) = value {
                    datums[i] = *v;
                    nulls[i] = false;
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
    }

    /// Whether a row of `gtid` (a text datum) exists, committed or written by a transaction
    /// still in progress (waited for: if it rolls back, there is none).
    pub fn recorded(&self, gtid: Datum) -> bool {
        let mut values = [None; 15];
        values[0] = Some(gtid);
        self.fill(&values);
        // SAFETY: opened for checks with the primary key as the arbiter; the slot holds a row of
        // the table (only its gtid is read).
        unsafe { !self.indexes.check(self.slot) }
    }

    /// Inserts the row `values` (every column of `LEDGER_COLUMNS`, none NULL). False: a row of
    /// its gtid was recorded since [`LedgerRow::recorded`] looked; the caller must then raise
    /// an ERROR, which takes this one back.
    pub fn insert(&self, values: &[Datum; 15]) -> bool {
        debug_assert_eq!(LEDGER_COLUMNS.len(), values.len());
        self.fill(&values.map(Some));
        // SAFETY: the slot holds a row of the table; stored, then its index entries added.
        unsafe {
            let tuple = pg_sys::ExecFetchSlotHeapTuple(self.slot, true, std::ptr::null_mut());
            pg_sys::heap_insert(
                self.rel,
                tuple,
                pg_sys::GetCurrentCommandId(true),
                0,
                std::ptr::null_mut(),
            );
            (*self.slot).tts_tid = (*tuple).t_self;
            self.indexes.insert(self.slot, false)
        }
    }
}

impl Drop for LedgerRow {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: made in `open`, released once (the indexes before the table); the table
            // lock stays to the transaction's end.
            unsafe {
                pg_sys::ExecDropSingleTupleTableSlot(self.slot);
                self.indexes.close();
                pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
        }
    }
}
