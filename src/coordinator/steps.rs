//! The steps of the engine: local transactions run as the extension's owner, with the
//! statements pinned and a snapshot of their own, committed one after the other by the
//! procedure's non-atomic SPI connection; and the subtransactions inside them.

use pgrx::pg_sys::{self, Oid};
use pgrx::PgTryBuilder;
use wallet_core::error::WalletError;

use super::nodes;
use crate::error::WalletResult;
use crate::spi::Connection;

// ---- the steps: local transactions, as the owner ------------------------------------------------

/// search_path pinned to `pg_catalog, pg_temp`, and a bounded lock wait, until dropped: every
/// statement the engine runs, in a step or between steps, resolves names and operators the same
/// way whatever the caller's (or the database's) search_path.
pub(super) struct Pinned {
    nest_level: i32,
}

impl Pinned {
    fn enter() -> Pinned {
        // SAFETY: GUC settings at a new nest level, popped by Drop (or by the transaction's
        // abort, which pops every level it started).
        unsafe {
            let nest_level = pg_sys::NewGUCNestLevel();
            set_guc(c"search_path", c"pg_catalog, pg_temp");
            // A step waits for a row lock at most wallet.node_timeout (unless the caller's
            // lock_timeout is shorter): a lock may be held by a prepared transaction whose
            // coordinator waits, on its own node, for a lock a prepared transaction of ours
            // holds there. No deadlock detector sees such a cycle across nodes; the timeout
            // breaks it (the step's ERROR leaves the global transaction to recovery).
            let node_timeout = crate::settings::NODE_TIMEOUT.get().max(1);
            if pg_sys::LockTimeout == 0 || pg_sys::LockTimeout > node_timeout {
                let value = std::ffi::CString::new(format!("{node_timeout}ms")).expect("digits");
                set_guc(c"lock_timeout", &value);
            }
            Pinned { nest_level }
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: pops the level `enter` pushed, on the normal path only (an ERROR's abort pops
        // it).
        if !std::thread::panicking() {
            unsafe { pg_sys::AtEOXact_GUC(true, self.nest_level) };
        }
    }
}

/// Sets a user-settable GUC for the current nest level.
///
/// # Safety
/// Inside a transaction, at a nest level the caller pops.
pub(super) unsafe fn set_guc(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    // SAFETY: as the caller promises.
    unsafe { set_guc_as(name, value, pg_sys::GucAction::GUC_ACTION_SAVE) };
}

/// Sets a user-settable GUC with `action` (SAVE: for the current nest level; LOCAL: until the
/// transaction ends).
///
/// # Safety
/// Inside a transaction; for SAVE, at a nest level the caller pops.
unsafe fn set_guc_as(
    name: &std::ffi::CStr,
    value: &std::ffi::CStr,
    action: pg_sys::GucAction::Type,
) {
    // SAFETY: as the caller promises; both strings are NUL-terminated.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            action,
            true,
            0,
            false,
        );
    }
}

/// Makes the current transaction's commit durable, as `synchronous_commit = on` would, when the
/// session's setting is weaker (`off`, `local`, `remote_write`): until the transaction ends, like
/// SET LOCAL. For every commit another node acts on: a step whose calls follow it (the decision
/// they carry, a saga's step; not the step before a TC/C try or a 2PC prepare, which undo
/// themselves if it is lost: `protocol::undone_if_forgotten`), and a participant's answer. An asynchronous commit is lost when
/// its server crashes within wal_writer_delay or so; if another node had acted on it meanwhile,
/// the nodes would disagree (a hold confirmed there, cancelled here by a recovery that found no
/// decision; money credited there whose debit here was never recorded). The session's own
/// setting still holds for what no other node hears of: a transfer within this node, the
/// step that finishes a global transaction (recovery finishes it again from the decision).
pub(crate) fn commit_durably() {
    // SAFETY: a read of a GUC variable, and a GUC set inside a transaction (undone at its end).
    unsafe {
        if pg_sys::synchronous_commit
            < pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_REMOTE_FLUSH as i32
        {
            set_guc_as(
                c"synchronous_commit",
                c"on",
                pg_sys::GucAction::GUC_ACTION_LOCAL,
            );
        }
    }
}

/// The owner's identity, with the statements pinned (see [`Pinned`]), for the scope of one step.
pub(super) struct AsOwner {
    user: Oid,
    context: i32,
    _pinned: Pinned,
}

