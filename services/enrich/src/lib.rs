//! enrich: joins every event with its account's metadata — name, email,
//! status, OU path, tags, environment, team, cost center — and hands the
//! result to detect.
//!
//! Metadata comes from an [`AccountSource`] — the org snapshot file
//! ([`SnapshotSource`]) or the AWS Organizations API
//! ([`OrganizationsSource`]) — through two cache layers: an in-memory map
//! with a TTL in front of a persistent [`MetadataStore`] — an embedded redb
//! file ([`RedbStore`]) or a DynamoDB table ([`DynamoStore`]) — so a
//! restart does not refetch. Which ones run is configuration (`[enrich]
//! source`, `cache`), see [`build`]. Concurrent lookups of one account make
//! one backend call. An account the organization does not contain is
//! marked external, never an error: cross-account calls are normal in
//! CloudTrail.

pub mod aws_org;
pub mod config;
pub mod dynamo;
pub mod enricher;
pub mod grpc;
pub mod org_command;
pub mod shards;
pub mod source;
pub mod store;

pub use aws_org::OrganizationsSource;
pub use config::{CacheKind, EnrichConfig, SourceKind};
pub use dynamo::{DynamoOptions, DynamoStore};
pub use enricher::{EnrichFigures, EnrichSink, EnrichStats, Enricher};
pub use source::{AccountSource, SnapshotSource, SourceError};
pub use store::{CachedEntry, MetadataStore, RedbStore, StoreError};
/// The `[aws]` section and its loader, for callers that build enrich's
/// AWS backends (`trailhound org snapshot`).
pub use trailhound_aws::{Aws, AwsConfig};

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_core::pipeline::EnrichedSink;
use trailhound_proto::enrich::v1::enrich_service_server::EnrichServiceServer;

/// Fully qualified gRPC service name, for health checks.
pub const SERVICE_NAME: &str = "trailhound.enrich.v1.EnrichService";

/// Builds the enricher a configuration describes: its account source and
/// persistent cache, on AWS when configured (`config.aws` is the `[aws]`
/// section). Fails with a clear message when AWS cannot be reached as
/// configured (no region, access denied, wrong table schema).
pub async fn build(
    config: &EnrichConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<Enricher>> {
    config.validate().map_err(anyhow::Error::msg)?;
    let aws = if config.uses_aws() {
        Some(
            Aws::load(&config.aws)
                .await
                .context("failed to load the [aws] configuration for enrich")?,
        )
    } else {
        None
    };
    let source: Arc<dyn AccountSource> = match (&config.source, &aws) {
        (SourceKind::Organizations, Some(aws)) => Arc::new(
            OrganizationsSource::connect(aws)
                .await
                .context("failed to connect to AWS Organizations")?,
        ),
        _ => snapshot_source(config)?,
    };
    let store: Arc<dyn MetadataStore> = match (&config.cache, &aws) {
        (CacheKind::Dynamodb, Some(aws)) => Arc::new(
            DynamoStore::open(
                aws,
                &DynamoOptions {
                    table: config.dynamodb_table.clone(),
                    create_if_missing: config.create_table,
                    expire_after: config.store_max_age.max(config.store_ttl),
                },
            )
            .await?,
        ),
        _ => Arc::new(RedbStore::open(&config.cache_path(data_dir))?),
    };
    tracing::info!(
        source = source.name(),
        cache = ?config.cache,
        "enrich backends ready"
    );
    Ok(Arc::new(
        Enricher::new(
            source,
            Some(store),
            config.rules.clone(),
            config.memory_ttl,
            config.store_ttl,
        )
        .with_store_max_age(config.store_max_age)
        .with_memory_max_entries(config.memory_max_entries),
    ))
}

fn snapshot_source(config: &EnrichConfig) -> anyhow::Result<Arc<dyn AccountSource>> {
    Ok(match &config.org_snapshot {
        Some(path) => Arc::new(SnapshotSource::load(path)?),
        None => {
            tracing::warn!("no org snapshot configured: every account will be external");
            Arc::new(SnapshotSource::empty())
        }
    })
}

/// The account source alone, as configured (for callers without a cache,
/// such as a replay).
pub async fn build_source(config: &EnrichConfig) -> anyhow::Result<Arc<dyn AccountSource>> {
    config.validate().map_err(anyhow::Error::msg)?;
    match config.source {
        SourceKind::Organizations => {
            let aws = Aws::load(&config.aws)
                .await
                .context("failed to load the [aws] configuration for enrich")?;
            Ok(Arc::new(
                OrganizationsSource::connect(&aws)
                    .await
                    .context("failed to connect to AWS Organizations")?,
            ))
        }
        SourceKind::Snapshot => snapshot_source(config),
    }
}

/// Builds an enricher on the embedded backends only (snapshot file, redb),
/// without a runtime. Configurations that name an AWS backend need the
/// async [`build`].
pub fn build_enricher(
    config: &EnrichConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<Enricher>> {
    config.validate().map_err(anyhow::Error::msg)?;
    if config.uses_aws() {
        anyhow::bail!(
            "[enrich] source = {:?} / cache = {:?} need AWS: build enrich with the async trailhound_enrich::build",
            config.source,
            config.cache
        );
    }
    let source = snapshot_source(config)?;
    let store: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&config.cache_path(data_dir))?);
    Ok(Arc::new(
        Enricher::new(
            source,
            Some(store),
            config.rules.clone(),
            config.memory_ttl,
            config.store_ttl,
        )
        .with_store_max_age(config.store_max_age)
        .with_memory_max_entries(config.memory_max_entries),
    ))
}

