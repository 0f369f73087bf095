//! The coordinator's connections to other nodes: libpq, called directly, with every wait done on
//! the backend's latch so that a cancel, a shutdown or the postmaster's death interrupts it.
//!
//! A connection lives inside the library (see `nodes.rs`); nothing in SQL can reach it, unlike a
//! named dblink connection, which any role in the session can use. Every command sent is one of
//! the wallet's own, with its values as parameters (never spliced into the text), except the
//! transaction-control statements of two-phase commit, whose only variable part is a gid the
//! coordinator made of hex digits.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::time::{Duration, Instant};

use pgrx::pg_sys;

#[allow(non_camel_case_types)]
type PGconn = c_void;
#[allow(non_camel_case_types)]
type PGresult = c_void;

#[link(name = "pq")]
unsafe extern "C" {
    fn PQconnectStartParams(
        keywords: *const *const c_char,
        values: *const *const c_char,
        expand_dbname: c_int,
    ) -> *mut PGconn;
    fn PQconnectPoll(conn: *mut PGconn) -> c_int;
    fn PQstatus(conn: *const PGconn) -> c_int;
    fn PQsocket(conn: *const PGconn) -> c_int;
    fn PQerrorMessage(conn: *const PGconn) -> *const c_char;
    fn PQfinish(conn: *mut PGconn);
    fn PQsetnonblocking(conn: *mut PGconn, arg: c_int) -> c_int;
    fn PQsendQueryParams(
        conn: *mut PGconn,
        command: *const c_char,
        n_params: c_int,
        param_types: *const c_uint,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> c_int;
    fn PQsendPrepare(
        conn: *mut PGconn,
        name: *const c_char,
        query: *const c_char,
        n_params: c_int,
        param_types: *const c_uint,
    ) -> c_int;
    fn PQsendQueryPrepared(
        conn: *mut PGconn,
        name: *const c_char,
        n_params: c_int,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> c_int;
    fn PQflush(conn: *mut PGconn) -> c_int;
    fn PQconsumeInput(conn: *mut PGconn) -> c_int;
    fn PQisBusy(conn: *mut PGconn) -> c_int;
    fn PQgetResult(conn: *mut PGconn) -> *mut PGresult;
    fn PQresultStatus(res: *const PGresult) -> c_int;
    fn PQresultErrorField(res: *const PGresult, field: c_int) -> *const c_char;
    fn PQresultErrorMessage(res: *const PGresult) -> *const c_char;
    fn PQntuples(res: *const PGresult) -> c_int;
    fn PQnfields(res: *const PGresult) -> c_int;
    fn PQgetvalue(res: *const PGresult, row: c_int, column: c_int) -> *const c_char;
    fn PQgetisnull(res: *const PGresult, row: c_int, column: c_int) -> c_int;
    fn PQgetlength(res: *const PGresult, row: c_int, column: c_int) -> c_int;
    fn PQclear(res: *mut PGresult);
    fn PQtransactionStatus(conn: *const PGconn) -> c_int;
    fn PQenterPipelineMode(conn: *mut PGconn) -> c_int;
    fn PQexitPipelineMode(conn: *mut PGconn) -> c_int;
    fn PQpipelineSync(conn: *mut PGconn) -> c_int;
}

/// One command of a pipeline: a prepared statement's name (or None for the text itself), its
/// text and its text parameters.
pub struct Command {
    pub name: Option<&'static str>,
    pub sql: String,
    pub params: Vec<Option<Vec<u8>>>,
}

const CONNECTION_OK: c_int = 0;
const PGRES_POLLING_FAILED: c_int = 0;
const PGRES_POLLING_READING: c_int = 1;
const PGRES_POLLING_WRITING: c_int = 2;
const PGRES_POLLING_OK: c_int = 3;
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_TUPLES_OK: c_int = 2;
const PGRES_PIPELINE_SYNC: c_int = 10;
const PGRES_PIPELINE_ABORTED: c_int = 11;
const PG_DIAG_SQLSTATE: c_int = b'C' as c_int;
const PG_DIAG_MESSAGE_PRIMARY: c_int = b'M' as c_int;
const PQTRANS_IDLE: c_int = 0;

/// Why a call to a node did not give an answer: the node's own error (its SQLSTATE and message),
/// or no answer at all (SQLSTATE class 08: the connection failed, or the wait timed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub sqlstate: String,
    pub message: String,
}

impl CallError {
    fn connection(message: impl Into<String>) -> CallError {
        CallError {
            sqlstate: "08006".into(),
            message: message.into(),
        }
    }

    /// No answer: the command may or may not have run on the node.
    pub fn is_lost(&self) -> bool {
        self.sqlstate.starts_with("08")
    }
}

/// The rows of one result, as text (None for NULL).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl Table {
    pub fn text(&self, row: usize, column: usize) -> Option<&[u8]> {
        self.rows.get(row)?.get(column)?.as_deref()
    }

    pub fn int(&self, row: usize, column: usize) -> Option<i64> {
        std::str::from_utf8(self.text(row, column)?)
            .ok()?
            .parse()
            .ok()
    }
}

