//! The wallet's tables as this backend finds them: their oids, the positions of the columns the
//! wallet reads and writes, and, for each table the hot paths write, whether the direct write
//! path may be used.
//!
//! The direct path (`accounts.rs`, `events.rs`) writes rows with the table access methods, as
//! logical replication applies a change. It is exactly what a plain `UPDATE` / `INSERT` would do
//! only while the table has the shape the extension gave it: then nothing a statement would run
//! (a trigger, a CHECK constraint, a default, a generated column, a rule, row-level security)
//! exists. [`Catalog::resolve`] looks at the table once per relcache invalidation and decides:
//!
//! * `Direct`: nothing a statement would do is skipped. Extra indexes (their unique and exclusion
//!   constraints are checked by `ExecInsertIndexTuples`, with their own SQLSTATEs), an added
//!   nullable column without a default, and a foreign key from another table to
//!   `wallet.accounts(id)` (its triggers do nothing when the key does not change, as Postgres
//!   itself decides) keep this path;
//! * `Executor`: anything else a statement would honour; the writes then go through SQL
//!   statements (`sql/queries/executor_*.sql`), which Postgres enforces;
//! * refused (55000, before anything is written): a column the wallet reads or writes is
//!   missing or has another type (no value is ever read as a type it is not), or the primary key
//!   of `wallet.accounts` or the unique index of the idempotency keys is gone.
//!
//! [`Tables::open`] also fixes the order of locks and snapshot: the tables are locked first, the
//! snapshot taken after, so a transfer that waited for an `ALTER TABLE` sees the table that
//! `ALTER` left (a rewritten table's rows are invisible to an older snapshot).

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, CStr};

use pgrx::pg_guard;
use pgrx::pg_sys::{self, Datum, Oid};

use crate::error::{WalletError, WalletResult};

/// How a table's rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritePath {
    Direct,
    /// Through SQL statements; the reason names what the direct path would skip.
    Executor(String),
}

impl WritePath {
    pub fn is_direct(&self) -> bool {
        *self == WritePath::Direct
    }
}

/// Positions (0-based) of the columns of wallet.accounts the wallet reads or writes.
#[derive(Debug, Clone, Copy)]
pub struct AccountColumns {
    pub id: usize,
    pub currency: usize,
    pub status: usize,
    pub allow_overdraft: usize,
    pub is_system: usize,
    pub balance: usize,
    pub pending_debit: usize,
    pub pending_credit: usize,
    pub last_seq: usize,
}

/// Positions (0-based) of the columns of wallet.events a money event writes.
#[derive(Debug, Clone, Copy)]
pub struct EventColumns {
    pub seq: usize,
    pub event_type: usize,
    pub occurred_at: usize,
    pub tx_id: usize,
    pub debit_account_id: usize,
    pub credit_account_id: usize,
    pub amount: usize,
    pub currency: usize,
    pub debit_balance: usize,
    pub credit_balance: usize,
    pub idempotency_key: usize,
    pub data: usize,
    pub pending_delta: usize,
    pub debit_prev: usize,
    pub credit_prev: usize,
}

/// The columns of wallet.accounts the wallet reads and writes, with their types.
const ACCOUNT_COLUMNS: [(&CStr, Oid); 9] = [
    (c"id", pg_sys::INT8OID),
    (c"currency", pg_sys::TEXTOID),
    (c"status", pg_sys::TEXTOID),
    (c"allow_overdraft", pg_sys::BOOLOID),
    (c"is_system", pg_sys::BOOLOID),
    (c"balance", pg_sys::INT8OID),
    (c"pending_debit", pg_sys::INT8OID),
    (c"pending_credit", pg_sys::INT8OID),
    (c"last_seq", pg_sys::INT8OID),
];

/// The columns of wallet.accounts a money movement sets (the SET list of the statement it stands
/// for: see sql/queries/executor_account_update.sql).
const ACCOUNT_COLUMNS_SET: [&CStr; 4] =
    [c"balance", c"pending_debit", c"pending_credit", c"last_seq"];

