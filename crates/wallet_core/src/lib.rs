//! wallet_core: the rules of wallet_ext, with no Postgres in them. `cargo test -p wallet_core`
//! checks them in seconds.
//!
//! * [`limits`], [`codes`] and [`locks`]: the registries: every limit, every SQLSTATE with its
//!   name, every kind of lock. SQL and README repeat some of them; tests here catch any drift.
//! * [`error`]: every rejection, naming what was wrong; [`text`]: caller text shown safely.
//! * [`event`]: the kinds of event that move money.
//! * [`account`]: an account's state and the state machine of its status.
//! * [`transfer`]: judging one transfer, in the documented order of precedence.
//! * [`batch`]: a batch of transfers judged in memory, with linked chains.
//! * [`hold`]: the state machine of a hold (one Try-Confirm/Cancel branch on one database).
//! * [`protocol`]: the state machines of a global transaction across databases.
//! * [`settlement`]: which account settles a cross-node posting or hold.

pub mod account;
pub mod batch;
pub mod codes;
pub mod error;
pub mod event;
pub mod hold;
pub mod limits;
pub mod locks;
pub mod protocol;
pub mod settlement;
pub mod text;
pub mod transfer;

#[cfg(test)]
mod registry_tests;
