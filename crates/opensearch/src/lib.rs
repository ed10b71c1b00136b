//! The OpenSearch backend: what organizations that already run OpenSearch
//! (the reference implementations' storage and ML engine) use instead of
//! the embedded engine.
//!
//! Enriched events are indexed into `cwl-multiaccounts-*` ([`indexer`],
//! with the mapping in [`mapping`]); detection is done by the Anomaly
//! Detection plugin, whose detectors are created from trailhound's own
//! detector configuration ([`detectors`]); its results are polled and
//! turned into trailhound anomalies for insights and notify ([`results`]);
//! and detect's ListAnomalies and GetUsageSeries are answered from the
//! cluster ([`search`]). [`client`] is the one way to call the cluster,
//! built on the `opensearch` crate's transport. [`Backend`] ties them
//! together for detect, which selects it with `[detect] backend =
//! "opensearch"`; the embedded engine stays the default.
//!
//! The cluster may be down when trailhound starts and may go away later:
//! nothing here fails start-up. Set-up is retried in the background, and
//! until it succeeds indexing answers with a retryable error so ingest
//! keeps the events.

pub mod client;
pub mod config;
pub mod detectors;
pub mod indexer;
pub mod mapping;
pub mod results;
pub mod search;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use trailhound_core::pipeline::{AnomalySink, EnrichedSink, SinkError};
use trailhound_core::{Anomaly, DetectorSpec, EnrichedEvent};

pub use client::{Client, ConnectionHealth, OsError};
pub use config::{Auth, IndexMode, OpenSearchConfig};
pub use detectors::Detectors;
pub use indexer::{IndexSink, Indexer};
pub use results::{Checkpoint, PollError, Poller};
pub use search::{AnomalyQuery, Point, Search};

struct Parts {
    indexer: Arc<Indexer>,
    detectors: Detectors,
    search: Search,
    poller: Poller,
}

/// The whole backend, as detect uses it.
pub struct Backend {
    config: OpenSearchConfig,
    aws: Option<trailhound_aws::AwsConfig>,
    specs: Vec<DetectorSpec>,
    dead_letters: std::path::PathBuf,
    checkpoint: Checkpoint,
    downstream: Option<Arc<dyn AnomalySink>>,
    client: Option<Client>,
    parts: OnceCell<Parts>,
    /// Detector name → plugin id, once synced.
    ids: Mutex<Vec<(String, String)>>,
    /// The cluster's health at the last poll.
    health: Mutex<Option<ConnectionHealth>>,
}

/// The backend's figures, for detect's Stats RPC and so the health
/// service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub indexed: u64,
    pub retried_items: u64,
    pub dead_lettered: u64,
    pub failed_batches: u64,
    /// Green or yellow at the last check; `None` before the first.
    pub healthy: Option<bool>,
    pub detectors: usize,
}

trailhound_core::debug_fields!(Backend {
    urls: config.urls,
    ..
});

impl Backend {
    /// Checks the configuration and opens the checkpoint; connects lazily.
    pub fn new(
        config: OpenSearchConfig,
        aws: Option<trailhound_aws::AwsConfig>,
        specs: Vec<DetectorSpec>,
        data_dir: &Path,
        downstream: Option<Arc<dyn AnomalySink>>,
    ) -> Result<Self, PollError> {
        config.validate().map_err(OsError::Config)?;
        for s in specs.iter().filter(|s| s.enabled) {
            detectors::detector_body(s, &config)?;
        }
        let checkpoint = Checkpoint::open(&config.checkpoint_path(data_dir))?;
        Ok(Self {
            dead_letters: config.dead_letter_path(data_dir),
            config,
            aws,
            specs,
            checkpoint,
            downstream,
            client: None,
            parts: OnceCell::new(),
            ids: Mutex::new(Vec::new()),
            health: Mutex::new(None),
        })
    }