/// Runs the enrich gRPC server until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    enricher: Arc<Enricher>,
    downstream: Arc<dyn EnrichedSink>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stats = trailhound_runtime::StatsHandle::of(enricher.clone(), Enricher::service_stats);
    let svc = EnrichServiceServer::new(grpc::EnrichGrpc::new(enricher, downstream))
        .max_decoding_message_size(trailhound_runtime::security::max_message_size())
        .max_encoding_message_size(64 << 20);
    let options = trailhound_runtime::ServerOptions::with_stats(stats);
    trailhound_runtime::serve_one(listener, svc, options, shutdown).await
}

/// Flags of the enrich service; each overrides the config file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EnrichArgs {
    /// Address to listen on [default: 127.0.0.1:50052].
    #[arg(
        id = "enrich_listen",
        long = "enrich-listen",
        env = "TRAILHOUND_ENRICH_LISTEN"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// detect's endpoint [default: http://127.0.0.1:50053]; several,
    /// comma-separated, are replicas started with --shard I/N, in shard
    /// order.
    #[arg(long, env = "TRAILHOUND_DETECT_ENDPOINT")]
    pub detect_endpoint: Option<String>,
    /// Org snapshot JSON file (see the README for its format).
    #[arg(long, env = "TRAILHOUND_ORG")]
    pub org: Option<std::path::PathBuf>,
    /// Where account metadata comes from: the --org snapshot file, or the
    /// AWS Organizations API (reached as the [aws] config section says)
    /// [default: snapshot].
    #[arg(
        id = "enrich_source",
        long = "org-source",
        env = "TRAILHOUND_ENRICH_SOURCE",
        value_enum
    )]
    pub source: Option<SourceKind>,
    /// Persistent metadata cache: an embedded redb file or a DynamoDB
    /// table [default: redb].
    #[arg(
        id = "enrich_cache",
        long = "enrich-cache",
        env = "TRAILHOUND_ENRICH_CACHE",
        value_enum
    )]
    pub cache: Option<CacheKind>,
    /// The DynamoDB table of the metadata cache
    /// [default: trailhound-account-metadata].
    #[arg(
        id = "enrich_dynamodb_table",
        long = "enrich-dynamodb-table",
        env = "TRAILHOUND_ENRICH_DYNAMODB_TABLE"
    )]
    pub dynamodb_table: Option<String>,
    /// Create the DynamoDB table (indexes, TTL) when it does not exist.
    #[arg(
        id = "enrich_create_table",
        long = "enrich-create-table",
        env = "TRAILHOUND_ENRICH_CREATE_TABLE"
    )]
    pub create_table: bool,
}

impl EnrichArgs {
    /// The `[enrich]` section with these flags applied, and the `[aws]`
    /// section beside it.
    pub fn config(&self, common: &trailhound_runtime::CommonArgs) -> anyhow::Result<EnrichConfig> {
        let mut c: EnrichConfig = common.section("enrich")?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(e) = &self.detect_endpoint {
            c.detect_endpoint = e.clone();
        }
        if let Some(o) = &self.org {
            c.org_snapshot = Some(o.clone());
        }
        if let Some(s) = self.source {
            c.source = s;
        }
        if let Some(k) = self.cache {
            c.cache = k;
        }
        if let Some(t) = &self.dynamodb_table {
            c.dynamodb_table = t.clone();
        }
        if self.create_table {
            c.create_table = true;
        }
        c.aws = common.section("aws")?;
        Ok(c)
    }
}

/// Runs enrich alone, forwarding to detect over gRPC.
pub async fn run(
    common: &trailhound_runtime::CommonArgs,
    args: &EnrichArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.config(common)?;
    let enricher = build(&config, &common.data_dir).await?;
    let endpoints = config.detect_endpoints();
    let downstream: Arc<dyn EnrichedSink> = match endpoints.as_slice() {
        [one] => Arc::new(grpc::GrpcDetectSink::new(
            one,
            std::time::Duration::from_secs(60),
        )?),
        many => {
            tracing::info!(
                replicas = many.len(),
                "detect is sharded: each replica gets its accounts' events"
            );
            Arc::new(shards::ShardedDetectSink::new(
                many,
                &common.data_dir.join("enrich-spool"),
                config.replica_patience,
            )?)
        }
    };
    let listener = trailhound_runtime::bind(config.listen).await?;
    serve(listener, enricher, downstream, shutdown).await
}
