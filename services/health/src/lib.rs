//! health: the pipeline watching itself. It checks every configured
//! service each poll interval (grpc.health.v1 and the `Stats` RPC all
//! services share), judges each against explicit objectives (lag, error
//! rate, dead-letter growth, latency, freshness) into SERVING / DEGRADED /
//! NOT_SERVING with reasons, serves that as `GetSystemHealth` and
//! `WatchSystemHealth`, alerts through notify on every change, and takes
//! rate-limited recovery actions ([`monitor`]).
//!
//! One port serves gRPC, the dashboard (`/`), Prometheus text for every
//! watched service (`/metrics`) and `/health.json` ([`dashboard`]).

pub mod alert;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod evaluate;
pub mod html;
pub mod monitor;
pub mod probe;
pub mod recovery;
pub mod signin;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use trailhound_proto::common::v1 as common;
use trailhound_proto::health::v1 as pb;
use trailhound_proto::health::v1::health_service_server::{HealthService, HealthServiceServer};

pub use config::{HealthConfig, Objectives, RecoveryConfig};
pub use error::HealthError;
pub use monitor::Monitor;

pub const SERVICE_NAME: &str = "trailhound.health.v1.HealthService";

/// The gRPC face of the monitor.
#[derive(Debug, Clone)]
pub struct HealthGrpc {
    monitor: Arc<Monitor>,
}

impl HealthGrpc {
    pub fn new(monitor: Arc<Monitor>) -> Self {
        Self { monitor }
    }
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<pb::SystemHealth, Status>> + Send>>;

#[tonic::async_trait]
impl HealthService for HealthGrpc {
    async fn get_system_health(
        &self,
        req: Request<pb::GetSystemHealthRequest>,
    ) -> Result<Response<pb::SystemHealth>, Status> {
        let scope = trailhound_runtime::security::scope_of(&req);
        let mut h = self.monitor.current();
        // Before the first round has finished, check now rather than
        // answer "unknown".
        if h.status() == pb::Status::Unspecified {
            h = self.monitor.check_once().await;
        }
        Ok(Response::new(for_scope(h, &scope)))
    }

    type WatchSystemHealthStream = HealthStream;

    async fn watch_system_health(
        &self,
        req: Request<pb::WatchSystemHealthRequest>,
    ) -> Result<Response<Self::WatchSystemHealthStream>, Status> {
        let scope = trailhound_runtime::security::scope_of(&req);
        let mut rx = self.monitor.subscribe();
        // A bounded channel fed by a task: a watcher that stops reading
        // holds one slot, and its hang-up ends the task.
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let h = for_scope(rx.borrow_and_update().clone(), &scope);
                if h.status() != pb::Status::Unspecified && tx.send(Ok(h)).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn stats(
        &self,
        _req: Request<common::StatsRequest>,
    ) -> Result<Response<common::ServiceStats>, Status> {
        trailhound_runtime::stats::reply(self.monitor.service_stats())
    }
}

/// `h` as a caller with `scope` may see it. Each service's figures count
/// every account's events (as Stats, which a scoped caller is refused), so
/// a caller scoped to some accounts gets statuses and reasons without them.
pub fn for_scope(mut h: pb::SystemHealth, scope: &trailhound_core::Scope) -> pb::SystemHealth {
    if !scope.is_unrestricted() {
        for s in &mut h.services {
            s.stats = None;
            s.error_rate = 0.0;
        }
    }
    h
}

/// The monitor as configured: gRPC probes, alerts through notify (or the
/// log only when `alert_endpoint` is empty).
pub fn build(config: HealthConfig) -> anyhow::Result<Arc<Monitor>> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid [health] configuration: {e}"))?;
    let alerter: Arc<dyn alert::Alerter> = match config.alert_endpoint() {
        Some(ep) if !ep.is_empty() => Arc::new(alert::NotifyAlerter::new(ep)),
        _ => Arc::new(alert::LogOnly),
    };
    Ok(Arc::new(Monitor::new(
        config,
        Arc::new(probe::GrpcProber::default()),
        alerter,
    )))
}

/// Runs the monitor's loop and serves gRPC plus the dashboard on
/// `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    monitor: Arc<Monitor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let looping = tokio::spawn(monitor.clone().run(shutdown.clone()));
    // The dashboard's router carries /metrics with every watched service's
    // figures, so health does not hand its own stats to the bootstrap.
    let routes = tonic::service::Routes::from(dashboard::router(monitor.clone())).add_service(
        HealthServiceServer::new(HealthGrpc::new(monitor.clone()))
            .max_decoding_message_size(trailhound_runtime::security::max_message_size()),
    );
    let result = trailhound_runtime::serve(
        listener,
        routes,
        &[SERVICE_NAME],
        trailhound_runtime::ServerOptions::default(),
        shutdown,
    )
    .await;
    looping.abort();
    result
}

/// Flags of the health service; each overrides the `[health]` section.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct HealthArgs {
    /// Address of gRPC, the dashboard and /metrics [default: 127.0.0.1:50056].
    #[arg(
        id = "health_listen",
        long = "health-listen",
        env = "TRAILHOUND_HEALTH_LISTEN"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// Services to watch as name=endpoint (repeatable) [default: the five
    /// others on their default ports].
    #[arg(long = "watch", value_parser = parse_target)]
    pub targets: Vec<(String, String)>,
    /// Time between checks [default: 5s].
    #[arg(long, env = "TRAILHOUND_HEALTH_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
    /// notify's endpoint for health's alerts; "" logs them only
    /// [default: the notify target].
    #[arg(long, env = "TRAILHOUND_HEALTH_ALERT_ENDPOINT")]
    pub alert_endpoint: Option<String>,
}

impl HealthArgs {
    /// The `[health]` section with these flags applied.
    pub fn config(&self, common: &trailhound_runtime::CommonArgs) -> anyhow::Result<HealthConfig> {
        let mut c: HealthConfig = common.section("health")?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if !self.targets.is_empty() {
            c.targets = self.targets.iter().cloned().collect();
        }
        if let Some(p) = self.poll_interval {
            c.poll_interval = p;
        }
        if let Some(a) = &self.alert_endpoint {
            c.alert_endpoint = Some(a.clone());
        }
        Ok(c)
    }
}

fn parse_target(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(n, e)| (n.to_string(), e.to_string()))
        .ok_or_else(|| format!("expected name=endpoint, got {s:?}"))
}

/// The five other services on their default ports.
pub fn default_targets(host: &str) -> BTreeMap<String, String> {
    [
        ("ingest", 50051),
        ("enrich", 50052),
        ("detect", 50053),
        ("insights", 50054),
        ("notify", 50055),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), format!("http://{host}:{p}")))
    .collect()
}

/// Runs health alone.
pub async fn run(
    common: &trailhound_runtime::CommonArgs,
    args: &HealthArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.config(common)?;
    let listener = trailhound_runtime::bind(config.listen).await?;
    let monitor = build(config)?;
    serve(listener, monitor, shutdown).await
}