/// The columns of wallet.events a money event writes (every one, NULL or not: the column list of
/// the INSERT it stands for, sql/queries/executor_event_insert.sql), with their types, and
/// whether the wallet ever writes NULL there.
const EVENT_COLUMNS: [(&CStr, Oid, bool); 15] = [
    (c"seq", pg_sys::INT8OID, false),
    (c"event_type", pg_sys::TEXTOID, false),
    (c"occurred_at", pg_sys::TIMESTAMPTZOID, false),
    (c"tx_id", pg_sys::XID8OID, false),
    (c"debit_account_id", pg_sys::INT8OID, false),
    (c"credit_account_id", pg_sys::INT8OID, false),
    (c"amount", pg_sys::INT8OID, false),
    (c"currency", pg_sys::TEXTOID, false),
    (c"debit_balance", pg_sys::INT8OID, false),
    (c"credit_balance", pg_sys::INT8OID, false),
    (c"idempotency_key", pg_sys::TEXTOID, true),
    (c"data", pg_sys::JSONBOID, true),
    (c"pending_delta", pg_sys::INT8OID, true),
    (c"debit_prev", pg_sys::INT8OID, true),
    (c"credit_prev", pg_sys::INT8OID, true),
];

/// The columns of wallet.global_transactions that the row of a global transaction of this node
/// alone writes (the column list of sql/queries/ledger_insert_here.sql), with their types; the
/// wallet never writes NULL there. Their positions are `LedgerTable::columns`, in this order.
pub const LEDGER_COLUMNS: [(&CStr, Oid); 15] = [
    (c"gtid", pg_sys::TEXTOID),
    (c"protocol", pg_sys::TEXTOID),
    (c"phase", pg_sys::TEXTOID),
    (c"outcome", pg_sys::TEXTOID),
    (c"leg_nodes", pg_sys::TEXTARRAYOID),
    (c"leg_account_ids", pg_sys::INT8ARRAYOID),
    (c"leg_amounts", pg_sys::INT8ARRAYOID),
    (c"amount", pg_sys::INT8OID),
    (c"currency", pg_sys::TEXTOID),
    (c"hold_timeout", pg_sys::INTERVALOID),
    (c"created_at", pg_sys::TIMESTAMPTZOID),
    (c"decide_by", pg_sys::TIMESTAMPTZOID),
    (c"decided_at", pg_sys::TIMESTAMPTZOID),
    (c"finished_at", pg_sys::TIMESTAMPTZOID),
    (c"finished_by", pg_sys::TEXTOID),
];

/// wallet.global_transactions as the direct insert of a global transaction of this node alone
/// (`ledger_row.rs`) needs it. Unlike the money tables, a shape the direct path cannot write is
/// never refused here: the ledger's SQL statements then write the row, and Postgres judges them.
#[derive(Debug, Clone)]
pub struct LedgerTable {
    /// The primary key on (gtid): the arbiter of a gtid recorded meanwhile.
    pub pkey: Oid,
    /// Positions (0-based) of `LEDGER_COLUMNS`, in its order.
    pub columns: [usize; 15],
    pub path: WritePath,
}

/// What this backend knows of the wallet's tables; dropped on any relcache invalidation of one of
/// them (and on a change of session_replication_role, which decides which triggers fire).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub accounts: Oid,
    pub accounts_pkey: Oid,
    pub events: Oid,
    pub events_seq: Oid,
    /// The unique index of wallet.events on (idempotency_key): the arbiter of key conflicts.
    pub idempotency_index: Oid,
    pub holds: Oid,
    pub global_transactions: Oid,
    pub branches: Oid,
    pub account_columns: AccountColumns,
    pub event_columns: EventColumns,
    pub accounts_path: WritePath,
    pub events_path: WritePath,
    replication_role: c_int,
}