/// One open connection. Dropping it closes it.
pub struct Connection {
    conn: *mut PGconn,
    /// Statements prepared on it, by name.
    prepared: Vec<&'static str>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: made by PQconnectStartParams, finished once (not a Postgres backend call, so
        // also fine while unwinding).
        unsafe { PQfinish(self.conn) };
    }
}

/// The remaining time until `deadline`, in milliseconds for WaitLatchOrSocket (at least 1).
fn remaining_ms(deadline: Instant) -> Option<i64> {
    let left = deadline.checked_duration_since(Instant::now())?;
    Some(left.as_millis().max(1) as i64)
}

/// Waits until `socket` is readable (or writable), the latch is set, or `deadline` passes;
/// handles interrupts (a cancel raises its ERROR here). False: the deadline passed.
fn wait_for(socket: c_int, writable: bool, deadline: Instant) -> bool {
    let Some(timeout) = remaining_ms(deadline) else {
        return false;
    };
    let socket_event = if writable {
        pg_sys::WL_SOCKET_WRITEABLE
    } else {
        pg_sys::WL_SOCKET_READABLE
    };
    // SAFETY: waits on this backend's latch and the connection's socket; CHECK_FOR_INTERRUPTS
    // may raise an ERROR (the caller's guard then closes the connection).
    unsafe {
        let events = pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | socket_event | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH)
                as c_int,
            socket as pg_sys::pgsocket,
            timeout,
            pg_sys::PG_WAIT_EXTENSION,
        );
        if events as u32 & pg_sys::WL_LATCH_SET != 0 {
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    }
    pgrx::check_for_interrupts!();
    true
}

impl Connection {
    /// Connects with libpq keyword/value parameters, within `timeout`.
    pub fn connect(
        params: &[(String, String)],
        timeout: Duration,
    ) -> Result<Connection, CallError> {
        let keys: Vec<CString> = params
            .iter()
            .map(|(k, _)| CString::new(k.as_str()).unwrap_or_default())
            .collect();
        let values: Vec<CString> = params
            .iter()
            .map(|(_, v)| CString::new(v.as_str()).unwrap_or_default())
            .collect();
        let mut key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let mut value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        key_ptrs.push(std::ptr::null());
        value_ptrs.push(std::ptr::null());
        // SAFETY: NULL-terminated arrays of C strings that outlive the call.
        let conn = unsafe { PQconnectStartParams(key_ptrs.as_ptr(), value_ptrs.as_ptr(), 0) };
        if conn.is_null() {
            return Err(CallError::connection("out of memory opening a connection"));
        }
        let connection = Connection {
            conn,
            prepared: Vec::new(),
        };
        let deadline = Instant::now() + timeout;
        // SAFETY: polls the connection made above until it is made or has failed.
        unsafe {
            if PQstatus(conn) != CONNECTION_OK && PQsocket(conn) < 0 {
                return Err(connection.error());
            }
            let mut state = PGRES_POLLING_WRITING;
            loop {
                match state {
                    PGRES_POLLING_OK => break,
                    PGRES_POLLING_FAILED => return Err(connection.error()),
                    PGRES_POLLING_READING | PGRES_POLLING_WRITING => {
                        if !wait_for(PQsocket(conn), state == PGRES_POLLING_WRITING, deadline) {
                            return Err(CallError::connection(format!(
                                "no connection within {} ms",
                                timeout.as_millis()
                            )));
                        }
                    }
                    _ => {}
                }
                state = PQconnectPoll(conn);
            }
            if PQsetnonblocking(conn, 1) != 0 {
                return Err(connection.error());
            }
        }
        Ok(connection)
    }

    fn error(&self) -> CallError {
        // SAFETY: PQerrorMessage returns a string owned by the connection.
        let message = unsafe { CStr::from_ptr(PQerrorMessage(self.conn)) }
            .to_string_lossy()
            .trim()
            .to_string();
        CallError::connection(message)
    }

    /// Whether the connection is usable and outside any transaction.
    pub fn is_idle(&self) -> bool {
        // SAFETY: status reads of a live connection.
        unsafe {
            PQstatus(self.conn) == CONNECTION_OK && PQtransactionStatus(self.conn) == PQTRANS_IDLE
        }
    }

