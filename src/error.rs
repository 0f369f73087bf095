//! Where a rejection becomes a Postgres ERROR, and where a Rust panic stops short of the client.
//!
//! Every rejection is a [`WalletError`] (crate `wallet_core`), whose registry row gives its stable
//! SQLSTATE. Most are in class `WA`, which Postgres does not use and pgrx cannot raise, so
//! [`raise`] calls `ereport` itself, from the C entry point, once every Rust value is dropped
//! (see `entry.rs`).

use std::ffi::{c_char, c_int, CString};

use pgrx::pg_sys;

pub use wallet_core::error::{WalletError, WalletResult};

/// Postgres packs a five-character SQLSTATE into an int, six bits a character.
pub fn pack_sqlstate(code: &str) -> c_int {
    let valid = code.len() == 5
        && code
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    // A node's answer carried on could in theory hold anything: never an internal error.
    let b = if valid { code.as_bytes() } else { b"WA025" };
    let six = |c: u8| (c.wrapping_sub(b'0') as c_int) & 0x3F;
    six(b[0]) | (six(b[1]) << 6) | (six(b[2]) << 12) | (six(b[3]) << 18) | (six(b[4]) << 24)
}

/// The five characters of a packed SQLSTATE.
pub fn unpack_sqlstate(code: c_int) -> String {
    (0..5)
        .map(|i| char::from(b'0' + ((code >> (6 * i)) & 0x3F) as u8))
        .collect()
}

/// A rejection ready to raise: plain data with no destructor, so nothing is skipped when
/// `ereport` jumps out of the entry point's frame.
pub struct PendingError {
    sqlerrcode: c_int,
    message: *mut c_char,
    hint: *mut c_char,
}

impl From<WalletError> for PendingError {
    fn from(error: WalletError) -> Self {
        PendingError {
            sqlerrcode: pack_sqlstate(error.sqlstate()),
            message: palloc_cstring(&error.to_string()),
            hint: error.hint().map_or(std::ptr::null_mut(), palloc_cstring),
        }
    }
}

/// Copies text into the current memory context (Postgres frees it with the error).
fn palloc_cstring(text: &str) -> *mut c_char {
    let owned = CString::new(text.replace('\0', "")).unwrap_or_default();
    // SAFETY: pstrdup copies a NUL-terminated string; `owned` lives until it returns.
    unsafe { pg_sys::pstrdup(owned.as_ptr()) }
}

#[allow(improper_ctypes)]
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
}

/// Raises the rejection as a Postgres ERROR. Never returns.
///
/// # Safety
/// Call only from the outermost frame of a C-ABI function called by Postgres, with no Rust value
/// that needs dropping still alive in any frame between it and Postgres: `errfinish` longjmps.
pub unsafe fn raise(error: PendingError) -> ! {
    // SAFETY: the caller guarantees that no frame between here and Postgres owns anything; the
    // strings were palloc'd in the current memory context, which the error cleans up.
    unsafe {
        if errstart(pgrx::PgLogLevel::ERROR as c_int, std::ptr::null()) {
            errcode(error.sqlerrcode);
            errmsg(c"%s".as_ptr(), error.message);
            if !error.hint.is_null() {
                errhint(c"%s".as_ptr(), error.hint);
            }
            errfinish(c"wallet_ext".as_ptr(), 0, std::ptr::null());
        }
    }
    unreachable!("errfinish returned from an ERROR")
}

/// Keeps Rust backtraces out of what clients see. pgrx's panic hook captures a backtrace for
/// every panic and Postgres error it converts, and puts it in the ERROR's DETAIL when capturing
/// is on (RUST_BACKTRACE in the server's environment): kilobytes of build paths and frames sent
/// to any client. Capture is turned off here for good (the standard library reads the variable
/// once); a real Rust panic (a bug: the wallet's own rejections are not panics) writes its
/// backtrace to the server's log instead.
pub fn keep_backtraces_in_the_log() {
    // The backend is single-threaded and no backtrace has been captured yet.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    let pgrx_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        if let Some(message) = message {
            let location = info
                .location()
                .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
            eprintln!(
                "wallet_ext: internal error{location}: {message}\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        pgrx_hook(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_pack_like_postgres() {
        // MAKE_SQLSTATE('4','0','0','0','1') = 40001 serialization_failure
        assert_eq!(
            pack_sqlstate("40001"),
            pgrx::PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE as c_int
        );
        assert_eq!(
            pack_sqlstate("XX001"),
            pgrx::PgSqlErrorCode::ERRCODE_DATA_CORRUPTED as c_int
        );
        assert_eq!(
            pack_sqlstate("55000"),
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE as c_int
        );
    }
}
