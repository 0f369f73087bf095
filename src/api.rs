//! The SQL API's C entry points, declared in `sql/api.sql`. Each one reads its arguments, checks
//! what needs no stored state (domain), calls storage, and returns one datum.
//!
//! Why not `#[pg_extern]`: a rejection must carry its own SQLSTATE (class WA), and pgrx can only
//! raise the codes Postgres defines. So each entry point runs its body under pgrx's guard (which
//! turns Rust panics and Postgres errors into ordinary Postgres errors, as `#[pg_extern]` does)
//! and, once the guard has returned and every Rust value is dropped, raises a rejection itself.

use pgrx::pg_sys::{self, Datum, FunctionCallInfo};
use pgrx::{FromDatum, IntoDatum};

use crate::domain::{self, StatusCommand};
use crate::error::{raise, PendingError, WalletError, WalletResult};
use crate::spi::Connection;
use crate::storage::{self, TransferCall};
use crate::{settings, tcc};

/// Declares `$name` (and its `pg_finfo_$name` record) as a version-1 C function whose body
/// returns `WalletResult<Option<Datum>>` (None = SQL NULL).
macro_rules! entry_point {
    ($name:ident, $finfo:ident, |$fcinfo:ident| $body:block) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $name($fcinfo: FunctionCallInfo) -> Datum {
            // SAFETY: called by the function manager with a valid fcinfo; this frame owns
            // nothing that needs dropping when `raise` jumps out of it.
            unsafe {
                let outcome: Result<Option<Datum>, PendingError> =
                    pgrx::pgrx_extern_c_guard(|| {
                        // A closure, so that `?` in the body returns here, not from the entry point.
                        #[allow(clippy::redundant_closure_call)]
                        let result: WalletResult<Option<Datum>> = (|| $body)();
                        result.map_err(PendingError::from)
                    });
                match outcome {
                    Ok(Some(datum)) => datum,
                    Ok(None) => pgrx::fcinfo::pg_return_null($fcinfo),
                    Err(pending) => raise(pending),
                }
            }
        }
    };
}

// ---- argument access -------------------------------------------------------------------------

fn arg_datum(fcinfo: FunctionCallInfo, n: usize) -> Option<Datum> {
    // SAFETY: every entry point is declared in api.sql with at least n + 1 arguments.
    unsafe {
        if pgrx::fcinfo::pg_arg_is_null(fcinfo, n) {
            None
        } else {
            Some(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n))
        }
    }
}

fn arg<T: FromDatum>(fcinfo: FunctionCallInfo, n: usize) -> Option<T> {
    // SAFETY: the argument types in api.sql match the Rust types read here.
    unsafe { pgrx::fcinfo::pg_getarg::<T>(fcinfo, n) }
}

fn required<T>(value: Option<T>, argument: &'static str) -> WalletResult<T> {
    value.ok_or(WalletError::InvalidArgument {
        argument,
        reason: "must not be NULL".into(),
    })
}

/// A jsonb metadata argument: an object of at most METADATA_SIZE_MAX bytes. Returns the
/// detoasted datum, ready to pass on to SPI.
fn metadata_arg(datum: Option<Datum>, argument: &'static str) -> WalletResult<Option<Datum>> {
    const JB_FOBJECT: u32 = 0x2000_0000;
    let Some(datum) = datum else { return Ok(None) };
    // SAFETY: the datum is a jsonb (declared so in api.sql); detoasting yields a varlena whose
    // data starts with the root container's 4-byte header.
    unsafe {
        let detoasted = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let size = pgrx::varlena::varsize_any_exhdr(detoasted);
        if size > domain::METADATA_SIZE_MAX {
            return Err(WalletError::InvalidArgument {
                argument,
                reason: format!(
                    "must be at most {} bytes of jsonb, got {size}",
                    domain::METADATA_SIZE_MAX
                ),
            });
        }
        let data = pgrx::varlena::vardata_any(detoasted) as *const u8;
        let is_object = size >= 4
            && u32::from_ne_bytes(std::ptr::read_unaligned(data as *const [u8; 4])) & JB_FOBJECT
                != 0;
        if !is_object {
            return Err(WalletError::InvalidArgument {
                argument,
                reason: "must be a jsonb object".into(),
            });
        }
        Ok(Some(Datum::from(detoasted)))
    }
}

/// The idempotency key argument: its text (for hashing and messages) and its datum (for SPI).
fn key_arg(fcinfo: FunctionCallInfo, n: usize) -> Option<(&'static str, Datum)> {
    let datum = arg_datum(fcinfo, n)?;
    let text: &'static str = arg(fcinfo, n).expect("a non-NULL text argument");
    Some((text, datum))
}

// ---- currencies and accounts -----------------------------------------------------------------

