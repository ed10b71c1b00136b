//! notify: tells the right people about explained anomalies — on Slack,
//! Microsoft Teams, SNS, signed webhooks and the log — once per incident.
//!
//! This crate owns everything between an [`Insight`](trailhound_core::Insight) and a message someone
//! reads: routing rules ([`route`]), what a message says on each platform
//! ([`render`]), the channels and their secrets ([`channel`], [`secret`]),
//! one-message-per-incident dedup and follow-ups ([`incident`]), rate
//! limits, retries with backoff and dead letters ([`ratelimit`],
//! [`retry`], [`store`]), and the record of every delivery behind
//! ListDeliveries. It exists as its own service because alerting has its
//! own failure modes — slow or throttling webhooks, leaked webhook URLs,
//! alert storms, restarts that re-alert — and none of them should reach
//! detection or analysis.
//!
//! [`Notifier`] is the logic and knows no gRPC; [`grpc`] is the thin
//! adapter; [`follow`] and [`follow_grpc`] feed it insights in process or
//! from insights' WatchInsights stream. Decisions worth knowing:
//!
//! - **Routing**: all matching rules apply (a channel gets one message per
//!   insight); `stop = true` on a rule gives first-match where wanted.
//! - **One message per incident**: later windows are SKIPPED unless
//!   severity rose (follow-up) or `follow_up_interval` passed (follow-up
//!   with running totals); the same insight id is never sent twice. The
//!   state survives restarts.
//! - **Rate limits**: a token bucket per channel; over the limit a message
//!   is SKIPPED with the reason, not queued.
//! - **Webhook signature**: `X-Trailhound-Signature: sha256=hex(HMAC-SHA256(
//!   secret, timestamp + "." + body))` with `X-Trailhound-Timestamp`; see
//!   [`channel::webhook`].

pub mod aws_sns;
pub mod channel;
pub mod config;
pub mod delivery;
mod follow;
pub mod grpc;
pub mod incident;
pub mod notifier;
pub mod ratelimit;
pub mod render;
pub mod retry;
pub mod route;
pub mod secret;
pub mod store;
// Fixtures for tests only, not shipped: the integration tests include the
// same file (tests/main.rs).
#[cfg(test)]
mod testing;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trailhound_proto::notify::v1::notify_service_server::NotifyServiceServer;

pub use channel::{Channel, Payload, Publisher, SendError, SnsMessage};
pub use config::{ChannelConfig, ChannelKind, ConfigError, NotifyConfig, RetryConfig, RouteConfig};
pub use follow::{follow, follow_grpc};
pub use notifier::{
    Backends, ChannelInfo, Delivery, DeliveryFilter, DeliveryStatus, Notifier, NotifyError,
    NotifyStats, RetrySummary,
};

pub const SERVICE_NAME: &str = "trailhound.notify.v1.NotifyService";

/// Opens notify as configured: channels with their secrets, the store
/// under `data_dir` and the dead-letter file. SNS channels need AWS:
/// [`build_aws`], or [`build_with`] and an SNS [`Publisher`].
pub fn build(config: &NotifyConfig, data_dir: &std::path::Path) -> anyhow::Result<Arc<Notifier>> {
    build_with(config, data_dir, Backends::default())
}

/// [`build`] with explicit backends (an SNS client, a fake environment).
pub fn build_with(
    config: &NotifyConfig,
    data_dir: &std::path::Path,
    backends: Backends,
) -> anyhow::Result<Arc<Notifier>> {
    Ok(Arc::new(Notifier::open(config, data_dir, backends)?))
}

/// [`build`] with the AWS backends the channels need (SNS), configured by
/// the `[aws]` section.
pub async fn build_aws(
    config: &NotifyConfig,
    data_dir: &std::path::Path,
    aws: &trailhound_aws::AwsConfig,
) -> anyhow::Result<Arc<Notifier>> {
    build_with(config, data_dir, aws_sns::backends(config, aws).await?)
}

/// Serves NotifyService (plus health and reflection) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stats = trailhound_runtime::StatsHandle::of(notifier.clone(), Notifier::service_stats);
    let recover = recover_handle(notifier.clone());
    let svc = NotifyServiceServer::new(grpc::NotifyGrpc::new(notifier))
        .max_decoding_message_size(trailhound_runtime::security::max_message_size());
    let options = trailhound_runtime::ServerOptions {
        recover: Some(recover),
        ..trailhound_runtime::ServerOptions::with_stats(stats)
    };
    trailhound_runtime::serve_one(listener, svc, options, shutdown).await
}

/// health's actions on notify (ControlService/Recover):
/// `retry_dead_letters` re-sends the dead letters, `reconnect` makes the
/// insights follower reconnect now.
fn recover_handle(notifier: Arc<Notifier>) -> trailhound_runtime::RecoverHandle {
    use trailhound_runtime::RecoverError;
    trailhound_runtime::RecoverHandle::on(notifier, |notifier, action| async move {
        match action.as_str() {
            "retry_dead_letters" => notifier
                .retry_dead_letters()
                .await
                .map(|summary| summary.to_string())
                .map_err(|e| RecoverError::Failed(format!("failed to retry dead letters: {e}"))),
            "reconnect" => Ok(notifier.reconnect()),
            _ => Err(RecoverError::Unknown(action)),
        }
    })
}

/// Flags of the notify service; each overrides the config file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NotifyArgs {
    /// Address to listen on [default: 127.0.0.1:50055].
    #[arg(
        id = "notify_listen",
        long = "notify-listen",
        env = "TRAILHOUND_NOTIFY_LISTEN"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// insights' endpoint, whose WatchInsights notify follows
    /// [default: http://127.0.0.1:50054].
    #[arg(
        id = "notify_insights_endpoint",
        long = "insights-endpoint",
        env = "TRAILHOUND_INSIGHTS_ENDPOINT"
    )]
    pub insights_endpoint: Option<String>,
    /// Send a follow-up for an incident already notified after this long
    /// (e.g. 30m) [default: 30m].
    #[arg(
        id = "notify_follow_up_interval",
        long = "follow-up-interval",
        env = "TRAILHOUND_NOTIFY_FOLLOW_UP_INTERVAL",
        value_parser = humantime::parse_duration
    )]
    pub follow_up_interval: Option<std::time::Duration>,
}

impl NotifyArgs {
    /// The `[notify]` section with these flags applied, validated.
    pub fn config(&self, common: &trailhound_runtime::CommonArgs) -> anyhow::Result<NotifyConfig> {
        let mut c: NotifyConfig = common.section("notify")?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(e) = &self.insights_endpoint {
            c.insights_endpoint = e.clone();
        }
        if let Some(d) = self.follow_up_interval {
            c.follow_up_interval = d;
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid [notify] configuration: {e}"))?;
        Ok(c)
    }
}

/// Runs notify alone: the gRPC server, and a follower of insights'
/// WatchInsights stream.
pub async fn run(
    common: &trailhound_runtime::CommonArgs,
    args: &NotifyArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.config(common)?;
    let aws: trailhound_aws::AwsConfig = common.section("aws")?;
    let notifier = build_aws(&config, &common.data_dir, &aws).await?;
    let listener = trailhound_runtime::bind(config.listen).await?;
    let stop = shutdown.child_token();
    let follower = tokio::spawn(follow_grpc(
        notifier.clone(),
        config.insights_endpoint.clone(),
        stop.clone(),
    ));
    let served = serve(listener, notifier, shutdown).await;
    stop.cancel();
    if let Err(e) = follower.await {
        tracing::error!(error = %e, "insights follower failed");
    }
    served
}
