//! The arguments of a call of one of the wallet's C functions, read safely.
//!
//! [`Args::checked`] first compares the function's declaration (its catalog row) with the types
//! the entry point reads, once per function per backend: a reader of an `int8` argument can then
//! never be handed a text datum, whatever a `CREATE FUNCTION` pointing at the library says. Every
//! borrowed value (text as bytes, array elements) lives in the call's memory and is tied to the
//! call by the lifetime `'fc`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::marker::PhantomData;

use pgrx::pg_sys::{self, Datum, FunctionCallInfo, Oid};

use crate::error::{WalletError, WalletResult};

/// The argument types an entry point reads, in order (pg_type oids).
pub type Signature = &'static [Oid];

pub const INT4: Oid = pg_sys::INT4OID;
pub const INT8: Oid = pg_sys::INT8OID;
pub const BOOL: Oid = pg_sys::BOOLOID;
pub const TEXT: Oid = pg_sys::TEXTOID;
pub const BYTEA: Oid = pg_sys::BYTEAOID;
pub const OID: Oid = pg_sys::OIDOID;
pub const JSONB: Oid = pg_sys::JSONBOID;
pub const INTERVAL: Oid = pg_sys::INTERVALOID;
pub const INT8_ARRAY: Oid = pg_sys::INT8ARRAYOID;
pub const TEXT_ARRAY: Oid = pg_sys::TEXTARRAYOID;
pub const BOOL_ARRAY: Oid = pg_sys::BOOLARRAYOID;

thread_local! {
    /// Functions whose declaration was found to match their entry point (by oid).
    static CHECKED: RefCell<HashSet<Oid>> = RefCell::new(HashSet::new());
}

/// The arguments of one call.
pub struct Args<'fc> {
    fcinfo: FunctionCallInfo,
    count: usize,
    call: PhantomData<&'fc ()>,
}

impl<'fc> Args<'fc> {
    /// The arguments of the call `fcinfo`, after checking that the function is declared with
    /// `signature` (or refusing the call with 55000).
    ///
    /// # Safety
    /// `fcinfo` is the call Postgres made of the entry point, valid for `'fc`.
    pub unsafe fn checked(
        fcinfo: FunctionCallInfo,
        signature: Signature,
    ) -> WalletResult<Args<'fc>> {
        // SAFETY: the caller passes the live call; flinfo is set by the function manager.
        let (oid, count) = unsafe { ((*(*fcinfo).flinfo).fn_oid, (*fcinfo).nargs as usize) };
        if !CHECKED.with(|c| c.borrow().contains(&oid)) {
            check_declaration(oid, signature)?;
            CHECKED.with(|c| c.borrow_mut().insert(oid));
        }
        if count != signature.len() {
            return Err(WalletError::TableShape(format!(
                "function {oid:?} was called with {count} arguments, its entry point reads {}",
                signature.len()
            )));
        }
        Ok(Args {
            fcinfo,
            count,
            call: PhantomData,
        })
    }

    /// The raw datum of argument `n`, None for NULL.
    pub fn datum(&self, n: usize) -> Option<Datum> {
        assert!(n < self.count, "argument {n} of {}", self.count);
        // SAFETY: n is within the call's arguments (checked against the declaration).
        unsafe {
            let arg = *(*self.fcinfo).args.as_ptr().add(n);
            (!arg.isnull).then_some(arg.value)
        }
    }

    pub fn i64(&self, n: usize) -> Option<i64> {
        self.datum(n).map(|d| d.value() as i64)
    }

    pub fn i32(&self, n: usize) -> Option<i32> {
        self.datum(n).map(|d| d.value() as i32)
    }

    pub fn bool(&self, n: usize) -> Option<bool> {
        self.datum(n).map(|d| d.value() != 0)
    }

    /// A text argument as its bytes (in the database encoding; see `wallet_core::text`).
    pub fn text(&self, n: usize) -> Option<&'fc [u8]> {
        // SAFETY: the declaration says argument n is text; the detoasted copy (if any) is made
        // in the call's memory context, which outlives 'fc.
        self.datum(n).map(|d| unsafe { varlena_bytes(d) })
    }

    /// An interval argument as microseconds (a month counted as 30 days, as Postgres's
    /// `extract(epoch ...)` does), None for NULL.
    pub fn interval_micros(&self, n: usize) -> Option<i128> {
        self.datum(n).map(|d| {
            // SAFETY: the declaration says argument n is an interval, passed by reference.
            let interval = unsafe { &*(d.cast_mut_ptr::<pg_sys::Interval>()) };
            i128::from(interval.time)
                + i128::from(interval.day) * 86_400_000_000
                + i128::from(interval.month) * 30 * 86_400_000_000
        })
    }

    /// A bigint[] argument; NULL elements stay None. Refuses an array of more than one
    /// dimension (WA016) rather than read it flattened.
    pub fn i64_array(
        &self,
        n: usize,
        argument: &'static str,
    ) -> WalletResult<Option<Vec<Option<i64>>>> {
        self.array(n, argument, ElementType::Int8).map(|a| {
            a.map(|items| {
                items
                    .into_iter()
                    .map(|d| d.map(|d| d.value() as i64))
                    .collect()
            })
        })
    }

    pub fn bool_array(
        &self,
        n: usize,
        argument: &'static str,
    ) -> WalletResult<Option<Vec<Option<bool>>>> {
        self.array(n, argument, ElementType::Bool).map(|a| {
            a.map(|items| {
                items
                    .into_iter()
                    .map(|d| d.map(|d| d.value() != 0))
                    .collect()
            })
        })
    }

    /// A text[] argument, each element as its bytes.
    pub fn text_array(
        &self,
        n: usize,
        argument: &'static str,
    ) -> WalletResult<Option<Vec<Option<&'fc [u8]>>>> {
        self.array(n, argument, ElementType::Text).map(|a| {
            // SAFETY: elements of a text[] are text datums in the call's memory.
            a.map(|items| {
                items
                    .into_iter()
                    .map(|d| d.map(|d| unsafe { varlena_bytes(d) }))
                    .collect()
            })
        })
    }

    fn array(
        &self,
        n: usize,
        argument: &'static str,
        element: ElementType,
    ) -> WalletResult<Option<Vec<Option<Datum>>>> {
        let Some(datum) = self.datum(n) else {
            return Ok(None);
        };
        // SAFETY: the declaration says argument n is an array of `element`; detoasting and
        // deconstructing allocate in the call's memory context.
        unsafe {
            let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::ArrayType;
            if (*array).ndim > 1 {
                return Err(WalletError::invalid_argument(
                    argument,
                    format!(
                        "must be a one-dimensional array, got {} dimensions",
                        (*array).ndim
                    ),
                ));
            }
            let (oid, len, byval, align) = element.layout();
            let mut values: *mut Datum = std::ptr::null_mut();
            let mut nulls: *mut bool = std::ptr::null_mut();
            let mut count: std::ffi::c_int = 0;
            pg_sys::deconstruct_array(
                array,
                oid,
                len,
                byval,
                align,
                &mut values,
                &mut nulls,
                &mut count,
            );
            Ok(Some(
                (0..count as usize)
                    .map(|i| (!*nulls.add(i)).then(|| *values.add(i)))
                    .collect(),
            ))
        }
    }
}

