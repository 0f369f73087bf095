//! The locks the wallet takes to serialise calls that concern the same key, and the hash that
//! turns a key into a lock.
//!
//! They are Postgres object locks (`LOCKTAG_OBJECT`) whose class id is the oid of a wallet table,
//! not advisory locks: every role can take any advisory lock (`pg_advisory_lock` is granted to
//! PUBLIC) and so could block the wallet, but no SQL function takes an object lock on a class
//! that is not a system catalog. The table whose oid serves as class says what is locked.

/// What a lock is on; the table whose oid is the lock's class id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockClass {
    /// An idempotency key of a transfer (class: wallet.events), held to the end of the transaction.
    IdempotencyKey,
    /// A (gtid, branch) of a hold (class: wallet.holds), held to the end of the transaction.
    Hold,
    /// A global transaction being driven by its coordinator or recovery (class:
    /// wallet.global_transactions), held by the session that drives it; a crashed backend's
    /// session locks vanish with it, which is how recovery knows the coordinator is gone.
    GlobalTransaction,
    /// A batch of global transactions being driven by the session that started it (class:
    /// wallet.branches), held by that session; recovery leaves a batch's global transactions to
    /// it while it holds this lock.
    Batch,
}

impl LockClass {
    /// The wallet table whose oid is the class id of these locks.
    pub fn table(self) -> &'static str {
        match self {
            LockClass::IdempotencyKey => "events",
            LockClass::Hold => "holds",
            LockClass::GlobalTransaction => "global_transactions",
            LockClass::Batch => "branches",
        }
    }
}

/// FNV-1a, 64 bits: a hash of a key that every backend computes alike, forever.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The 48 bits of a key's hash that an object lock carries: (objid, objsubid).
pub fn lock_fields(key: &[u8]) -> (u32, u16) {
    let hash = key_hash(key);
    ((hash >> 16) as u32, hash as u16)
}

/// The key of a hold's lock: gtid and branch, each ended by a NUL (neither may contain one).
pub fn hold_key(gtid: &[u8], branch: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(gtid.len() + branch.len() + 2);
    key.extend_from_slice(gtid);
    key.push(0);
    key.extend_from_slice(branch);
    key.push(0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable() {
        // Fixed values: changing the hash would let two builds in one cluster disagree.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(key_hash(b"order-1"), key_hash(b"order-2"));
    }

    #[test]
    fn hold_keys_keep_gtid_and_branch_apart() {
        assert_ne!(hold_key(b"ab", b"c"), hold_key(b"a", b"bc"));
        assert_eq!(
            lock_fields(b"a"),
            ((0xaf63_dc4c_8601_ec8c_u64 >> 16) as u32, 0xec8c)
        );
    }
}