    /// Prepares `sql` as `name` on this connection, once (a round trip the first time).
    fn prepare(&mut self, name: &'static str, sql: &str, n_params: usize) -> Result<(), CallError> {
        if self.prepared.contains(&name) {
            return Ok(());
        }
        let cname = CString::new(name).expect("statement names are ASCII");
        let text =
            CString::new(sql).map_err(|_| CallError::connection("command text has a NUL byte"))?;
        // SAFETY: strings live across the call; the answer is read by finish.
        if unsafe {
            PQsendPrepare(
                self.conn,
                cname.as_ptr(),
                text.as_ptr(),
                n_params as c_int,
                std::ptr::null(),
            )
        } == 0
        {
            return Err(self.error());
        }
        self.finish(super::nodes::call_timeout())?;
        self.prepared.push(name);
        Ok(())
    }

    /// Sends `sql` with text parameters (None = NULL): the statement prepared as `name` when
    /// given (preparing it first if needed), else the text itself. The answer is read by
    /// [`Connection::finish`]: several connections can have a command in flight at once.
    pub fn send(
        &mut self,
        name: Option<&'static str>,
        sql: &str,
        params: &[Option<Vec<u8>>],
    ) -> Result<(), CallError> {
        if let Some(name) = name {
            self.prepare(name, sql, params.len())?;
        }
        self.send_prepared_or_text(name, sql, params)
    }

