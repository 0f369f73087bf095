//! wallet_ext: a digital-wallet engine inside Postgres.
//!
//! A pipeline of small modules: `api` (the C entry points of the SQL API, thin) -> `domain`
//! (rules, pure Rust) and `storage` (every SQL statement, through `spi`), with `error` holding
//! every rejection and its SQLSTATE. The schema and the SQL declarations live in `sql/`.

use pgrx::prelude::*;

pub mod api;
pub mod batch;
pub mod domain;
pub mod error;
pub mod heap;
pub mod settings;
pub mod spi;
pub mod storage;
pub mod tcc;
pub mod worker;

::pgrx::pg_module_magic!();

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
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
extension_sql_file!("../sql/tcc.sql", name = "tcc", requires = ["holds"]);
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
