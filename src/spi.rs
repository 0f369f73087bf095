//! A small SPI layer for statements that are prepared once per backend and kept.
//!
//! pgrx's own SPI API allocates two vectors per execution; this one passes arguments from the
//! stack, forces generic plans (the statements are keyed lookups whose best plan never depends on
//! the values), and reads results as raw datums. Every `pg_sys` call is guarded by pgrx, so a
//! Postgres ERROR inside becomes a Rust panic that the entry point reports.

use std::cell::Cell;
use std::ffi::{c_char, c_int, CString};

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::FromDatum;

/// The most parameters any kept statement takes.
pub const ARGS_MAX: usize = 16;
/// How many kept statements there are (size of the per-backend plan table).
pub const PLANS_MAX: usize = 64;

/// One kept statement: its text, its parameter types and its slot in the per-backend table.
pub struct Kept {
    pub slot: usize,
    pub sql: fn() -> String,
    pub args: &'static [Oid],
    /// Plan (and re-plan) with enable_seqscan off. For statements on a table that starts empty
    /// (wallet.holds): a plan made while the table looks empty (after a VACUUM) scans it
    /// sequentially, and a kept plan would go on doing so as the table grows, until the next
    /// ANALYZE invalidates it. Measured: try + confirm pairs at 1.7k/s instead of 8.9k/s for
    /// the first seconds after a VACUUM of the empty table.
    pub index_only: bool,
    /// Plan (and re-plan) with nested loops and merge joins off as well, for a statement that
    /// joins the rows it finds by an index condition with its unnest of the arguments: a hash of
    /// those rows, whatever the statistics say. Planned while the table looked empty, a nested
    /// loop rescans the unnest for every row (quadratic in a batch's size), and without the
    /// index condition a join scanned the whole primary key at every step.
    pub hash_join: bool,
}

thread_local! {
    // A backend is a single-threaded process: one table of kept plans per backend, no locking.
    static PLANS: [Cell<pg_sys::SPIPlanPtr>; PLANS_MAX] =
        const { [const { Cell::new(std::ptr::null_mut()) }; PLANS_MAX] };
}

/// An open SPI connection; finished when dropped on the normal path. On an ERROR the transaction
/// (or subtransaction) abort cleans SPI up, so nothing is done while unwinding.
///
/// While it is open, `CurrentMemoryContext` is SPI's, which `SPI_finish` frees: a by-reference
/// datum returned to Postgres (an array, text) must be built after the connection is dropped.
pub struct Connection(());

impl Connection {
    pub fn open() -> Connection {
        // SAFETY: SPI_connect only pushes a new SPI stack entry.
        let status = unsafe { pg_sys::SPI_connect() };
        assert!(status >= 0, "SPI_connect failed: {status}");
        Connection(())
    }

    fn plan(&self, kept: &Kept) -> pg_sys::SPIPlanPtr {
        PLANS.with(|plans| {
            let cell = &plans[kept.slot];
            if cell.get().is_null() {
                let sql = CString::new((kept.sql)()).expect("statement text has no NUL");
                let mut args: Vec<Oid> = kept.args.to_vec();
                // SAFETY: the text and the argument array live across the call.
                let plan = unsafe {
                    pg_sys::SPI_prepare_cursor(
                        sql.as_ptr(),
                        args.len() as c_int,
                        args.as_mut_ptr(),
                        pg_sys::CURSOR_OPT_GENERIC_PLAN as c_int,
                    )
                };
                assert!(!plan.is_null(), "SPI_prepare_cursor failed: {}", unsafe {
                    pg_sys::SPI_result
                });
                // SAFETY: plan is a fresh, unsaved plan from SPI_prepare_cursor.
                let status = unsafe { pg_sys::SPI_keepplan(plan) };
                assert_eq!(status, 0, "SPI_keepplan failed");
                cell.set(plan);
            }
            cell.get()
        })
    }

