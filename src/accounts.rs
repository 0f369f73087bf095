//! The one locker and writer of account rows for every money movement: transfers, batches and
//! every hold step.
//!
//! [`Accounts::lock`] finds accounts and locks their rows `FOR NO KEY UPDATE`, always in
//! ascending id order (so no two wallet calls deadlock each other), and reads each locked
//! version's state; [`Accounts::write`] sets a locked account's balance, pending amounts and
//! newest money event. On the direct path (`catalog.rs`) this is done with the table and index
//! access methods, with the guarantees of the statements it stands for:
//!
//! * each row is found through the primary key (or, for a batch with many accounts per page of the
//!   table, by one sequential scan, as a planner would choose) before any is locked; under READ
//!   COMMITTED a row updated concurrently is followed to its newest version and locked there (what
//!   UPDATE's EvalPlanQual does), above it a concurrent update is a serialization failure; the
//!   index scan takes SERIALIZABLE's predicate locks and the heap update checks for conflicts, as
//!   in the executor;
//! * `simple_heap_update` (HOT whenever the page has room; a version that is not HOT gets its
//!   index entries, unique checks included, like any update), after the replica identity check a
//!   plain UPDATE makes (`CheckCmdReplicaIdentity`).
//!
//! On the executor path the same is done by the statements `sql/queries/executor_account_*.sql`.

use std::ffi::c_int;
use std::mem::MaybeUninit;

use pgrx::pg_sys::{self, Datum};
use wallet_core::account::{AccountState, AccountStatus};
use wallet_core::text::Text;

use crate::args::varlena_bytes;
use crate::catalog::{AccountColumns, Tables};
use crate::error::{WalletError, WalletResult};
use crate::spi::{Connection, Kept};

/// The row of this account could not be locked in the state this transaction's snapshot saw:
/// a serialization failure for the caller to report (40001).
pub struct Conflict(pub i64);

/// One account row, locked by this transaction, with the state the rules need.
pub struct LockedAccount {
    pub state: AccountState,
    /// The account's newest money event, the link its next event points back to.
    pub last_seq: Option<i64>,
    /// The currency column as stored, a text datum, valid until the command ends.
    pub currency: Datum,
    /// Direct path: a copy of the locked version; `t_self` is its tid. (It holds a copy, not a
    /// slot: a batch locks thousands of rows, and every slot pins its tuple descriptor and buffer
    /// in the resource owner, whose look-up probes linearly through equal entries, measured at
    /// 11% of a batch's time.)
    tuple: pg_sys::HeapTuple,
}

/// wallet.accounts opened for one command.
pub struct Accounts<'t> {
    tables: &'t Tables,
    direct: Option<Direct>,
}

struct Direct {
    accounts: pg_sys::Relation,
    accounts_pkey: pg_sys::Relation,
}

/// `lock` finds its rows by a sequential scan when there are at least this many ids per page of
/// wallet.accounts. An index look-up costs about 1 us per id, reading a page about 1-3 us
/// (bench/RESULTS.md, section 3).
const SCAN_IDS_PER_PAGE: u64 = 3;

static EXECUTOR_LOCK: Kept = Kept {
    slot: 24,
    sql: || include_str!("../sql/queries/executor_account_lock.sql").to_string(),
    args: &[pg_sys::INT8ARRAYOID],
    index_only: false,
    hash_join: false,
};
static EXECUTOR_UPDATE: Kept = Kept {
    slot: 25,
    sql: || include_str!("../sql/queries/executor_account_update.sql").to_string(),
    args: &[
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
        pg_sys::INT8OID,
    ],
    index_only: false,
    hash_join: false,
};

pub const KEPT: &[&Kept] = &[&EXECUTOR_LOCK, &EXECUTOR_UPDATE];

