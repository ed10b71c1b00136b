//! Consuming insights as they are made: from an in-process stream
//! (`trailhound up`) or from insights' WatchInsights over gRPC.
//!
//! Each insight is planned in arrival order (so windows of one incident
//! are decided in order) and then delivered in a spawned task, at most
//! `max_in_flight` at once: a channel that hangs until its timeout holds
//! one slot, not the stream. The gRPC follower reconnects with jittered
//! exponential backoff when the stream breaks and resumes with `since` =
//! the newest `analyzed_at` it handled (kept in the store, so a restart
//! resumes too); insights come again on the overlap and are skipped by the
//! insight-id dedup. [`Notifier::reconnect`] (health's `reconnect`
//! action) makes it drop the stream and reconnect at once.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use trailhound_core::Insight;
use trailhound_core::convert::{insight_from_pb, timestamp};
use trailhound_proto::insights::v1 as ipb;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;

use crate::notifier::Notifier;

/// How long in-flight deliveries may finish after shutdown.
const DRAIN: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Plans in order, delivers in bounded parallel.
struct Pump {
    notifier: Arc<Notifier>,
    tasks: JoinSet<()>,
    slots: Arc<Semaphore>,
}

impl Pump {
    fn new(notifier: Arc<Notifier>) -> Self {
        let slots = Arc::new(Semaphore::new(notifier.config().max_in_flight.max(1)));
        Self {
            notifier,
            tasks: JoinSet::new(),
            slots,
        }
    }

    /// Returns false when shutdown came first.
    async fn push(&mut self, insight: Arc<Insight>, shutdown: &CancellationToken) -> bool {
        while self.tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return false,
            p = self.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        // Delivery continues the trace the insight was made in (its
        // traceparent crossed the stream), so one trace runs from ingest to
        // the channel.
        let span = tracing::info_span!(
            "notify.deliver",
            otel.name = "trailhound.notify/Deliver",
            insight_id = %insight.id,
            incident_id = %insight.incident_id,
        );
        trailhound_runtime::telemetry::continue_trace(&span, &insight.trace_parent);
        let plan = span.in_scope(|| self.notifier.plan(insight));
        if plan.sends() {
            let n = self.notifier.clone();
            self.tasks.spawn(
                async move {
                    n.execute(plan).await;
                    drop(permit);
                }
                .instrument(span),
            );
        } else {
            // Skips only: nothing to wait for, record them now.
            self.notifier.execute(plan).instrument(span).await;
        }
        true
    }

    async fn drain(mut self) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            tracing::warn!(
                in_flight = self.tasks.len(),
                "stopping with deliveries still in flight"
            );
            self.tasks.abort_all();
        }
    }
}

/// Delivers every insight of `insights` until the stream ends or
/// `shutdown`; then lets in-flight deliveries finish (up to 10 s).
pub async fn follow<S>(notifier: Arc<Notifier>, mut insights: S, shutdown: CancellationToken)
where
    S: Stream<Item = Arc<Insight>> + Unpin,
{
    let mut pump = Pump::new(notifier);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = insights.next() => n,
        };
        let Some(insight) = next else { break };
        if !pump.push(insight, &shutdown).await {
            break;
        }
    }
    pump.drain().await;
}

/// Why one WatchInsights session ended.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("invalid insights endpoint: {0}")]
    Endpoint(String),
    #[error("WatchInsights failed: {} ({:?})", .0.message(), .0.code())]
    Status(#[from] tonic::Status),
}

/// Follows insights' WatchInsights at `endpoint` until `shutdown`,
/// reconnecting with backoff (up to `reconnect_max_backoff`), or at once
/// when [`Notifier::reconnect`] asks, and resuming from the last
/// `analyzed_at` handled.
pub async fn follow_grpc(notifier: Arc<Notifier>, endpoint: String, shutdown: CancellationToken) {
    let _counted = notifier.follower();
    let mut pump = Pump::new(notifier.clone());
    let max = notifier.config().reconnect_max_backoff.max(FIRST_BACKOFF);
    let mut backoff = trailhound_runtime::retry::Backoff::new(FIRST_BACKOFF, max);
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let since = notifier.watermark();
        match watch(&notifier, &endpoint, since, &mut pump, &shutdown).await {
            Ok(Session::Requested) => {
                tracing::info!(%endpoint, "reconnecting to insights as asked");
                failures = 0;
                backoff.reset();
                continue;
            }
            Ok(Session::Ended(received)) => {
                failures = 0;
                if received > 0 {
                    backoff.reset();
                }
                if !shutdown.is_cancelled() {
                    tracing::info!(%endpoint, received, "insights stream ended; reconnecting");
                }
            }
            Err(e) => {
                failures += 1;
                // Loud on the first failure and then about every
                // `reconnect_max_backoff`, quiet in between.
                if failures == 1 || backoff.at_cap() {
                    tracing::warn!(%endpoint, error = %e, failures, "cannot follow insights");
                } else {
                    tracing::debug!(%endpoint, error = %e, failures, "cannot follow insights");
                }
            }
        }
        // Jittered, so restarted notifiers spread out.
        let pause = backoff.fail();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = notifier.reconnect_requested() => {
                backoff.reset();
                continue;
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
    pump.drain().await;
}

/// How one WatchInsights session ended without an error.
enum Session {
    /// The stream ended (or shutdown) after this many insights.
    Ended(u64),
    /// [`Notifier::reconnect`] asked to drop it.
    Requested,
}

/// One WatchInsights session.
async fn watch(
    notifier: &Notifier,
    endpoint: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
    pump: &mut Pump,
    shutdown: &CancellationToken,
) -> Result<Session, WatchError> {
    let channel = trailhound_runtime::connect(endpoint, Duration::from_secs(30))
        .map_err(|e| WatchError::Endpoint(e.to_string()))?;
    let mut client = InsightsServiceClient::new(channel).max_decoding_message_size(16 << 20);
    let request = ipb::WatchInsightsRequest {
        since: since.map(timestamp),
        include_suppressed: notifier.config().wants_suppressed(),
    };
    let mut stream = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Session::Ended(0)),
        _ = notifier.reconnect_requested() => return Ok(Session::Requested),
        r = client.watch_insights(request) => r?.into_inner(),
    };
    tracing::info!(%endpoint, since = ?since, "following insights");
    let mut received = 0u64;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Session::Ended(received)),
            _ = notifier.reconnect_requested() => return Ok(Session::Requested),
            m = stream.message() => m?,
        };
        let Some(pb) = msg else {
            return Ok(Session::Ended(received));
        };
        received += 1;
        match insight_from_pb(pb) {
            Ok(insight) => {
                let at = insight.analyzed_at;
                if !pump.push(Arc::new(insight), shutdown).await {
                    return Ok(Session::Ended(received));
                }
                notifier.advance_watermark(at);
            }
            Err(e) => {
                tracing::warn!(field = %e.field, reason = %e.reason, "skipping an invalid insight from insights")
            }
        }
    }
}
