//! Event time for the engine: when may a window close?
//!
//! CloudTrail delivers each account × region (a *partition*) in its own
//! files, every few minutes and each with its own delay, so events of
//! different partitions arrive out of order by minutes (more when several
//! shippers push at once, or one account's delivery stalls). A window may
//! close only once every partition still delivering has passed it. So the
//! closing watermark is the progress of the slowest *active* partition,
//! where active means no further than `max_lag` behind the newest event
//! time: a partition further behind is no longer waited for, and what it
//! sends for windows already closed is late (recorded, not silently lost).
//!
//! The newest event time is the second-newest seen, so one event with a
//! wrong clock (an hour, a day or a millennium ahead) cannot move the
//! watermark; entry points also quarantine events ahead of their receiving
//! clock, so this is the second line, for replays of history.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Event-time progress per partition and the watermark derived from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventClock {
    max_lag_ms: i64,
    /// Newest and second-newest event times seen.
    newest: i64,
    second: i64,
    /// Newest event time per partition (a hash of account and region).
    progress: HashMap<u64, i64>,
    /// `progress` ordered by time, for the slowest active partition.
    #[serde(skip)]
    by_progress: BTreeSet<(i64, u64)>,
    /// Set by [`EventClock::advance`]: the watermark is at least this.
    floor: i64,
    /// The watermark never goes back.
    watermark: i64,
    /// Partitions in `progress` when it was last pruned.
    pruned_at: usize,
}

impl EventClock {
    pub fn new(max_lag_ms: i64) -> Self {
        Self {
            max_lag_ms: max_lag_ms.max(0),
            newest: i64::MIN,
            second: i64::MIN,
            progress: HashMap::default(),
            by_progress: BTreeSet::new(),
            floor: i64::MIN,
            watermark: i64::MIN,
            pruned_at: 0,
        }
    }

    /// After deserializing: rebuilds the ordered index.
    pub fn restore(&mut self) {
        self.by_progress = self.progress.iter().map(|(k, t)| (*t, *k)).collect();
    }

    pub fn set_max_lag(&mut self, max_lag_ms: i64) {
        self.max_lag_ms = max_lag_ms.max(0);
    }

    /// Notes an event of `partition` at `t`.
    pub fn observe(&mut self, partition: u64, t: i64) {
        if t > self.newest {
            self.second = self.newest;
            self.newest = t;
        } else if t > self.second {
            self.second = t;
        }
        match self.progress.get_mut(&partition) {
            Some(p) if *p >= t => {}
            Some(p) => {
                self.by_progress.remove(&(*p, partition));
                *p = t;
                self.by_progress.insert((t, partition));
            }
            None => {
                self.progress.insert(partition, t);
                self.by_progress.insert((t, partition));
                if self.progress.len() > 2 * self.pruned_at.max(1024) {
                    self.prune();
                }
            }
        }
    }

    /// The newest plausible event time: the second-newest seen (a lone
    /// outlier moves only the newest), or the floor an idle stream was
    /// advanced to.
    pub fn newest(&self) -> i64 {
        self.second.max(self.floor)
    }

    /// Moves time on without an event (a quiet live stream): every
    /// partition counts as having reached `t`.
    pub fn advance(&mut self, t: i64) {
        self.floor = self.floor.max(t);
    }

    /// The closing watermark: the slowest active partition's progress,
    /// never past the newest plausible time and never going back.
    pub fn watermark(&mut self) -> i64 {
        let newest = self.newest();
        if newest == i64::MIN {
            return self.watermark.max(self.floor);
        }
        let oldest_active = newest.saturating_sub(self.max_lag_ms);
        let slowest = self
            .by_progress
            .range((oldest_active, 0)..)
            .next()
            .map_or(newest, |(t, _)| *t);
        self.watermark = self.watermark.max(slowest.min(newest)).max(self.floor);
        self.watermark
    }

    /// Partitions tracked.
    pub fn partitions(&self) -> usize {
        self.progress.len()
    }

    /// Forgets partitions a day further behind than `max_lag`: they hold
    /// nothing back, and one that delivers again is simply noted again.
    fn prune(&mut self) {
        let cutoff = self
            .newest()
            .saturating_sub(self.max_lag_ms)
            .saturating_sub(86_400_000);
        let stale: Vec<(i64, u64)> = self.by_progress.range(..(cutoff, 0)).copied().collect();
        for (t, k) in stale {
            self.by_progress.remove(&(t, k));
            self.progress.remove(&k);
        }
        self.pruned_at = self.progress.len();
    }
}

/// A partition's key: FNV-1a of account and region, stable across runs.
pub fn partition_key(account: &str, region: &str) -> u64 {
    let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    let h = account.bytes().fold(0xcbf2_9ce4_8422_2325, step);
    region.bytes().fold(step(h, b'/'), step)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn waits_for_the_slowest_active_partition() {
        let mut c = EventClock::new(15 * MIN);
        c.observe(1, 100 * MIN);
        c.observe(2, 90 * MIN);
        c.observe(1, 101 * MIN);
        // Partition 2 is 11 minutes behind: still waited for.
        assert_eq!(c.watermark(), 90 * MIN);
        c.observe(2, 95 * MIN);
        assert_eq!(c.watermark(), 95 * MIN);
        // Partition 1 runs on; 2 falls more than 15 minutes behind.
        c.observe(1, 111 * MIN);
        c.observe(1, 112 * MIN);
        assert_eq!(c.watermark(), 111 * MIN);
    }

    #[test]
    fn one_outlier_moves_nothing() {
        let mut c = EventClock::new(15 * MIN);
        c.observe(1, 100 * MIN);
        c.observe(1, 101 * MIN);
        c.observe(2, 100 * MIN + 24 * 60 * MIN);
        assert_eq!(c.newest(), 101 * MIN);
        assert!(c.watermark() <= 101 * MIN);
        c.observe(1, 102 * MIN);
        assert_eq!(c.newest(), 102 * MIN);
        assert_eq!(c.watermark(), 102 * MIN);
    }

    #[test]
    fn never_goes_back_and_advance_is_a_floor() {
        let mut c = EventClock::new(15 * MIN);
        c.observe(1, 100 * MIN);
        c.observe(1, 101 * MIN);
        // The newest plausible time is the second-newest event.
        assert_eq!(c.watermark(), 100 * MIN);
        // A new partition far behind does not pull the watermark back.
        c.observe(2, 90 * MIN);
        assert_eq!(c.watermark(), 100 * MIN);
        c.advance(130 * MIN);
        assert_eq!(c.watermark(), 130 * MIN);
        assert_eq!(c.newest(), 130 * MIN);
    }

    #[test]
    fn restores_its_index_and_prunes_stale_partitions() {
        let mut c = EventClock::new(15 * MIN);
        for p in 0..3000u64 {
            c.observe(p, p as i64 * MIN);
        }
        // Old partitions were pruned along the way.
        assert!(c.partitions() < 3000, "{}", c.partitions());
        let bytes = postcard::to_stdvec(&c).unwrap();
        let mut back: EventClock = postcard::from_bytes(&bytes).unwrap();
        back.restore();
        assert_eq!(back.watermark(), c.watermark());
    }
}