impl<'t> Accounts<'t> {
    pub fn open(tables: &'t Tables) -> Accounts<'t> {
        let direct = tables.catalog.accounts_path.is_direct().then(|| {
            // SAFETY: Tables::open holds the table's RowExclusiveLock, so its open takes no lock
            // again (NoLock: a second look-up in the lock table per call, for nothing); the
            // index is locked here as a plain UPDATE locks it.
            unsafe {
                let accounts =
                    pg_sys::table_open(tables.catalog.accounts, pg_sys::NoLock as pg_sys::LOCKMODE);
                let accounts_pkey = pg_sys::index_open(
                    tables.catalog.accounts_pkey,
                    pg_sys::RowExclusiveLock as pg_sys::LOCKMODE,
                );
                // What a plain UPDATE checks first: a table that publishes updates needs a
                // replica identity (and row filters only on its columns).
                pg_sys::CheckCmdReplicaIdentity(accounts, pg_sys::CmdType::CMD_UPDATE);
                Direct {
                    accounts,
                    accounts_pkey,
                }
            }
        });
        Accounts { tables, direct }
    }

    fn columns(&self) -> &AccountColumns {
        &self.tables.catalog.account_columns
    }

    /// Finds accounts `ids` (ascending, distinct) and locks their rows in that order. `None` for
    /// an id with no account. `Conflict` names the account whose row could not be locked.
    pub fn lock(
        &self,
        conn: &Connection,
        ids: &[i64],
    ) -> WalletResult<Result<Vec<Option<LockedAccount>>, Conflict>> {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
        match &self.direct {
            Some(direct) => direct.lock(self.columns(), ids),
            None => self.lock_by_statement(conn, ids).map(Ok),
        }
    }

    fn lock_by_statement(
        &self,
        conn: &Connection,
        ids: &[i64],
    ) -> WalletResult<Vec<Option<LockedAccount>>> {
        use pgrx::IntoDatum;
        let rows = conn.execute(&EXECUTOR_LOCK, &[ids.to_vec().into_datum()]);
        let mut found: Vec<Option<LockedAccount>> = (0..ids.len()).map(|_| None).collect();
        for row in 0..rows.len() {
            let id: i64 = rows
                .get(row, 1)
                .ok_or_else(|| corrupted("an account", "id", "NULL"))?;
            let text = |column: usize, name: &str| -> WalletResult<Vec<u8>> {
                rows.bytes(row, column)
                    .ok_or_else(|| corrupted(&format!("account {id}"), name, "NULL"))
            };
            let int = |column: usize, name: &str| -> WalletResult<i64> {
                rows.get::<i64>(row, column)
                    .ok_or_else(|| corrupted(&format!("account {id}"), name, "NULL"))
            };
            let flag = |column: usize, name: &str| -> WalletResult<bool> {
                rows.get::<bool>(row, column)
                    .ok_or_else(|| corrupted(&format!("account {id}"), name, "NULL"))
            };
            let state = AccountState {
                id,
                currency: Text(text(2, "currency")?),
                status: parse_status(id, &text(3, "status")?)?,
                allow_overdraft: flag(4, "allow_overdraft")?,
                is_system: flag(5, "is_system")?,
                balance: int(6, "balance")?,
                pending_debit: int(7, "pending_debit")?,
                pending_credit: int(8, "pending_credit")?,
            };
            let last_seq = rows.get::<i64>(row, 9);
            let currency = rows.copied_datum(row, 2).expect("checked above: not NULL");
            if let Ok(i) = ids.binary_search(&id) {
                found[i] = Some(LockedAccount {
                    state,
                    last_seq,
                    currency,
                    tuple: std::ptr::null_mut(),
                });
            }
        }
        Ok(found)
    }

    /// Sets a locked account's posted balance, pending amounts and newest money event `seq`.
    pub fn write(
        &self,
        conn: &Connection,
        account: &LockedAccount,
        balance: i64,
        pending_debit: i64,
        pending_credit: i64,
        seq: i64,
    ) {
        use pgrx::IntoDatum;
        match &self.direct {
            Some(direct) => direct.write(
                self.columns(),
                account,
                [balance, pending_debit, pending_credit, seq],
            ),
            None => {
                conn.execute(
                    &EXECUTOR_UPDATE,
                    &[
                        account.state.id.into_datum(),
                        balance.into_datum(),
                        pending_debit.into_datum(),
                        pending_credit.into_datum(),
                        seq.into_datum(),
                    ],
                );
            }
        }
    }
}

fn corrupted(row: &str, column: &str, value: &str) -> WalletError {
    WalletError::DataCorrupted(format!(
        "wallet.accounts: {row} has {value} in column {column}, which the wallet never writes"
    ))
}

fn parse_status(id: i64, bytes: &[u8]) -> WalletResult<AccountStatus> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(AccountStatus::parse)
        .ok_or_else(|| {
            corrupted(
                &format!("account {id}"),
                "status",
                &format!("'{}'", Text::from(bytes)),
            )
        })
}