thread_local! {
    static CATALOG: RefCell<Option<Catalog>> = const { RefCell::new(None) };
    /// wallet.global_transactions as `ledger` found it (with the replication role and the
    /// table's oid), kept apart from the money tables' catalog: only the ledger's own writer
    /// opens that table, so a DBA's lock on it never holds up a plain transfer.
    static LEDGER: RefCell<Option<(c_int, Oid, LedgerTable)>> = const { RefCell::new(None) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_catalog(_arg: Datum, relid: Oid) {
    CATALOG.with(|cell| {
        let mut cell = cell.borrow_mut();
        let known = cell.as_ref().is_some_and(|c| {
            relid == pg_sys::InvalidOid
                || [
                    c.accounts,
                    c.accounts_pkey,
                    c.events,
                    c.idempotency_index,
                    c.holds,
                ]
                .contains(&relid)
        });
        if known {
            *cell = None;
        }
    });
    LEDGER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let known = cell.as_ref().is_some_and(|(_, oid, l)| {
            relid == pg_sys::InvalidOid || relid == *oid || relid == l.pkey
        });
        if known {
            *cell = None;
        }
    });
}

/// The wallet's catalog, resolved now if the cached one was invalidated.
pub fn current() -> WalletResult<Catalog> {
    if !CALLBACK_REGISTERED.with(Cell::get) {
        // SAFETY: registers a plain function for the life of the backend, once.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_catalog), Datum::from(0usize)) };
        CALLBACK_REGISTERED.with(|c| c.set(true));
    }
    // SAFETY: a plain read of a backend global.
    let role = unsafe { pg_sys::SessionReplicationRole };
    if let Some(c) = CATALOG.with(|c| c.borrow().clone()) {
        if c.replication_role == role {
            return Ok(c);
        }
    }
    let catalog = Catalog::resolve()?;
    CATALOG.with(|c| *c.borrow_mut() = Some(catalog.clone()));
    Ok(catalog)
}

fn shape_error(message: String) -> WalletError {
    WalletError::TableShape(message)
}

fn namespace() -> WalletResult<Oid> {
    // SAFETY: a syscache look-up by name.
    let ns = unsafe { pg_sys::get_namespace_oid(c"wallet".as_ptr(), true) };
    if ns == pg_sys::InvalidOid {
        return Err(shape_error(
            "schema wallet does not exist in this database".into(),
        ));
    }
    Ok(ns)
}

/// The oid of wallet.`name`, or a 55000 naming it.
pub fn relation(name: &CStr) -> WalletResult<Oid> {
    let ns = namespace()?;
    // SAFETY: a syscache look-up by name.
    let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), ns) };
    if oid == pg_sys::InvalidOid {
        return Err(shape_error(format!(
            "wallet.{} does not exist (dropped or renamed?): the wallet needs it",
            name.to_string_lossy()
        )));
    }
    Ok(oid)
}

/// An open relation, closed (its lock kept to the transaction's end) when dropped.
struct Open(pg_sys::Relation);

