//! ingest: reads CloudTrail from S3-layout files (`.json`, `.json.gz`, whole
//! `AWSLogs/...` trees), CloudWatch Logs subscription payloads and a gRPC
//! push stream, and from AWS: the trail bucket through S3 notifications on
//! SQS (plus a backfill of its history), CloudWatch Logs through a Firehose
//! HTTP endpoint, and a FilterLogEvents poller; validates and normalizes
//! every record; dead-letters the bad ones with their reason; drops
//! duplicate eventIDs; and forwards the rest to enrich in batches with
//! backpressure: a slow downstream slows ingest, it never grows memory
//! without bound.

pub mod config;
pub mod cwl_poll;
pub mod deadletter;
pub mod firehose;
pub mod grpc;
pub mod ingest;
pub mod order;
pub mod s3;
pub mod source;
pub mod sources;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_proto::ingest::v1::ingest_service_server::IngestServiceServer;

pub use config::IngestConfig;
pub use ingest::{Ingest, IngestOptions, Outcome};
pub use source::SourceError;
pub use sources::{StartedSources, start_sources, start_sources_with};

pub const SERVICE_NAME: &str = "trailhound.ingest.v1.IngestService";

/// Runs the ingest gRPC server until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    batch_size: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use trailhound_runtime::RecoverError;
    let stats = trailhound_runtime::StatsHandle::of(ingest.clone(), Ingest::service_stats);
    // health's "replay": send on what the durable buffer kept while
    // downstream was down.
    let recover =
        trailhound_runtime::RecoverHandle::on(ingest.clone(), |ingest, action| async move {
            if action != "replay" {
                return Err(RecoverError::Unknown(action));
            }
            let (files, events) = ingest
                .replay_spool()
                .await
                .map_err(|e| RecoverError::Failed(e.to_string()))?;
            Ok(format!("replayed {events} events from {files} spool files"))
        });
    let svc = IngestServiceServer::new(grpc::IngestGrpc::new(ingest, batch_size))
        .max_decoding_message_size(trailhound_runtime::security::max_message_size())
        .max_encoding_message_size(16 << 20);
    let options = trailhound_runtime::ServerOptions {
        recover: Some(recover),
        ..trailhound_runtime::ServerOptions::with_stats(stats)
    };
    trailhound_runtime::serve_one(listener, svc, options, shutdown).await
}

/// Flags of the ingest service; each overrides the config file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct IngestArgs {
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(
        id = "ingest_listen",
        long = "ingest-listen",
        env = "TRAILHOUND_INGEST_LISTEN"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// enrich's endpoint [default: http://127.0.0.1:50052].
    #[arg(long, env = "TRAILHOUND_ENRICH_ENDPOINT")]
    pub enrich_endpoint: Option<String>,
    /// CloudTrail files or AWSLogs trees to read at start-up (repeatable).
    #[arg(long = "read")]
    pub read: Vec<std::path::PathBuf>,
    /// SQS queue URL receiving the trail bucket's S3 event notifications.
    #[arg(long, env = "TRAILHOUND_INGEST_S3_QUEUE_URL")]
    pub s3_queue_url: Option<String>,
    /// Replays a bucket's history at start-up: s3://bucket/prefix.
    #[arg(long, env = "TRAILHOUND_INGEST_BACKFILL")]
    pub backfill: Option<String>,
    /// Skips what was delivered or happened before this time, e.g.
    /// 2026-01-01T00:00:00Z (backfill, and the poller's first poll).
    #[arg(long, env = "TRAILHOUND_INGEST_SINCE", value_parser = config::parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Address of the Firehose HTTP endpoint for CloudWatch Logs (off when
    /// unset), e.g. 0.0.0.0:8443.
    #[arg(long, env = "TRAILHOUND_INGEST_FIREHOSE_LISTEN")]
    pub firehose_listen: Option<std::net::SocketAddr>,
    /// Environment variable holding the Firehose access key.
    #[arg(long, env = "TRAILHOUND_INGEST_FIREHOSE_ACCESS_KEY_ENV")]
    pub firehose_access_key_env: Option<String>,
    /// File holding the Firehose access key.
    #[arg(long, env = "TRAILHOUND_INGEST_FIREHOSE_ACCESS_KEY_FILE")]
    pub firehose_access_key_file: Option<std::path::PathBuf>,
    /// CloudWatch Logs group to poll with FilterLogEvents (off when unset).
    #[arg(long, env = "TRAILHOUND_INGEST_CLOUDWATCH_LOG_GROUP")]
    pub cloudwatch_log_group: Option<String>,
    /// Time between polls of the log group [default: 60s].
    #[arg(long, env = "TRAILHOUND_INGEST_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
    /// How long a batch enrich refuses is retried before it goes to the
    /// durable spool (`<data-dir>/ingest-spool/`) for health's `replay`
    /// [default: 120s].
    #[arg(long, env = "TRAILHOUND_INGEST_RETRY_PATIENCE", value_parser = humantime::parse_duration)]
    pub retry_patience: Option<std::time::Duration>,
}

