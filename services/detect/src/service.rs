//! The detect service's logic, without gRPC: feeds the engine, persists
//! what it returns, publishes anomalies to watchers and downstream, manages
//! detectors and checkpoints.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;
use trailhound_core::pipeline::AnomalySink;
use trailhound_core::{Anomaly, DetectorSpec, EnrichedEvent};

use crate::engine::{Engine, EngineStats, WindowResult};
use crate::store::{AnomalyFilter, DetectStore, SeriesPoint, StoreError};

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
    pub anomalies: Vec<Anomaly>,
}

/// The detect service.
pub struct Detect {
    engine: Mutex<Engine>,
    store: DetectStore,
    watchers: broadcast::Sender<Arc<Anomaly>>,
    downstream: Option<Arc<dyn AnomalySink>>,
    last_arrival: Mutex<Instant>,
    last_arrival_watermark: AtomicI64,
    figures: Figures,
    /// Set when `[detect] backend = "opensearch"`: events go to the
    /// cluster and anomalies come from its Anomaly Detection plugin.
    opensearch: std::sync::OnceLock<Arc<trailhound_opensearch::Backend>>,
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
}

impl std::fmt::Debug for Detect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detect")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Detect {
    /// Restores from the store's checkpoint when there is one; the store's
    /// saved detector definitions win over `configured`.
    pub fn open(
        store: DetectStore,
        configured: Vec<DetectorSpec>,
        engine_config: crate::engine::EngineConfig,
        downstream: Option<Arc<dyn AnomalySink>>,
    ) -> Result<Self, DetectError> {
        let specs = match store.load_detectors()? {
            Some(saved) => saved,
            None => {
                store.save_detectors(&configured)?;
                configured
            }
        };
        let engine = match store.load_checkpoint()? {
            Some(c) => {
                let mut e = Engine::from_checkpoint(c);
                let names: Vec<String> = e.specs().map(|s| s.name.clone()).collect();
                for n in names {
                    if !specs.iter().any(|s| s.name == n) {
                        e.remove_detector(&n);
                    }
                }
                for s in &specs {
                    e.upsert_detector(s.clone());
                }
                tracing::info!(
                    entities = e.entity_count(),
                    "restored detector state from checkpoint"
                );
                e
            }
            None => Engine::new(specs, engine_config),
        };
        let (watchers, _) = broadcast::channel(4096);
        Ok(Self {
            engine: Mutex::new(engine),
            store,
            watchers,
            downstream,
            last_arrival: Mutex::new(Instant::now()),
            last_arrival_watermark: AtomicI64::new(i64::MIN),
            figures: Figures {
                common: trailhound_runtime::stats::Common::new("detect"),
                batch: Default::default(),
                pending: Default::default(),
                observe_errors: AtomicU64::new(0),
                forward_errors: AtomicU64::new(0),
                forwarded: AtomicU64::new(0),
            },
            opensearch: std::sync::OnceLock::new(),
        })
    }

    /// Hands detection to the OpenSearch backend (once).
    pub fn set_opensearch(&self, backend: Arc<trailhound_opensearch::Backend>) {
        let _ = self.opensearch.set(backend);
    }

    pub fn opensearch(&self) -> Option<Arc<trailhound_opensearch::Backend>> {
        self.opensearch.get().cloned()
    }

    /// Takes a batch from enrich: indexed into OpenSearch when that backend
    /// is active (its anomalies come from the results poller), else fed to
    /// the embedded engine and its anomalies forwarded.
    pub async fn accept(
        self: &Arc<Self>,
        events: Vec<EnrichedEvent>,
    ) -> Result<ObserveOutcome, DetectError> {
        if let Some(os) = self.opensearch.get() {
            use trailhound_core::pipeline::EnrichedSink;
            let accepted = os.send(events).await.map_err(|e| DetectError::Backend {
                message: e.message,
                retryable: e.retryable,
            })?;
            return Ok(ObserveOutcome {
                accepted,
                ..Default::default()
            });
        }
        let d = self.clone();
        let outcome = tokio::task::spawn_blocking(move || d.observe(&events))
            .await
            .map_err(|e| DetectError::Internal(format!("detection task failed: {e}")))??;
        self.forward(&outcome.anomalies).await;
        Ok(outcome)
    }

    /// ListAnomalies from the active backend.
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
        os.list(&q, page_size, token).await.map_err(backend_error)
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

    fn observe_inner(&self, events: &[EnrichedEvent]) -> Result<ObserveOutcome, DetectError> {
        let mut results = Vec::new();
        let (late_before, late_after) = {
            let mut engine = self.engine();
            let before = engine.stats().late_events;
            for e in events {
                engine.observe(e, &mut results);
            }
            self.last_arrival_watermark
                .store(engine.watermark_ms(), Ordering::Relaxed);
            (before, engine.stats().late_events)
        };
        *self.last_arrival.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let anomalies = self.publish(results)?;
        Ok(ObserveOutcome {
            accepted: events.len() as u64,
            late: late_after - late_before,
            anomalies,
        })
    }

    fn publish(&self, results: Vec<WindowResult>) -> Result<Vec<Anomaly>, DetectError> {
        self.store.record(&results)?;
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
        Ok(anomalies)
    }

    /// Forwards anomalies downstream (insights), logging failures: detect
    /// keeps every anomaly in its own store whatever happens downstream.
    pub async fn forward(&self, anomalies: &[Anomaly]) {
        if let (Some(sink), false) = (&self.downstream, anomalies.is_empty()) {
            match sink.send(anomalies.to_vec()).await {
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
    }

    /// Closes every open window (end of a replay).
    pub fn flush(&self) -> Result<Vec<Anomaly>, DetectError> {
        let mut results = Vec::new();
        self.engine().flush(&mut results);
        let anomalies = self.publish(results)?;
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
        let mut results = Vec::new();
        self.engine()
            .advance(base.saturating_add(since.as_millis() as i64), &mut results);
        self.publish(results)
    }

    pub fn checkpoint(&self) -> Result<usize, DetectError> {
        let c = self.engine().checkpoint();
        Ok(self.store.save_checkpoint(&c)?)
    }

    /// The figures every service reports alike (the `Stats` RPC). Lag is
    /// how long the oldest batch in hand has waited; freshness is how far
    /// the newest event's time is behind the wall clock, so a replay of
    /// history shows large freshness but no lag.
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let (s, entities, watermark) = self.stats();
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
        ] {
            out.gauges.insert(k.into(), v);
        }
        out
    }

    pub fn stats(&self) -> (EngineStats, usize, i64) {
        let e = self.engine();
        (e.stats().clone(), e.entity_count(), e.watermark_ms())
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

    pub fn detectors(&self) -> Vec<DetectorSpec> {
        self.engine().specs().cloned().collect()
    }

    pub fn detector(&self, name: &str) -> Option<DetectorSpec> {
        self.engine().specs().find(|s| s.name == name).cloned()
    }

    fn save(&self, engine: &Engine) -> Result<(), DetectError> {
        let specs: Vec<DetectorSpec> = engine.specs().cloned().collect();
        Ok(self.store.save_detectors(&specs)?)
    }

    pub fn create_detector(&self, spec: DetectorSpec) -> Result<DetectorSpec, DetectError> {
        spec.validate().map_err(DetectError::InvalidDetector)?;
        let mut e = self.engine();
        if e.specs().any(|s| s.name == spec.name) {
            return Err(DetectError::AlreadyExists(spec.name));
        }
        e.upsert_detector(spec.clone());
        self.save(&e)?;
        Ok(spec)
    }

    pub fn update_detector(&self, spec: DetectorSpec) -> Result<DetectorSpec, DetectError> {
        spec.validate().map_err(DetectError::InvalidDetector)?;
        let mut e = self.engine();
        if !e.specs().any(|s| s.name == spec.name) {
            return Err(DetectError::NotFound(spec.name));
        }
        e.upsert_detector(spec.clone());
        self.save(&e)?;
        Ok(spec)
    }

    pub fn delete_detector(&self, name: &str) -> Result<(), DetectError> {
        let mut e = self.engine();
        if !e.remove_detector(name) {
            return Err(DetectError::NotFound(name.to_string()));
        }
        self.save(&e)
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
        self.save(&e)?;
        Ok(spec)
    }
}
