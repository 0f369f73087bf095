//! Which account settles a cross-node posting or hold.
//!
//! A branch of a global transaction moves money between an account of its node and the node's
//! settlement side, left NULL by the coordinator: the currency's system account, or, once the
//! currency's settlement is spread (`wallet.spread_settlement`), one of several system accounts.
//! Every cross-node call of a currency on a node would otherwise take the same row's lock until
//! its (durable) commit, and queue behind all the others (bench/RESULTS.md section 15).

use crate::error::WalletError;
use crate::limits::SETTLEMENT_ACCOUNTS_MAX;

/// The settlement account for `key` (a hold's gtid, a posting's idempotency key): the system
/// account or one of the `further` ones, the same for the same key as long as their number
/// stays, spread evenly over many keys. A repeat after their number changed is answered from
/// what was stored (a hold's accounts, a keyed posting's), not from this choice.
pub fn settlement_account(key: &[u8], system: i64, further: &[i64]) -> i64 {
    if further.is_empty() {
        return system;
    }
    let n = further.len() as u64 + 1;
    match fnv1a(key) % n {
        0 => system,
        i => further[(i - 1) as usize],
    }
}

/// FNV-1a, 64 bits: a fixed function (not the standard library's hasher, free to change
/// between releases), so that every node and every version picks alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How many accounts to open so that a currency's settlement is spread over `wanted` in all,
/// when it is over `current` now (its system account and its further ones). Only more: a
/// settlement account keeps its balance and history, so none is ever taken away.
pub fn accounts_to_open(current: usize, wanted: Option<i32>) -> Result<usize, WalletError> {
    let Some(wanted) = wanted else {
        return Err(WalletError::invalid_argument(
            "accounts",
            "must not be NULL",
        ));
    };
    if !(1..=SETTLEMENT_ACCOUNTS_MAX).contains(&wanted) {
        return Err(WalletError::invalid_argument(
            "accounts",
            format!("must be 1 to {SETTLEMENT_ACCOUNTS_MAX}, got {wanted}"),
        ));
    }
    let wanted = wanted as usize;
    if wanted < current {
        return Err(WalletError::invalid_argument(
            "accounts",
            format!(
                "the settlement is spread over {current} accounts already, and a settlement account is never taken away (asked for {wanted})"
            ),
        ));
    }
    Ok(wanted - current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_further_accounts_the_system_account_settles_everything() {
        assert_eq!(settlement_account(b"order-1", 1, &[]), 1);
        assert_eq!(settlement_account(b"", 7, &[]), 7);
    }

    #[test]
    fn a_key_always_lands_on_the_same_account_and_many_keys_spread_over_all() {
        let further = [10, 11, 12];
        let mut hits = std::collections::HashMap::new();
        for i in 0..4000 {
            let key = format!("gtx-{i}");
            let a = settlement_account(key.as_bytes(), 1, &further);
            assert_eq!(a, settlement_account(key.as_bytes(), 1, &further));
            assert!(a == 1 || further.contains(&a));
            *hits.entry(a).or_insert(0) += 1;
        }
        assert_eq!(hits.len(), 4);
        // Evenly: each of the four gets about a quarter.
        assert!(hits.values().all(|&n| (800..1200).contains(&n)), "{hits:?}");
    }

    #[test]
    fn the_choice_is_a_fixed_function() {
        // FNV-1a's published test vector: the same on every node and in every release.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn settlement_accounts_are_only_ever_added() {
        assert_eq!(accounts_to_open(1, Some(1)), Ok(0));
        assert_eq!(accounts_to_open(1, Some(8)), Ok(7));
        assert_eq!(accounts_to_open(8, Some(8)), Ok(0));
        assert!(accounts_to_open(8, Some(4)).is_err());
        assert!(accounts_to_open(1, Some(0)).is_err());
        assert!(accounts_to_open(1, Some(SETTLEMENT_ACCOUNTS_MAX + 1)).is_err());
        assert!(accounts_to_open(1, None).is_err());
    }
}
