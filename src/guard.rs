//! The ledger outlives a careless `DROP EXTENSION`: an event trigger (sql/schema.sql,
//! `wallet_guard_drop`) runs [`wallet_guard_drop`] before every `DROP EXTENSION`, `DROP SCHEMA`
//! and `DROP OWNED`, and refuses one that would drop wallet_ext while `wallet.events` holds an
//! event (WA029), unless the superuser-only setting `wallet.allow_drop` is on.
//!
//! Why an event trigger at `ddl_command_start`: it runs before anything is dropped, whereas one
//! at `sql_drop` would already have been dropped with the extension it belongs to.

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum};

use crate::entry::entry_point;
use crate::error::{WalletError, WalletResult};
use crate::settings;
use crate::spi::{Connection, Kept};

static NEWEST_EVENT: Kept = Kept {
    slot: 27,
    sql: || "SELECT max(seq) FROM wallet.events".to_string(),
    args: &[],
    index_only: false,
    hash_join: false,
};

pub const KEPT: &[&Kept] = &[&NEWEST_EVENT];

/// The names in a DROP statement's object list (each a String node for extensions and schemas).
///
/// # Safety
/// `objects` is the object list of a DropStmt of extensions or schemas.
unsafe fn names(objects: *mut pg_sys::List) -> Vec<String> {
    if objects.is_null() {
        return Vec::new();
    }
    // SAFETY: as the caller promises: a list of String nodes.
    unsafe {
        (0..(*objects).length as usize)
            .map(|i| {
                let node = (*(*objects).elements.add(i)).ptr_value as *mut pg_sys::String;
                CStr::from_ptr((*node).sval).to_string_lossy().into_owned()
            })
            .collect()
    }
}

/// What the statement would drop of the wallet, if anything: "DROP EXTENSION wallet_ext", ...
fn what_it_drops(parsetree: *mut pg_sys::Node) -> Option<String> {
    // SAFETY: the parse tree of the statement the event trigger fires for; its tag says its type.
    unsafe {
        match (*parsetree).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = parsetree as *mut pg_sys::DropStmt;
                let names = names((*stmt).objects);
                match (*stmt).removeType {
                    pg_sys::ObjectType::OBJECT_EXTENSION
                        if names.iter().any(|n| n == "wallet_ext") =>
                    {
                        Some("DROP EXTENSION wallet_ext".into())
                    }
                    pg_sys::ObjectType::OBJECT_SCHEMA if names.iter().any(|n| n == "wallet") => {
                        Some("DROP SCHEMA wallet".into())
                    }
                    _ => None,
                }
            }
            pg_sys::NodeTag::T_DropOwnedStmt => {
                let stmt = parsetree as *mut pg_sys::DropOwnedStmt;
                let owner = crate::coordinator::nodes::extension_owner();
                if owner == pg_sys::InvalidOid {
                    return None;
                }
                let roles = (*stmt).roles;
                let drops_owner = !roles.is_null()
                    && (0..(*roles).length as usize).any(|i| {
                        let spec = (*(*roles).elements.add(i)).ptr_value as *const pg_sys::RoleSpec;
                        pg_sys::get_rolespec_oid(spec, true) == owner
                    });
                drops_owner.then(|| "DROP OWNED BY the owner of wallet_ext".into())
            }
            _ => None,
        }
    }
}

fn guard(parsetree: *mut pg_sys::Node) -> WalletResult<()> {
    if settings::ALLOW_DROP.get() {
        return Ok(());
    }
    let conn = Connection::open();
    let Some(what) = what_it_drops(parsetree) else {
        return Ok(());
    };
    let rows = conn.execute(&NEWEST_EVENT, &[]);
    match rows.get::<i64>(0, 1) {
        None => Ok(()),
        Some(newest_seq) => Err(WalletError::DropRefused { what, newest_seq }),
    }
}

// wallet._guard_drop(): the function of event trigger wallet_guard_drop.
entry_point!(wallet_guard_drop, pg_finfo_wallet_guard_drop, &[], |args| {
    let fcinfo = args.fcinfo();
    // SAFETY: an event trigger function is called with an EventTriggerData as its context.
    let parsetree = unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            return Err(WalletError::invalid_argument(
                "context",
                "must be called as an event trigger",
            ));
        }
        (*(context as *mut pg_sys::EventTriggerData)).parsetree
    };
    guard(parsetree)?;
    Ok(Some(Datum::from(0usize)))
});