impl AsOwner {
    fn enter(owner: Oid) -> AsOwner {
        // SAFETY: plain reads and writes of this backend's user id, restored by Drop (or by the
        // transaction's abort, which restores it to the value the transaction started with: the
        // caller's).
        unsafe {
            let (mut user, mut context) = (Oid::INVALID, 0);
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
            AsOwner {
                user,
                context,
                _pinned: Pinned::enter(),
            }
        }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `f` between steps (no step's transaction work, no owner yet): with a snapshot and the
/// statements pinned.
pub(crate) fn between_steps<R>(f: impl FnOnce() -> R) -> R {
    with_snapshot(|| {
        let _pinned = Pinned::enter();
        f()
    })
}

/// Runs `f` with an active snapshot: its own when none is set. A CALL from a client would get
/// one from its portal after each commit, but the background worker's CALL has no portal, and
/// SPI refuses to run SQL without either (SPI still takes a fresh snapshot for each statement
/// at READ COMMITTED).
pub(super) fn with_snapshot<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: between statements; what is pushed here is popped before returning (an ERROR's
    // abort pops it otherwise).
    let pushed = unsafe {
        let push = !pg_sys::ActiveSnapshotSet();
        if push {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        push
    };
    let result = f();
    // SAFETY: pops what was pushed above.
    unsafe {
        if pushed && pg_sys::ActiveSnapshotSet() {
            pg_sys::PopActiveSnapshot();
        }
    }
    result
}

/// Runs `f` in the current transaction as the owner, then commits it (or rolls it back when `f`
/// refused), and starts the next one at READ COMMITTED.
pub(super) fn step<R>(
    owner: Oid,
    f: impl FnOnce(&Connection) -> WalletResult<R>,
) -> WalletResult<R> {
    // A step that an ERROR ended left its changes unwritten: they are not this step's (those
    // the step before left to this one are).
    super::ledger::begin_step();
    let result = with_snapshot(|| {
        let _owner = AsOwner::enter(owner);
        let conn = Connection::open();
        let result = f(&conn);
        // The ledger's changes of the step, written together before it commits (or dropped).
        if result.is_ok() {
            super::ledger::flush(&conn);
        } else {
            super::ledger::discard();
        }
        result
    });
    // SAFETY: the procedure's SPI connection is non-atomic (see `Procedure`); SPI starts the
    // next transaction at once, before any snapshot, so its isolation level can be set.
    unsafe {
        if result.is_ok() {
            pg_sys::SPI_commit();
        } else {
            pg_sys::SPI_rollback();
        }
        pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
    }
    result
}

/// Runs `f` in an internal subtransaction: a Postgres ERROR inside it (a lock wait that timed
/// out, a deadlock, a cancelled statement) rolls back the subtransaction alone and comes back as
/// that error's SQLSTATE and message, so that recovery can leave one global transaction for a
/// later round and go on with the others.
pub(super) fn guarded<R>(f: impl FnOnce() -> WalletResult<R>) -> WalletResult<R> {
    subtransaction(f, |_| true)
}

/// Runs `f` in an internal subtransaction, kept when `keep` says so of its result and rolled
/// back otherwise; a Postgres ERROR inside rolls it back and comes back as that error (a Rust
/// panic, a bug, stops the whole call).
pub(super) fn subtransaction<R>(
    f: impl FnOnce() -> WalletResult<R>,
    keep: impl FnOnce(&WalletResult<R>) -> bool,
) -> WalletResult<R> {
    // SAFETY: a subtransaction of the step's transaction, ended on every path below; memory
    // context and resource owner restored as PL/pgSQL's exception blocks do.
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    // SAFETY (both): ends the subtransaction begun above, then restores what it changed.
    let release = move || unsafe {
        pg_sys::ReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    let rollback = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    let f = std::panic::AssertUnwindSafe(f);
    let keep = std::panic::AssertUnwindSafe(keep);
    PgTryBuilder::new(move || {
        let keep = keep; // the whole wrapper moves in (a closure would capture its field alone)
        let result = f();
        if (keep.0)(&result) {
            release();
        } else {
            rollback();
        }
        result
    })
    .catch_others(|e| {
        let report = match &e {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r,
            pgrx::pg_sys::panic::CaughtError::RustPanic { .. } => e.rethrow(),
        };
        let error = WalletError::Remote {
            sqlstate: crate::error::unpack_sqlstate(report.sql_error_code() as i32),
            message: report.message().to_string(),
        };
        rollback();
        Err(error)
    })
    .execute()
}

/// A non-atomic SPI connection of a procedure (CALL outside a transaction block), which may
/// commit; finished when dropped.
pub struct Procedure {
    /// The extension's owner, whom every step runs as.
    pub owner: Oid,
}

impl Procedure {
    /// Opens it, refusing (2D000) a call from inside a transaction block or a function, and
    /// ends the caller's transaction (which has done nothing yet) so that every step is a
    /// transaction of the engine's own.
    pub fn open(fcinfo: pg_sys::FunctionCallInfo, name: &str) -> WalletResult<Procedure> {
        // SAFETY: the context of a procedure's call is a CallContext.
        let atomic = unsafe {
            let context = (*fcinfo).context;
            context.is_null()
                || (*context).type_ != pg_sys::NodeTag::T_CallContext
                || (*(context as *mut pg_sys::CallContext)).atomic
        };
        if atomic {
            return Err(WalletError::InvalidTransactionTermination {
                procedure: name.to_string(),
            });
        }
        Ok(Procedure::connect())
    }

    /// The background worker's, in a transaction the worker started: the worker calls the
    /// engine directly, since a CALL through SPI has no portal, which Postgres needs to return
    /// a procedure's record after the procedure committed.
    pub fn in_worker() -> Procedure {
        Procedure::connect()
    }

    fn connect() -> Procedure {
        // SAFETY: connects SPI in non-atomic mode (a procedure CALLed at top level, or the
        // worker between its own transactions), so that the steps may commit.
        unsafe {
            let status = pg_sys::SPI_connect_ext(pg_sys::SPI_OPT_NONATOMIC as i32);
            assert!(status >= 0, "SPI_connect_ext failed: {status}");
            pg_sys::SPI_commit();
            pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
        }
        Procedure {
            owner: nodes::extension_owner(),
        }
    }
}

impl Drop for Procedure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: connected in `open`.
            unsafe { pg_sys::SPI_finish() };
        }
    }
}
