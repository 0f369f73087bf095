//! Nodes: other databases running wallet_ext, registered by name. A node is a foreign server of
//! the wallet's own foreign-data wrapper `wallet_nodes` (its address: host, port, dbname, ...),
//! with a user mapping for the extension's owner holding the credentials (user, password, ...):
//! secrets are kept the Postgres way, readable by the superuser alone (`pg_user_mapping`; the
//! `pg_user_mappings` view shows options only to their own user). Nobody is granted USAGE on
//! the servers, so no role can open a dblink or postgres_fdw connection with them.
//!
//! This module turns a node's name into libpq parameters and keeps one connection per node per
//! backend, inside the library (see `libpq.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::time::Duration;

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;

use super::libpq::{CallError, Connection};
use crate::commands::query;
use crate::spi::{self, Kept};

query!(NODE_SERVER, 32, "node_server.sql", [pg_sys::TEXTOID], false);

pub const KEPT: &[&Kept] = &[&NODE_SERVER];

/// The libpq keywords that hold credentials: allowed in the user mapping only.
pub const SECRET_KEYWORDS: [&str; 6] = [
    "user",
    "password",
    "sslpassword",
    "sslkey",
    "sslcert",
    "passfile",
];

/// Keywords the wallet sets itself, refused in a node's options.
pub const RESERVED_KEYWORDS: [&str; 4] = [
    "client_encoding",
    "replication",
    "fallback_application_name",
    "options",
];

/// How long a call to a node may wait for its answer (and a connection for the node).
pub fn call_timeout() -> Duration {
    Duration::from_millis(crate::settings::NODE_TIMEOUT.get().max(1) as u64)
}

/// How long a participant's call may wait, in milliseconds: half the coordinator's wait for its
/// answer (a participant's lock_timeout, and the statement timeout of 2PC's postings).
pub fn participant_wait_ms() -> i32 {
    (crate::settings::NODE_TIMEOUT.get() / 2).max(1)
}

/// The options of a foreign server or user mapping (a List of DefElem with String values).
///
/// # Safety
/// `options` is such a list (or NULL).
unsafe fn options(options: *mut pg_sys::List) -> Vec<(String, String)> {
    if options.is_null() {
        return Vec::new();
    }
    // SAFETY: as the caller promises.
    unsafe {
        (0..(*options).length as usize)
            .map(|i| {
                let def = (*(*options).elements.add(i)).ptr_value as *mut pg_sys::DefElem;
                let name = CStr::from_ptr((*def).defname)
                    .to_string_lossy()
                    .into_owned();
                let value = pg_sys::defGetString(def);
                (name, CStr::from_ptr(value).to_string_lossy().into_owned())
            })
            .collect()
    }
}

/// Why a node cannot be used.
pub fn unusable(node: &str, why: impl Into<String>) -> CallError {
    let _ = node;
    CallError {
        sqlstate: "WA025".into(),
        message: why.into(),
    }
}

/// Whether `node` is registered.
pub fn exists(node: &str) -> bool {
    server_of(node).is_some()
}

fn server_of(node: &str) -> Option<String> {
    let conn = spi::Connection::open();
    let rows = conn.execute(&NODE_SERVER, &[node.into_datum()]);
    (!rows.is_empty()).then(|| {
        rows.bytes(0, 1)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    })?
}

/// The libpq parameters of `node`: its server's options, its user mapping's (for the wallet's
/// owner, or PUBLIC), and the wallet's own.
fn params(node: &str) -> Result<Vec<(String, String)>, CallError> {
    let server = server_of(node).ok_or_else(|| unusable(node, "is not registered"))?;
    let server_name = std::ffi::CString::new(server.clone()).unwrap_or_default();
    // SAFETY: catalog look-ups; the owner's oid comes from the extension's own row.
    unsafe {
        let srv = pg_sys::GetForeignServerByName(server_name.as_ptr(), true);
        if srv.is_null() {
            return Err(unusable(
                node,
                format!("its foreign server {server} is missing"),
            ));
        }
        let owner = extension_owner();
        let mapped = [owner, pg_sys::InvalidOid].into_iter().any(|user| {
            let tuple = pg_sys::SearchSysCache2(
                pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER as i32,
                Datum::from(user),
                Datum::from((*srv).serverid),
            );
            let found = !tuple.is_null();
            if found {
                pg_sys::ReleaseSysCache(tuple);
            }
            found
        });
        if !mapped {
            return Err(unusable(
                node,
                format!("foreign server {server} has no user mapping for the wallet's owner"),
            ));
        }
        let mapping = pg_sys::GetUserMapping(owner, (*srv).serverid);
        let mut params = options((*srv).options);
        params.extend(options((*mapping).options));
        let encoding = CStr::from_ptr(pg_sys::GetDatabaseEncodingName())
            .to_string_lossy()
            .into_owned();
        params.push(("client_encoding".into(), encoding));
        params.push((
            "fallback_application_name".into(),
            "wallet_ext coordinator".into(),
        ));
        // A participant's call waits for a row lock half as long as the coordinator waits for
        // its answer: a call that cannot get its lock answers 55P03 while the coordinator still
        // listens, so the connection stays and the round's next calls to the node (a COMMIT
        // PREPARED that releases the lock, say) still go out; and no call the coordinator gave
        // up on lingers, waiting, on the node.
        // And the node resolves what the coordinator sends as the wallet does at home, whatever
        // the search_path of its database or of the mapped role (a client's -c wins over both).
        // A participant whose coordinator went away (a crash) stops waiting within a second
        // rather than at its lock timeout: a 2PC call that waited on would PREPARE with nobody
        // to hear it (recovery's sweep rolls that back, but it holds its locks until then).
        params.push((
            "options".into(),
            format!(
                "-c search_path=pg_catalog,pg_temp -c lock_timeout={}ms -c client_connection_check_interval=1000ms",
                participant_wait_ms()
            ),
        ));
        Ok(params)
    }
}

