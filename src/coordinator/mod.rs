//! The coordinator: global transactions across nodes by TC/C, 2PC or Saga (sql/coordinator.sql).
//!
//! * [`engine`]: carries them out, one durable step after another, shared by every protocol and by
//!   recovery (the rules are `wallet_core::protocol`); its steps are [`steps`], its ledger
//!   [`ledger`], its calls to participants `calls`;
//! * [`participant`]: the participant side, in batch form, for remote coordinators and this one;
//! * [`nodes`]: the registry of nodes (foreign servers and user mappings) and the connections;
//! * [`libpq`]: the connections themselves, held inside the library.
//!
//! The entry points below are C procedures without a SET clause (a procedure that commits cannot
//! carry one); every step they take runs as the extension's owner with search_path pinned.

mod calls;
pub mod engine;
pub mod ledger;
pub mod libpq;
pub mod nodes;
pub mod participant;
pub mod steps;

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;
use wallet_core::error::WalletError;
use wallet_core::protocol::{self, Leg, Protocol};
use wallet_core::{hold, limits, transfer};

use crate::args::{BOOL, INT4, INT8, INT8_ARRAY, INTERVAL, OID, TEXT, TEXT_ARRAY};
use crate::entry::entry_point;
use crate::error::WalletResult;
use crate::settings;
use engine::{Outcome, Request};
use steps::Procedure;

fn required<T>(value: Option<T>, argument: &'static str) -> WalletResult<T> {
    value.ok_or_else(|| WalletError::invalid_argument(argument, "must not be NULL"))
}

fn utf8<'a>(bytes: &'a [u8], argument: &'static str) -> WalletResult<&'a str> {
    std::str::from_utf8(bytes)
        .map_err(|_| WalletError::invalid_argument(argument, "must be valid UTF-8"))
}

/// The checks of a global transaction's arguments, before anything is recorded, in the
/// documented order of precedence: gtid, legs (amounts, accounts, node names), timeout,
/// protocol.
fn request(
    gtid: Option<&[u8]>,
    legs: WalletResult<Vec<Leg>>,
    timeout: Option<i128>,
    protocol: Option<&[u8]>,
) -> WalletResult<Request> {
    let gtid = gtid.ok_or_else(|| WalletError::invalid_argument("gtid", "must not be NULL"))?;
    hold::check_hold_key(Some(gtid), "gtid")?;
    protocol::check_gtid_travels(gtid)?;
    let legs = legs?;
    protocol::plan(&legs)?;
    // A timeout above the maximum is refused up front (a hold could not be placed with it).
    let timeout_micros = hold::hold_timeout_micros(
        timeout,
        settings::HOLD_TIMEOUT.get(),
        settings::HOLD_TIMEOUT_MAX.get(),
    )?;
    let protocol = utf8(protocol.unwrap_or(b"tcc"), "protocol")?;
    let protocol = Protocol::parse(protocol).ok_or_else(|| {
        WalletError::invalid_argument(
            "protocol",
            format!("must be tcc, 2pc or saga, got {protocol}"),
        )
    })?;
    Ok(Request {
        gtid: gtid.to_vec(),
        protocol,
        legs,
        timeout_micros,
    })
}

/// The procedure's answer: `confirmed` (with a WARNING when a participant has yet to hear it),
/// `stuck` (with a WARNING), or the reason of the cancel as an ERROR.
fn report(gtid: &[u8], outcome: Outcome) -> WalletResult<Option<Datum>> {
    let gtid = wallet_core::text::Text(gtid.to_vec());
    match outcome {
        Outcome::Confirmed => Ok("confirmed".into_datum()),
        Outcome::ConfirmedPending => {
            pgrx::warning!("global transaction {gtid} is confirmed; a participant is unreachable and recovery will complete it");
            Ok("confirmed".into_datum())
        }
        Outcome::Stuck { sqlstate, message } => {
            pgrx::warning!("global transaction {gtid} needs an operator ({sqlstate}): {message}");
            Ok("stuck".into_datum())
        }
        Outcome::Pending => {
            pgrx::warning!("global transaction {gtid} is still under way: a node does not answer, and recovery will drive it on");
            Ok("pending".into_datum())
        }
        Outcome::Busy => Ok(None),
        Outcome::DrivenElsewhere => {
            pgrx::warning!("global transaction {gtid} is being driven by another session; its outcome will be in wallet.global_transactions");
            Ok("pending".into_datum())
        }
        Outcome::InBatch => {
            pgrx::warning!("global transaction {gtid} is one of a batch that another session is driving; its outcome will be in wallet.global_transactions");
            Ok("pending".into_datum())
        }
        Outcome::Cancelled {
            sqlstate,
            message,
            finished,
        } => Err(WalletError::Remote {
            sqlstate,
            message: format!(
                "global transaction {gtid} was cancelled: {message}{}",
                if finished {
                    ""
                } else {
                    " (a participant is unreachable; recovery will finish the cancel)"
                }
            ),
        }),
    }
}

