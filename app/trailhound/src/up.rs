//! `trailhound up`: all six services in one process, each on its own port,
//! connected in process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_runtime::CommonArgs;

/// Ports of `trailhound up`.
#[derive(Clone, Debug, clap::Args)]
pub struct UpArgs {
    /// Host all six services listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 50051)]
    pub ingest_port: u16,
    #[arg(long, default_value_t = 50052)]
    pub enrich_port: u16,
    #[arg(long, default_value_t = 50053)]
    pub detect_port: u16,
    #[arg(long, default_value_t = 50054)]
    pub insights_port: u16,
    #[arg(long, default_value_t = 50055)]
    pub notify_port: u16,
    #[arg(long, default_value_t = 50056)]
    pub health_port: u16,
    /// Org snapshot JSON file.
    #[arg(long, env = "TRAILHOUND_ORG")]
    pub org: Option<std::path::PathBuf>,
    /// CloudTrail files or AWSLogs trees to read at start-up (repeatable).
    #[arg(long = "read")]
    pub read: Vec<std::path::PathBuf>,
}

/// The running services' addresses.
#[derive(Clone, Debug)]
pub struct Running {
    pub addrs: BTreeMap<&'static str, SocketAddr>,
}

async fn bind(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port))
        .await
        .map_err(|e| anyhow::anyhow!("failed to listen on {host}:{port}: {e}"))
}

/// Starts everything; returns once all six are listening. Tasks stop when
/// `shutdown` is cancelled; `done` resolves when they have.
pub async fn start(
    common: &CommonArgs,
    args: &UpArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<(Running, tokio::task::JoinSet<anyhow::Result<()>>)> {
    let mut enrich_cfg = trailhound_enrich::EnrichArgs {
        org: args.org.clone(),
        ..Default::default()
    }
    .config(common)?;
    if args.org.is_some() {
        enrich_cfg.org_snapshot = args.org.clone();
    }
    let ingest_cfg = trailhound_ingest::IngestArgs {
        read: args.read.clone(),
        ..Default::default()
    }
    .config(common)?;
    let mut detect_cfg = trailhound_detect::DetectArgs::default().config(common)?;
    // Without an organization to know members from, folding "unknown"
    // accounts would fold them all: each is tracked instead (still capped
    // by max_entities).
    if enrich_cfg.source == trailhound_enrich::config::SourceKind::Snapshot
        && enrich_cfg.org_snapshot.is_none()
    {
        detect_cfg.engine.unknown_accounts = trailhound_detect::UnknownAccounts::Track;
        tracing::warn!(
            "no organization configured (--org or [enrich] source): every account is tracked as its own entity, without names, OUs or environments"
        );
    }

    let listeners = [
        bind(&args.host, args.ingest_port).await?,
        bind(&args.host, args.enrich_port).await?,
        bind(&args.host, args.detect_port).await?,
        bind(&args.host, args.insights_port).await?,
        bind(&args.host, args.notify_port).await?,
        bind(&args.host, args.health_port).await?,
    ];
    let names = ["ingest", "enrich", "detect", "insights", "notify", "health"];
    let mut addrs = BTreeMap::new();
    for (n, l) in names.iter().zip(&listeners) {
        addrs.insert(*n, l.local_addr()?);
    }
    let [l_ingest, l_enrich, l_detect, l_insights, l_notify, l_health] = listeners;

    let insights_cfg = trailhound_insights::InsightsArgs::default().config(common)?;
    let notify_cfg = trailhound_notify::NotifyArgs::default().config(common)?;
    let insights = trailhound_insights::build(&insights_cfg, &common.data_dir)?;
    // Amazon Q Business (questions, index sync) as when insights runs alone.
    trailhound_insights::start_backends(&insights, &insights_cfg, common, shutdown.clone()).await?;
    // AWS backends (Organizations, DynamoDB, SNS, S3/SQS, CloudWatch Logs)
    // come from the same `[aws]` section as when each service runs alone.
    let aws_cfg: trailhound_aws::AwsConfig =
        trailhound_runtime::load_section(common.config.as_deref(), "aws")?;
    let notifier = trailhound_notify::build_aws(&notify_cfg, &common.data_dir, &aws_cfg).await?;
    // detect → insights → notify in process: anomalies are explained as
    // detect closes windows, and notify follows insights' stream.
    let detect = trailhound_detect::build(
        &detect_cfg,
        &common.data_dir,
        Some(
            Arc::new(trailhound_insights::InsightsSink(insights.clone()))
                as Arc<dyn trailhound_core::pipeline::AnomalySink>,
        ),
    )?;
    let enricher = trailhound_enrich::build(&enrich_cfg, &common.data_dir).await?;
    // The hand-offs the separate services make over gRPC, as calls: the
    // same Enricher::process and Detect::accept their adapters serve.
    let to_detect = Arc::new(trailhound_detect::DetectSink(detect.clone()));
    let to_enrich = Arc::new(trailhound_enrich::EnrichSink {
        enricher: enricher.clone(),
        downstream: to_detect.clone(),
    });
    let ingest = trailhound_ingest::build(&ingest_cfg, &common.data_dir, to_enrich)?;

    let targets: BTreeMap<String, String> = addrs
        .iter()
        .filter(|(n, _)| **n != "health")
        .map(|(n, a)| (n.to_string(), format!("http://{a}")))
        .collect();

    let mut set = tokio::task::JoinSet::new();
    set.spawn(trailhound_ingest::serve(
        l_ingest,
        ingest.clone(),
        ingest_cfg.batch_size,
        shutdown.clone(),
    ));
    set.spawn(trailhound_enrich::serve(
        l_enrich,
        enricher,
        to_detect,
        shutdown.clone(),
    ));
    {
        let detect = detect.clone();
        let stop = shutdown.clone();
        set.spawn(
            async move { trailhound_detect::serve(l_detect, detect, &detect_cfg, stop).await },
        );
    }
    {
        use tokio_stream::StreamExt;
        let feed = tokio_stream::wrappers::BroadcastStream::new(insights.subscribe())
            .filter_map(|r| r.ok());
        let (n, stop) = (notifier.clone(), shutdown.clone());
        set.spawn(async move {
            trailhound_notify::follow(n, Box::pin(feed), stop).await;
            Ok(())
        });
    }
    set.spawn(trailhound_insights::serve(
        l_insights,
        insights,
        shutdown.clone(),
    ));
    set.spawn(trailhound_notify::serve(
        l_notify,
        notifier,
        shutdown.clone(),
    ));
    // health reads its [health] section; the targets are the ports bound here.
    let mut health_cfg = trailhound_health::HealthArgs::default().config(common)?;
    health_cfg.targets = targets;
    set.spawn(trailhound_health::serve(
        l_health,
        trailhound_health::build(health_cfg)?,
        shutdown.clone(),
    ));
    trailhound_ingest::read_paths(ingest.clone(), ingest_cfg.watch_paths.clone());
    let started = trailhound_ingest::start_sources(
        &ingest_cfg,
        common,
        ingest.clone(),
        &mut set,
        shutdown.clone(),
    )
    .await?;
    for name in &started.names {
        tracing::info!(source = name, "started");
    }
    Ok((Running { addrs }, set))
}

pub async fn run(
    common: &CommonArgs,
    args: &UpArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (running, mut set) = start(common, args, shutdown).await?;
    for (n, a) in &running.addrs {
        tracing::info!(service = n, addr = %a, "listening");
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}