impl Open {
    fn table(oid: Oid) -> Open {
        // SAFETY: the caller holds (or takes here) a lock that keeps the relation alive.
        Open(unsafe { pg_sys::relation_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) })
    }

    fn name(&self) -> String {
        // SAFETY: rd_rel of an open relation.
        unsafe { CStr::from_ptr((*(*self.0).rd_rel).relname.data.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    fn attributes(&self) -> &[pg_sys::FormData_pg_attribute] {
        // SAFETY: the descriptor of an open relation has natts attributes.
        unsafe {
            let desc = (*self.0).rd_att;
            (*desc).attrs.as_slice((*desc).natts as usize)
        }
    }

    /// 0-based position of live column `name`, checked to have type `type_oid` (no typmod).
    fn column(&self, name: &CStr, type_oid: Oid) -> WalletResult<usize> {
        let attrs = self.attributes();
        let found = attrs.iter().position(|a| {
            // SAFETY: attname is a NUL-terminated NameData.
            !a.attisdropped && unsafe { CStr::from_ptr(a.attname.data.as_ptr()) } == name
        });
        let Some(i) = found else {
            return Err(shape_error(format!(
                "wallet.{} has no column {} (dropped or renamed, or the database's wallet schema is older than the installed wallet_ext library {}: run ALTER EXTENSION wallet_ext UPDATE)",
                self.name(),
                name.to_string_lossy(),
                env!("CARGO_PKG_VERSION")
            )));
        };
        let a = &attrs[i];
        if a.atttypid != type_oid || a.atttypmod != -1 {
            return Err(shape_error(format!(
                "wallet.{}.{} has type {}, but the wallet reads and writes it as {}: change it back",
                self.name(),
                name.to_string_lossy(),
                type_name(a.atttypid, a.atttypmod),
                type_name(type_oid, -1)
            )));
        }
        Ok(i)
    }

    /// Refuses a table with rules (55000): a rule rewrites the statement a money movement stands
    /// for (an INSTEAD rule would leave a balance unchanged beside its event), and Postgres
    /// refuses ON CONFLICT, which the executor path needs, on a table with rules.
    fn refuse_rules(&self) -> WalletResult<()> {
        // SAFETY: rd_rules of an open relation.
        if unsafe { !(*self.0).rd_rules.is_null() } {
            return Err(shape_error(format!(
                "wallet.{} has rules: a rule would rewrite the wallet's writes, which refuse to run until it is dropped",
                self.name()
            )));
        }
        Ok(())
    }

    /// Why the direct path would skip something a statement writing this table would do, apart
    /// from triggers; None when nothing.
    fn statement_work(&self) -> Option<String> {
        // SAFETY: fields of an open relation and its descriptor.
        unsafe {
            let rel = self.0;
            if (*rel).rd_tableam != pg_sys::GetHeapamTableAmRoutine() {
                return Some("its access method is not heap".into());
            }
            // Row-level security as a statement of the wallet's own would meet it: its owner, a
            // superuser (or a table owner without FORCE), is not subject to it.
            let rls = pg_sys::check_enable_rls((*rel).rd_id, pg_sys::InvalidOid, true);
            if rls == pg_sys::CheckEnableRlsResult::RLS_ENABLED as c_int {
                return Some("row-level security applies to the wallet's owner".into());
            }
            let constr = (*(*rel).rd_att).constr;
            if !constr.is_null() {
                if (*constr).num_check > 0 {
                    return Some("it has CHECK constraints".into());
                }
                if (*constr).has_generated_stored {
                    return Some("it has generated columns".into());
                }
            }
        }
        None
    }

    fn triggers(&self) -> &[pg_sys::Trigger] {
        // SAFETY: trigdesc of an open relation, when present, holds numtriggers triggers.
        unsafe {
            let desc = (*self.0).trigdesc;
            if desc.is_null() || (*desc).numtriggers == 0 {
                return &[];
            }
            std::slice::from_raw_parts((*desc).triggers, (*desc).numtriggers as usize)
        }
    }

    /// 1-based attribute numbers of the key of index `oid`.
    fn index_key(oid: Oid) -> Vec<i16> {
        let index = Open::table(oid);
        // SAFETY: rd_index of an open index holds indnkeyatts key columns.
        unsafe {
            let form = (*index.0).rd_index;
            let key = &(*form).indkey;
            key.values.as_slice((*form).indnkeyatts as usize).to_vec()
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: opened by relation_open; the lock stays to the end of the transaction.
            unsafe { pg_sys::relation_close(self.0, pg_sys::NoLock as pg_sys::LOCKMODE) };
        }
    }
}

fn type_name(type_oid: Oid, typmod: i32) -> String {
    // SAFETY: format_type_with_typemod palloc's a C string for any type oid.
    unsafe { CStr::from_ptr(pg_sys::format_type_with_typemod(type_oid, typmod)) }
        .to_string_lossy()
        .into_owned()
}

/// Whether trigger `t` fires under the current session_replication_role (as TriggerEnabled()).
fn fires(t: &pg_sys::Trigger, role: c_int) -> bool {
    let enabled = t.tgenabled as u8;
    if enabled == pg_sys::TRIGGER_DISABLED {
        return false;
    }
    if role == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as c_int {
        enabled != pg_sys::TRIGGER_FIRES_ON_ORIGIN
    } else {
        enabled != pg_sys::TRIGGER_FIRES_ON_REPLICA
    }
}

fn trigger_name(t: &pg_sys::Trigger) -> String {
    // SAFETY: tgname is a NUL-terminated string of the relcache entry.
    unsafe { CStr::from_ptr(t.tgname) }
        .to_string_lossy()
        .into_owned()
}

impl Catalog {
    /// Looks the tables up and decides their write paths (see the module comment).
    fn resolve() -> WalletResult<Catalog> {
        let accounts_oid = relation(c"accounts")?;
        let events_oid = relation(c"events")?;
        let accounts = Open::table(accounts_oid);
        let events = Open::table(events_oid);
        for table in [&accounts, &events] {
            table.refuse_rules()?;
        }
        let a = |i: usize| accounts.column(ACCOUNT_COLUMNS[i].0, ACCOUNT_COLUMNS[i].1);
        let account_columns = AccountColumns {
            id: a(0)?,
            currency: a(1)?,
            status: a(2)?,
            allow_overdraft: a(3)?,
            is_system: a(4)?,
            balance: a(5)?,
            pending_debit: a(6)?,
            pending_credit: a(7)?,
            last_seq: a(8)?,
        };
        let e = |i: usize| events.column(EVENT_COLUMNS[i].0, EVENT_COLUMNS[i].1);
        let event_columns = EventColumns {
            seq: e(0)?,
            event_type: e(1)?,
            occurred_at: e(2)?,
            tx_id: e(3)?,
            debit_account_id: e(4)?,
            credit_account_id: e(5)?,
            amount: e(6)?,
            currency: e(7)?,
            debit_balance: e(8)?,
            credit_balance: e(9)?,
            idempotency_key: e(10)?,
            data: e(11)?,
            pending_delta: e(12)?,
            debit_prev: e(13)?,
            credit_prev: e(14)?,
        };
        // SAFETY: rd_pkindex of an open relation (InvalidOid when it has no primary key).
        let accounts_pkey = unsafe { pg_sys::RelationGetPrimaryKeyIndex(accounts.0) };
        let id_attnum = account_columns.id as i16 + 1;
        if accounts_pkey == pg_sys::InvalidOid || Open::index_key(accounts_pkey) != [id_attnum] {
            return Err(shape_error(
                "wallet.accounts has no primary key on (id): the wallet finds and locks accounts by it".into(),
            ));
        }
        let idempotency_index = find_idempotency_index(&events, event_columns.idempotency_key)?;
        // SAFETY: a plain read of a backend global.
        let role = unsafe { pg_sys::SessionReplicationRole };
        let set: Vec<i16> = ACCOUNT_COLUMNS_SET
            .iter()
            .map(|name| accounts.column(name, pg_sys::INT8OID).map(|i| i as i16 + 1))
            .collect::<WalletResult<_>>()?;
        let accounts_path = accounts_update_path(&accounts, &set, role);
        let events_path = events_insert_path(&events, role);
        Ok(Catalog {
            accounts: accounts_oid,
            accounts_pkey,
            events: events_oid,
            events_seq: relation(c"events_seq_seq")?,
            idempotency_index,
            holds: relation(c"holds")?,
            global_transactions: relation(c"global_transactions")?,
            branches: relation(c"branches")?,
            account_columns,
            event_columns,
            accounts_path,
            events_path,
            replication_role: role,
        })
    }
}

/// The unique index of wallet.events on exactly (idempotency_key), immediate and valid.
fn find_idempotency_index(events: &Open, key_column: usize) -> WalletResult<Oid> {
    let attnum = key_column as i16 + 1;
    // SAFETY: RelationGetIndexList returns a palloc'd list of index oids of an open relation.
    let list = unsafe { pg_sys::RelationGetIndexList(events.0) };
    let count = if list.is_null() {
        0
    } else {
        unsafe { (*list).length }
    };
    for i in 0..count as usize {
        // SAFETY: i is below the list's length; its cells hold oids.
        let oid = unsafe { (*(*list).elements.add(i)).oid_value };
        let index = Open::table(oid);
        // SAFETY: rd_index of an open index.
        let (unique, immediate, valid) = unsafe {
            let form = (*index.0).rd_index;
            (
                (*form).indisunique,
                (*form).indimmediate,
                (*form).indisvalid,
            )
        };
        if unique && immediate && valid && Open::index_key(oid) == [attnum] {
            return Ok(oid);
        }
    }
    Err(shape_error(
        "wallet.events has no unique index on (idempotency_key): without it a key could take effect twice".into(),
    ))
}

/// The write path of a money movement's UPDATE of wallet.accounts (SET list `set`).
fn accounts_update_path(accounts: &Open, set: &[i16], role: c_int) -> WritePath {
    if let Some(why) = accounts.statement_work() {
        return WritePath::Executor(format!("wallet.accounts: {why}"));
    }
    for t in accounts.triggers() {
        let on_update = t.tgtype as u32 & pg_sys::TRIGGER_TYPE_UPDATE != 0;
        if !on_update || !fires(t, role) {
            continue;
        }
        // An UPDATE OF trigger whose columns the statement does not set does not fire.
        if t.tgnattr > 0 {
            // SAFETY: tgattr holds tgnattr attribute numbers.
            let columns = unsafe { std::slice::from_raw_parts(t.tgattr, t.tgnattr as usize) };
            if columns.iter().all(|c| !set.contains(c)) {
                continue;
            }
        }
        // The referenced side of a foreign key: Postgres queues nothing when the referenced key
        // does not change (RI_FKey_pk_upd_check_required), and a money movement never changes it
        // when its columns are outside the SET list.
        // SAFETY: a look-up of the trigger function's kind.
        let ri = unsafe { pg_sys::RI_FKey_trigger_type(t.tgfoid) };
        if ri == pg_sys::RI_TRIGGER_PK as c_int && t.tgconstrindid != pg_sys::InvalidOid {
            let key = Open::index_key(t.tgconstrindid);
            if key.iter().all(|c| !set.contains(c)) {
                continue;
            }
        }
        return WritePath::Executor(format!(
            "wallet.accounts: trigger {} fires on UPDATE",
            trigger_name(t)
        ));
    }
    WritePath::Direct
}

/// The write path of a money event's INSERT into wallet.events.
fn events_insert_path(events: &Open, role: c_int) -> WritePath {
    if let Some(why) = events.statement_work() {
        return WritePath::Executor(format!("wallet.events: {why}"));
    }
    for t in events.triggers() {
        if t.tgtype as u32 & pg_sys::TRIGGER_TYPE_INSERT != 0 && fires(t, role) {
            return WritePath::Executor(format!(
                "wallet.events: trigger {} fires on INSERT",
                trigger_name(t)
            ));
        }
    }
    for a in events.attributes().iter().filter(|a| !a.attisdropped) {
        // SAFETY: attname is a NUL-terminated NameData.
        let name = unsafe { CStr::from_ptr(a.attname.data.as_ptr()) };
        let written = EVENT_COLUMNS.iter().find(|c| c.0 == name);
        let column = name.to_string_lossy();
        match written {
            // A column the INSERT does not list gets its default; a NOT NULL one without a
            // default fails the INSERT.
            None if a.atthasdef || a.attnotnull || a.attgenerated != 0 => {
                return WritePath::Executor(format!(
                    "wallet.events.{column} has a default or NOT NULL, and money events do not write it"
                ));
            }
            Some((_, _, may_be_null)) if *may_be_null && a.attnotnull => {
                return WritePath::Executor(format!(
                    "wallet.events.{column} is NOT NULL, and some money events write NULL there"
                ));
            }
            _ => {}
        }
    }
    WritePath::Direct
}

/// wallet.global_transactions (its oid `oid`, from [`current`], which registers the invalidation
/// callback) as the direct insert of `ledger_row.rs` finds it, resolved again after any relcache
/// invalidation of the table or its primary key. The caller holds a lock on the table.
pub fn ledger(oid: Oid) -> LedgerTable {
    // SAFETY: a plain read of a backend global.
    let role = unsafe { pg_sys::SessionReplicationRole };
    let known = LEDGER.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(r, o, _)| *r == role && *o == oid)
            .map(|(_, _, l)| l.clone())
    });
    if let Some(l) = known {
        return l;
    }
    let table = ledger_table(&Open::table(oid), role);
    LEDGER.with(|c| *c.borrow_mut() = Some((role, oid, table.clone())));
    table
}

