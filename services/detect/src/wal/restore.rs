//! The log's bookkeeping in memory and the restore on start: the
//! checkpoint, then every logged change replayed through the engine.

use std::collections::{HashSet, VecDeque};

use trailhound_core::{Anomaly, DetectorSpec};

use crate::engine::{Engine, EngineConfig, WindowResult};
use crate::service::error::DetectError;
use crate::store::DetectStore;
use crate::wal::{self, WalEntry};

/// Batches whose fingerprints are remembered to recognise one sent again.
pub const REMEMBERED_BATCHES: usize = 65_536;

/// The write-ahead log's settings (see the [`crate::service`] docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    pub enabled: bool,
    /// Checkpoint once the log holds this many events.
    pub checkpoint_after_events: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            checkpoint_after_events: 200_000,
        }
    }
}

impl WalOptions {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// The log's bookkeeping in memory. Locked after the engine, always.
#[derive(Debug, Default)]
pub(crate) struct WalState {
    /// Sequence number of the next entry.
    pub(crate) next_seq: u64,
    /// Entries in the log since the checkpoint: (seq, events).
    pub(crate) entries: VecDeque<(u64, u64)>,
    pub(crate) events: u64,
    /// Fingerprints of the last batches acknowledged: (seq, fingerprint).
    pub(crate) recent: VecDeque<(u64, u128)>,
    pub(crate) recent_set: HashSet<u128>,
}

impl WalState {
    pub(crate) fn logged(&mut self, seq: u64, events: u64, fingerprint: Option<u128>) {
        self.next_seq = seq + 1;
        self.entries.push_back((seq, events));
        self.events += events;
        if let Some(fp) = fingerprint {
            self.remember(seq, fp);
        }
    }

    pub(crate) fn remember(&mut self, seq: u64, fp: u128) {
        self.recent.push_back((seq, fp));
        self.recent_set.insert(fp);
        while self.recent.len() > REMEMBERED_BATCHES {
            if let Some((_, old)) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
    }

    /// The checkpoint now includes every entry up to `seq`.
    pub(crate) fn truncated(&mut self, seq: u64) {
        while let Some(&(s, n)) = self.entries.front() {
            if s > seq {
                break;
            }
            self.entries.pop_front();
            self.events = self.events.saturating_sub(n);
        }
    }
}

/// The engine rebuilt from the store: checkpoint, then the log.
pub(crate) struct Restored {
    pub(crate) engine: Engine,
    pub(crate) wal: WalState,
    pub(crate) had_checkpoint: bool,
    pub(crate) replayed_entries: u64,
    pub(crate) replayed_events: u64,
    /// Anomalies the replay found that were not stored yet.
    pub(crate) unsent: Vec<Anomaly>,
}

/// Makes the engine's detectors exactly `specs` (learned state is kept for
/// detectors whose shape did not change).
fn reconcile(e: &mut Engine, specs: &[DetectorSpec]) {
    let names: Vec<String> = e.specs().map(|s| s.name.clone()).collect();
    for n in names {
        if !specs.iter().any(|s| s.name == n) {
            e.remove_detector(&n);
        }
    }
    for s in specs {
        e.upsert_detector(s.clone());
    }
}

/// Applies one log entry; returns the events it held.
fn apply_entry(engine: &mut Engine, entry: WalEntry, out: &mut Vec<WindowResult>) -> u64 {
    match entry {
        WalEntry::Batch(events) => {
            for e in &events {
                engine.observe(e, out);
            }
            events.len() as u64
        }
        WalEntry::Advance(watermark_ms) => {
            engine.advance(watermark_ms, out);
            0
        }
        WalEntry::Flush => {
            engine.flush(out);
            0
        }
        WalEntry::Detectors(specs) => {
            reconcile(engine, &specs);
            0
        }
        WalEntry::Shared(rising) => {
            engine.observe_shared(&rising, out);
            0
        }
    }
}

/// Log entries read per page while replaying.
const REPLAY_PAGE: usize = 256;

/// Restores the checkpoint (or starts afresh with `specs`), replays the
/// log over it, and ends with the detectors `specs`.
pub(crate) fn restore(
    store: &DetectStore,
    specs: &[DetectorSpec],
    engine_config: &EngineConfig,
) -> Result<Restored, DetectError> {
    let checkpoint = store.load_checkpoint()?;
    let had_checkpoint = checkpoint.is_some();
    let mut engine = match checkpoint {
        Some(c) => Engine::from_checkpoint(c, engine_config),
        None => Engine::new(specs.to_vec(), engine_config.clone()),
    };
    let base = store.checkpoint_wal_seq()?;
    let mut wal = WalState::default();
    let mut last = base;
    let (mut replayed_entries, mut replayed_events) = (0, 0);
    let mut unsent = Vec::new();
    let mut results = Vec::new();
    loop {
        let page = store.wal_entries(last, REPLAY_PAGE)?;
        if page.is_empty() {
            break;
        }
        for (seq, bytes) in page {
            last = seq;
            let n = match wal::decode(&bytes) {
                Ok(entry) => apply_entry(&mut engine, entry, &mut results),
                Err(e) => {
                    tracing::error!(seq, error = %e, "skipping a write-ahead log entry this build cannot read");
                    0
                }
            };
            wal.entries.push_back((seq, n));
            wal.events += n;
            replayed_entries += 1;
            replayed_events += n;
        }
        unsent.extend(store.record_replayed(&results, &engine.take_late())?);
        results.clear();
    }
    reconcile(&mut engine, specs);
    wal.next_seq = last.max(store.wal_last_seq()?.unwrap_or(0)) + 1;
    for (seq, fp) in store.recent_batches()? {
        wal.remember(seq, fp);
    }
    Ok(Restored {
        engine,
        wal,
        had_checkpoint,
        replayed_entries,
        replayed_events,
        unsent,
    })
}
