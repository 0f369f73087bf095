//! The SQL API's C entry points, declared in `sql/api.sql` and `sql/holds.sql`. Each one reads
//! its arguments (`args.rs`), checks what needs no stored state (`wallet_core`), calls a command
//! (`commands.rs`, `holds.rs`) and returns one datum.

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;
use wallet_core::account::StatusCommand;
use wallet_core::batch::{BatchInput, BatchResult};
use wallet_core::limits::{BATCH_TRANSFERS_MAX, METADATA_SIZE_MAX, OWNER_LENGTH_MAX};
use wallet_core::{hold, transfer};

use crate::args::{
    Args, BOOL, BOOL_ARRAY, BYTEA, INT4, INT8, INT8_ARRAY, INTERVAL, JSONB, TEXT, TEXT_ARRAY,
};
use crate::commands::{self, TransferCall};
use crate::entry::entry_point;
use crate::error::{WalletError, WalletResult};
use crate::spi::Connection;
use crate::{holds, settings};

fn required<T>(value: Option<T>, argument: &'static str) -> WalletResult<T> {
    value.ok_or_else(|| WalletError::invalid_argument(argument, "must not be NULL"))
}

/// A jsonb metadata argument: an object of at most METADATA_SIZE_MAX bytes. Returns the
/// detoasted datum, ready to pass on.
fn metadata_arg(datum: Option<Datum>, argument: &'static str) -> WalletResult<Option<Datum>> {
    const JB_FOBJECT: u32 = 0x2000_0000;
    let Some(datum) = datum else { return Ok(None) };
    // SAFETY: the datum is a jsonb (the declaration is checked by Args); detoasting yields a
    // varlena whose data starts with the root container's 4-byte header.
    unsafe {
        let detoasted = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let size = pgrx::varlena::varsize_any_exhdr(detoasted);
        if size > METADATA_SIZE_MAX {
            return Err(WalletError::invalid_argument(
                argument,
                format!("must be at most {METADATA_SIZE_MAX} bytes of jsonb, got {size}"),
            ));
        }
        let data = pgrx::varlena::vardata_any(detoasted) as *const u8;
        let is_object = size >= 4
            && u32::from_ne_bytes(std::ptr::read_unaligned(data as *const [u8; 4])) & JB_FOBJECT
                != 0;
        if !is_object {
            return Err(WalletError::invalid_argument(
                argument,
                "must be a jsonb object",
            ));
        }
        Ok(Some(Datum::from(detoasted)))
    }
}

/// The idempotency key argument: its bytes (for locking and messages) and its datum.
fn key_arg<'fc>(args: &Args<'fc>, n: usize) -> Option<(&'fc [u8], Datum)> {
    Some((args.text(n)?, args.datum(n)?))
}

// ---- currencies and accounts -----------------------------------------------------------------

entry_point!(
    wallet_create_currency,
    pg_finfo_wallet_create_currency,
    &[TEXT, INT4],
    |args| {
        let code = required(args.text(0), "code")?;
        let scale = required(args.i32(1), "scale")?;
        transfer::check_currency(code, scale)?;
        let conn = Connection::open();
        Ok(commands::create_currency(&conn, code, scale)?.into_datum())
    }
);

entry_point!(
    wallet_spread_settlement,
    pg_finfo_wallet_spread_settlement,
    &[TEXT, INT4],
    |args| {
        let code = required(args.text(0), "currency")?;
        let conn = Connection::open();
        let all = commands::spread_settlement(&conn, code, args.i32(1))?;
        // The array is built in the caller's memory, after SPI's is gone.
        drop(conn);
        Ok(all.into_datum())
    }
);

entry_point!(
    wallet_open_account,
    pg_finfo_wallet_open_account,
    &[TEXT, TEXT, JSONB, BOOL],
    |args| {
        let currency = required(args.text(0), "currency")?;
        if let Some(owner) = args.text(1) {
            if owner.len() > OWNER_LENGTH_MAX {
                return Err(WalletError::invalid_argument(
                    "owner",
                    format!(
                        "must be at most {OWNER_LENGTH_MAX} bytes, got {}",
                        owner.len()
                    ),
                ));
            }
        }
        let metadata = required(metadata_arg(args.datum(2), "metadata")?, "metadata")?;
        let allow_overdraft = required(args.bool(3), "allow_overdraft")?;
        let conn = Connection::open();
        let id = commands::open_account(&conn, currency, args.datum(1), metadata, allow_overdraft)?;
        Ok(id.into_datum())
    }
);

