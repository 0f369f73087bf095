//! wallet_ext: a digital-wallet engine inside Postgres. The rules live in the pgrx-free crate
//! `wallet_core`; this crate adapts Postgres to them, in layers (ARCHITECTURE.md draws them):
//!
//! * entry points, thin: [`api`] (accounts, transfers, batches, holds), declared with
//!   [`entry`]'s macro, reading their arguments through [`args`];
//! * commands: [`commands`] (accounts, transfers, batches) and [`holds`] (the Try-Confirm/Cancel
//!   participant), which lock, ask `wallet_core` to judge, and write;
//! * storage: [`catalog`] (the tables' shapes, the write path each allows, the order of locks and
//!   snapshot), [`accounts`] (the one account locker and writer), [`events`] (the one money-event
//!   writer), [`locks`] (the wallet's own key locks), [`spi`] (kept SQL statements, whose text is
//!   in `sql/queries/`);
//! * the coordinator: [`coordinator`] (global transactions by TC/C, 2PC or Saga: the engine,
//!   the participant side, the nodes and their connections);
//! * [`error`] (where a rejection becomes an ERROR), [`settings`] (GUCs), [`guard`] (the DROP
//!   EXTENSION guard), [`worker`] (the background worker).
//!
//! The schema and the SQL functions live in `sql/`, loaded in the order below.

use pgrx::prelude::*;

pub mod accounts;
pub mod api;
pub mod args;
pub mod catalog;
pub mod commands;
pub mod coordinator;
pub mod entry;
pub mod error;
pub mod events;
pub mod guard;
pub mod holds;
pub mod ledger_row;
pub mod locks;
pub mod settings;
pub mod spi;
pub mod worker;

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    error::keep_backtraces_in_the_log();
    // SAFETY: a flag Postgres sets while it loads shared_preload_libraries.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    settings::define(preloading);
    if preloading {
        worker::register();
    }
}

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/api.sql", name = "api", requires = ["schema"]);
extension_sql_file!("../sql/chain.sql", name = "chain", requires = ["api"]);
extension_sql_file!("../sql/history.sql", name = "history", requires = ["chain"]);
extension_sql_file!(
    "../sql/readside.sql",
    name = "readside",
    requires = ["chain"]
);
extension_sql_file!("../sql/holds.sql", name = "holds", requires = ["readside"]);
extension_sql_file!(
    "../sql/coordinator.sql",
    name = "coordinator",
    requires = ["holds"]
);
extension_sql_file!("../sql/grants.sql", name = "grants", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

#[cfg(test)]
mod kept_statement_tests {
    use crate::spi::Kept;

    #[test]
    fn every_kept_statement_has_its_own_plan_slot_and_its_parameters() {
        let all: Vec<&Kept> = [
            crate::commands::KEPT,
            crate::holds::KEPT,
            crate::accounts::KEPT,
            crate::events::KEPT,
            crate::guard::KEPT,
            crate::coordinator::engine::KEPT,
            crate::coordinator::ledger::KEPT,
            crate::coordinator::participant::KEPT,
            crate::coordinator::nodes::KEPT,
        ]
        .concat();
        let mut slots: Vec<usize> = all.iter().map(|k| k.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), all.len(), "two kept statements share a slot");
        assert!(slots.iter().all(|&s| s < crate::spi::PLANS_MAX));
        for kept in all {
            let sql = (kept.sql)();
            // Parameters used by the statement itself, not mentioned in its comments.
            let code: String = sql
                .lines()
                .map(|line| line.split("--").next().unwrap_or(""))
                .collect();
            let highest = (1..=crate::spi::ARGS_MAX)
                .rev()
                .find(|n| code.contains(&format!("${n}")));
            assert_eq!(highest.unwrap_or(0), kept.args.len(), "parameters of {sql}");
        }
    }
}
