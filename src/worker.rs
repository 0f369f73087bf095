//! The background worker: one process per database in wallet.worker_databases, started when the
//! library is in shared_preload_libraries. Each round (every wallet.worker_interval, while
//! wallet.worker_enabled): release expired holds, drive unfinished global transactions of this
//! database's coordinator to their end (recovery), seal the log and refresh the read side
//! (wallet.worker_read_side), and take a snapshot every wallet.snapshot_interval.
//!
//! Every piece of work is one SQL call in its own transaction (recovery: the engine's own loop
//! of transactions, called directly); the worker only schedules. The same calls are available
//! to cron: `CALL wallet.recover()`, `SELECT wallet.expire_holds()`, `wallet.seal()`, ... An
//! ERROR in one call is logged and that transaction rolled back; the round goes on with the
//! next call.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::coordinator::engine;
use crate::coordinator::steps::Procedure;
use crate::settings;

/// Registers one worker per configured database (called from _PG_init while preloading).
pub fn register() {
    let databases = settings::WORKER_DATABASES
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    for db in databases
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        BackgroundWorkerBuilder::new(&format!("wallet_ext worker {db}"))
            .set_type("wallet_ext worker")
            .set_library("wallet_ext")
            .set_function("wallet_worker_main")
            .set_extra(db)
            .enable_spi_access()
            .set_restart_time(Some(Duration::from_secs(5)))
            .load();
    }
}

/// Runs `sql` in a transaction of its own; an ERROR is logged and rolled back.
fn in_transaction<T: FromDatum + IntoDatum>(sql: &str, arg: Option<&str>) -> Option<T> {
    // SAFETY: a background worker connected to a database, between transactions.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(|| {
        let result = match arg {
            Some(a) => Spi::get_one_with_args::<T>(sql, &[a.into()]),
            None => Spi::get_one::<T>(sql),
        };
        result.map_err(|e| e.to_string())
    })
    .catch_others(|e| Err(format!("{e:?}")))
    .execute();
    // SAFETY: ends the transaction started above, committing or aborting it.
    unsafe {
        match &outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    match outcome {
        Ok(value) => value,
        Err(message) => {
            pgrx::warning!("wallet_ext worker: {sql}: {message}");
            None
        }
    }
}

/// Recovery, as `CALL wallet.recover()` does it (the same claim, step and release loop), with
/// the engine called directly in transactions of the worker's own; an ERROR is logged and the
/// step under way rolled back.
fn recover() {
    // SAFETY: a background worker connected to a database, between transactions; the engine's
    // steps end and begin the transactions in between.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
    }
    let outcome = PgTryBuilder::new(|| {
        let procedure = Procedure::in_worker();
        let result = engine::recover(procedure.owner, 1000);
        drop(procedure);
        result.map(|_| ()).map_err(|e| e.to_string())
    })
    .catch_others(|e| Err(format!("{e:?}")))
    .execute();
    // SAFETY: ends whichever transaction is current, committing or aborting it.
    unsafe {
        match &outcome {
            Ok(()) => pg_sys::CommitTransactionCommand(),
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    if let Err(message) = outcome {
        pgrx::warning!("wallet_ext worker: recovery: {message}");
    }
}

/// One round of work in this database.
fn round() {
    let installed: Option<bool> = in_transaction(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'wallet_ext')",
        None,
    );
    if installed != Some(true) {
        return;
    }
    while in_transaction::<i64>("SELECT wallet.expire_holds(1000)", None).unwrap_or(0) == 1000 {}
    recover();
    if settings::WORKER_READ_SIDE.get() {
        in_transaction::<i64>("SELECT wallet.seal()", None);
        in_transaction::<i64>("SELECT wallet.refresh_read_side()", None);
    }
    let every = settings::SNAPSHOT_INTERVAL.get();
    if every > 0 {
        let due: Option<bool> = in_transaction(
            "SELECT coalesce(max(taken_at), '-infinity') <= now() - $1::interval
               FROM wallet.snapshots",
            Some(&format!("{every} seconds")),
        );
        if due == Some(true) {
            in_transaction::<i64>("SELECT wallet.take_snapshot()", None);
        }
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn wallet_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // The worker runs as a superuser: nothing in a schema a role controls may ever be resolved by
    // its statements, whatever ALTER DATABASE ... SET search_path or ALTER ROLE said. This
    // setting wins over both (a session setting).
    // SAFETY: sets a session GUC in this process, outside any transaction of its own use.
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    pgrx::log!("wallet_ext worker started in database {database}");
    loop {
        let pause = Duration::from_millis(settings::WORKER_INTERVAL.get().max(10) as u64);
        if !BackgroundWorker::wait_latch(Some(pause)) {
            break; // SIGTERM or postmaster death
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: outside any transaction, as Postgres's own processes do it.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if settings::WORKER_ENABLED.get() {
            round();
        }
    }
    pgrx::log!("wallet_ext worker in database {database} stopped");
}