/// wallet.global_transactions as the direct insert finds it: the columns it writes, its primary
/// key, and whether the insert may skip the executor (nothing an INSERT ... ON CONFLICT (gtid) DO
/// NOTHING of those columns would do is then skipped).
fn ledger_table(ledger: &Open, role: c_int) -> LedgerTable {
    // SAFETY: rd_pkindex of an open relation (InvalidOid when it has no primary key).
    let pkey = unsafe { pg_sys::RelationGetPrimaryKeyIndex(ledger.0) };
    let mut columns = [0usize; 15];
    for (i, (name, type_oid)) in LEDGER_COLUMNS.iter().enumerate() {
        match ledger.column(name, *type_oid) {
            Ok(position) => columns[i] = position,
            Err(e) => {
                return LedgerTable {
                    pkey,
                    columns,
                    path: WritePath::Executor(e.to_string()),
                }
            }
        }
    }
    let path = ledger_insert_path(ledger, pkey, columns[0], role);
    LedgerTable {
        pkey,
        columns,
        path,
    }
}

fn ledger_insert_path(ledger: &Open, pkey: Oid, gtid: usize, role: c_int) -> WritePath {
    let executor = |why: String| WritePath::Executor(format!("wallet.global_transactions: {why}"));
    // SAFETY: rd_rules of an open relation.
    if unsafe { !(*ledger.0).rd_rules.is_null() } {
        return executor("it has rules".into());
    }
    if let Some(why) = ledger.statement_work() {
        return executor(why);
    }
    if pkey == pg_sys::InvalidOid || Open::index_key(pkey) != [gtid as i16 + 1] {
        return executor("no primary key on (gtid), the arbiter of a gtid recorded twice".into());
    }
    // SAFETY: rd_index of an open index.
    let immediate =
        unsafe { (*Open::table(pkey).0).rd_index.as_ref() }.is_some_and(|i| i.indimmediate);
    if !immediate {
        return executor("its primary key is deferrable".into());
    }
    for t in ledger.triggers() {
        if t.tgtype as u32 & pg_sys::TRIGGER_TYPE_INSERT != 0 && fires(t, role) {
            return executor(format!("trigger {} fires on INSERT", trigger_name(t)));
        }
    }
    for a in ledger.attributes().iter().filter(|a| !a.attisdropped) {
        // SAFETY: attname is a NUL-terminated NameData.
        let name = unsafe { CStr::from_ptr(a.attname.data.as_ptr()) };
        let written = LEDGER_COLUMNS.iter().any(|c| c.0 == name);
        if !written && (a.atthasdef || a.attnotnull || a.attgenerated != 0) {
            return executor(format!(
                "column {} has a default or NOT NULL, and the ledger's insert does not write it",
                name.to_string_lossy()
            ));
        }
    }
    WritePath::Direct
}