fn status_command(args: &Args, command: StatusCommand) -> WalletResult<Option<Datum>> {
    let account_id = required(args.i64(0), "account_id")?;
    let conn = Connection::open();
    Ok(commands::change_status(&conn, account_id, command)?.into_datum())
}

entry_point!(
    wallet_freeze_account,
    pg_finfo_wallet_freeze_account,
    &[INT8],
    |args| { status_command(args, StatusCommand::Freeze) }
);

entry_point!(
    wallet_unfreeze_account,
    pg_finfo_wallet_unfreeze_account,
    &[INT8],
    |args| { status_command(args, StatusCommand::Unfreeze) }
);

entry_point!(
    wallet_close_account,
    pg_finfo_wallet_close_account,
    &[INT8],
    |args| { status_command(args, StatusCommand::Close) }
);

entry_point!(wallet_balance, pg_finfo_wallet_balance, &[INT8], |args| {
    let account_id = required(args.i64(0), "account_id")?;
    let conn = Connection::open();
    Ok(commands::account(&conn, account_id)?.balance.into_datum())
});

// ---- money movement --------------------------------------------------------------------------

/// Shared tail of transfer, deposit and withdraw: validate, then post.
fn post_transfer(
    conn: &Connection,
    debit_account_id: Option<i64>,
    credit_account_id: Option<i64>,
    amount: Option<i64>,
    idempotency_key: Option<(&[u8], Datum)>,
    metadata: Option<Datum>,
) -> WalletResult<Option<Datum>> {
    let request = transfer::check_transfer_arguments(
        debit_account_id,
        credit_account_id,
        amount,
        idempotency_key.map(|(bytes, _)| bytes),
    )?;
    let metadata = metadata_arg(metadata, "metadata")?;
    let call = TransferCall {
        request,
        idempotency_key,
        metadata,
    };
    Ok(commands::transfer(conn, &call)?.into_datum())
}

entry_point!(
    wallet_transfer,
    pg_finfo_wallet_transfer,
    &[INT8, INT8, INT8, TEXT, JSONB],
    |args| {
        let conn = Connection::open();
        post_transfer(
            &conn,
            args.i64(0),
            args.i64(1),
            args.i64(2),
            key_arg(args, 3),
            args.datum(4),
        )
    }
);

/// Deposit (`into_account` = true) or withdrawal against the currency's system account.
fn settle(args: &Args, into_account: bool) -> WalletResult<Option<Datum>> {
    let account_id = required(args.i64(0), "account_id")?;
    let amount = args.i64(1);
    transfer::check_amount(amount, Some(account_id))?;
    let conn = Connection::open();
    let system = commands::system_account_of(&conn, account_id)?;
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
        key_arg(args, 2),
        args.datum(3),
    )
}

entry_point!(
    wallet_deposit,
    pg_finfo_wallet_deposit,
    &[INT8, INT8, TEXT, JSONB],
    |args| { settle(args, true) }
);

entry_point!(
    wallet_withdraw,
    pg_finfo_wallet_withdraw,
    &[INT8, INT8, TEXT, JSONB],
    |args| { settle(args, false) }
);

// ---- batches -----------------------------------------------------------------------------------

const BATCH_SIGNATURE: &[pg_sys::Oid] =
    &[INT8_ARRAY, INT8_ARRAY, INT8_ARRAY, TEXT_ARRAY, BOOL_ARRAY];

