//! The detect service's logic, without gRPC: feeds the engine, persists
//! what it returns, publishes anomalies to watchers and downstream, manages
//! detectors and checkpoints.
//!
//! # What survives a kill
//!
//! The engine's learned state lives in memory and is checkpointed into the
//! store every `checkpoint_every`. With the write-ahead log (`[detect]
//! wal = true`, the default) every change since that checkpoint is in the
//! store too: a batch is applied to the engine and then, in one durable
//! redb transaction, appended to the log together with the series points
//! and anomalies it produced; only then does `Observe` answer. Idle closes,
//! flushes and detector changes are logged the same way. A checkpoint
//! saves the engine and empties the log up to the entries it includes, in
//! one transaction. On start, the checkpoint is restored and the log
//! replayed through the engine, so after a SIGKILL detect resumes with
//! exactly the state it had acknowledged: every acknowledged event counted
//! once (`events_in` in `Stats` is that durable total), nothing learned
//! lost. A batch applied but not yet committed when the process died was
//! not acknowledged; its sender (enrich, then ingest) sends it again.
//!
//! The other way round, a batch committed whose answer never arrived is
//! sent again too: detect remembers the fingerprints (event ids in order)
//! of the last [`REMEMBERED_BATCHES`] batches, durably with the log, and
//! acknowledges such a batch without counting it twice
//! (`duplicate_batches` in `Stats`).
//!
//! Anomalies found while replaying are stored unless their id (detector,
//! entity, window) is stored already; those were stored in the same
//! transaction as their log entry, and are not sent downstream again.
//! Downstream delivery is therefore at most once across a kill: an anomaly
//! committed just before the kill, whose forward to insights had not
//! happened yet, stays in detect's store (`ListAnomalies`, and
//! `WatchAnomalies` from a `since`) but is not pushed to insights
//! afterwards. Anomalies the replay finds that were not stored (the log
//! replays deterministically, so only after a store error) are forwarded.
//!
//! Without the log, a kill loses what the engine learned since its last
//! checkpoint, and its counters go back to that checkpoint.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;
use trailhound_core::pipeline::{AnomalySink, EnrichedSink, SinkError};
use trailhound_core::{Anomaly, DetectorSpec, EnrichedEvent};
use trailhound_runtime::telemetry::TraceLink;

use crate::engine::{Engine, EngineConfig};
use crate::store::DetectStore;
use crate::wal::{WalState, restore};

mod detectors;
mod durability;
pub(crate) mod error;
mod observe;
mod opensearch;
mod reads;
mod stats;

pub use crate::wal::{REMEMBERED_BATCHES, WalOptions};
pub use error::DetectError;
pub use opensearch::MAX_SCOPED_READS;

/// enrich → detect in one process (`trailhound up`): the same
/// [`Detect::accept`] the gRPC adapter serves.
pub struct DetectSink(pub Arc<Detect>);

#[async_trait::async_trait]
impl EnrichedSink for DetectSink {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        Ok(self.0.accept(events).await?.accepted)
    }
}

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObserveOutcome {
    pub accepted: u64,
    pub late: u64,
    /// Events whose time was too far ahead of detect's clock: recorded
    /// with the reason, not counted.
    pub quarantined: u64,
    pub anomalies: Vec<Anomaly>,
    /// The batch had been acknowledged before (a resend after a lost
    /// answer) and was not counted again.
    pub duplicate: bool,
}

