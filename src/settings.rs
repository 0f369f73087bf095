//! The extension's settings (GUCs). Defined whenever the library is loaded; the worker's settings
//! take effect only when it is in shared_preload_libraries (see `worker.rs`).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Default timeout of a hold, seconds.
pub static HOLD_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(900);
/// Longest timeout a hold may ask for, seconds.
pub static HOLD_TIMEOUT_MAX: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// Whether the background worker does its rounds.
pub static WORKER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Pause between the worker's rounds, milliseconds.
pub static WORKER_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Comma-separated databases the worker serves (one worker process each).
pub static WORKER_DATABASES: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"postgres"));
/// Whether each round also seals the log and refreshes the read side.
pub static WORKER_READ_SIDE: GucSetting<bool> = GucSetting::<bool>::new(true);
/// How long the coordinator waits for a node: to connect, and for each answer, milliseconds.
pub static NODE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Fault injection for tests: `point:action` (see coordinator::engine::fault). Superuser only.
pub static FAULT: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);
/// Whether DROP EXTENSION wallet_ext (or DROP SCHEMA wallet) may drop a ledger that holds events.
pub static ALLOW_DROP: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Seconds between snapshots taken by the worker; 0 = none.
pub static SNAPSHOT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// Defines the settings. `preloading`: the library is being loaded by shared_preload_libraries
/// (only then may a postmaster-level setting such as wallet.worker_databases be defined).
pub fn define(preloading: bool) {
    GucRegistry::define_int_guc(
        c"wallet.hold_timeout",
        c"Timeout of a hold when try_hold is given none.",
        c"After it the hold can no longer be confirmed and expiry releases its funds.",
        &HOLD_TIMEOUT,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"wallet.hold_timeout_max",
        c"Longest timeout a hold may ask for.",
        c"try_hold refuses a longer timeout (WA016); the default timeout is capped by it.",
        &HOLD_TIMEOUT_MAX,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"wallet.node_timeout",
        c"How long the coordinator waits for a node to connect, and for each of its answers.",
        c"Past it the node counts as unreachable for that call (a lost answer: the protocol repeats or cancels).",
        &NODE_TIMEOUT,
        100,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_string_guc(
        c"wallet.fault",
        c"For tests: stop the coordinator at a named point (point:error or point:kill).",
        c"Points: after_record, after_remote_try, after_decide, after_remote_confirm, after_remote_cancel; or lose_answers[:try|confirm|cancel]. Empty: none.",
        &FAULT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"wallet.allow_drop",
        c"Whether DROP EXTENSION wallet_ext may drop a ledger that holds events.",
        c"Off: the drop (and DROP SCHEMA wallet, DROP OWNED BY its owner) is refused (WA029).",
        &ALLOW_DROP,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"wallet.worker_enabled",
        c"Whether the wallet background worker runs recovery, expiry and upkeep.",
        c"Takes effect at the next round (reload).",
        &WORKER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"wallet.worker_interval",
        c"Pause between two rounds of the wallet background worker.",
        c"Each round: expire holds, recover global transactions, seal and refresh the read side.",
        &WORKER_INTERVAL,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    if preloading {
        GucRegistry::define_string_guc(
            c"wallet.worker_databases",
            c"Databases served by the wallet background worker (comma-separated).",
            c"One worker process per database; databases without wallet_ext are skipped.",
            &WORKER_DATABASES,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_bool_guc(
        c"wallet.worker_read_side",
        c"Whether each worker round seals the event log and refreshes the read side.",
        c"",
        &WORKER_READ_SIDE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"wallet.snapshot_interval",
        c"Time between balance snapshots taken by the worker; 0 turns them off.",
        c"",
        &SNAPSHOT_INTERVAL,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}