/// The role that owns wallet_ext, whose user mapping the coordinator connects with (and whose
/// rights the coordinator works with); InvalidOid if the extension is not there. Read from the
/// catalog directly, as `get_extension_oid` does (no statement, no settings to pin: every CALL
/// of a procedure asks).
pub fn extension_owner() -> pg_sys::Oid {
    // SAFETY: a catalog scan of pg_extension by its name index under the catalog snapshot, as
    // Postgres's own get_extension_oid; the tuple is read before the scan ends.
    unsafe {
        let relation =
            pg_sys::table_open(pg_sys::ExtensionRelationId, pg_sys::AccessShareLock as i32);
        let mut key = std::mem::MaybeUninit::<pg_sys::ScanKeyData>::zeroed();
        pg_sys::ScanKeyInit(
            key.as_mut_ptr(),
            pg_sys::Anum_pg_extension_extname as pg_sys::AttrNumber,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_NAMEEQ),
            Datum::from(c"wallet_ext".as_ptr()),
        );
        let scan = pg_sys::systable_beginscan(
            relation,
            pg_sys::Oid::from(pg_sys::ExtensionNameIndexId),
            true,
            std::ptr::null_mut(),
            1,
            key.as_mut_ptr(),
        );
        let tuple = pg_sys::systable_getnext(scan);
        let owner = if tuple.is_null() {
            pg_sys::InvalidOid
        } else {
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_extension>(tuple)).extowner
        };
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
        owner
    }
}

struct Pooled {
    params: Vec<(String, String)>,
    connection: Connection,
}

thread_local! {
    /// One idle connection per node, kept for the next call (a backend is single-threaded).
    static POOL: RefCell<HashMap<String, Pooled>> = RefCell::new(HashMap::new());
}

/// A connection to a node, taken out of the pool for one call; given back when it is returned
/// healthy, closed otherwise (also when an ERROR unwinds through it).
pub struct Lease {
    node: String,
    params: Vec<(String, String)>,
    connection: Option<Connection>,
}

impl Lease {
    pub fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // the connection is closed with it: its state is unknown
        }
        if let Some(connection) = self.connection.take() {
            if connection.is_idle() {
                let pooled = Pooled {
                    params: std::mem::take(&mut self.params),
                    connection,
                };
                POOL.with(|p| p.borrow_mut().insert(self.node.clone(), pooled));
            }
        }
    }
}

/// A connection to `node`: the pooled one if its parameters are unchanged (a node re-pointed
/// with register_node gets a new one), else a new one.
pub fn lease(node: &str) -> Result<Lease, CallError> {
    // Also between the steps of a procedure, where no snapshot may be active.
    let params = super::steps::between_steps(|| params(node))?;
    let pooled = POOL.with(|p| p.borrow_mut().remove(node));
    let connection = match pooled {
        Some(p) if p.params == params && p.connection.is_idle() => p.connection,
        _ => Connection::connect(&params, call_timeout())?,
    };
    Ok(Lease {
        node: node.to_string(),
        params,
        connection: Some(connection),
    })
}

/// Parses a libpq connection string into (keyword, value) pairs, for register_node.
pub fn parse_conninfo(conninfo: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text =
        std::ffi::CString::new(conninfo.to_vec()).map_err(|_| "it has a NUL byte".to_string())?;
    super::libpq::parse_conninfo(text.as_ptr() as *const c_char)
}

/// Every libpq keyword this client library knows.
pub fn known_keywords() -> Vec<String> {
    super::libpq::keywords()
}