/// An index scan of wallet.accounts' primary key, ended when dropped.
struct IndexScan(pg_sys::IndexScanDesc);

impl Drop for IndexScan {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: begun by index_beginscan and ended once.
            unsafe { pg_sys::index_endscan(self.0) };
        }
    }
}

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

impl Direct {
    fn lock(
        &self,
        columns: &AccountColumns,
        ids: &[i64],
    ) -> WalletResult<Result<Vec<Option<LockedAccount>>, Conflict>> {
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
        let slot = Slot(unsafe { pg_sys::table_slot_create(self.accounts, std::ptr::null_mut()) });
        let tids = if scan {
            self.find_by_scan(columns, ids)
        } else {
            self.find_by_index(ids, slot.0)
        };
        let mut locked = Vec::with_capacity(ids.len());
        for (&id, tid) in ids.iter().zip(tids) {
            match tid {
                None => locked.push(None),
                Some(tid) => match self.lock_found(columns, slot.0, tid)? {
                    Ok(account) => locked.push(account),
                    Err(()) => return Ok(Err(Conflict(id))),
                },
            }
        }
        Ok(Ok(locked))
    }

    /// The tid of the version of each of `ids` this snapshot sees, by one primary-key scan
    /// restarted per id. `slot` (of wallet.accounts) is left empty.
    fn find_by_index(
        &self,
        ids: &[i64],
        slot: *mut pg_sys::TupleTableSlot,
    ) -> Vec<Option<pg_sys::ItemPointerData>> {
        // SAFETY: relations are open and locked; the scan is ended by its guard.
        let scan = IndexScan(unsafe {
            pg_sys::index_beginscan(
                self.accounts,
                self.accounts_pkey,
                pg_sys::GetActiveSnapshot(),
                1,
                0,
            )
        });
        ids.iter()
            .map(|&id| {
                // SAFETY: the scan belongs to the primary key (checked by catalog.rs to be on
                // id alone, a bigint); the slot to wallet.accounts.
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
    fn find_by_scan(
        &self,
        columns: &AccountColumns,
        ids: &[i64],
    ) -> Vec<Option<pg_sys::ItemPointerData>> {
        let mut tids = vec![None; ids.len()];
        let id_column = columns.id as i32 + 1;
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
                if !null {
                    if let Ok(i) = ids.binary_search(&id) {
                        tids[i] = Some((*tuple).t_self);
                    }
                }
            }
            pg_sys::table_endscan(scan);
        }
        tids
    }

    /// Locks the row version at `tid` (found by this snapshot) and reads it. `Err(())`: it was
    /// changed by a transaction this snapshot cannot see (above READ COMMITTED).
    fn lock_found(
        &self,
        columns: &AccountColumns,
        slot: *mut pg_sys::TupleTableSlot,
        mut tid: pg_sys::ItemPointerData,
    ) -> WalletResult<Result<Option<LockedAccount>, ()>> {
        // SAFETY: the slot belongs to wallet.accounts; tid was read by this snapshot; the
        // locked version is copied before the slot lets go of its buffer.
        let tuple = unsafe {
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
                // Deleted since the look-up (the wallet never deletes accounts).
                pg_sys::TM_Result::TM_Deleted if !transaction_snapshot => return Ok(Ok(None)),
                // Changed by a transaction this snapshot cannot see (REPEATABLE READ and up),
                // or by a later command of this one: the transaction must start over.
                _ => return Ok(Err(())),
            }
            let tuple = pg_sys::ExecCopySlotHeapTuple(slot);
            pg_sys::ExecClearTuple(slot);
            tuple
        };
        // SAFETY: the tuple is a copy of a wallet.accounts row, deformed with its descriptor.
        let (values, nulls) = unsafe {
            let desc = (*self.accounts).rd_att;
            let natts = (*desc).natts as usize;
            let mut values = vec![Datum::from(0usize); natts];
            let mut nulls = vec![true; natts];
            pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            (values, nulls)
        };
        let c = columns;
        let present = |i: usize, name: &str| -> WalletResult<Datum> {
            if nulls[i] {
                let id = if nulls[c.id] {
                    "an account".to_string()
                } else {
                    format!("account {}", values[c.id].value() as i64)
                };
                return Err(corrupted(&id, name, "NULL"));
            }
            Ok(values[i])
        };
        let id = present(c.id, "id")?.value() as i64;
        // SAFETY: text columns (checked by catalog.rs) of the copied tuple.
        let text =
            |i: usize, name: &str| present(i, name).map(|d| unsafe { varlena_bytes(d) }.to_vec());
        let int = |i: usize, name: &str| present(i, name).map(|d| d.value() as i64);
        let flag = |i: usize, name: &str| present(i, name).map(|d| d.value() != 0);
        let state = AccountState {
            id,
            currency: Text(text(c.currency, "currency")?),
            // SAFETY: as for `text`; the bytes are parsed, not kept.
            status: parse_status(
                id,
                present(c.status, "status").map(|d| unsafe { varlena_bytes(d) })?,
            )?,
            allow_overdraft: flag(c.allow_overdraft, "allow_overdraft")?,
            is_system: flag(c.is_system, "is_system")?,
            balance: int(c.balance, "balance")?,
            pending_debit: int(c.pending_debit, "pending_debit")?,
            pending_credit: int(c.pending_credit, "pending_credit")?,
        };
        let last_seq = (!nulls[c.last_seq]).then(|| values[c.last_seq].value() as i64);
        Ok(Ok(Some(LockedAccount {
            state,
            last_seq,
            currency: values[c.currency],
            tuple,
        })))
    }