impl IngestArgs {
    pub fn config(&self, common: &trailhound_runtime::CommonArgs) -> anyhow::Result<IngestConfig> {
        let mut c: IngestConfig = common.section("ingest")?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(e) = &self.enrich_endpoint {
            c.enrich_endpoint = e.clone();
        }
        c.watch_paths.extend(self.read.iter().cloned());
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if v.is_some() {
                slot.clone_from(v);
            }
        };
        set(&mut c.s3_queue_url, &self.s3_queue_url);
        set(&mut c.backfill, &self.backfill);
        set(
            &mut c.firehose_access_key_env,
            &self.firehose_access_key_env,
        );
        set(&mut c.cloudwatch_log_group, &self.cloudwatch_log_group);
        if self.since.is_some() {
            c.since = self.since;
        }
        if self.firehose_listen.is_some() {
            c.firehose_listen = self.firehose_listen;
        }
        if self.firehose_access_key_file.is_some() {
            c.firehose_access_key_file
                .clone_from(&self.firehose_access_key_file);
        }
        if let Some(p) = self.poll_interval {
            c.poll_interval = p;
        }
        if let Some(p) = self.retry_patience {
            c.retry_patience = p;
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid ingest configuration: {e}"))?;
        Ok(c)
    }
}

/// Builds ingest with its dead-letter file.
pub fn build(
    config: &IngestConfig,
    data_dir: &std::path::Path,
    downstream: Arc<dyn trailhound_core::pipeline::EventSink>,
) -> anyhow::Result<Arc<Ingest>> {
    let dl = deadletter::JsonlDeadLetter::open(&config.dead_letter_path(data_dir))?;
    Ok(Arc::new(
        Ingest::new(config.options(), Arc::new(dl), downstream)
            .with_spool(data_dir.join("ingest-spool")),
    ))
}

/// Reads the configured start-up paths in the background.
pub fn read_paths(ingest: Arc<Ingest>, paths: Vec<std::path::PathBuf>) {
    if paths.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for p in paths {
            match ingest.ingest_path(&p).await {
                Ok(o) => {
                    tracing::info!(path = %p.display(), accepted = o.accepted, rejected = o.rejected, duplicates = o.duplicates, "read trail")
                }
                Err(e) => tracing::error!(path = %p.display(), error = %e, "failed to read trail"),
            }
        }
    });
}

/// Runs ingest alone, forwarding to enrich over gRPC, with the sources the
/// configuration names. Stops when `shutdown` is cancelled or a source
/// fails for good (its error is returned).
pub async fn run(
    common: &trailhound_runtime::CommonArgs,
    args: &IngestArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.config(common)?;
    let downstream = Arc::new(grpc::GrpcEnrichSink::new(&config.enrich_endpoint)?);
    let ingest = build(&config, &common.data_dir, downstream)?;
    let listener = trailhound_runtime::bind(config.listen).await?;
    read_paths(ingest.clone(), config.watch_paths.clone());
    let mut set = tokio::task::JoinSet::new();
    let started =
        start_sources(&config, common, ingest.clone(), &mut set, shutdown.clone()).await?;
    for name in &started.names {
        tracing::info!(source = name, "started");
    }
    set.spawn(serve(listener, ingest, config.batch_size, shutdown.clone()));
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        let r = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = r {
            // One source failing for good stops the service: a half-working
            // ingest would look healthy while missing a source.
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