// CALL wallet.transfer_across(gtid, from_node, from_account_id, to_node, to_account_id, amount,
//                             timeout, INOUT outcome, protocol)
entry_point!(
    wallet_transfer_across,
    pg_finfo_wallet_transfer_across,
    &[TEXT, TEXT, INT8, TEXT, INT8, INT8, INTERVAL, TEXT, TEXT],
    |args| {
        let gtid = args.text(0);
        let legs = (|| {
            two_legs(
                args.text(1),
                args.i64(2),
                args.text(3),
                args.i64(4),
                args.i64(5),
            )
        })();
        let request = request(gtid, legs, args.interval_micros(6), args.text(8))?;
        run_one(args, &request, "transfer_across")
    }
);

// CALL wallet.transfer_global(gtid, nodes, account_ids, amounts, protocol, timeout, INOUT outcome)
entry_point!(
    wallet_transfer_global,
    pg_finfo_wallet_transfer_global,
    &[TEXT, TEXT_ARRAY, INT8_ARRAY, INT8_ARRAY, TEXT, INTERVAL, TEXT],
    |args| {
        let legs = (|| {
            let nodes = required(args.text_array(1, "nodes")?, "nodes")?;
            let accounts = required(args.i64_array(2, "account_ids")?, "account_ids")?;
            let amounts = required(args.i64_array(3, "amounts")?, "amounts")?;
            if nodes.len() != accounts.len() || nodes.len() != amounts.len() {
                return Err(WalletError::invalid_argument(
                    "legs",
                    "nodes, account_ids and amounts must have the same length",
                ));
            }
            if nodes.len() > limits::GLOBAL_LEGS_MAX {
                return Err(WalletError::invalid_argument(
                    "legs",
                    format!(
                        "a global transaction has 2 to {} legs, got {}",
                        limits::GLOBAL_LEGS_MAX,
                        nodes.len()
                    ),
                ));
            }
            (0..nodes.len())
                .map(|i| {
                    Ok(Leg {
                        node: utf8(required(nodes[i], "nodes")?, "nodes")?.to_string(),
                        account_id: required(accounts[i], "account_ids")?,
                        amount: required(amounts[i], "amounts")?,
                    })
                })
                .collect()
        })();
        let request = request(args.text(0), legs, args.interval_micros(5), args.text(4))?;
        run_one(args, &request, "transfer_global")
    }
);

