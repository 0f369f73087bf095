//! How an SQL-callable C function of the wallet is declared: [`entry_point!`].
//!
//! Why not `#[pg_extern]`: a rejection must carry its own SQLSTATE (class WA), and pgrx can only
//! raise the codes Postgres defines. So each entry point runs its body under pgrx's guard (which
//! turns Rust panics and Postgres errors into ordinary Postgres errors, as `#[pg_extern]` does)
//! and, once the guard has returned and every Rust value is dropped, raises a rejection itself.
//! The body is ordinary safe Rust; only the guard and the raise are unsafe.

/// Declares `$name` (and its `pg_finfo_$name` record) as a version-1 C function that reads the
/// argument types `$signature` (checked against its declaration, see `args.rs`) and whose body
/// returns `WalletResult<Option<Datum>>` (None = SQL NULL).
macro_rules! entry_point {
    ($name:ident, $finfo:ident, $signature:expr, |$args:ident| $body:block) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $name(
            fcinfo: pgrx::pg_sys::FunctionCallInfo,
        ) -> pgrx::pg_sys::Datum {
            fn body(
                $args: &$crate::args::Args<'_>,
            ) -> $crate::error::WalletResult<Option<pgrx::pg_sys::Datum>> {
                $body
            }
            // SAFETY: called by the function manager with a valid fcinfo. The guard catches every
            // panic and Postgres error of the body; `raise` runs after the guard returned, when
            // this frame owns nothing that needs dropping.
            unsafe {
                let outcome: Result<Option<pgrx::pg_sys::Datum>, $crate::error::PendingError> =
                    pgrx::pgrx_extern_c_guard(|| {
                        let result = match $crate::args::Args::checked(fcinfo, $signature) {
                            Ok(args) => body(&args),
                            Err(e) => Err(e),
                        };
                        result.map_err($crate::error::PendingError::from)
                    });
                match outcome {
                    Ok(Some(datum)) => datum,
                    Ok(None) => pgrx::fcinfo::pg_return_null(fcinfo),
                    Err(pending) => $crate::error::raise(pending),
                }
            }
        }
    };
}

pub(crate) use entry_point;
