//! The wallet's own locks: object locks on a key, which no other role can take (see
//! `wallet_core::locks` for why not advisory locks). One function per kind of hold on a lock.

use pgrx::pg_sys;
use wallet_core::locks::{lock_fields, LockClass};

use crate::catalog;
use crate::error::WalletResult;

/// The lock tag of `key` in `class`, in this database, in the lock method `method`.
fn tag_in(class: LockClass, key: &[u8], method: u32) -> WalletResult<pg_sys::LOCKTAG> {
    let c = catalog::current()?;
    let class_oid = match class {
        LockClass::IdempotencyKey => c.events,
        LockClass::Hold => c.holds,
        LockClass::GlobalTransaction => c.global_transactions,
        LockClass::Batch => c.branches,
    };
    let (objid, objsubid) = lock_fields(key);
    Ok(pg_sys::LOCKTAG {
        // SAFETY: a plain read of a backend global.
        locktag_field1: u32::from(unsafe { pg_sys::MyDatabaseId }),
        locktag_field2: u32::from(class_oid),
        locktag_field3: objid,
        locktag_field4: objsubid,
        locktag_type: pg_sys::LockTagType::LOCKTAG_OBJECT as u8,
        locktag_lockmethodid: method as u8,
    })
}

/// A transaction's lock: in the default lock method, like a row's.
fn tag(class: LockClass, key: &[u8]) -> WalletResult<pg_sys::LOCKTAG> {
    tag_in(class, key, pg_sys::DEFAULT_LOCKMETHOD)
}

/// A session's lock: in the user lock method (advisory locks' own), whose session locks survive
/// a transaction's abort (the default method's are released with it), so that a claim lasts
/// through a step that rolled back. Its tag type is an object's, never an advisory lock's: no
/// pg_advisory_lock call can take or wait for it.
fn session_tag(class: LockClass, key: &[u8]) -> WalletResult<pg_sys::LOCKTAG> {
    tag_in(class, key, pg_sys::USER_LOCKMETHOD)
}

const MODE: pg_sys::LOCKMODE = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;

/// Waits for and takes the lock of `key` until this transaction ends. Two sessions presenting
/// the same key run one after the other (a deadlock between keys is Postgres's 40P01).
pub fn lock_for_transaction(class: LockClass, key: &[u8]) -> WalletResult<()> {
    let tag = tag(class, key)?;
    // SAFETY: LockAcquire waits (handling interrupts and deadlocks) and may raise an ERROR.
    unsafe { pg_sys::LockAcquire(&tag, MODE, false, false) };
    Ok(())
}

/// Takes the lock of `key` for this session (until [`unlock_session`] or the end of the
/// backend); with `wait` false, returns false at once when another session holds it.
pub fn lock_for_session(class: LockClass, key: &[u8], wait: bool) -> WalletResult<bool> {
    let tag = session_tag(class, key)?;
    // SAFETY: as above; a session lock survives the transaction.
    let result = unsafe { pg_sys::LockAcquire(&tag, MODE, true, !wait) };
    Ok(result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL)
}

/// Releases a session lock taken by [`lock_for_session`]; false if this session did not hold it.
pub fn unlock_session(class: LockClass, key: &[u8]) -> WalletResult<bool> {
    let tag = session_tag(class, key)?;
    // SAFETY: releases one hold of a session lock of this backend (a WARNING if it had none).
    Ok(unsafe { pg_sys::LockRelease(&tag, MODE, true) })
}