/// The tables of one command, locked, with the snapshot the command works on. Made by
/// [`Tables::open`]; dropping it pops the snapshot (on an ERROR the abort does).
pub struct Tables {
    pub catalog: Catalog,
    snapshot_pushed: bool,
}

/// Which tables a command writes besides wallet.accounts and wallet.events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Also {
    Nothing,
    Holds,
}

impl Tables {
    /// Refuses what Postgres would refuse for a write (read-only transaction, parallel mode, a
    /// standby: 25006), locks wallet.accounts, wallet.events (and wallet.holds) with
    /// RowExclusiveLock, then takes the snapshot the command works on: a fresh one under READ
    /// COMMITTED, taken after the locks were granted, so that a command that waited for a
    /// concurrent ALTER works on what that ALTER left. Above READ COMMITTED the transaction's
    /// snapshot may predate such an ALTER, whose rewritten rows it cannot see: that is a
    /// serialization failure (40001), not a missing account.
    pub fn open(command: &CStr, also: Also) -> WalletResult<Tables> {
        // SAFETY: plain backend calls; each may raise an ERROR, which pgrx turns into a panic
        // that aborts the call as a whole.
        unsafe {
            pg_sys::PreventCommandIfReadOnly(command.as_ptr());
            pg_sys::PreventCommandIfParallelMode(command.as_ptr());
            pg_sys::PreventCommandDuringRecovery(command.as_ptr());
        }
        let catalog = lock_tables(also)?;
        // SAFETY: what SPI does before each statement of a volatile function.
        unsafe {
            pg_sys::CommandCounterIncrement();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::UpdateActiveSnapshotCommandId();
        }
        let tables = Tables {
            catalog,
            snapshot_pushed: true,
        };
        // SAFETY: reads the isolation level of this backend's transaction.
        if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as c_int {
            let c = &tables.catalog;
            let mut locked = vec![(c.accounts, "accounts"), (c.events, "events")];
            if also == Also::Holds {
                locked.push((c.holds, "holds"));
            }
            for (oid, name) in locked {
                if altered_after_snapshot(oid) {
                    return Err(WalletError::ConcurrentAlter {
                        table: name.to_string(),
                    });
                }
            }
        }
        Ok(tables)
    }
}

