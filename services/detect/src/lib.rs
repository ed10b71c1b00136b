//! detect: turns enriched events into per-entity usage series (account ×
//! region × detector by default), scores each closed window with a
//! streaming Random Cut Forest over deseasonalized values, and stores and
//! serves the anomalies it finds.
//!
//! [`engine`] is the pure, synchronous detection logic (also used directly
//! by the CLI's replay); [`service`] adds persistence, watchers and detector
//! management; [`grpc`] is the thin gRPC adapter.
//!
//! What survives a SIGKILL: with `[detect] wal = true` (the default) every
//! batch detect acknowledged. Each is committed durably to the store's
//! write-ahead log ([`wal`]) before `Observe` answers, in the same redb
//! transaction as the series points and anomalies it produced; on start
//! the last checkpoint is restored and the log replayed over it, so the
//! learned state, the anomalies and the event counts are those of a run
//! that never stopped. A batch sent again because its answer was lost is
//! recognised and not counted twice. With `wal = false`, a kill loses what
//! was learned since the last checkpoint (`checkpoint_every`). The replay
//! (`trailhound detect --input`) runs the engine without a store and pays
//! nothing for any of this. Details in [`service`].

pub mod baseline;
pub mod clock;
pub mod config;
pub mod engine;
pub mod grpc;
pub mod insights_sink;
pub mod links;
mod pool;
pub mod service;
pub mod store;
pub mod wal;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_proto::detect::v1::detect_service_server::DetectServiceServer;

pub use config::DetectConfig;
pub use engine::{
    Engine, EngineConfig, LateEvent, Prepared, Preparer, SharedRising, UnknownAccounts,
    WindowResult,
};
pub use service::{Detect, DetectError, DetectSink, WalOptions};
pub use store::DetectStore;

pub const SERVICE_NAME: &str = "trailhound.detect.v1.DetectService";

/// Runs the detect gRPC server, its idle-close ticker and its checkpoints
/// until `shutdown`; checkpoints once more on the way out.
pub async fn serve(
    listener: TcpListener,
    detect: Arc<Detect>,
    config: &DetectConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let svc = DetectServiceServer::new(grpc::DetectGrpc::new(detect.clone()))
        .max_decoding_message_size(trailhound_runtime::security::max_message_size())
        .max_encoding_message_size(64 << 20);
    let ticker = {
        let detect = detect.clone();
        let stop = shutdown.clone();
        let idle = config.idle_close;
        let every = config.checkpoint_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5).min(every));
            let mut last_checkpoint = tokio::time::Instant::now();
            while trailhound_runtime::shutdown::next_tick(&mut tick, &stop).await {
                let d = detect.clone();
                match tokio::task::spawn_blocking(move || d.tick(idle)).await {
                    Ok(Ok(anomalies)) => detect.forward(&anomalies, None).await,
                    Ok(Err(e)) => tracing::warn!(error = %e, "idle close failed"),
                    Err(e) => tracing::warn!(error = %e, "idle close task failed"),
                }
                if last_checkpoint.elapsed() >= every {
                    last_checkpoint = tokio::time::Instant::now();
                    let d = detect.clone();
                    match tokio::task::spawn_blocking(move || d.checkpoint()).await {
                        Ok(Ok(bytes)) => tracing::debug!(bytes, "checkpointed detector state"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint failed"),
                        Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
                    }
                }
            }
        })
    };
    // Anomalies the log's replay found that downstream never had.
    {
        let detect = detect.clone();
        tokio::spawn(async move { detect.forward(&[], None).await });
    }
    let stats = trailhound_runtime::StatsHandle::of(detect.clone(), Detect::service_stats);
    let opensearch = detect
        .opensearch()
        .map(|b| tokio::spawn(b.run(shutdown.clone())));
    let options = trailhound_runtime::ServerOptions::with_stats(stats);
    let result = trailhound_runtime::serve_one(listener, svc, options, shutdown).await;
    ticker.abort();
    if let Some(t) = opensearch {
        t.abort();
    }
    match detect.checkpoint() {
        Ok(bytes) => tracing::info!(bytes, "checkpointed detector state"),
        Err(e) => tracing::error!(error = %e, "final checkpoint failed"),
    }
    result
}

