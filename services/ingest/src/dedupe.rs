//! Bounded deduplication by eventID. CloudTrail may deliver an event more
//! than once (and replays overlap); two generations of ids keep memory
//! bounded: when the current one fills, the older is dropped.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Remembers roughly the last `2 × capacity` event ids.
#[derive(Debug)]
pub struct Dedupe {
    current: HashSet<u128, KeyedMix>,
    previous: HashSet<u128, KeyedMix>,
    capacity: usize,
}

/// Hashes 128-bit keys with one keyed multiply-xorshift. Keys are UUIDs
/// (already random) or FNV digests, so SipHash's cost buys nothing; the
/// per-process random key keeps crafted event ids from colliding on
/// purpose.
#[derive(Clone, Debug)]
struct KeyedMix {
    key: u64,
}

impl KeyedMix {
    fn new() -> Self {
        Self {
            key: RandomState::new().hash_one(0u8) | 1,
        }
    }
}

impl BuildHasher for KeyedMix {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(self.key)
    }
}

#[derive(Debug)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(32) ^ self.0;
        let x = (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// An event id as 128 bits: CloudTrail's ids are UUIDs, read exactly;
/// anything else is hashed (two independent 64-bit FNV-1a passes).
pub fn id_key(id: &str) -> u128 {
    // Parsed in place: this runs once per event.
    let mut v: u128 = 0;
    let mut digits = 0;
    for b in id.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b'-' => continue,
            _ => {
                digits = usize::MAX;
                break;
            }
        };
        if digits == 32 {
            digits = usize::MAX;
            break;
        }
        v = (v << 4) | u128::from(d);
        digits += 1;
    }
    if digits == 32 {
        return v;
    }
    let fnv = |seed: u64| {
        id.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x8422_2325_cbf2_9ce4))
}

impl Dedupe {
    pub fn new(capacity: usize) -> Self {
        let mix = KeyedMix::new();
        Self {
            current: HashSet::with_capacity_and_hasher(capacity.min(1 << 20), mix.clone()),
            previous: HashSet::with_hasher(mix),
            capacity: capacity.max(1),
        }
    }

    /// Forgets an id, so the same event is accepted when sent again: for
    /// events that were never accepted downstream.
    pub fn forget(&mut self, id: &str) {
        let k = id_key(id);
        self.current.remove(&k);
        self.previous.remove(&k);
    }

    /// True when the id is new (and remembers it).
    pub fn first_time(&mut self, id: &str) -> bool {
        self.first_time_key(id_key(id))
    }

    /// [`Self::first_time`] for an id already turned into its [`id_key`],
    /// so that the parsing of ids can run on other threads.
    pub fn first_time_key(&mut self, k: u128) -> bool {
        if self.current.contains(&k) || self.previous.contains(&k) {
            return false;
        }
        if self.current.len() >= self.capacity {
            let fresh = HashSet::with_hasher(self.current.hasher().clone());
            self.previous = std::mem::replace(&mut self.current, fresh);
        }
        self.current.insert(k);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_and_stays_bounded() {
        let mut d = Dedupe::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c")); // rotates: {a,b} become previous
        assert!(!d.first_time("a"));
        assert!(d.first_time("d"));
        assert!(d.first_time("e")); // rotates again: a and b are forgotten
        assert!(d.first_time("a"));
    }

    #[test]
    fn uuids_are_exact() {
        assert_eq!(
            id_key("7d5b7e0c-0000-4000-8000-000000000001"),
            0x7d5b7e0c_0000_4000_8000_000000000001
        );
        assert_ne!(id_key("x"), id_key("y"));
    }
}