/// Reads the arguments of a batch (both entry points take the same five) and posts it.
fn post_batch(args: &Args) -> WalletResult<Vec<BatchResult>> {
    let debits = required(args.i64_array(0, "debit_account_ids")?, "debit_account_ids")?;
    let credits = required(
        args.i64_array(1, "credit_account_ids")?,
        "credit_account_ids",
    )?;
    let amounts = required(args.i64_array(2, "amounts")?, "amounts")?;
    let keys = args.text_array(3, "idempotency_keys")?;
    let linked = args.bool_array(4, "linked")?;
    let n = debits.len();
    let lengths_match = credits.len() == n
        && amounts.len() == n
        && keys.as_ref().is_none_or(|k| k.len() == n)
        && linked.as_ref().is_none_or(|l| l.len() == n);
    if !lengths_match {
        return Err(WalletError::invalid_argument(
            "transfers",
            "the arrays must all have the same length",
        ));
    }
    if n > BATCH_TRANSFERS_MAX {
        return Err(WalletError::invalid_argument(
            "transfers",
            format!("a batch carries at most {BATCH_TRANSFERS_MAX} transfers, got {n}"),
        ));
    }
    let inputs: Vec<BatchInput> = (0..n)
        .map(|i| BatchInput {
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
    commands::transfer_batch(&conn, &inputs)
}

/// Returns a batch's results as the rows of a materialized set-returning function:
/// (index integer, result text, transfer_id bigint), one per transfer, in input order.
fn put_batch_rows(args: &Args, results: &[BatchResult]) {
    let fcinfo = args.fcinfo();
    // SAFETY: the entry point is declared in api.sql as RETURNS TABLE (index integer, result
    // text, transfer_id bigint); InitMaterializedSRF refuses a caller that cannot take a
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
    BATCH_SIGNATURE,
    |args| {
        let results = post_batch(args)?;
        put_batch_rows(args, &results);
        Ok(Some(Datum::from(0usize)))
    }
);

// wallet._transfer_batch, the array behind the PL/pgSQL wallet.transfer_batch of 0.2.0 to 0.4.0:
// kept so that this library serves a database not yet updated (ALTER EXTENSION ... UPDATE).
entry_point!(
    wallet_transfer_batch,
    pg_finfo_wallet_transfer_batch,
    BATCH_SIGNATURE,
    |args| {
        let results = post_batch(args)?;
        // Two numbers per transfer: result code and transfer id (NULL when none).
        let encoded: Vec<Option<i64>> = results
            .iter()
            .flat_map(|r| [Some(r.code().0), r.transfer_id()])
            .collect();
        Ok(encoded.into_datum())
    }
);

// ---- holds: the Try-Confirm/Cancel participant -----------------------------------------------

fn hold_key_arg<'fc>(
    args: &Args<'fc>,
    n: usize,
    argument: &'static str,
) -> WalletResult<&'fc [u8]> {
    let value = args.text(n);
    hold::check_hold_key(value, argument)?;
    Ok(value.unwrap_or_default())
}

entry_point!(
    wallet_try_hold,
    pg_finfo_wallet_try_hold,
    &[TEXT, TEXT, INT8, INT8, INT8, INTERVAL, TEXT],
    |args| {
        let gtid = hold_key_arg(args, 0, "gtid")?;
        let branch = hold_key_arg(args, 1, "branch")?;
        let debit_account_id = args.i64(2);
        let credit_account_id = args.i64(3);
        let amount = transfer::check_amount(args.i64(4), debit_account_id.or(credit_account_id))?;
        let timeout_micros = hold::hold_timeout_micros(
            args.interval_micros(5),
            settings::HOLD_TIMEOUT.get(),
            settings::HOLD_TIMEOUT_MAX.get(),
        )?;
        let conn = Connection::open();
        let call = holds::TryCall {
            gtid,
            branch,
            debit_account_id,
            credit_account_id,
            amount,
            timeout_micros,
            currency: args.text(6),
            key_lock: holds::KeyLock::Take,
        };
        Ok(holds::try_hold(&conn, &call)?.0.into_datum())
    }
);

entry_point!(
    wallet_confirm_hold,
    pg_finfo_wallet_confirm_hold,
    &[TEXT, TEXT, INT8],
    |args| {
        let gtid = hold_key_arg(args, 0, "gtid")?;
        let branch = hold_key_arg(args, 1, "branch")?;
        let conn = Connection::open();
        Ok(
            holds::confirm_hold(&conn, gtid, branch, args.i64(2), holds::KeyLock::Take)?
                .into_datum(),
        )
    }
);