entry_point!(
    wallet_create_currency,
    pg_finfo_wallet_create_currency,
    |fcinfo| {
        let code: &str = required(arg(fcinfo, 0), "code")?;
        let scale: i32 = required(arg(fcinfo, 1), "scale")?;
        domain::check_currency(code, scale)?;
        let conn = Connection::open();
        Ok(storage::create_currency(&conn, code, scale)?.into_datum())
    }
);

entry_point!(
    wallet_open_account,
    pg_finfo_wallet_open_account,
    |fcinfo| {
        let currency: &str = required(arg(fcinfo, 0), "currency")?;
        let owner: Option<&str> = arg(fcinfo, 1);
        if let Some(owner) = owner {
            if owner.len() > domain::OWNER_LENGTH_MAX {
                return Err(WalletError::InvalidArgument {
                    argument: "owner",
                    reason: format!(
                        "must be at most {} bytes, got {}",
                        domain::OWNER_LENGTH_MAX,
                        owner.len()
                    ),
                });
            }
        }
        let metadata = metadata_arg(arg_datum(fcinfo, 2), "metadata")?;
        let metadata = required(metadata, "metadata")?;
        let allow_overdraft: bool = required(arg(fcinfo, 3), "allow_overdraft")?;
        let conn = Connection::open();
        let id = storage::open_account(
            &conn,
            currency,
            arg_datum(fcinfo, 1),
            metadata,
            allow_overdraft,
        )?;
        Ok(id.into_datum())
    }
);

fn status_command(fcinfo: FunctionCallInfo, command: StatusCommand) -> WalletResult<Option<Datum>> {
    let account_id: i64 = required(arg(fcinfo, 0), "account_id")?;
    let conn = Connection::open();
    Ok(storage::change_status(&conn, account_id, command)?.into_datum())
}

entry_point!(
    wallet_freeze_account,
    pg_finfo_wallet_freeze_account,
    |fcinfo| { status_command(fcinfo, StatusCommand::Freeze) }
);

entry_point!(
    wallet_unfreeze_account,
    pg_finfo_wallet_unfreeze_account,
    |fcinfo| { status_command(fcinfo, StatusCommand::Unfreeze) }
);

entry_point!(
    wallet_close_account,
    pg_finfo_wallet_close_account,
    |fcinfo| { status_command(fcinfo, StatusCommand::Close) }
);

entry_point!(wallet_balance, pg_finfo_wallet_balance, |fcinfo| {
    let account_id: i64 = required(arg(fcinfo, 0), "account_id")?;
    let conn = Connection::open();
    Ok(storage::account(&conn, account_id)?.balance.into_datum())
});

// ---- money movement --------------------------------------------------------------------------

/// Shared tail of transfer, deposit and withdraw: validate, then post.
fn post_transfer(
    conn: &Connection,
    debit_account_id: Option<i64>,
    credit_account_id: Option<i64>,
    amount: Option<i64>,
    idempotency_key: Option<(&str, Datum)>,
    metadata: Option<Datum>,
) -> WalletResult<Option<Datum>> {
    let request = domain::check_transfer_arguments(
        debit_account_id,
        credit_account_id,
        amount,
        idempotency_key.map(|(text, _)| text),
    )?;
    let metadata = metadata_arg(metadata, "metadata")?;
    let call = TransferCall {
        request,
        idempotency_key,
        metadata,
    };
    Ok(storage::transfer(conn, &call)?.into_datum())
}

entry_point!(wallet_transfer, pg_finfo_wallet_transfer, |fcinfo| {
    let conn = Connection::open();
    post_transfer(
        &conn,
        arg(fcinfo, 0),
        arg(fcinfo, 1),
        arg(fcinfo, 2),
        key_arg(fcinfo, 3),
        arg_datum(fcinfo, 4),
    )
});

/// Deposit (`into_account` = true) or withdrawal against the currency's system account.
fn settle(fcinfo: FunctionCallInfo, into_account: bool) -> WalletResult<Option<Datum>> {
    let account_id: i64 = required(arg(fcinfo, 0), "account_id")?;
    let amount: Option<i64> = arg(fcinfo, 1);
    domain::check_amount(amount, Some(account_id))?;
    let conn = Connection::open();
    let system = storage::system_account_of(&conn, account_id)?;
    let (debit, credit) = if into_account {
        (system, account_id)
    } else {
        (account_id, system)
    };
    post_transfer(
        &conn,
        Some(debit),
        Some(credit),
        amount,
        key_arg(fcinfo, 2),
        arg_datum(fcinfo, 3),
    )
}

entry_point!(wallet_deposit, pg_finfo_wallet_deposit, |fcinfo| {
    settle(fcinfo, true)
});

entry_point!(wallet_withdraw, pg_finfo_wallet_withdraw, |fcinfo| {
    settle(fcinfo, false)
});