#[derive(Clone, Copy)]
enum ElementType {
    Int8,
    Bool,
    Text,
}

impl ElementType {
    fn layout(self) -> (Oid, std::ffi::c_int, bool, std::ffi::c_char) {
        match self {
            ElementType::Int8 => (pg_sys::INT8OID, 8, true, b'd' as std::ffi::c_char),
            ElementType::Bool => (pg_sys::BOOLOID, 1, true, b'c' as std::ffi::c_char),
            ElementType::Text => (pg_sys::TEXTOID, -1, false, b'i' as std::ffi::c_char),
        }
    }
}

/// The bytes of a text (any varlena) datum, detoasted into the current memory context.
///
/// # Safety
/// `datum` is a varlena; the returned slice lives as long as the current memory context.
pub unsafe fn varlena_bytes<'a>(datum: Datum) -> &'a [u8] {
    // SAFETY: as the caller promises.
    unsafe {
        let detoasted = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        let len = pgrx::varlena::varsize_any_exhdr(detoasted);
        let data = pgrx::varlena::vardata_any(detoasted) as *const u8;
        std::slice::from_raw_parts(data, len)
    }
}

/// Refuses a function whose catalog declaration does not take exactly `signature`.
fn check_declaration(oid: Oid, signature: Signature) -> WalletResult<()> {
    let mut types: *mut Oid = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: a catalog look-up; the array is palloc'd in the current memory context.
    let declared: Vec<Oid> = unsafe {
        pg_sys::get_func_signature(oid, &mut types, &mut count);
        (0..count as usize).map(|i| *types.add(i)).collect()
    };
    if declared != signature {
        return Err(WalletError::TableShape(format!(
            "function {} is declared with argument types {declared:?}, but its entry point reads {signature:?}: reinstall wallet_ext",
            u32::from(oid)
        )));
    }
    Ok(())
}

impl Args<'_> {
    /// The call itself, for an entry point that returns a set (its `resultinfo`).
    pub fn fcinfo(&self) -> FunctionCallInfo {
        self.fcinfo
    }
}