/// Locks the tables in a fixed order (accounts, events, holds), and returns the catalog as it
/// is once the locks are held: taking a lock processes the invalidations a concurrent ALTER
/// left, so a catalog resolved before the lock may be stale.
fn lock_tables(also: Also) -> WalletResult<Catalog> {
    let mode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    loop {
        let catalog = current()?;
        let mut oids = vec![catalog.accounts, catalog.events];
        if also == Also::Holds {
            oids.push(catalog.holds);
        }
        for &oid in &oids {
            // SAFETY: locks a relation by oid (a dropped one is locked harmlessly and then not
            // found again below).
            unsafe { pg_sys::LockRelationOid(oid, mode) };
        }
        let now = current()?;
        if now.accounts == catalog.accounts
            && now.events == catalog.events
            && now.holds == catalog.holds
        {
            return Ok(now);
        }
        // The tables were dropped and created again (DROP and CREATE EXTENSION) meanwhile.
    }
}

/// Whether relation `oid` was changed (its pg_class row written) by a transaction this
/// transaction's snapshot cannot see.
fn altered_after_snapshot(oid: Oid) -> bool {
    // SAFETY: a syscache look-up, released below; the snapshot is the active one.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as c_int,
            Datum::from(oid),
        );
        if tuple.is_null() {
            return false;
        }
        let header = (*tuple).t_data;
        let frozen =
            (*header).t_infomask as u32 & pg_sys::HEAP_XMIN_FROZEN == pg_sys::HEAP_XMIN_FROZEN;
        let xmin = (*header).t_choice.t_heap.t_xmin;
        pg_sys::ReleaseSysCache(tuple);
        if frozen
            || !pg_sys::TransactionIdIsNormal(xmin)
            || pg_sys::TransactionIdIsCurrentTransactionId(xmin)
        {
            return false;
        }
        pg_sys::XidInMVCCSnapshot(xmin, pg_sys::GetActiveSnapshot())
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        if self.snapshot_pushed && !std::thread::panicking() {
            // SAFETY: pushed in `open`.
            unsafe { pg_sys::PopActiveSnapshot() };
        }
    }
}