// ---- batches -----------------------------------------------------------------------------------

/// A bigint[] argument as a vector (None for a NULL array); NULL elements stay None.
fn i64_array_arg(fcinfo: FunctionCallInfo, n: usize) -> Option<Vec<Option<i64>>> {
    let array: pgrx::Array<i64> = arg(fcinfo, n)?;
    Some(array.iter().collect())
}

/// Reads the arguments of a batch (both entry points take the same five) and posts it.
fn post_batch(fcinfo: FunctionCallInfo) -> WalletResult<Vec<crate::batch::BatchResult>> {
    let debits = required(i64_array_arg(fcinfo, 0), "debit_account_ids")?;
    let credits = required(i64_array_arg(fcinfo, 1), "credit_account_ids")?;
    let amounts = required(i64_array_arg(fcinfo, 2), "amounts")?;
    let keys: Option<pgrx::Array<&str>> = arg(fcinfo, 3);
    let keys: Option<Vec<Option<&str>>> = keys.as_ref().map(|a| a.iter().collect());
    let linked: Option<pgrx::Array<bool>> = arg(fcinfo, 4);
    let linked: Option<Vec<Option<bool>>> = linked.map(|a| a.iter().collect());
    let n = debits.len();
    let lengths_match = credits.len() == n
        && amounts.len() == n
        && keys.as_ref().is_none_or(|k| k.len() == n)
        && linked.as_ref().is_none_or(|l| l.len() == n);
    if !lengths_match {
        return Err(WalletError::InvalidArgument {
            argument: "transfers",
            reason: "the arrays must all have the same length".into(),
        });
    }
    if n > crate::batch::BATCH_TRANSFERS_MAX {
        return Err(WalletError::InvalidArgument {
            argument: "transfers",
            reason: format!(
                "a batch carries at most {} transfers, got {n}",
                crate::batch::BATCH_TRANSFERS_MAX
            ),
        });
    }
    let inputs: Vec<crate::batch::BatchInput> = (0..n)
        .map(|i| crate::batch::BatchInput {
            debit_account_id: debits[i],
            credit_account_id: credits[i],
            amount: amounts[i],
            idempotency_key: keys.as_ref().and_then(|k| k[i]),
            linked: linked.as_ref().and_then(|l| l[i]).unwrap_or(false),
        })
        .collect();
    // The results are Rust values, used after SPI_finish (when `conn` is dropped): anything
    // palloc'd for the caller must be made then, not while connected (SPI frees its memory).
    let conn = Connection::open();
    storage::transfer_batch(&conn, &inputs)
}

/// Returns a batch's results as the rows of a materialized set-returning function:
/// (index integer, result text, transfer_id bigint), one per transfer, in input order.
fn put_batch_rows(fcinfo: FunctionCallInfo, results: &[crate::batch::BatchResult]) {
    // SAFETY: called by an entry point declared in api.sql as RETURNS TABLE (index integer,
    // result text, transfer_id bigint); InitMaterializedSRF refuses a caller that cannot take a
    // tuplestore, and builds the store and its descriptor in the query's memory.
    unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
        let (store, desc) = ((*rsinfo).setResult, (*rsinfo).setDesc);
        // One text datum per result name, made when first needed.
        let mut names: Vec<(&'static str, Datum)> = Vec::new();
        for (i, result) in results.iter().enumerate() {
            let name = result.code().1;
            let text = match names.iter().find(|(n, _)| *n == name) {
                Some(&(_, datum)) => datum,
                None => {
                    let datum = name.into_datum().expect("text");
                    names.push((name, datum));
                    datum
                }
            };
            let id = result.transfer_id();
            let mut values = [
                Datum::from(i as i32 + 1),
                text,
                Datum::from(id.unwrap_or(0)),
            ];
            let mut nulls = [false, false, id.is_none()];
            pg_sys::tuplestore_putvalues(store, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        }
    }
}

// wallet.transfer_batch (0.5.0 on): one row per transfer, put straight into the tuplestore of a
// materialized set-returning function.
entry_point!(
    wallet_transfer_batch_rows,
    pg_finfo_wallet_transfer_batch_rows,
    |fcinfo| {
        let results = post_batch(fcinfo)?;
        put_batch_rows(fcinfo, &results);
        Ok(Some(Datum::from(0usize)))
    }
);

// wallet._transfer_batch, the array behind the PL/pgSQL wallet.transfer_batch of 0.2.0 to 0.4.0:
// kept so that this library serves a database not yet updated (ALTER EXTENSION ... UPDATE).
entry_point!(
    wallet_transfer_batch,
    pg_finfo_wallet_transfer_batch,
    |fcinfo| {
        let results = post_batch(fcinfo)?;
        // Two numbers per transfer: result code and transfer id (NULL when none).
        let encoded: Vec<Option<i64>> = results
            .iter()
            .flat_map(|r| [Some(r.code().0), r.transfer_id()])
            .collect();
        Ok(encoded.into_datum())
    }
);

// ---- holds: the Try-Confirm/Cancel participant -----------------------------------------------

fn hold_key_arg(
    fcinfo: FunctionCallInfo,
    n: usize,
    argument: &'static str,
) -> WalletResult<&'static str> {
    let value: Option<&'static str> = arg(fcinfo, n);
    tcc::check_hold_key(value, argument)?;
    Ok(value.expect("checked"))
}

