//! insights: turns each anomaly into something a person can act on at once
//! — what it costs (`trailhound-pricing`), what caused it (ranked
//! contributors, what is new to the account), how bad it is (severity with
//! reasons, suppression rules), what to do (a rule table of
//! recommendations), and whether other accounts see the same (org-wide
//! correlation) — and answers questions about them in plain English.
//!
//! Insights are stored (redb) and streamed to watchers; notify is one. The
//! question engine is behind [`ask::AskBackend`], so Amazon Q Business can
//! answer instead of the built-in parser.

pub mod ask;
pub mod config;
pub mod correlate;
pub mod grpc;
pub mod instance;
pub mod qbusiness;
pub mod recommend;
pub mod rootcause;
pub mod service;
pub mod severity;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_proto::insights::v1::insights_service_server::InsightsServiceServer;

pub use config::InsightsConfig;
pub use service::{InsightFilter, Insights, InsightsError, InsightsSink};

pub const SERVICE_NAME: &str = "trailhound.insights.v1.InsightsService";

/// Runs the insights gRPC server until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    insights: Arc<Insights>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let svc = InsightsServiceServer::new(grpc::InsightsGrpc::new(insights.clone()))
        .max_decoding_message_size(trailhound_runtime::security::max_message_size())
        .max_encoding_message_size(64 << 20);
    let syncer = {
        let (insights, stop) = (insights.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            while trailhound_runtime::shutdown::next_tick(&mut tick, &stop).await {
                let store = insights.store().clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.sync()).await {
                    tracing::warn!(error = %e, "failed to sync the insight store");
                }
            }
        })
    };
    let stats = trailhound_runtime::StatsHandle::of(insights.clone(), Insights::service_stats);
    let options = trailhound_runtime::ServerOptions::with_stats(stats);
    let result = trailhound_runtime::serve_one(listener, svc, options, shutdown).await;
    syncer.abort();
    if let Err(e) = insights.store().sync() {
        tracing::error!(error = %e, "final sync of the insight store failed");
    }
    result
}

/// Flags of the insights service; each overrides the config file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct InsightsArgs {
    /// Address to listen on [default: 127.0.0.1:50054].
    #[arg(
        id = "insights_listen",
        long = "insights-listen",
        env = "TRAILHOUND_INSIGHTS_LISTEN"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// A price table replacing the shipped one (see `trailhound prices
    /// update`).
    #[arg(long, env = "TRAILHOUND_PRICE_TABLE")]
    pub price_table: Option<std::path::PathBuf>,
}

impl InsightsArgs {
    pub fn config(
        &self,
        common: &trailhound_runtime::CommonArgs,
    ) -> anyhow::Result<InsightsConfig> {
        let mut c: InsightsConfig = common.section("insights")?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(p) = &self.price_table {
            c.price_table = Some(p.clone());
        }
        Ok(c)
    }
}

/// Builds insights with its store and price table.
pub fn build(config: &InsightsConfig, data_dir: &std::path::Path) -> anyhow::Result<Arc<Insights>> {
    let prices = match &config.price_table {
        Some(p) => trailhound_pricing::PriceTable::load(p)?,
        None => trailhound_pricing::PriceTable::builtin()?,
    };
    let store = store::InsightStore::open(&config.store_path(data_dir))?;
    let mut config = config.clone();
    if config.detect_grpcurl_flags.is_none() {
        // As the process's [tls] and [auth] make detect reachable.
        let security = trailhound_runtime::security::installed();
        config.detect_grpcurl_flags = Some(config::grpcurl_flags(
            security.tls.as_ref().map(|t| t.config()),
            security.auth.is_enabled(),
        ));
    }
    Ok(Arc::new(Insights::open(config, store, prices)?))
}

/// Starts what the configuration asks beyond the embedded engine: Amazon Q
/// Business as the question engine and/or the index sync (reading the
/// `[aws]` section of the config file). Returns once they are set up; the
/// sync runs until `shutdown`.
pub async fn start_backends(
    insights: &Arc<Insights>,
    config: &InsightsConfig,
    common: &trailhound_runtime::CommonArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(q) = &config.qbusiness else {
        return Ok(());
    };
    let aws_cfg: trailhound_aws::AwsConfig = common.section("aws")?;
    let aws = trailhound_aws::Aws::load(&aws_cfg).await?;
    if q.ask {
        insights.set_ask_backend(Arc::new(qbusiness::QBusinessAsk::new(
            &aws,
            q.clone(),
            insights.store().clone(),
        )));
        tracing::info!(application = %q.application_id, "questions go to Amazon Q Business");
    }
    if q.sync {
        let connector = qbusiness::Connector::new(&aws, q.clone());
        if q.configure_index {
            connector.configure_index().await?;
        }
        tokio::spawn(qbusiness::sync(insights.clone(), connector, shutdown));
        tracing::info!(application = %q.application_id, index = %q.index_id, "syncing insights to Amazon Q Business");
    }
    Ok(())
}

/// Runs insights alone.
pub async fn run(
    common: &trailhound_runtime::CommonArgs,
    args: &InsightsArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.config(common)?;
    let insights = build(&config, &common.data_dir)?;
    start_backends(&insights, &config, common, shutdown.clone()).await?;
    let listener = trailhound_runtime::bind(config.listen).await?;
    serve(listener, insights, shutdown).await
}