    fn write(&self, c: &AccountColumns, account: &LockedAccount, values: [i64; 4]) {
        // SAFETY: the tuple is a copy of the row version this transaction locked; the new
        // version is formed with the table's descriptor and freed after the update.
        unsafe {
            let old = account.tuple;
            let mut columns = [
                (c.balance + 1) as c_int,
                (c.pending_debit + 1) as c_int,
                (c.pending_credit + 1) as c_int,
                (c.last_seq + 1) as c_int,
            ];
            let mut datums = values.map(Datum::from);
            let mut nulls = [false; 4];
            let new = pg_sys::heap_modify_tuple_by_cols(
                old,
                (*self.accounts).rd_att,
                4,
                columns.as_mut_ptr(),
                datums.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
            pg_sys::simple_heap_update(self.accounts, &mut (*old).t_self, new);
            if (*(*new).t_data).t_infomask2 as u32 & pg_sys::HEAP_ONLY_TUPLE == 0 {
                crate::events::insert_index_entries(self.accounts, new);
            }
            pg_sys::heap_freetuple(new);
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: opened in `Accounts::open`; the locks stay until the transaction ends.
            unsafe {
                pg_sys::index_close(self.accounts_pkey, pg_sys::NoLock as pg_sys::LOCKMODE);
                pg_sys::table_close(self.accounts, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
        }
    }
}