/// The detect service.
pub struct Detect {
    engine: Mutex<Engine>,
    /// Locked after `engine`, never before.
    wal: Mutex<WalState>,
    wal_options: WalOptions,
    /// One checkpoint at a time (taken before `engine`).
    checkpointing: Mutex<()>,
    engine_config: EngineConfig,
    /// Anomalies recovered on start that downstream has not had yet.
    unsent: Mutex<Vec<Anomaly>>,
    store: DetectStore,
    watchers: broadcast::Sender<Arc<Anomaly>>,
    downstream: Option<Arc<dyn AnomalySink>>,
    last_arrival: Mutex<Instant>,
    last_arrival_watermark: AtomicI64,
    /// Late events per detector since start ("quarantined" for those
    /// refused at the door).
    late_by: Mutex<std::collections::BTreeMap<String, u64>>,
    /// How far ahead of the wall clock an event may be (see `quarantine`).
    max_future_skew_ms: i64,
    /// The accounts this replica owns (`detect --shard I/N`).
    shard: trailhound_core::Shard,
    figures: Figures,
    /// Set when `[detect] backend = "opensearch"`: events go to the
    /// cluster and anomalies come from its Anomaly Detection plugin.
    opensearch: std::sync::OnceLock<Arc<trailhound_opensearch::Backend>>,
    /// Which traces fed which windows, for the links of the span that
    /// hands anomalies on.
    contributors: crate::links::Contributors,
}

/// Figures beyond the engine's counters, for the `Stats` RPC.
#[derive(Debug)]
struct Figures {
    common: trailhound_runtime::stats::Common,
    batch: trailhound_runtime::stats::Histogram,
    pending: trailhound_runtime::stats::Pending,
    observe_errors: AtomicU64,
    forward_errors: AtomicU64,
    forwarded: AtomicU64,
    duplicate_batches: AtomicU64,
    duplicate_events: AtomicU64,
    /// Log entries and events replayed at the last start.
    replayed_entries: AtomicU64,
    replayed_events: AtomicU64,
}

trailhound_core::debug_fields!(Detect { store, .. });

impl Detect {
    /// Restores from the store's checkpoint when there is one, without the
    /// write-ahead log; see [`Detect::open_with`].
    pub fn open(
        store: DetectStore,
        configured: Vec<DetectorSpec>,
        engine_config: EngineConfig,
        downstream: Option<Arc<dyn AnomalySink>>,
    ) -> Result<Self, DetectError> {
        Self::open_with(
            store,
            configured,
            engine_config,
            downstream,
            WalOptions::disabled(),
        )
    }

    /// Restores from the store's checkpoint when there is one and replays
    /// the write-ahead log over it (whatever `wal` says: what is logged
    /// was acknowledged); the store's saved detector definitions win over
    /// `configured`. After a replay, or on a first start with the log,
    /// checkpoints at once, so the log starts empty.
    pub fn open_with(
        store: DetectStore,
        configured: Vec<DetectorSpec>,
        engine_config: EngineConfig,
        downstream: Option<Arc<dyn AnomalySink>>,
        wal: WalOptions,
    ) -> Result<Self, DetectError> {
        let specs = match store.load_detectors()? {
            Some(saved) => saved,
            None => {
                store.save_detectors(&configured)?;
                configured
            }
        };
        let restored = restore(&store, &specs, &engine_config)?;
        if restored.had_checkpoint {
            tracing::info!(
                entities = restored.engine.entity_count(),
                "restored detector state from checkpoint"
            );
        }
        if restored.replayed_entries > 0 {
            tracing::info!(
                entries = restored.replayed_entries,
                events = restored.replayed_events,
                unsent = restored.unsent.len(),
                "replayed the write-ahead log over the checkpoint"
            );
        }
        let (watchers, _) = broadcast::channel(4096);
        let detect = Self {
            engine: Mutex::new(restored.engine),
            wal: Mutex::new(restored.wal),
            wal_options: wal,
            checkpointing: Mutex::new(()),
            engine_config,
            unsent: Mutex::new(restored.unsent),
            store,
            watchers,
            downstream,
            last_arrival: Mutex::new(Instant::now()),
            last_arrival_watermark: AtomicI64::new(i64::MIN),
            late_by: Mutex::new(Default::default()),
            max_future_skew_ms: 5 * 60 * 1000,
            shard: trailhound_core::Shard::ALL,
            figures: Figures {
                common: trailhound_runtime::stats::Common::new("detect"),
                batch: Default::default(),
                pending: Default::default(),
                observe_errors: AtomicU64::new(0),
                forward_errors: AtomicU64::new(0),
                forwarded: AtomicU64::new(0),
                duplicate_batches: AtomicU64::new(0),
                duplicate_events: AtomicU64::new(0),
                replayed_entries: AtomicU64::new(restored.replayed_entries),
                replayed_events: AtomicU64::new(restored.replayed_events),
            },
            opensearch: std::sync::OnceLock::new(),
            contributors: crate::links::Contributors::default(),
        };
        if restored.replayed_entries > 0 || (wal.enabled && !restored.had_checkpoint) {
            detect.checkpoint()?;
        }
        Ok(detect)
    }