    /// Uses this client instead of building one from the configuration.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    async fn parts(&self) -> Result<&Parts, OsError> {
        self.parts
            .get_or_try_init(|| async {
                let client = match &self.client {
                    Some(c) => c.clone(),
                    None => {
                        let aws = match (&self.config.auth, &self.aws) {
                            (Auth::Sigv4 { .. }, aws) => Some(
                                trailhound_aws::Aws::load(&aws.clone().unwrap_or_default())
                                    .await
                                    .map_err(|e| OsError::Config(e.to_string()))?,
                            ),
                            _ => None,
                        };
                        Client::new(&self.config, aws.as_ref())?
                    }
                };
                Ok::<_, OsError>(Parts {
                    indexer: Arc::new(Indexer::new(
                        client.clone(),
                        self.config.clone(),
                        self.specs.clone(),
                        self.dead_letters.clone(),
                    )),
                    detectors: Detectors::new(client.clone(), self.config.clone()),
                    search: Search::new(client.clone(), self.config.clone()),
                    poller: Poller::new(
                        client,
                        self.config.clone(),
                        self.specs.clone(),
                        self.checkpoint.clone(),
                        self.downstream.clone(),
                    ),
                })
            })
            .await
    }

    pub fn specs(&self) -> &[DetectorSpec] {
        &self.specs
    }

    pub fn config(&self) -> &OpenSearchConfig {
        &self.config
    }

    /// The indexer (built on first use).
    pub async fn indexer(&self) -> Result<Arc<Indexer>, OsError> {
        Ok(self.parts().await?.indexer.clone())
    }

    /// Indices with their mapping, then the detectors; remembers their ids.
    pub async fn setup(&self) -> Result<Vec<(String, String)>, OsError> {
        let p = self.parts().await?;
        p.indexer.ensure_ready().await?;
        let ids = p.detectors.sync_all(&self.specs).await?;
        *self.ids.lock().unwrap_or_else(|e| e.into_inner()) = ids.clone();
        Ok(ids)
    }

    /// One results poll over the synced detectors.
    pub async fn poll(&self) -> Result<Vec<Anomaly>, PollError> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let out = self.parts().await?.poller.poll(&ids).await?;
        Ok(out.anomalies)
    }

    /// Set-up (retried with backoff until it works), then a results poll
    /// every `poll_every`, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = trailhound_runtime::retry::Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        loop {
            match self.setup().await {
                Ok(ids) => {
                    tracing::info!(detectors = ids.len(), "OpenSearch backend set up");
                    break;
                }
                Err(e) => {
                    let wait = backoff.fail();
                    tracing::error!(error = %e, retry_in = ?wait, "OpenSearch set-up failed");
                    if !trailhound_runtime::retry::sleep_or_stop(wait, &shutdown).await {
                        return;
                    }
                }
            }
        }
        let mut tick = tokio::time::interval(self.config.poll_every);
        while trailhound_runtime::shutdown::next_tick(&mut tick, &shutdown).await {
            let h = self.health().await;
            let was = self
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(h.clone());
            if was.as_ref().map(|w| &w.status) != Some(&h.status) {
                if h.status == "green" || h.status == "yellow" {
                    tracing::info!(status = %h.status, nodes = h.nodes, "OpenSearch cluster health");
                } else {
                    tracing::warn!(status = %h.status, message = %h.message, "OpenSearch cluster unhealthy");
                }
            }
            match self.poll().await {
                Ok(a) if !a.is_empty() => {
                    tracing::info!(anomalies = a.len(), "emitted OpenSearch anomalies")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "OpenSearch results poll failed"),
            }
        }
    }

    pub async fn list(
        &self,
        q: &AnomalyQuery,
        page_size: usize,
        token: Option<&str>,
    ) -> Result<(Vec<Anomaly>, Option<String>), OsError> {
        self.parts().await?.search.list(q, page_size, token).await
    }

    pub async fn series(
        &self,
        spec: &DetectorSpec,
        entity: &[(String, String)],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Point>, OsError> {
        self.parts()
            .await?
            .search
            .series(spec, entity, start_ms, end_ms)
            .await
    }

    pub async fn series_latest(
        &self,
        spec: &DetectorSpec,
        entity: &[(String, String)],
    ) -> Result<Option<i64>, OsError> {
        self.parts().await?.search.series_latest(spec, entity).await
    }

    /// Counters and the last known health, without calling the cluster.
    pub fn figures(&self) -> Figures {
        use std::sync::atomic::Ordering::Relaxed;
        let mut f = Figures {
            detectors: self.ids.lock().unwrap_or_else(|e| e.into_inner()).len(),
            healthy: self
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|h| h.status == "green" || h.status == "yellow"),
            ..Default::default()
        };
        if let Some(p) = self.parts.get() {
            let s = &p.indexer.stats;
            f.indexed = s.indexed.load(Relaxed);
            f.retried_items = s.retried_items.load(Relaxed);
            f.dead_lettered = s.dead_lettered.load(Relaxed);
            f.failed_batches = s.failed_batches.load(Relaxed);
        }
        f
    }

    /// The cluster's health, for the health service.
    pub async fn health(&self) -> ConnectionHealth {
        match self.parts().await {
            Ok(p) => p.indexer.client().health().await,
            Err(e) => ConnectionHealth {
                status: "unreachable".into(),
                nodes: 0,
                message: e.to_string(),
            },
        }
    }
}

#[async_trait::async_trait]
impl EnrichedSink for Backend {
    async fn send(&self, events: Vec<EnrichedEvent>) -> Result<u64, SinkError> {
        let indexer = self.indexer().await.map_err(|e| SinkError {
            downstream: "opensearch".into(),
            message: e.to_string(),
            retryable: true,
        })?;
        IndexSink(indexer).send(events).await
    }
}
