//! detect's configuration: the `[detect]` section of the config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trailhound_core::DetectorSpec;

use crate::engine::EngineConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    pub listen: SocketAddr,
    /// The embedded store; default `<data-dir>/detect.redb`.
    pub store_path: Option<PathBuf>,
    /// Detectors to run. Used on first start; afterwards the definitions
    /// saved by the detector-management RPCs win, so API changes survive a
    /// restart. Default: ec2-run-instances, lambda-invoke, ebs-create-volume.
    pub detectors: Vec<DetectorSpec>,
    pub engine: EngineConfig,
    /// How often learned state is checkpointed.
    #[serde(with = "humantime_serde")]
    pub checkpoint_every: Duration,
    /// The write-ahead log: every batch (and idle close, flush, detector
    /// change) is committed durably to the store before detect answers,
    /// and replayed over the last checkpoint on start, so a kill loses
    /// nothing detect acknowledged and counts stay exact. Off, a kill loses
    /// what was learned since the last checkpoint (the batches were
    /// acknowledged, so nobody sends them again). Default on.
    pub wal: bool,
    /// With the log: also checkpoint (and empty the log) once it holds
    /// this many events, which bounds its size and the replay on start.
    pub wal_checkpoint_events: u64,
    /// How far ahead of detect's clock an event's time may be; Observe
    /// quarantines events further ahead (recorded with the reason,
    /// ListLateEvents) so they never move a watermark. ingest applies the
    /// same bound first.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// When no event has arrived for this long, windows are closed by wall
    /// clock so a quiet live stream still gets evaluated.
    #[serde(with = "humantime_serde")]
    pub idle_close: Duration,
    /// insights' endpoint, where anomalies go; none keeps them in detect.
    pub insights_endpoint: Option<String>,
    /// This replica's share of the accounts, `I/N` (default `0/1`: all).
    /// enrich sends each replica its accounts' events (`[enrich]
    /// detect_endpoint` lists the N replicas in shard order) and carries
    /// the accounts each sees rising to the others for the coordination
    /// rule. Changing N moves accounts between replicas: replay history
    /// into fresh stores (see the README).
    pub shard: trailhound_core::Shard,
    /// Which engine detects: "embedded" (the built-in forests, default) or
    /// "opensearch" (events indexed into the `[opensearch]` cluster and
    /// detected by its Anomaly Detection plugin).
    pub backend: DetectBackend,
    /// The `[opensearch]` section, read when `backend = "opensearch"`.
    #[serde(skip)]
    pub opensearch: Option<trailhound_opensearch::OpenSearchConfig>,
    /// The `[aws]` section, for SigV4 signing of OpenSearch requests.
    #[serde(skip)]
    pub aws: Option<trailhound_aws::AwsConfig>,
}

/// The detection engine detect runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectBackend {
    #[default]
    Embedded,
    Opensearch,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50053)),
            store_path: None,
            detectors: trailhound_core::detector::default_detectors(),
            engine: EngineConfig::default(),
            checkpoint_every: Duration::from_secs(60),
            wal: true,
            wal_checkpoint_events: 200_000,
            max_future_skew: Duration::from_secs(300),
            idle_close: Duration::from_secs(300),
            insights_endpoint: None,
            shard: trailhound_core::Shard::ALL,
            backend: DetectBackend::Embedded,
            opensearch: None,
            aws: None,
        }
    }
}

impl DetectConfig {
    pub fn store_path(&self, data_dir: &Path) -> PathBuf {
        self.store_path
            .clone()
            .unwrap_or_else(|| data_dir.join("detect.redb"))
    }

    /// Checks every detector, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !self.shard.is_all() && self.backend == DetectBackend::Opensearch {
            return Err(format!(
                "shard = {:?}: the OpenSearch backend is one cluster for every account; scale the cluster, not detect",
                self.shard.to_string()
            ));
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.detectors {
            d.validate()?;
            if !names.insert(&d.name) {
                return Err(format!("detector {} is defined twice", d.name));
            }
        }
        Ok(())
    }
}
