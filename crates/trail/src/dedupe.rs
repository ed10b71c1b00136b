//! Bounded deduplication by (recipientAccountId, eventID). CloudTrail may
//! deliver an event more than once (and replays overlap); two generations
//! of keys keep memory bounded: when the current one fills, the older is
//! dropped.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Remembers roughly the last `2 × capacity` event ids.
#[derive(Debug)]
pub struct Dedupe {
    current: HashSet<u128, KeyedMix>,
    previous: HashSet<u128, KeyedMix>,
    capacity: usize,
}

/// Hashes 128-bit keys with one keyed multiply-xorshift. Keys are already
/// keyed hashes (see [`event_key`]), so SipHash's cost again would buy
/// nothing.
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

/// An event's identity as 128 bits: its account and its eventID, exact
/// bytes. CloudTrail's ids are unique per account, not across accounts,
/// and an id differing only in case is another id. The hash is keyed per
/// process, so nobody can craft an id that collides with another on
/// purpose (and have a real event dropped as its duplicate).
pub fn event_key(account: &str, id: &str) -> u128 {
    use std::sync::OnceLock;
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    let half = |s: &RandomState| {
        let mut h = s.build_hasher();
        h.write(account.as_bytes());
        h.write_u8(0x1f);
        h.write(id.as_bytes());
        h.finish()
    };
    (u128::from(half(a)) << 64) | u128::from(half(b))
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

    /// Forgets an event, so it is accepted when sent again: for events
    /// that were never accepted downstream.
    pub fn forget(&mut self, account: &str, id: &str) {
        let k = event_key(account, id);
        self.current.remove(&k);
        self.previous.remove(&k);
    }

    /// True when the event (account and eventID) is new, and remembers it.
    pub fn first_time(&mut self, account: &str, id: &str) -> bool {
        self.first_time_key(event_key(account, id))
    }

    /// [`Self::first_time`] for an event already turned into its
    /// [`event_key`], so that keys can be made on other threads.
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

    const A: &str = "111122223333";

    #[test]
    fn drops_repeats_and_stays_bounded() {
        let mut d = Dedupe::new(2);
        assert!(d.first_time(A, "a"));
        assert!(!d.first_time(A, "a"));
        assert!(d.first_time(A, "b"));
        assert!(d.first_time(A, "c")); // rotates: {a,b} become previous
        assert!(!d.first_time(A, "a"));
        assert!(d.first_time(A, "d"));
        assert!(d.first_time(A, "e")); // rotates again: a and b are forgotten
        assert!(d.first_time(A, "a"));
    }

    #[test]
    fn the_same_id_in_another_account_or_case_is_another_event() {
        let id = "7d5b7e0c-0000-4000-8000-00000000000a";
        let mut d = Dedupe::new(100);
        assert!(d.first_time(A, id));
        assert!(!d.first_time(A, id));
        assert!(d.first_time("444455556666", id));
        assert!(d.first_time(A, &id.to_uppercase()));
        // The account and id are not simply concatenated.
        assert_ne!(event_key("1", "23"), event_key("12", "3"));
        d.forget(A, id);
        assert!(d.first_time(A, id));
    }
}
