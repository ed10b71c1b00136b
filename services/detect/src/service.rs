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

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;
use tracing::Instrument;
use trailhound_core::pipeline::{AnomalySink, EnrichedSink, SinkError};
use trailhound_core::{Anomaly, DetectorSpec, EnrichedEvent};
use trailhound_runtime::telemetry::{TraceLink, add_links};

use crate::engine::{Engine, EngineConfig, EngineStats, LateEvent, WindowResult};
use crate::store::{AnomalyFilter, DetectStore, SeriesPoint, StoreError};
use crate::wal::{self, WalEntry};

/// Batches whose fingerprints are remembered to recognise one sent again.
pub const REMEMBERED_BATCHES: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("detector {0} not found")]
    NotFound(String),
    #[error("detector {0} already exists")]
    AlreadyExists(String),
    #[error("invalid detector: {0}")]
    InvalidDetector(String),
    #[error("the detection engine failed: {0}")]
    Internal(String),
    /// The OpenSearch backend failed; `retryable` when the cluster is
    /// down or overloaded rather than misconfigured.
    #[error("{message}")]
    Backend { message: String, retryable: bool },
}

/// How detect's adapter answers each failure.
impl trailhound_runtime::status::ServiceError for DetectError {
    fn error_code(&self) -> trailhound_runtime::status::ErrorCode {
        use trailhound_runtime::status::ErrorCode;
        match self {
            DetectError::NotFound(_) => ErrorCode::NotFound,
            DetectError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            DetectError::InvalidDetector(_) => ErrorCode::InvalidArgument,
            // A cluster that is down or overloaded, or one misconfigured.
            DetectError::Backend {
                retryable: true, ..
            } => ErrorCode::Unavailable,
            DetectError::Backend { .. } => ErrorCode::FailedPrecondition,
            DetectError::Store(_) | DetectError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn status_message(&self) -> String {
        match self {
            DetectError::InvalidDetector(reason) => format!("detector: {reason}"),
            e => e.to_string(),
        }
    }
}

/// What enrich is told when a batch cannot be taken: an OpenSearch cluster
/// that is down is retryable (ingest keeps the events), anything else not.
impl From<DetectError> for SinkError {
    fn from(e: DetectError) -> Self {
        match e {
            DetectError::Backend { message, retryable } => SinkError {
                downstream: "opensearch".into(),
                message,
                retryable,
            },
            e => SinkError {
                downstream: "detect".into(),
                message: e.to_string(),
                retryable: false,
            },
        }
    }
}

/// enrich → detect in one process (`trailhound up`): the same
/// [`Detect::accept`] the gRPC adapter serves.
pub struct DetectSink(pub Arc<Detect>);

#[async_trait::async_trait]
impl EnrichedSink for DetectSink {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        Ok(self.0.accept(events).await?.accepted)
    }
}

fn wal_error(e: wal::WalError) -> DetectError {
    DetectError::Internal(e.to_string())
}

fn backend_error(e: trailhound_opensearch::OsError) -> DetectError {
    DetectError::Backend {
        retryable: e.is_retryable(),
        message: e.to_string(),
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

/// The write-ahead log's settings (see the module docs).
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
struct WalState {
    /// Sequence number of the next entry.
    next_seq: u64,
    /// Entries in the log since the checkpoint: (seq, events).
    entries: VecDeque<(u64, u64)>,
    events: u64,
    /// Fingerprints of the last batches acknowledged: (seq, fingerprint).
    recent: VecDeque<(u64, u128)>,
    recent_set: HashSet<u128>,
}

impl WalState {
    fn logged(&mut self, seq: u64, events: u64, fingerprint: Option<u128>) {
        self.next_seq = seq + 1;
        self.entries.push_back((seq, events));
        self.events += events;
        if let Some(fp) = fingerprint {
            self.remember(seq, fp);
        }
    }

    fn remember(&mut self, seq: u64, fp: u128) {
        self.recent.push_back((seq, fp));
        self.recent_set.insert(fp);
        while self.recent.len() > REMEMBERED_BATCHES {
            if let Some((_, old)) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
    }

    /// The checkpoint now includes every entry up to `seq`.
    fn truncated(&mut self, seq: u64) {
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
struct Restored {
    engine: Engine,
    wal: WalState,
    had_checkpoint: bool,
    replayed_entries: u64,
    replayed_events: u64,
    /// Anomalies the replay found that were not stored yet.
    unsent: Vec<Anomaly>,
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
    }
}

/// Log entries read per page while replaying.
const REPLAY_PAGE: usize = 256;

/// Restores the checkpoint (or starts afresh with `specs`), replays the
/// log over it, and ends with the detectors `specs`.
fn restore(
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

impl std::fmt::Debug for Detect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detect")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

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

    /// Hands detection to the OpenSearch backend (once).
    pub fn set_opensearch(&self, backend: Arc<trailhound_opensearch::Backend>) {
        let _ = self.opensearch.set(backend);
    }

    pub fn opensearch(&self) -> Option<Arc<trailhound_opensearch::Backend>> {
        self.opensearch.get().cloned()
    }

    /// Takes a batch from enrich, the one way in whether enrich calls over
    /// gRPC or in process: indexed into OpenSearch when that backend is
    /// active (its anomalies come from the results poller), else fed to
    /// the embedded engine on a blocking thread and its anomalies
    /// forwarded, in a span linked to the traces that filled their windows.
    pub async fn accept(
        self: &Arc<Self>,
        events: Vec<EnrichedEvent>,
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
            d.observe(&events)
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

    /// ListAnomalies from the active backend. With OpenSearch a scoped
    /// caller's page is filled from as many reads as it takes (at most
    /// [`MAX_SCOPED_READS`]).
    pub async fn list_any(
        &self,
        filter: &AnomalyFilter,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), DetectError> {
        let Some(os) = self.opensearch.get() else {
            return self.list(filter, page_size, token);
        };
        let q = trailhound_opensearch::AnomalyQuery {
            account_id: filter.account_id.clone(),
            environment: filter.environment,
            ou: filter.ou.clone(),
            detector: filter.detector.clone(),
            service: filter.service.clone(),
            region: filter.region.clone(),
            start_ms: filter.start_ms,
            end_ms: filter.end_ms,
            min_grade: filter.min_grade,
        };
        if filter.scope.is_unrestricted() {
            return os.list(&q, page_size, token).await.map_err(backend_error);
        }
        // The cluster's query knows no scopes: out-of-scope anomalies are
        // dropped here, and further pages read until this one is full, so
        // a scoped caller's page is as full as anyone's (a short page
        // would hint at what was dropped). Bounded: after MAX_SCOPED_READS
        // reads the page goes back short, with a token to go on from.
        let mut page: Vec<Anomaly> = Vec::new();
        let mut cursor = token.map(str::to_string);
        for _ in 0..MAX_SCOPED_READS {
            let (batch, next) = os
                .list(&q, page_size, cursor.as_deref())
                .await
                .map_err(backend_error)?;
            let read_to = batch.last().map(os_token);
            for a in batch {
                if !filter
                    .scope
                    .allows(&a.account_id, &a.ou_path, a.environment)
                {
                    continue;
                }
                page.push(a);
                if page.len() == page_size {
                    // Full: the next page starts after its last anomaly
                    // (which is where the cluster would go on, if more).
                    let after = page.last().map(os_token);
                    let more = next.is_some() || after != read_to;
                    return Ok((page, after.filter(|_| more)));
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok((page, None)),
            }
        }
        Ok((page, cursor))
    }

    fn os_entity(
        &self,
        detector: &str,
        entity_key: &str,
    ) -> Result<(DetectorSpec, Vec<(String, String)>), DetectError> {
        let spec = self
            .detector(detector)
            .ok_or_else(|| DetectError::NotFound(detector.to_string()))?;
        let entity = spec
            .category_fields
            .iter()
            .map(|f| f.to_string())
            .zip(entity_key.split('/').map(str::to_string))
            .collect();
        Ok((spec, entity))
    }

    /// An entity's series from the active backend.
    pub async fn series_any(
        &self,
        detector: &str,
        entity_key: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesPoint>, DetectError> {
        let Some(os) = self.opensearch.get() else {
            return self.series(detector, entity_key, start_ms, end_ms);
        };
        let (spec, entity) = self.os_entity(detector, entity_key)?;
        let points = os
            .series(&spec, &entity, start_ms, end_ms)
            .await
            .map_err(backend_error)?;
        Ok(points
            .into_iter()
            .map(|p| SeriesPoint {
                window_start_ms: p.window_start_ms,
                actual: p.actual,
                expected: p.expected,
                lower: p.lower,
                upper: p.upper,
                grade: p.grade,
            })
            .collect())
    }

    /// Start of the entity's newest window, from the active backend.
    pub async fn series_latest_any(
        &self,
        detector: &str,
        entity_key: &str,
    ) -> Result<Option<i64>, DetectError> {
        let Some(os) = self.opensearch.get() else {
            return self.series_latest(detector, entity_key);
        };
        let (spec, entity) = self.os_entity(detector, entity_key)?;
        os.series_latest(&spec, &entity)
            .await
            .map_err(backend_error)
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds a batch (CPU-bound; callers on an async runtime use
    /// `spawn_blocking`).
    pub fn observe(&self, events: &[EnrichedEvent]) -> Result<ObserveOutcome, DetectError> {
        let _pending = self.figures.pending.begin();
        let started = Instant::now();
        let out = self.observe_inner(events);
        self.figures.batch.record(started.elapsed());
        if out.is_err() {
            self.figures.observe_errors.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, WalState> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe_inner(&self, events: &[EnrichedEvent]) -> Result<ObserveOutcome, DetectError> {
        let fingerprint = wal::fingerprint(events);
        let (events, quarantined) = self.quarantine(events);
        let events: &[EnrichedEvent] = &events;
        let n = events.len() as u64;
        let quarantined_count = quarantined.len() as u64;
        // Encoded before the engine is locked: other batches apply meanwhile.
        let logged = if self.wal_options.enabled {
            Some((fingerprint, wal::encode_batch(events).map_err(wal_error)?))
        } else {
            None
        };
        let mut results = Vec::new();
        let mut late: Vec<LateEvent>;
        let late_count = {
            let mut engine = self.engine();
            if let Some((fp, _)) = &logged
                && self.wal().recent_set.contains(fp)
            {
                drop(engine);
                self.figures
                    .duplicate_batches
                    .fetch_add(1, Ordering::Relaxed);
                self.figures
                    .duplicate_events
                    .fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    events = n,
                    "batch acknowledged before (its answer was lost): not counted again"
                );
                return Ok(ObserveOutcome {
                    accepted: n,
                    duplicate: true,
                    ..Default::default()
                });
            }
            let before = engine.stats().late_events;
            for e in events {
                engine.observe(e, &mut results);
            }
            late = engine.take_late();
            late.extend(quarantined);
            if let Some((fp, entry)) = &logged {
                self.commit_locked(&mut engine, entry, Some(*fp), n, &results, &late)?;
            }
            self.last_arrival_watermark
                .store(engine.newest_ms(), Ordering::Relaxed);
            engine.stats().late_events - before
        };
        *self.last_arrival.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let anomalies = if logged.is_some() {
            let a = self.announce(results);
            self.checkpoint_if_due();
            a
        } else {
            self.publish(results, &late)?
        };
        self.note_late(&mut late);
        Ok(ObserveOutcome {
            accepted: n,
            late: late_count,
            quarantined: quarantined_count,
            anomalies,
            duplicate: false,
        })
    }

    /// Commits a log entry and the windows it closed while the engine is
    /// locked, so the log's order is the engine's. If the commit fails, the
    /// engine is rebuilt from the store: it must not keep a change the log
    /// does not have (the caller answers with an error and the change is
    /// sent again).
    fn commit_locked(
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

    fn publish(
        &self,
        results: Vec<WindowResult>,
        late: &[LateEvent],
    ) -> Result<Vec<Anomaly>, DetectError> {
        self.store.record(&results, late)?;
        Ok(self.announce(results))
    }

    /// Splits off events too far ahead of the wall clock: a batch from a
    /// caller that skipped ingest's checks must not move time on.
    fn quarantine<'a>(
        &self,
        events: &'a [EnrichedEvent],
    ) -> (std::borrow::Cow<'a, [EnrichedEvent]>, Vec<LateEvent>) {
        let now = chrono::Utc::now().timestamp_millis();
        let limit = now.saturating_add(self.max_future_skew_ms);
        if events.iter().all(|e| e.event.event_time_ms <= limit) {
            return (std::borrow::Cow::Borrowed(events), Vec::new());
        }
        let (kept, ahead): (Vec<EnrichedEvent>, Vec<EnrichedEvent>) = events
            .iter()
            .cloned()
            .partition(|e| e.event.event_time_ms <= limit);
        let quarantined = ahead
            .into_iter()
            .map(|e| LateEvent {
                detector: String::new(),
                reason: format!(
                    "quarantined: event time {} is more than max_future_skew ({}s) ahead of detect's clock {}",
                    chrono::DateTime::from_timestamp_millis(e.event.event_time_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| e.event.event_time_ms.to_string()),
                    self.max_future_skew_ms / 1000,
                    chrono::DateTime::from_timestamp_millis(now)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                ),
                event_id: e.event.event_id,
                account_id: e.event.recipient_account_id,
                region: e.event.aws_region,
                event_time_ms: e.event.event_time_ms,
                window_start_ms: e.event.event_time_ms,
                watermark_ms: now,
            })
            .collect();
        (std::borrow::Cow::Owned(kept), quarantined)
    }

    /// Counts late events per detector for `Stats` and logs a sample.
    fn note_late(&self, late: &mut Vec<LateEvent>) {
        if late.is_empty() {
            return;
        }
        let mut by = self.late_by.lock().unwrap_or_else(|p| p.into_inner());
        for l in late.iter() {
            let key = if l.detector.is_empty() {
                "quarantined"
            } else {
                l.detector.as_str()
            };
            *by.entry(key.to_string()).or_default() += 1;
        }
        if let Some(first) = late.first() {
            tracing::warn!(
                count = late.len(),
                detector = %first.detector,
                event = %first.event_id,
                reason = %first.reason,
                "late events recorded (ListLateEvents)"
            );
        }
        late.clear();
    }

    /// Logs the anomalies among stored results and tells the watchers.
    fn announce(&self, results: Vec<WindowResult>) -> Vec<Anomaly> {
        let anomalies: Vec<Anomaly> = results.into_iter().filter_map(|r| r.anomaly).collect();
        for a in &anomalies {
            tracing::info!(
                anomaly = %a.id, account = %a.account_id, region = %a.region,
                actual = a.actual, expected = a.expected, grade = a.grade,
                "anomaly detected"
            );
            // No watcher is fine.
            let _ = self.watchers.send(Arc::new(a.clone()));
        }
        anomalies
    }

    /// Forwards anomalies downstream (insights), logging failures: detect
    /// keeps every anomaly in its own store whatever happens downstream.
    /// Anomalies recovered on start and not sent yet go first. The span
    /// links every trace whose events filled their windows (`closing`, the
    /// trace of the batch that closed them, is its parent).
    pub async fn forward(&self, anomalies: &[Anomaly], closing: Option<&TraceLink>) {
        let mut unsent = self.take_unsent();
        let anomalies = if unsent.is_empty() {
            anomalies
        } else {
            unsent.extend_from_slice(anomalies);
            &unsent[..]
        };
        if anomalies.is_empty() {
            return;
        }
        // The span is the hand-off's even with nothing downstream: a
        // trace then still shows which requests fed the anomalies.
        let span = tracing::info_span!("trailhound.detect/Forward", anomalies = anomalies.len());
        add_links(
            &span,
            self.contributors
                .links_for(&crate::links::windows(anomalies), closing),
        );
        let Some(sink) = &self.downstream else {
            return;
        };
        match sink.send(anomalies.to_vec()).instrument(span).await {
            Ok(_) => {
                self.figures
                    .forwarded
                    .fetch_add(anomalies.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.figures.forward_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, count = anomalies.len(), "failed to forward anomalies");
            }
        }
    }

    /// Closes every open window (end of a replay).
    pub fn flush(&self) -> Result<Vec<Anomaly>, DetectError> {
        let mut results = Vec::new();
        if self.wal_options.enabled {
            let mut engine = self.engine();
            engine.flush(&mut results);
            self.commit_locked(&mut engine, &wal::encode_flush(), None, 0, &results, &[])?;
            drop(engine);
            return Ok(self.announce(results));
        }
        self.engine().flush(&mut results);
        let anomalies = self.publish(results, &[])?;
        self.store.sync()?;
        Ok(anomalies)
    }

    /// Called periodically: when no event has arrived for `idle`, moves the
    /// watermark on by the wall time that passed, so windows still close.
    pub fn tick(&self, idle: std::time::Duration) -> Result<Vec<Anomaly>, DetectError> {
        let since = self
            .last_arrival
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        let base = self.last_arrival_watermark.load(Ordering::Relaxed);
        if since < idle || base == i64::MIN {
            return Ok(Vec::new());
        }
        let target = base.saturating_add(since.as_millis() as i64);
        let mut results = Vec::new();
        let mut engine = self.engine();
        if target <= engine.newest_ms() {
            return Ok(Vec::new());
        }
        engine.advance(target, &mut results);
        if self.wal_options.enabled {
            self.commit_locked(
                &mut engine,
                &wal::encode_advance(target),
                None,
                0,
                &results,
                &[],
            )?;
            drop(engine);
            return Ok(self.announce(results));
        }
        drop(engine);
        self.publish(results, &[])
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
    fn checkpoint_if_due(&self) {
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

    /// The figures every service reports alike (the `Stats` RPC). Lag is
    /// how long the oldest batch in hand has waited; freshness is how far
    /// the newest event's time is behind the wall clock, so a replay of
    /// history shows large freshness but no lag.
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let (s, entities, watermark) = self.stats();
        let partitions = self.engine().partitions();
        let (wal_entries, wal_events) = {
            let w = self.wal();
            (w.entries.len(), w.events)
        };
        let f = &self.figures;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = f.common.stats(s.events, s.evaluations);
        out.queues = vec![
            trailhound_proto::common::v1::QueueDepth {
                name: "batches_pending".into(),
                depth: f.pending.depth(),
                capacity: 0,
            },
            trailhound_proto::common::v1::QueueDepth {
                name: "watchers".into(),
                depth: self.watchers.receiver_count() as u64,
                capacity: 0,
            },
        ];
        out.batch_latency = Some(f.batch.summary());
        out.errors.insert("observe".into(), load(&f.observe_errors));
        if let Some(os) = self.opensearch.get() {
            // The OpenSearch backend's connection and indexing, for health.
            let o = os.figures();
            out.errors
                .insert("opensearch_dead_letters".into(), o.dead_lettered);
            out.errors
                .insert("opensearch_failed_batches".into(), o.failed_batches);
            out.gauges
                .insert("opensearch_indexed".into(), o.indexed as f64);
            out.gauges
                .insert("opensearch_detectors".into(), o.detectors as f64);
            if let Some(h) = o.healthy {
                out.gauges
                    .insert("opensearch_healthy".into(), f64::from(u8::from(h)));
            }
        }
        out.errors.insert("forward".into(), load(&f.forward_errors));
        // Late and quarantined events are input arriving too late or with
        // an implausible time, not faults of detect.
        out.input_rejected = self
            .late_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| {
                let kind = if k == "quarantined" {
                    "quarantined: event time ahead of detect's clock".to_string()
                } else {
                    format!("late for a closed window of {k}")
                };
                (kind, *v)
            })
            .collect();
        out.lag_seconds = f.pending.oldest_age_seconds();
        if watermark != i64::MIN {
            let now = chrono::Utc::now().timestamp_millis();
            out.freshness_seconds = Some((now - watermark).max(0) as f64 / 1000.0);
        }
        for (k, v) in [
            ("entities", entities as f64),
            ("late_events", s.late_events as f64),
            ("windows_closed", s.windows_closed as f64),
            ("anomalies", s.anomalies as f64),
            ("anomalies_forwarded", load(&f.forwarded) as f64),
            ("wal_enabled", f64::from(u8::from(self.wal_options.enabled))),
            ("wal_entries", wal_entries as f64),
            ("wal_events", wal_events as f64),
            ("duplicate_batches", load(&f.duplicate_batches) as f64),
            ("duplicate_events", load(&f.duplicate_events) as f64),
            ("replayed_entries", load(&f.replayed_entries) as f64),
            ("replayed_events", load(&f.replayed_events) as f64),
            ("partitions", partitions as f64),
            ("windows_skipped", s.windows_skipped as f64),
            ("folded_account_events", s.folded_account_events as f64),
            ("unlisted_region_events", s.unlisted_region_events as f64),
            ("entities_evicted", s.entities_evicted as f64),
            ("suppressed_environment", s.suppressed_environment as f64),
            ("suppressed_weekly", s.suppressed_weekly as f64),
            ("suppressed_new_region", s.suppressed_new_region as f64),
            ("suppressed_bursts", s.suppressed_bursts as f64),
            ("early_raised", s.early_raised as f64),
            ("coordinated", s.coordinated as f64),
            (
                "quarantined_events",
                self.late_by
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get("quarantined")
                    .copied()
                    .unwrap_or(0) as f64,
            ),
        ] {
            out.gauges.insert(k.into(), v);
        }
        out
    }

    /// The engine's counters, entities, and newest plausible event time.
    pub fn stats(&self) -> (EngineStats, usize, i64) {
        let e = self.engine();
        (e.stats().clone(), e.entity_count(), e.newest_ms())
    }

    /// Late events recorded, newest first (see [`DetectStore::late_events`]).
    pub fn late_events(
        &self,
        detector: &str,
        account_id: &str,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<LateEvent>, Option<String>), DetectError> {
        Ok(self
            .store
            .late_events(detector, account_id, page_size, token)?)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Anomaly>> {
        self.watchers.subscribe()
    }

    pub fn list(
        &self,
        filter: &AnomalyFilter,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), DetectError> {
        Ok(self.store.list(filter, page_size, token)?)
    }

    pub fn get(&self, id: &str) -> Result<Option<Anomaly>, DetectError> {
        Ok(self.store.anomaly(id)?)
    }

    pub fn detected_since(&self, since_ms: i64) -> Result<Vec<Anomaly>, DetectError> {
        Ok(self.store.detected_since(since_ms)?)
    }

    /// An entity's series; the entity key is the category values joined by '/'.
    pub fn series(
        &self,
        detector: &str,
        entity_key: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesPoint>, DetectError> {
        if self.detector(detector).is_none() {
            return Err(DetectError::NotFound(detector.to_string()));
        }
        Ok(self.store.series(detector, entity_key, start_ms, end_ms)?)
    }

    /// Start of the entity's newest window in the store.
    pub fn series_latest(
        &self,
        detector: &str,
        entity_key: &str,
    ) -> Result<Option<i64>, DetectError> {
        Ok(self.store.series_latest(detector, entity_key)?)
    }

    /// What the engine knows of `account_id` (see [`Engine::account`]).
    pub fn account(&self, account_id: &str) -> Option<trailhound_core::AccountMetadata> {
        self.engine().account(account_id).map(|a| (*a).clone())
    }

    pub fn detectors(&self) -> Vec<DetectorSpec> {
        self.engine().specs().cloned().collect()
    }

    pub fn detector(&self, name: &str) -> Option<DetectorSpec> {
        self.engine().specs().find(|s| s.name == name).cloned()
    }

    /// Saves the detector set; with the log, also logs it, so a replay
    /// applies the change between the same batches as the engine did.
    fn save(&self, engine: &mut Engine) -> Result<(), DetectError> {
        let specs: Vec<DetectorSpec> = engine.specs().cloned().collect();
        self.store.save_detectors(&specs)?;
        if self.wal_options.enabled {
            let entry = wal::encode_detectors(&specs).map_err(wal_error)?;
            self.commit_locked(engine, &entry, None, 0, &[], &[])?;
        }
        Ok(())
    }

    pub fn create_detector(&self, spec: DetectorSpec) -> Result<DetectorSpec, DetectError> {
        spec.validate().map_err(DetectError::InvalidDetector)?;
        let mut e = self.engine();
        if e.specs().any(|s| s.name == spec.name) {
            return Err(DetectError::AlreadyExists(spec.name));
        }
        e.upsert_detector(spec.clone());
        self.save(&mut e)?;
        Ok(spec)
    }

    pub fn update_detector(&self, spec: DetectorSpec) -> Result<DetectorSpec, DetectError> {
        spec.validate().map_err(DetectError::InvalidDetector)?;
        let mut e = self.engine();
        if !e.specs().any(|s| s.name == spec.name) {
            return Err(DetectError::NotFound(spec.name));
        }
        e.upsert_detector(spec.clone());
        self.save(&mut e)?;
        Ok(spec)
    }

    pub fn delete_detector(&self, name: &str) -> Result<(), DetectError> {
        let mut e = self.engine();
        if !e.remove_detector(name) {
            return Err(DetectError::NotFound(name.to_string()));
        }
        self.save(&mut e)
    }

    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<DetectorSpec, DetectError> {
        let mut e = self.engine();
        let mut spec = e
            .specs()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| DetectError::NotFound(name.to_string()))?;
        spec.enabled = enabled;
        e.upsert_detector(spec.clone());
        self.save(&mut e)?;
        Ok(spec)
    }
}

/// Reads of the cluster one scoped ListAnomalies page may take.
pub const MAX_SCOPED_READS: usize = 20;

/// The page token that goes on after `a` (the OpenSearch backend's
/// `search_after` key: window start, then id).
fn os_token(a: &Anomaly) -> String {
    format!("{}|{}", a.window_start.timestamp_millis(), a.id)
}