/// Flags of the detect service; each overrides the config file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DetectArgs {
    /// Address to listen on [default: 127.0.0.1:50053].
    #[arg(
        id = "detect_listen",
        long = "detect-listen",
        env = "TRAILHOUND_DETECT_LISTEN"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// insights' endpoint, where every anomaly goes to be explained and
    /// notified (e.g. http://127.0.0.1:50054); none keeps them in detect.
    #[arg(long, env = "TRAILHOUND_INSIGHTS_ENDPOINT")]
    pub insights_endpoint: Option<String>,
    /// This replica's share of the accounts, I/N (e.g. 0/3): run N
    /// replicas, each with its own data dir, and list them in shard order
    /// in enrich's --detect-endpoint [default: 0/1, every account].
    #[arg(long, env = "TRAILHOUND_DETECT_SHARD")]
    pub shard: Option<trailhound_core::Shard>,
}

impl DetectArgs {
    pub fn config(&self, common: &trailhound_runtime::CommonArgs) -> anyhow::Result<DetectConfig> {
        let mut c: DetectConfig = common.section("detect")?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(e) = &self.insights_endpoint {
            c.insights_endpoint = Some(e.clone());
        }
        if let Some(s) = self.shard {
            c.shard = s;
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid [detect] configuration: {e}"))?;
        if c.backend == config::DetectBackend::Opensearch {
            let os: trailhound_opensearch::OpenSearchConfig = common.section("opensearch")?;
            os.validate()
                .map_err(|e| anyhow::anyhow!("invalid [opensearch] configuration: {e}"))?;
            c.opensearch = Some(os);
            c.aws = Some(common.section("aws")?);
        }
        Ok(c)
    }
}

/// Opens the service a configuration describes.
pub fn build(
    config: &DetectConfig,
    data_dir: &std::path::Path,
    downstream: Option<Arc<dyn trailhound_core::pipeline::AnomalySink>>,
) -> anyhow::Result<Arc<Detect>> {
    let store = DetectStore::open(&config.store_path(data_dir))?;
    let detect = Arc::new(
        Detect::open_with(
            store,
            config.detectors.clone(),
            config.engine.clone(),
            downstream.clone(),
            WalOptions {
                // OpenSearch keeps the events itself; the log is the embedded
                // engine's.
                enabled: config.wal && config.backend == config::DetectBackend::Embedded,
                checkpoint_after_events: config.wal_checkpoint_events,
            },
        )?
        .with_max_future_skew(config.max_future_skew)
        .with_shard(config.shard),
    );
    if config.backend == config::DetectBackend::Opensearch {
        // The cluster is reached lazily: it may be down now; serve() sets
        // it up in the background and events wait in ingest meanwhile.
        let backend = trailhound_opensearch::Backend::new(
            config.opensearch.clone().unwrap_or_default(),
            config.aws.clone(),
            config.detectors.clone(),
            data_dir,
            downstream,
        )?;
        detect.set_opensearch(Arc::new(backend));
    }
    Ok(detect)
}

/// Runs detect alone.
pub async fn run(
    common: &trailhound_runtime::CommonArgs,
    args: &DetectArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.config(common)?;
    let downstream: Option<Arc<dyn trailhound_core::pipeline::AnomalySink>> =
        match &config.insights_endpoint {
            Some(e) => Some(Arc::new(insights_sink::GrpcInsightsSink::new(e)?)),
            None => None,
        };
    let detect = build(&config, &common.data_dir, downstream)?;
    let listener = trailhound_runtime::bind(config.listen).await?;
    serve(listener, detect, &config, shutdown).await
}