    fn send_prepared_or_text(
        &mut self,
        name: Option<&'static str>,
        sql: &str,
        params: &[Option<Vec<u8>>],
    ) -> Result<(), CallError> {
        let values: Vec<Option<CString>> = params
            .iter()
            .map(|p| {
                p.as_ref()
                    .map(|v| CString::new(v.clone()).unwrap_or_default())
            })
            .collect();
        let pointers: Vec<*const c_char> = values
            .iter()
            .map(|v| v.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
            .collect();
        let text =
            CString::new(sql).map_err(|_| CallError::connection("command text has a NUL byte"))?;
        // SAFETY: the strings and pointer arrays live across the calls; libpq copies what it
        // sends into its output buffer.
        let sent = unsafe {
            match name {
                Some(name) => {
                    let cname = CString::new(name).expect("statement names are ASCII");
                    PQsendQueryPrepared(
                        self.conn,
                        cname.as_ptr(),
                        params.len() as c_int,
                        pointers.as_ptr(),
                        std::ptr::null(),
                        std::ptr::null(),
                        0,
                    )
                }
                None => PQsendQueryParams(
                    self.conn,
                    text.as_ptr(),
                    params.len() as c_int,
                    std::ptr::null(),
                    pointers.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                ),
            }
        };
        if sent == 0 {
            return Err(self.error());
        }
        Ok(())
    }

    /// Sends several commands at once in pipeline mode, to be read by
    /// [`Connection::finish_pipeline`]: one round trip for all of them. After a command fails,
    /// the ones after it are skipped (and the transaction they were in is aborted).
    pub fn send_pipeline(&mut self, commands: &[Command]) -> Result<(), CallError> {
        for c in commands {
            if let Some(name) = c.name {
                self.prepare(name, &c.sql, c.params.len())?;
            }
        }
        // SAFETY: enters pipeline mode on an idle connection.
        if unsafe { PQenterPipelineMode(self.conn) } == 0 {
            return Err(self.error());
        }
        for c in commands {
            self.send_prepared_or_text(c.name, &c.sql, &c.params)?;
        }
        // SAFETY: marks the end of the pipeline's commands.
        if unsafe { PQpipelineSync(self.conn) } == 0 {
            return Err(self.error());
        }
        Ok(())
    }

    /// The answers of the `count` commands of a pipeline, in order.
    pub fn finish_pipeline(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Result<Table, CallError>>, CallError> {
        let deadline = Instant::now() + timeout;
        let mut answers: Vec<Result<Table, CallError>> = Vec::with_capacity(count);
        let mut current: Option<Result<Table, CallError>> = None;
        // SAFETY: drives the connection's input until the pipeline's sync point; each result is
        // copied and cleared.
        unsafe {
            loop {
                let flushed = PQflush(self.conn);
                if flushed < 0 {
                    return Err(self.error());
                }
                if flushed == 1 {
                    if !wait_for(PQsocket(self.conn), true, deadline) {
                        return Err(timed_out(timeout));
                    }
                    continue;
                }
                if PQisBusy(self.conn) != 0 {
                    if !wait_for(PQsocket(self.conn), false, deadline) {
                        return Err(timed_out(timeout));
                    }
                    if PQconsumeInput(self.conn) == 0 {
                        return Err(self.error());
                    }
                    continue;
                }
                let result = PQgetResult(self.conn);
                if result.is_null() {
                    // The end of one command's results.
                    if let Some(answer) = current.take() {
                        answers.push(answer);
                    }
                    continue;
                }
                let status = PQresultStatus(result);
                if status == PGRES_PIPELINE_SYNC {
                    PQclear(result);
                    break;
                }
                let answer = match status {
                    PGRES_TUPLES_OK | PGRES_COMMAND_OK => Ok(copy_rows(result)),
                    PGRES_PIPELINE_ABORTED => Err(CallError {
                        sqlstate: "25P02".into(),
                        message: "skipped: an earlier command of the pipeline failed".into(),
                    }),
                    _ => Err(result_error(result)),
                };
                PQclear(result);
                if current.as_ref().is_none_or(|c| c.is_ok()) {
                    current = Some(answer);
                }
            }
            if PQexitPipelineMode(self.conn) == 0 {
                return Err(self.error());
            }
        }
        while answers.len() < count {
            answers.push(Err(CallError::connection("no answer in the pipeline")));
        }
        Ok(answers)
    }

    /// Reads the answers to what was sent: the last result's rows, or the first error.
    pub fn finish(&mut self, timeout: Duration) -> Result<Table, CallError> {
        let deadline = Instant::now() + timeout;
        let mut table = None;
        let mut failure: Option<CallError> = None;
        // SAFETY: drives the connection's input until every result of what was sent is read;
        // each result is copied and cleared.
        unsafe {
            loop {
                let flushed = PQflush(self.conn);
                if flushed < 0 {
                    return Err(self.error());
                }
                if flushed == 1 {
                    if !wait_for(PQsocket(self.conn), true, deadline) {
                        return Err(timed_out(timeout));
                    }
                    continue;
                }
                if PQisBusy(self.conn) != 0 {
                    if !wait_for(PQsocket(self.conn), false, deadline) {
                        return Err(timed_out(timeout));
                    }
                    if PQconsumeInput(self.conn) == 0 {
                        return Err(self.error());
                    }
                    continue;
                }
                let result = PQgetResult(self.conn);
                if result.is_null() {
                    break;
                }
                match PQresultStatus(result) {
                    PGRES_TUPLES_OK | PGRES_COMMAND_OK => table = Some(copy_rows(result)),
                    _ => {
                        if failure.is_none() {
                            failure = Some(result_error(result));
                        }
                    }
                }
                PQclear(result);
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        Ok(table.unwrap_or_default())
    }

    /// Sends and reads at once.
    pub fn call(
        &mut self,
        name: Option<&'static str>,
        sql: &str,
        params: &[Option<Vec<u8>>],
        timeout: Duration,
    ) -> Result<Table, CallError> {
        self.send(name, sql, params)?;
        self.finish(timeout)
    }
}

fn timed_out(timeout: Duration) -> CallError {
    CallError::connection(format!("no answer within {} ms", timeout.as_millis()))
}

/// # Safety
/// `result` is a live PGresult.
unsafe fn result_error(result: *const PGresult) -> CallError {
    // SAFETY: as the caller promises; the fields are owned by the result.
    unsafe {
        let field = |code| {
            let p = PQresultErrorField(result, code);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let sqlstate = field(PG_DIAG_SQLSTATE).unwrap_or_else(|| "08006".into());
        let message = field(PG_DIAG_MESSAGE_PRIMARY).unwrap_or_else(|| {
            CStr::from_ptr(PQresultErrorMessage(result))
                .to_string_lossy()
                .trim()
                .to_string()
        });
        CallError { sqlstate, message }
    }
}

/// # Safety
/// `result` is a live PGresult with tuples (or none).
unsafe fn copy_rows(result: *const PGresult) -> Table {
    // SAFETY: as the caller promises; every value read is within its row and column counts.
    unsafe {
        let (rows, columns) = (PQntuples(result), PQnfields(result));
        let rows = (0..rows)
            .map(|r| {
                (0..columns)
                    .map(|c| {
                        if PQgetisnull(result, r, c) != 0 {
                            None
                        } else {
                            let len = PQgetlength(result, r, c) as usize;
                            let value = PQgetvalue(result, r, c) as *const u8;
                            Some(std::slice::from_raw_parts(value, len).to_vec())
                        }
                    })
                    .collect()
            })
            .collect();
        Table { rows }
    }
}

/// A text-format array literal of byte strings (None = NULL): `{"a","b",NULL}`.
pub fn array_literal<I, T>(items: I) -> Vec<u8>
where
    I: IntoIterator<Item = Option<T>>,
    T: AsRef<[u8]>,
{
    let mut out = vec![b'{'];
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match item {
            None => out.extend_from_slice(b"NULL"),
            Some(item) => {
                out.push(b'"');
                for &byte in item.as_ref() {
                    if byte == b'"' || byte == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(byte);
                }
                out.push(b'"');
            }
        }
    }
    out.push(b'}');
    out
}

/// Parses a one-dimensional text-format array of the kind Postgres outputs (`{a,"b c",NULL}`).
pub fn parse_array(text: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let inner = text.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Some(items);
    }
    let mut i = 0;
    loop {
        if inner.get(i) == Some(&b'"') {
            let mut item = Vec::new();
            i += 1;
            loop {
                match *inner.get(i)? {
                    b'\\' => {
                        item.push(*inner.get(i + 1)?);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b => {
                        item.push(b);
                        i += 1;
                    }
                }
            }
            items.push(Some(item));
        } else {
            let end = inner[i..]
                .iter()
                .position(|&b| b == b',')
                .map_or(inner.len(), |p| i + p);
            let item = &inner[i..end];
            items.push(if item == b"NULL" {
                None
            } else {
                Some(item.to_vec())
            });
            i = end;
        }
        match inner.get(i) {
            None => return Some(items),
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_round_trip() {
        let items: Vec<Option<&[u8]>> =
            vec![Some(b"a"), Some(b"b\"c"), None, Some(b"d\\e"), Some(b"")];
        let literal = array_literal(items.clone());
        assert_eq!(literal, br#"{"a","b\"c",NULL,"d\\e",""}"#.to_vec());
        let parsed = parse_array(&literal).unwrap();
        let expected: Vec<Option<Vec<u8>>> = items.iter().map(|i| i.map(|b| b.to_vec())).collect();
        assert_eq!(parsed, expected);
        assert_eq!(
            parse_array(b"{1,2,NULL}").unwrap(),
            vec![Some(b"1".to_vec()), Some(b"2".to_vec()), None]
        );
        assert_eq!(parse_array(b"{}").unwrap(), Vec::<Option<Vec<u8>>>::new());
    }
}

#[repr(C)]
struct PQconninfoOption {
    keyword: *mut c_char,
    envvar: *mut c_char,
    compiled: *mut c_char,
    val: *mut c_char,
    label: *mut c_char,
    dispchar: *mut c_char,
    dispsize: c_int,
}

#[link(name = "pq")]
unsafe extern "C" {
    fn PQconninfoParse(conninfo: *const c_char, errmsg: *mut *mut c_char) -> *mut PQconninfoOption;
    fn PQconndefaults() -> *mut PQconninfoOption;
    fn PQconninfoFree(options: *mut PQconninfoOption);
    fn PQfreemem(ptr: *mut c_void);
}

/// The options of a libpq connection string that it sets, or libpq's message.
pub fn parse_conninfo(conninfo: *const c_char) -> Result<Vec<(String, String)>, String> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: parses a NUL-terminated string; the result (or the message) is freed below.
    unsafe {
        let parsed = PQconninfoParse(conninfo, &mut error);
        if parsed.is_null() {
            let message = if error.is_null() {
                "out of memory".to_string()
            } else {
                let m = CStr::from_ptr(error).to_string_lossy().trim().to_string();
                PQfreemem(error as *mut c_void);
                m
            };
            return Err(message);
        }
        let mut set = Vec::new();
        let mut option = parsed;
        while !(*option).keyword.is_null() {
            if !(*option).val.is_null() {
                set.push((
                    CStr::from_ptr((*option).keyword)
                        .to_string_lossy()
                        .into_owned(),
                    CStr::from_ptr((*option).val).to_string_lossy().into_owned(),
                ));
            }
            option = option.add(1);
        }
        PQconninfoFree(parsed);
        Ok(set)
    }
}

/// Every connection keyword this libpq knows.
pub fn keywords() -> Vec<String> {
    // SAFETY: PQconndefaults returns an array ended by a NULL keyword, freed below.
    unsafe {
        let defaults = PQconndefaults();
        if defaults.is_null() {
            return Vec::new();
        }
        let mut all = Vec::new();
        let mut option = defaults;
        while !(*option).keyword.is_null() {
            all.push(
                CStr::from_ptr((*option).keyword)
                    .to_string_lossy()
                    .into_owned(),
            );
            option = option.add(1);
        }
        PQconninfoFree(defaults);
        all
    }
}