// CALL wallet.transfer_across_batch(gtids, from_nodes, from_account_ids, to_nodes,
//     to_account_ids, amounts, protocol, timeout, INOUT outcomes, INOUT sqlstates, INOUT messages)
entry_point!(
    wallet_transfer_across_batch,
    pg_finfo_wallet_transfer_across_batch,
    &[
        TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY, TEXT_ARRAY, INT8_ARRAY, INT8_ARRAY, TEXT, INTERVAL,
        TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY
    ],
    |args| {
        let gtids = required(args.text_array(0, "gtids")?, "gtids")?;
        let from_nodes = required(args.text_array(1, "from_nodes")?, "from_nodes")?;
        let from_accounts = required(args.i64_array(2, "from_account_ids")?, "from_account_ids")?;
        let to_nodes = required(args.text_array(3, "to_nodes")?, "to_nodes")?;
        let to_accounts = required(args.i64_array(4, "to_account_ids")?, "to_account_ids")?;
        let amounts = required(args.i64_array(5, "amounts")?, "amounts")?;
        let n = gtids.len();
        if [
            from_nodes.len(),
            from_accounts.len(),
            to_nodes.len(),
            to_accounts.len(),
            amounts.len(),
        ]
        .iter()
        .any(|&m| m != n)
        {
            return Err(WalletError::invalid_argument(
                "items",
                "gtids, from_nodes, from_account_ids, to_nodes, to_account_ids and amounts must have the same length",
            ));
        }
        if n > limits::BATCH_TRANSFERS_MAX {
            return Err(WalletError::invalid_argument(
                "items",
                format!(
                    "a batch has at most {} items, got {n}",
                    limits::BATCH_TRANSFERS_MAX
                ),
            ));
        }
        // What every item shares is checked once: the call as a whole is refused for it.
        let shared = request(
            Some(b"batch"),
            two_legs(Some(b"local"), Some(2), Some(b"local"), Some(3), Some(1)),
            args.interval_micros(7),
            args.text(6),
        )?;
        if shared.protocol == Protocol::TwoPhase {
            return Err(WalletError::invalid_argument(
                "protocol",
                "a batch runs tcc or saga: under 2PC every item would hold its node's system account from its PREPARE to its commit, so the items of a batch would wait for each other",
            ));
        }
        let items: Vec<WalletResult<Request>> = (0..n)
            .map(|i| {
                let legs = (|| {
                    two_legs(
                        from_nodes[i],
                        from_accounts[i],
                        to_nodes[i],
                        to_accounts[i],
                        amounts[i],
                    )
                })();
                request(gtids[i], legs, args.interval_micros(7), args.text(6))
            })
            .collect();
        let procedure = Procedure::open(args.fcinfo(), "transfer_across_batch")?;
        let outcomes = engine::run_batch(
            procedure.owner,
            items,
            shared.protocol,
            shared.timeout_micros,
        )?;
        drop(procedure);
        let column = |f: &dyn Fn(&engine::ItemOutcome) -> Option<String>| {
            let values: Vec<Option<String>> = outcomes.iter().map(f).collect();
            ledger::texts(values.iter().map(|v| v.as_deref().map(str::as_bytes)))
        };
        let values = [
            Some(column(&|o| Some(o.outcome.to_string()))),
            Some(column(&|o| o.sqlstate.clone())),
            Some(column(&|o| o.message.clone())),
        ];
        Ok(Some(out_record(args.fcinfo(), &values)))
    }
);

/// The two legs of a transfer from one account to another, checked as transfer_across checks
/// them.
fn two_legs(
    from_node: Option<&[u8]>,
    from_account: Option<i64>,
    to_node: Option<&[u8]>,
    to_account: Option<i64>,
    amount: Option<i64>,
) -> WalletResult<Vec<Leg>> {
    let amount = transfer::check_amount(amount, from_account)?;
    let from_account = required(from_account, "from_account_id")?;
    let to_account = required(to_account, "to_account_id")?;
    let from_node = utf8(required(from_node, "from_node")?, "from_node")?.to_string();
    let to_node = utf8(required(to_node, "to_node")?, "to_node")?.to_string();
    if from_node == to_node && from_account == to_account {
        return Err(WalletError::SameAccount {
            account_id: from_account,
            amount,
        });
    }
    Ok(vec![
        Leg {
            node: from_node,
            account_id: from_account,
            amount: -amount,
        },
        Leg {
            node: to_node,
            account_id: to_account,
            amount,
        },
    ])
}

/// Runs one global transaction from procedure `name` and answers its outcome.
fn run_one(
    args: &crate::args::Args<'_>,
    request: &Request,
    name: &str,
) -> WalletResult<Option<Datum>> {
    let procedure = Procedure::open(args.fcinfo(), name)?;
    let outcome = engine::run(procedure.owner, request)?;
    drop(procedure);
    Ok(Some(out_record(
        args.fcinfo(),
        &[report(&request.gtid, outcome)?],
    )))
}

/// The record of a procedure's INOUT parameters (a procedure with any returns a record, even for
/// one), from their datums (None for NULL).
fn out_record(fcinfo: pg_sys::FunctionCallInfo, values: &[Option<Datum>]) -> Datum {
    // SAFETY: the call's result type is the record of the procedure's INOUT parameters, whose
    // descriptor Postgres builds from the catalog; the datums have their types.
    unsafe {
        let mut desc: pg_sys::TupleDesc = std::ptr::null_mut();
        pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut desc);
        let desc = pg_sys::BlessTupleDesc(desc);
        let mut datums: Vec<Datum> = values
            .iter()
            .map(|v| v.unwrap_or(Datum::from(0usize)))
            .collect();
        let mut nulls: Vec<bool> = values.iter().map(Option::is_none).collect();
        let tuple = pg_sys::heap_form_tuple(desc, datums.as_mut_ptr(), nulls.as_mut_ptr());
        Datum::from(pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data))
    }
}

