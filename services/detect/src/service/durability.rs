//! Making the engine's changes durable: each one committed to the
//! write-ahead log while the engine is locked, and the checkpoints that
//! empty the log.

use trailhound_core::DetectorSpec;

use super::{Detect, DetectError};
use crate::engine::{Engine, LateEvent, WindowResult};
use crate::wal::restore;

impl Detect {
    /// Commits a log entry and the windows it closed while the engine is
    /// locked, so the log's order is the engine's. If the commit fails, the
    /// engine is rebuilt from the store: it must not keep a change the log
    /// does not have (the caller answers with an error and the change is
    /// sent again).
    pub(super) fn commit_locked(
        &self,
        engine: &mut Engine,
        entry: &[u8],
        fingerprint: Option<u128>,
        events: u64,
        results: &[WindowResult],
        late: &[LateEvent],
    ) -> Result<(), DetectError> {
        let mut w = self.wal();
        let seq = w.next_seq;
        match self
            .store
            .commit_logged(seq, entry, fingerprint, results, late)
        {
            Ok(()) => {
                w.logged(seq, events, fingerprint);
                Ok(())
            }
            Err(e) => {
                let specs: Vec<DetectorSpec> = engine.specs().cloned().collect();
                match restore(&self.store, &specs, &self.engine_config) {
                    Ok(r) => {
                        *engine = r.engine;
                        *w = r.wal;
                        self.unsent
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(r.unsent);
                        tracing::warn!(error = %e, "write-ahead log commit failed; detector state rebuilt from the store");
                    }
                    Err(re) => {
                        tracing::error!(error = %e, rebuild_error = %re, "write-ahead log commit failed and the state could not be rebuilt; restart detect");
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Saves the engine's state; with the log, also drops the entries the
    /// checkpoint now includes.
    pub fn checkpoint(&self) -> Result<usize, DetectError> {
        let _one = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        self.checkpoint_now()
    }

    /// Needs `checkpointing` held: two checkpoints racing could leave an
    /// older state over a log already emptied by the newer one.
    fn checkpoint_now(&self) -> Result<usize, DetectError> {
        let (c, seq, keep_from) = {
            let e = self.engine();
            let w = self.wal();
            (
                e.checkpoint(),
                w.next_seq.saturating_sub(1),
                w.recent.front().map_or(w.next_seq, |r| r.0),
            )
        };
        let bytes = self.store.save_checkpoint_at(&c, Some(seq), keep_from)?;
        self.wal().truncated(seq);
        Ok(bytes)
    }

    /// Checkpoints when the log holds `checkpoint_after_events` events,
    /// unless a checkpoint is under way.
    pub(super) fn checkpoint_if_due(&self) {
        if self.wal().events < self.wal_options.checkpoint_after_events {
            return;
        }
        let _one = match self.checkpointing.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        match self.checkpoint_now() {
            Ok(bytes) => tracing::debug!(bytes, "checkpointed detector state (log size)"),
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
    }
}
