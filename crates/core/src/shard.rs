//! Which detect replica owns an account: `detect --shard I/N` keeps the
//! accounts whose stable hash falls in share I of N, and enrich routes
//! every event to the replica that owns its account. The hash is FNV-1a of
//! the account id, the same on every platform and in every release, so
//! the owner of an account never moves while N stays the same.

use std::fmt;
use std::str::FromStr;

/// One replica's share of the accounts: index `I` of `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The single replica that owns everything.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range: indexes run from 0 to {} for {count} shards",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether this share holds `account_id`.
    pub fn owns(&self, account_id: &str) -> bool {
        self.count <= 1 || shard_of(account_id, self.count) == self.index
    }

    pub fn is_all(&self) -> bool {
        self.count <= 1
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self::ALL
    }
}

/// The share (0..count) an account belongs to.
pub fn shard_of(account_id: &str, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count)) as u32
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`, e.g. `0/3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a shard: expected I/N, e.g. 0/3"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a shard: {what} {v:?} is not a number"))
        };
        Shard::new(parse(i, "index")?, parse(n, "count")?)
    }
}

impl serde::Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_with_the_reason() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert!("3/3".parse::<Shard>().unwrap_err().contains("out of range"));
        assert!("0/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("a/3".parse::<Shard>().unwrap_err().contains("index"));
        assert!("3".parse::<Shard>().unwrap_err().contains("I/N"));
        assert_eq!(Shard::new(1, 4).map(|s| s.to_string()), Ok("1/4".into()));
    }

    #[test]
    fn every_account_has_exactly_one_owner_and_the_shares_are_even() {
        let n = 3;
        let shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n).unwrap()).collect();
        let mut sizes = [0usize; 3];
        for k in 0..3000u64 {
            let account = format!("{:012}", 100_000_000_000 + k * 7919);
            let owners: Vec<u32> = shards
                .iter()
                .filter(|s| s.owns(&account))
                .map(|s| s.index)
                .collect();
            assert_eq!(owners, vec![shard_of(&account, n)], "{account}");
            sizes[owners[0] as usize] += 1;
        }
        // 1000 expected each; a skewed hash would load one replica.
        assert!(sizes.iter().all(|&s| (850..1150).contains(&s)), "{sizes:?}");
    }

    #[test]
    fn the_owner_is_the_same_everywhere() {
        // Fixed values: a change of hash would silently move accounts
        // between replicas that already hold their history.
        assert_eq!(shard_of("111111111111", 3), shard_of("111111111111", 3));
        let fixed: Vec<u32> = ["111111111111", "222222222222", "123456789012"]
            .iter()
            .map(|a| shard_of(a, 7))
            .collect();
        assert_eq!(fixed, FIXED);
        assert!(Shard::ALL.owns("999999999999"));
    }

    const FIXED: [u32; 3] = [3, 1, 6];
}