// CALL wallet.recover(INOUT finished, INOUT unfinished)
entry_point!(
    wallet_recover,
    pg_finfo_wallet_recover,
    &[INT4, INT4],
    |args| {
        let procedure = Procedure::open(args.fcinfo(), "recover")?;
        let (finished, unfinished) = engine::recover(procedure.owner, 1000)?;
        drop(procedure);
        let values = [
            Some(Datum::from(finished as i32)),
            Some(Datum::from(unfinished as i32)),
        ];
        Ok(Some(out_record(args.fcinfo(), &values)))
    }
);

// wallet._conninfo_options(conninfo): the keywords a libpq connection string sets, and whether
// each is a credential (for the user mapping) or an address (for the foreign server).
entry_point!(
    wallet_conninfo_options,
    pg_finfo_wallet_conninfo_options,
    &[TEXT],
    |args| {
        let conninfo = required(args.text(0), "conninfo")?;
        let options = nodes::parse_conninfo(conninfo).map_err(|e| {
            WalletError::invalid_argument("conninfo", format!("not a libpq connection string: {e}"))
        })?;
        for (keyword, _) in &options {
            if nodes::RESERVED_KEYWORDS.contains(&keyword.as_str()) {
                return Err(WalletError::invalid_argument(
                    "conninfo",
                    format!("{keyword} is set by the wallet itself"),
                ));
            }
        }
        let fcinfo = args.fcinfo();
        // SAFETY: declared RETURNS TABLE (keyword text, value text, secret boolean).
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            for (keyword, value) in &options {
                let secret = nodes::SECRET_KEYWORDS.contains(&keyword.as_str());
                let mut values = [
                    keyword.as_str().into_datum().expect("text"),
                    value.as_str().into_datum().expect("text"),
                    Datum::from(secret),
                ];
                let mut nulls = [false; 3];
                pg_sys::tuplestore_putvalues(
                    (*rsinfo).setResult,
                    (*rsinfo).setDesc,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                );
            }
        }
        Ok(Some(Datum::from(0usize)))
    }
);

// wallet._node_options_valid(options text[], catalog oid): the validator of the foreign-data
// wrapper wallet_nodes. A server takes libpq's address keywords, a user mapping its credentials;
// the wallet's own keywords are refused in both.
entry_point!(
    wallet_node_options_valid,
    pg_finfo_wallet_node_options_valid,
    &[TEXT_ARRAY, OID],
    |args| {
        let options = args.text_array(0, "options")?.unwrap_or_default();
        let catalog = args
            .datum(1)
            .map(|d| pg_sys::Oid::from(d.value() as u32))
            .unwrap_or(pg_sys::InvalidOid);
        let known = nodes::known_keywords();
        for option in options.into_iter().flatten() {
            let option = String::from_utf8_lossy(option);
            let keyword = option.split('=').next().unwrap_or_default();
            let secret = nodes::SECRET_KEYWORDS.contains(&keyword);
            let problem = if !known.iter().any(|k| k == keyword) {
                Some("is not a libpq connection keyword")
            } else if nodes::RESERVED_KEYWORDS.contains(&keyword) {
                Some("is set by the wallet itself")
            } else if catalog == pg_sys::UserMappingRelationId && !secret {
                Some("belongs on the foreign server, not in a user mapping")
            } else if catalog == pg_sys::ForeignServerRelationId && secret {
                Some("is a credential: it belongs in the user mapping")
            } else if catalog == pg_sys::ForeignDataWrapperRelationId {
                Some("is not an option of the wrapper")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(WalletError::invalid_argument(
                    "options",
                    format!("{keyword} {problem}"),
                ));
            }
        }
        Ok(Some(Datum::from(0usize)))
    }
);

// The symbols of the 0.2.0-0.5.0 coordinator's rules, which its SQL called: kept so that the
// update scripts of those versions, which create the functions on the way to this one, find them
// (Postgres checks a C function's symbol when it is created). Called, they refuse: a database
// still on such a schema must finish its update.
fn superseded(function: &str) -> WalletResult<Option<Datum>> {
    Err(WalletError::TableShape(format!(
        "{function} belongs to wallet_ext 0.2.0-0.5.0, whose coordinator the installed library replaced: run ALTER EXTENSION wallet_ext UPDATE"
    )))
}

entry_point!(
    wallet_tcc_next_step,
    pg_finfo_wallet_tcc_next_step,
    &[TEXT, TEXT_ARRAY, BOOL],
    |_args| { superseded("wallet._tcc_next_step") }
);

entry_point!(
    wallet_tcc_transient,
    pg_finfo_wallet_tcc_transient,
    &[TEXT],
    |_args| { superseded("wallet._tcc_transient") }
);
