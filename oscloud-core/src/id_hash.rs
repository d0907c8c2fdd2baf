//! A fast hasher for the maps keyed by numeric ids (calls, pipes).
//!
//! The standard `HashMap` hashes with keyed SipHash, which resists
//! collision attacks on arbitrary keys but costs about a tenth of a
//! session's time on a call's round trip. The maps here are keyed by
//! integers and bounded by configuration (`max_pending_calls`,
//! `max_pipes`), so a peer that chose colliding ids could at worst make
//! a lookup walk that many entries. Each id goes through the 64-bit
//! finaliser of MurmurHash3, which spreads sequential and strided ids
//! over every bit.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by ids, hashed with [`IdHasher`].
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A `HashSet` of ids, hashed with [`IdHasher`].
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Hashes integers (and, slower, anything else) by mixing each word in.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

/// MurmurHash3's 64-bit finaliser: a bijection in which every input bit
/// affects every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        self.write_usize(bytes.len());
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash<T: std::hash::Hash>(v: T) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(v)
    }

    #[test]
    fn sequential_and_strided_ids_spread_over_the_low_bits() {
        // hashbrown picks the bucket from the low bits: ids counting up,
        // or in steps of a power of two, must not share them.
        for stride in [1u64, 2, 1 << 10, 1 << 32] {
            let buckets: HashSet<u64> = (0..256u64).map(|i| hash(i * stride) & 0xff).collect();
            assert!(buckets.len() > 128, "stride {stride}: {}", buckets.len());
        }
    }

    #[test]
    fn maps_work_for_ids_and_tuples() {
        let mut m: IdMap<(u32, u64), &str> = IdMap::default();
        m.insert((1, 2), "a");
        m.insert((2, 1), "b");
        assert_eq!(m.get(&(1, 2)), Some(&"a"));
        assert_eq!(m.get(&(2, 1)), Some(&"b"));
        assert_ne!(hash((1u32, 2u64)), hash((2u32, 1u64)));
        let s: IdSet<u64> = (0..1000).collect();
        assert!((0..1000).all(|i| s.contains(&i)));
        assert_ne!(hash("ab"), hash("ba"));
    }
}