entry_point!(wallet_try_hold, pg_finfo_wallet_try_hold, |fcinfo| {
    let gtid = hold_key_arg(fcinfo, 0, "gtid")?;
    let branch = hold_key_arg(fcinfo, 1, "branch")?;
    let debit_account_id: Option<i64> = arg(fcinfo, 2);
    let credit_account_id: Option<i64> = arg(fcinfo, 3);
    let amount = domain::check_amount(arg(fcinfo, 4), debit_account_id.or(credit_account_id))?;
    let timeout: Option<pgrx::datum::Interval> = arg(fcinfo, 5);
    let timeout_micros = tcc::hold_timeout_micros(
        timeout.map(|t| t.as_micros()),
        settings::HOLD_TIMEOUT.get(),
        settings::HOLD_TIMEOUT_MAX.get(),
    )?;
    let currency: Option<&str> = arg(fcinfo, 6);
    let conn = Connection::open();
    let call = storage::TryCall {
        gtid,
        branch,
        debit_account_id,
        credit_account_id,
        amount,
        timeout_micros,
        currency,
    };
    Ok(storage::try_hold(&conn, &call)?.into_datum())
});

entry_point!(
    wallet_confirm_hold,
    pg_finfo_wallet_confirm_hold,
    |fcinfo| {
        let gtid = hold_key_arg(fcinfo, 0, "gtid")?;
        let branch = hold_key_arg(fcinfo, 1, "branch")?;
        let amount: Option<i64> = arg(fcinfo, 2);
        let conn = Connection::open();
        Ok(storage::confirm_hold(&conn, gtid, branch, amount)?.into_datum())
    }
);

entry_point!(wallet_cancel_hold, pg_finfo_wallet_cancel_hold, |fcinfo| {
    let gtid = hold_key_arg(fcinfo, 0, "gtid")?;
    let branch = hold_key_arg(fcinfo, 1, "branch")?;
    let conn = Connection::open();
    Ok(storage::cancel_hold(&conn, gtid, branch)?.into_datum())
});

entry_point!(
    wallet_expire_holds,
    pg_finfo_wallet_expire_holds,
    |fcinfo| {
        let max_holds: i32 = required(arg(fcinfo, 0), "max_holds")?;
        domain::check_page_rows(max_holds)?;
        let conn = Connection::open();
        Ok(storage::expire_holds(&conn, max_holds)?.into_datum())
    }
);

// ---- the coordinator's rules (sql/tcc.sql carries them out) ----------------------------------

entry_point!(
    wallet_tcc_next_step,
    pg_finfo_wallet_tcc_next_step,
    |fcinfo| {
        let phase: &str = required(arg(fcinfo, 0), "phase")?;
        let phase = tcc::Phase::parse(phase).ok_or(WalletError::InvalidArgument {
            argument: "phase",
            reason: format!("must be try, confirm or cancel, got {phase}"),
        })?;
        let statuses: pgrx::Array<&str> = required(arg(fcinfo, 1), "branch_statuses")?;
        let mut branches = Vec::new();
        for status in statuses.iter() {
            let status = status.unwrap_or("NULL");
            branches.push(tcc::BranchStatus::parse(status).ok_or(
                WalletError::InvalidArgument {
                    argument: "branch_statuses",
                    reason: format!("unknown branch status {status}"),
                },
            )?);
        }
        let past_deadline: bool = required(arg(fcinfo, 2), "past_deadline")?;
        Ok(tcc::next_step(phase, &branches, past_deadline)
            .encode()
            .into_datum())
    }
);

entry_point!(
    wallet_tcc_transient,
    pg_finfo_wallet_tcc_transient,
    |fcinfo| {
        let sqlstate: &str = required(arg(fcinfo, 0), "sqlstate")?;
        Ok(tcc::error_is_transient(sqlstate).into_datum())
    }
);

// ---- the sealer's postings frontier (sql/chain.sql, "Postings") ------------------------------

entry_point!(wallet_next_xid, pg_finfo_wallet_next_xid, |_fcinfo| {
    // Postgres's shared counter of transaction ids, read under its lock (the entry point's
    // body runs in an unsafe block).
    let next = pg_sys::ReadNextFullTransactionId();
    Ok(Some(Datum::from(next.value)))
});