    /// Anomalies found while replaying the log on start that were not
    /// stored before, hence never sent downstream: `serve` forwards them.
    pub fn take_unsent(&self) -> Vec<Anomaly> {
        std::mem::take(&mut *self.unsent.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How far ahead of the wall clock an event may be before `observe`
    /// quarantines it (default 5 minutes).
    pub fn with_max_future_skew(mut self, skew: std::time::Duration) -> Self {
        self.max_future_skew_ms = skew.as_millis() as i64;
        self
    }

    /// Makes this replica the owner of `shard`'s accounts only: it then
    /// reports the accounts it sees rising ([`Detect::take_shared`]) and
    /// counts the other replicas' ([`Detect::accept_shared`]), so the
    /// coordination rule still sees the whole organization.
    pub fn with_shard(mut self, shard: trailhound_core::Shard) -> Self {
        self.shard = shard;
        if !shard.is_all() {
            self.engine().share_rising();
        }
        self
    }

    pub fn shard(&self) -> trailhound_core::Shard {
        self.shard
    }

    /// The accounts seen rising here since the last call, for the other
    /// replicas (empty unless sharded).
    pub fn take_shared(&self) -> Vec<crate::engine::SharedRising> {
        self.engine().take_shared()
    }

    /// Takes a batch from enrich, the one way in whether enrich calls over
    /// gRPC or in process: indexed into OpenSearch when that backend is
    /// active (its anomalies come from the results poller), else fed to
    /// the embedded engine on a blocking thread and its anomalies
    /// forwarded, in a span linked to the traces that filled their windows.
    /// Its own span has the same name on every path, so `up` and the
    /// separate services trace the same work.
    pub async fn accept(
        self: &Arc<Self>,
        events: Vec<EnrichedEvent>,
    ) -> Result<ObserveOutcome, DetectError> {
        self.accept_shared(events, Vec::new()).await
    }

    /// [`Detect::accept`], counting first what other replicas reported
    /// rising (`detect --shard`; enrich carries the reports between them).
    #[tracing::instrument(name = "trailhound.detect/Accept", skip_all, fields(events = events.len()))]
    pub async fn accept_shared(
        self: &Arc<Self>,
        events: Vec<EnrichedEvent>,
        peers: Vec<crate::engine::SharedRising>,
    ) -> Result<ObserveOutcome, DetectError> {
        if let Some(os) = self.opensearch.get() {
            let accepted = os.send(events).await.map_err(|e| DetectError::Backend {
                message: e.message,
                retryable: e.retryable,
            })?;
            return Ok(ObserveOutcome {
                accepted,
                ..Default::default()
            });
        }
        let closing = TraceLink::current();
        if let Some(link) = &closing {
            self.contributors.note(link, &events);
        }
        let d = self.clone();
        let span = tracing::Span::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let _g = span.enter();
            d.observe_with(&events, &peers)
        })
        .await
        .map_err(|e| DetectError::Internal(format!("detection task failed: {e}")))??;
        self.forward(&outcome.anomalies, closing.as_ref()).await;
        Ok(outcome)
    }

    /// Closes every open window (end of a replay, `Flush`) on a blocking
    /// thread and forwards what that raised.
    pub async fn flush_and_forward(self: &Arc<Self>) -> Result<Vec<Anomaly>, DetectError> {
        let d = self.clone();
        let anomalies = tokio::task::spawn_blocking(move || d.flush())
            .await
            .map_err(|e| DetectError::Internal(format!("flush task failed: {e}")))??;
        self.forward(&anomalies, TraceLink::current().as_ref())
            .await;
        Ok(anomalies)
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, WalState> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }
}