entry_point!(
    wallet_cancel_hold,
    pg_finfo_wallet_cancel_hold,
    &[TEXT, TEXT],
    |args| {
        let gtid = hold_key_arg(args, 0, "gtid")?;
        let branch = hold_key_arg(args, 1, "branch")?;
        let conn = Connection::open();
        Ok(holds::cancel_hold(&conn, gtid, branch, holds::KeyLock::Take)?.into_datum())
    }
);

entry_point!(
    wallet_expire_holds,
    pg_finfo_wallet_expire_holds,
    &[INT4],
    |args| {
        let max_holds = required(args.i32(0), "max_holds")?;
        transfer::check_page_rows(max_holds)?;
        let conn = Connection::open();
        Ok(holds::expire_holds(&conn, max_holds)?.into_datum())
    }
);

// ---- observability ---------------------------------------------------------------------------

// wallet.write_paths(): how each table the hot paths write is written now, and why.
entry_point!(
    wallet_write_paths,
    pg_finfo_wallet_write_paths,
    &[],
    |args| {
        let catalog = crate::catalog::current()?;
        let ledger = crate::catalog::ledger(catalog.global_transactions);
        let rows = [
            ("wallet.accounts", &catalog.accounts_path),
            ("wallet.events", &catalog.events_path),
            ("wallet.global_transactions", &ledger.path),
        ];
        let fcinfo = args.fcinfo();
        // SAFETY: declared in api.sql as RETURNS TABLE (table_name text, write_path text, reason
        // text); InitMaterializedSRF builds the store and its descriptor in the query's memory.
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            for (table, path) in rows {
                let (name, reason) = match path {
                    crate::catalog::WritePath::Direct => ("direct", None),
                    crate::catalog::WritePath::Executor(why) => ("executor", Some(why.as_str())),
                };
                let mut values = [
                    table.into_datum().expect("text"),
                    name.into_datum().expect("text"),
                    reason.into_datum().unwrap_or(Datum::from(0usize)),
                ];
                let mut nulls = [false, false, reason.is_none()];
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

// ---- the sealer (sql/chain.sql) ------------------------------------------------------------

/// Text as UTF-8 bytes: converted from the database encoding, or as it is in a SQL_ASCII
/// database (whose text may hold any bytes: there is no conversion, and validating them as UTF-8
/// would refuse to seal an event a caller was allowed to write).
fn utf8_bytes(text: &[u8]) -> Vec<u8> {
    // SAFETY: reads the database encoding; pg_server_to_any converts `len` bytes of server text
    // (which never holds a NUL byte) and returns either its input or a new NUL-terminated string.
    unsafe {
        if pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_SQL_ASCII as i32 {
            return text.to_vec();
        }
        let input = text.as_ptr() as *const std::ffi::c_char;
        let converted =
            pg_sys::pg_server_to_any(input, text.len() as i32, pg_sys::pg_enc::PG_UTF8 as i32);
        if converted as *const std::ffi::c_char == input {
            text.to_vec()
        } else {
            std::ffi::CStr::from_ptr(converted).to_bytes().to_vec()
        }
    }
}

// wallet._link_hash(previous bytea, event_text text): sha256(previous || UTF-8 of event_text).
entry_point!(
    wallet_link_hash,
    pg_finfo_wallet_link_hash,
    &[BYTEA, TEXT],
    |args| {
        let previous = required(args.text(0), "previous")?;
        let text = required(args.text(1), "event_text")?;
        let mut input = previous.to_vec();
        input.extend_from_slice(&utf8_bytes(text));
        let bytea = input.as_slice().into_datum().expect("bytea");
        // SAFETY: sha256(bytea) of Postgres's own, called with one non-NULL bytea.
        let hash =
            unsafe { pgrx::direct_function_call_as_datum(pg_sys::sha256_bytea, &[Some(bytea)]) };
        Ok(hash)
    }
);

// ---- the sealer's postings frontier (sql/chain.sql, "Postings") ------------------------------

entry_point!(wallet_next_xid, pg_finfo_wallet_next_xid, &[], |_args| {
    // SAFETY: Postgres's shared counter of transaction ids, read under its lock.
    let next = unsafe { pg_sys::ReadNextFullTransactionId() };
    Ok(Some(Datum::from(next.value)))
});
