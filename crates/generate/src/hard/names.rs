//! The vocabulary the profile draws from when it plans and when it writes:
//! instance types, hex ids and attackers' addresses.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::org::pick;

pub(super) const NORMAL_TYPES: [&str; 8] = [
    "m5.large",
    "m5.xlarge",
    "c5.xlarge",
    "t3.medium",
    "t3.large",
    "r5.large",
    "m6i.large",
    "c6g.large",
];
pub(super) const GPU_TYPES: [&str; 5] = [
    "p3.2xlarge",
    "p4d.24xlarge",
    "g5.12xlarge",
    "g4dn.xlarge",
    "p3.8xlarge",
];

pub(super) fn hex(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

pub(super) fn new_ip(rng: &mut ChaCha8Rng) -> String {
    // Addresses no baseline traffic uses (corporate ranges are 192.0.2/24
    // and 198.51.100/24 and 10.x NAT).
    format!(
        "{}.{}.{}.{}",
        pick(rng, &[45u8, 91, 103, 185, 194]),
        rng.random_range(1..255),
        rng.random_range(1..255),
        rng.random_range(2..254)
    )
}