    /// Executes a kept statement. `args[i]` is `None` for SQL NULL.
    pub fn execute(&self, kept: &Kept, args: &[Option<Datum>]) -> Rows {
        assert_eq!(
            args.len(),
            kept.args.len(),
            "argument count of a kept statement"
        );
        let plan = self.plan(kept);
        let mut values = [Datum::from(0usize); ARGS_MAX];
        let mut nulls = [b' ' as c_char; ARGS_MAX];
        for (i, arg) in args.iter().enumerate() {
            match arg {
                Some(value) => values[i] = *value,
                None => nulls[i] = b'n' as c_char,
            }
        }
        // The plan is made (or remade after an invalidation) inside SPI_execute_plan, so the
        // setting is in force around it, at a GUC nesting level of its own, as a function's SET
        // clause would be (an ERROR in between is undone by the transaction's abort).
        let nest_level = kept.index_only.then(|| {
            // SAFETY: plain session settings, changed and restored within this call.
            unsafe {
                let level = pg_sys::NewGUCNestLevel();
                let off: &[&std::ffi::CStr] = if kept.hash_join {
                    &[c"enable_seqscan", c"enable_nestloop", c"enable_mergejoin"]
                } else {
                    &[c"enable_seqscan"]
                };
                for name in off {
                    pg_sys::set_config_option(
                        name.as_ptr(),
                        c"off".as_ptr(),
                        pg_sys::GucContext::PGC_USERSET,
                        pg_sys::GucSource::PGC_S_SESSION,
                        pg_sys::GucAction::GUC_ACTION_SAVE,
                        true,
                        0,
                        false,
                    );
                }
                level
            }
        });
        // SAFETY: arrays hold at least as many entries as the plan has parameters.
        let status = unsafe {
            pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0)
        };
        if let Some(level) = nest_level {
            // SAFETY: restores what NewGUCNestLevel saved above.
            unsafe { pg_sys::AtEOXact_GUC(true, level) };
        }
        assert!(status >= 0, "SPI_execute_plan failed: {status}");
        // SAFETY: SPI_processed and SPI_tuptable were just set by SPI_execute_plan.
        unsafe {
            Rows {
                count: pg_sys::SPI_processed as usize,
                table: pg_sys::SPI_tuptable,
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: we connected in `open`.
            unsafe {
                pg_sys::SPI_finish();
            }
        }
    }
}

/// The result of one execution; valid until the connection executes again or is dropped.
pub struct Rows {
    count: usize,
    table: *mut pg_sys::SPITupleTable,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw datum of column `column` (1-based) of row `row` (0-based); `None` for NULL.
    fn raw(&self, row: usize, column: usize) -> Option<Datum> {
        assert!(
            row < self.count && !self.table.is_null(),
            "row {row} of {}",
            self.count
        );
        // SAFETY: row is within the tuple table; SPI_getbinval checks the column number.
        unsafe {
            let tuple = *(*self.table).vals.add(row);
            let mut is_null = false;
            let datum =
                pg_sys::SPI_getbinval(tuple, (*self.table).tupdesc, column as c_int, &mut is_null);
            (!is_null).then_some(datum)
        }
    }

    /// A text column as its bytes (in the database encoding), copied.
    pub fn bytes(&self, row: usize, column: usize) -> Option<Vec<u8>> {
        // SAFETY: the caller reads a text column; the slice is copied at once.
        self.raw(row, column)
            .map(|d| unsafe { crate::args::varlena_bytes(d) }.to_vec())
    }

    /// A by-reference column (text, jsonb) copied into the memory of the function that opened
    /// the connection, where it outlives the connection (results are freed at the next
    /// execution).
    pub fn copied_datum(&self, row: usize, column: usize) -> Option<Datum> {
        let datum = self.raw(row, column)?;
        // SAFETY: copies a varlena into the upper executor context (SPI_datumTransfer).
        Some(unsafe { pg_sys::SPI_datumTransfer(datum, false, -1) })
    }

    /// Column `column` (1-based) of row `row` (0-based), decoded as `T`; `None` for NULL.
    pub fn get<T: FromDatum>(&self, row: usize, column: usize) -> Option<T> {
        assert!(
            row < self.count && !self.table.is_null(),
            "row {row} of {}",
            self.count
        );
        // SAFETY: row is within the tuple table; SPI_getbinval checks the column number.
        unsafe {
            let tuple = *(*self.table).vals.add(row);
            let mut is_null = false;
            let datum =
                pg_sys::SPI_getbinval(tuple, (*self.table).tupdesc, column as c_int, &mut is_null);
            T::from_datum(datum, is_null)
        }
    }
}
