//! The notifier: routes each insight, decides per channel whether it is a
//! first message, a follow-up or nothing (see [`crate::incident`]),
//! applies the channel's rate limit, delivers with retries, and records
//! every outcome — in memory for ListDeliveries, in the store for restarts,
//! in the dead-letter file when a delivery is lost. No gRPC here.
//!
//! Work is split in two so a stream consumer can keep order without
//! waiting on slow channels: [`Notifier::plan`] decides synchronously, in
//! arrival order, under one lock; [`Notifier::execute`] sends, with every
//! channel of an insight in parallel, each bounded by its own timeouts.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use trailhound_core::Insight;

use crate::channel::{self, Channel, OpenContext, Payload, Publisher};
use crate::config::{ChannelKind, ConfigError, NotifyConfig};
use crate::incident::{Decision, FollowUp, FollowUpReason, IncidentRecord};
use crate::ratelimit::TokenBucket;
use crate::render::Message;
use crate::retry::{self, Outcome, RetryPolicy};
use crate::route::Router;
use crate::secret::{EnvLookup, process_env};
use crate::store::{DeadLetter, DeadLetters, Op, Store, StoreError, StoredDeadLetter};

pub use crate::delivery::{Delivery, DeliveryStatus};

/// Filters for [`Notifier::deliveries`]; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub channel: Option<String>,
    pub insight_id: Option<String>,
    pub incident_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// Most to return; 0 means 100.
    pub limit: usize,
    /// What the caller may see.
    pub scope: trailhound_core::Scope,
}

impl DeliveryFilter {
    fn matches(&self, d: &Delivery) -> bool {
        if !self.scope.allows(&d.account_id, &d.ou_path, d.environment) {
            return false;
        }
        self.channel.as_ref().is_none_or(|c| &d.channel == c)
            && self.insight_id.as_ref().is_none_or(|i| &d.insight_id == i)
            && self
                .incident_id
                .as_ref()
                .is_none_or(|i| &d.incident_id == i)
            && self.status.is_none_or(|s| d.status == s)
    }
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotifyStats {
    pub delivered: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    pub dead_letters: u64,
    pub insights_received: u64,
}

/// A configured channel as ListChannels shows it (secrets redacted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub name: String,
    pub kind: ChannelKind,
    pub target: String,
    /// 0 = unlimited.
    pub rate_limit_per_minute: u32,
}

/// Clients notify cannot make itself, and the environment secrets come
/// from. `Default` is the process environment and no AWS backend.
#[derive(Clone)]
pub struct Backends {
    /// The SNS client for `kind = "sns"` channels.
    pub sns: Option<Arc<dyn Publisher>>,
    /// Where `url_env`/`secret_env` are looked up.
    pub env: EnvLookup,
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            sns: None,
            env: process_env(),
        }
    }
}

/// Why notify could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("invalid [notify] configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to open dead-letter file {path}: {source}")]
    DeadLetters {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to build the HTTP client: {0}")]
    Http(String),
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    retries: AtomicU64,
    insights_received: AtomicU64,
    figures: Figures,
}

/// Figures beyond the counters, for the `Stats` RPC.
#[derive(Debug)]
struct Figures {
    common: trailhound_runtime::stats::Common,
    /// One delivery, retries included.
    delivery: trailhound_runtime::stats::Histogram,
    /// Deliveries being sent now.
    pending: trailhound_runtime::stats::Pending,
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            common: trailhound_runtime::stats::Common::new("notify"),
            delivery: Default::default(),
            pending: Default::default(),
        }
    }
}

struct ChannelEntry {
    name: String,
    channel: Arc<dyn Channel>,
    policy: RetryPolicy,
    bucket: Mutex<TokenBucket>,
}

struct State {
    incidents: HashMap<String, IncidentRecord, foldhash::fast::RandomState>,
    recent: VecDeque<Delivery>,
    last_prune: Instant,
}

/// Decisions for one insight, made by [`Notifier::plan`] and carried out
/// by [`Notifier::execute`].
pub struct Plan {
    insight: Arc<Insight>,
    items: Vec<Item>,
}

impl Plan {
    /// Whether anything is left to send.
    pub fn sends(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::Send { .. }))
    }
}

enum Item {
    Send {
        channel: usize,
        follow_up: Option<FollowUp>,
        delivery: Delivery,
    },
    Done(Delivery),
}

/// The notify logic. See the module docs.
pub struct Notifier {
    config: NotifyConfig,
    router: Router,
    channels: Vec<ChannelEntry>,
    by_name: HashMap<String, usize>,
    state: Mutex<State>,
    watermark: Mutex<Option<DateTime<Utc>>>,
    counters: Counters,
    dead_letters: DeadLetters,
    store: Store,
    /// One dead-letter retry at a time.
    retrying: tokio::sync::Mutex<()>,
    /// Wakes the gRPC follower to drop its stream and reconnect.
    reconnect: tokio::sync::Notify,
    /// gRPC followers running (`follow_grpc`).
    followers: AtomicUsize,
}

/// What [`Notifier::retry_dead_letters`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetrySummary {
    /// Entries in the file, unreadable ones included.
    pub retried: usize,
    pub delivered: usize,
    /// Left in the file: failed again, their channel is gone, or unreadable.
    pub still_failing: usize,
}

impl std::fmt::Display for RetrySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retried {} dead letters: {} delivered, {} still failing",
            self.retried, self.delivered, self.still_failing
        )
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.by_name.keys().collect::<Vec<_>>())
            .field("store", &self.store)
            .finish()
    }
}

const PRUNE_EVERY: Duration = Duration::from_secs(60);

fn new_id(now: DateTime<Utc>) -> String {
    format!(
        "{:011x}-{:08x}",
        now.timestamp_millis().max(0),
        rand::random::<u32>()
    )
}

impl Notifier {
    /// Validates the configuration, resolves secrets, opens every channel,
    /// the store and the dead-letter file. Any problem is an error naming
    /// the rule or channel at fault.
    pub fn open(
        config: &NotifyConfig,
        data_dir: &Path,
        backends: Backends,
    ) -> Result<Self, NotifyError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trailhound-notify/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.retry.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| NotifyError::Http(e.to_string()))?;
        let ctx = OpenContext {
            http,
            env: backends.env,
            sns: backends.sns,
        };
        let mut channels = Vec::with_capacity(config.channels.len());
        let mut by_name = HashMap::new();
        for c in &config.channels {
            let channel = channel::open(c, &ctx).map_err(|reason| ConfigError::Channel {
                channel: c.name.clone(),
                reason,
            })?;
            by_name.insert(c.name.clone(), channels.len());
            channels.push(ChannelEntry {
                name: c.name.clone(),
                channel,
                policy: RetryPolicy::from_config(&config.retry, c.timeout, c.max_attempts),
                bucket: Mutex::new(TokenBucket::new(c.rate_limit(), c.burst)),
            });
        }
        let dl_path = config.dead_letter_path(data_dir);
        let dead_letters =
            DeadLetters::open(&dl_path).map_err(|source| NotifyError::DeadLetters {
                path: dl_path.display().to_string(),
                source,
            })?;
        let forget_before = before(Utc::now(), config.forget_incidents_after);
        let (store, loaded) = Store::open(
            &config.store_path(data_dir),
            forget_before,
            config.max_recent_deliveries,
            config.max_stored_deliveries,
        )?;
        let incidents: HashMap<_, _, _> = loaded
            .incidents
            .into_iter()
            .map(|r| (r.incident_id.clone(), r))
            .collect();
        tracing::info!(
            channels = channels.len(),
            routes = config.routes.len(),
            incidents = incidents.len(),
            "notify ready"
        );
        Ok(Self {
            router: Router::new(config.routes.clone()),
            config: config.clone(),
            channels,
            by_name,
            state: Mutex::new(State {
                incidents,
                recent: loaded.deliveries.into_iter().collect(),
                last_prune: Instant::now(),
            }),
            watermark: Mutex::new(loaded.watermark),
            counters: Counters::default(),
            dead_letters,
            store,
            retrying: tokio::sync::Mutex::new(()),
            reconnect: tokio::sync::Notify::new(),
            followers: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes, dedups, delivers (with retries) and records one insight;
    /// returns a delivery per channel its rules chose (none when no rule
    /// matched).
    pub async fn notify(&self, insight: &Insight) -> Vec<Delivery> {
        let plan = self.plan(Arc::new(insight.clone()));
        self.execute(plan).await
    }

    /// Decides, for each channel the rules choose, whether `insight` is a
    /// first message, a follow-up or skipped, and reserves the sends.
    /// Call in arrival order; then [`Notifier::execute`] the plan.
    pub fn plan(&self, insight: Arc<Insight>) -> Plan {
        self.counters
            .insights_received
            .fetch_add(1, Ordering::Relaxed);
        let routes = self.router.route(&insight);
        let now = Utc::now();
        let mut items = Vec::with_capacity(routes.len());
        let mut st = self.lock();
        self.prune(&mut st, now);
        let rec = match st.incidents.entry(insight.incident_id.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let r = e.into_mut();
                r.observe(&insight, now);
                r
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(IncidentRecord::new(&insight, now))
            }
        };
        for route in routes {
            let Some(&idx) = self.by_name.get(&route.channel) else {
                continue;
            };
            let entry = &self.channels[idx];
            let mut d = Delivery {
                id: new_id(now),
                insight_id: insight.id.clone(),
                incident_id: insight.incident_id.clone(),
                channel: entry.name.clone(),
                channel_kind: entry.channel.kind(),
                rule: route.rule,
                status: DeliveryStatus::Pending,
                follow_up: false,
                attempts: 0,
                detail: String::new(),
                created_at: now,
                finished_at: None,
                account_id: insight.anomaly.account_id.clone(),
                ou_path: insight.anomaly.ou_path.clone(),
                environment: insight.anomaly.environment,
            };
            let follow_up =
                match rec.decide(&entry.name, &insight, now, self.config.follow_up_interval) {
                    Decision::Skip(reason) => {
                        d.status = DeliveryStatus::Skipped;
                        d.detail = reason;
                        d.finished_at = Some(now);
                        items.push(Item::Done(d));
                        continue;
                    }
                    Decision::First => None,
                    Decision::FollowUp(f) => Some(f),
                };
            d.follow_up = follow_up.is_some();
            let limited = entry
                .bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_take(Instant::now());
            if let Err(wait) = limited {
                rec.release(&entry.name, &insight);
                d.status = DeliveryStatus::Skipped;
                d.detail = format!(
                    "rate limited: channel {} allows {} messages per minute; next message possible in {:.1}s",
                    entry.name,
                    entry
                        .bucket
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .per_minute(),
                    wait.as_secs_f64()
                );
                d.finished_at = Some(now);
                items.push(Item::Done(d));
                continue;
            }
            d.detail = follow_up.as_ref().map(describe).unwrap_or_default();
            items.push(Item::Send {
                channel: idx,
                follow_up,
                delivery: d,
            });
        }
        self.store.send(Op::Incident(Box::new(rec.clone())));
        for item in &items {
            match item {
                Item::Send { delivery, .. } => push_recent(&mut st, &self.config, delivery.clone()),
                Item::Done(d) => {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(channel = %d.channel, insight_id = %d.insight_id, detail = %d.detail, "skipped");
                    push_recent(&mut st, &self.config, d.clone());
                    self.store.send(Op::Delivery(Box::new(d.clone())));
                }
            }
        }
        Plan { insight, items }
    }

    /// Sends what `plan` decided, every channel in parallel, and records
    /// each outcome as it finishes. Returns the deliveries in route order.
    pub async fn execute(&self, plan: Plan) -> Vec<Delivery> {
        let insight = plan.insight;
        let sends = plan.items.into_iter().map(|item| {
            let insight = insight.clone();
            async move {
                match item {
                    Item::Done(d) => d,
                    Item::Send {
                        channel,
                        follow_up,
                        delivery,
                    } => {
                        let entry = &self.channels[channel];
                        let msg = Message {
                            insight: &insight,
                            follow_up: follow_up.as_ref(),
                            delivery_id: &delivery.id,
                            rule: &delivery.rule,
                        };
                        let payload = entry.channel.render(&msg);
                        let figures = &self.counters.figures;
                        let _pending = figures.pending.begin();
                        let outcome = figures
                            .delivery
                            .time(retry::deliver(
                                &*entry.channel,
                                &payload,
                                &entry.policy,
                                || {
                                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                                },
                            ))
                            .await;
                        self.finish(&insight, entry, delivery, outcome, &payload)
                    }
                }
            }
        });
        futures::future::join_all(sends).await
    }

    fn finish(
        &self,
        insight: &Insight,
        entry: &ChannelEntry,
        mut d: Delivery,
        outcome: Outcome,
        payload: &Payload,
    ) -> Delivery {
        let now = Utc::now();
        d.attempts = outcome.attempts;
        d.finished_at = Some(now);
        let delivered = outcome.result.is_ok();
        match outcome.result {
            Ok(()) => {
                d.status = DeliveryStatus::Delivered;
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(channel = %d.channel, kind = %d.channel_kind, insight_id = %d.insight_id, incident_id = %d.incident_id, follow_up = d.follow_up, attempts = d.attempts, "delivered");
            }
            Err(reason) => {
                d.status = DeliveryStatus::Failed;
                d.detail = reason;
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %d.channel, kind = %d.channel_kind, insight_id = %d.insight_id, incident_id = %d.incident_id, attempts = d.attempts, reason = %d.detail, dead_letters = %self.dead_letters.path().display(), "delivery failed");
                self.dead_letters.write(&DeadLetter {
                    time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    channel: &d.channel,
                    channel_kind: d.channel_kind.as_str(),
                    delivery_id: &d.id,
                    insight_id: &d.insight_id,
                    incident_id: &d.incident_id,
                    rule: &d.rule,
                    follow_up: d.follow_up,
                    reason: &d.detail,
                    attempts: d.attempts,
                    payload: &payload.body,
                });
            }
        }
        let mut st = self.lock();
        if let Some(rec) = st.incidents.get_mut(&insight.incident_id) {
            rec.finish(&entry.name, insight, delivered, now);
            self.store.send(Op::Incident(Box::new(rec.clone())));
        }
        if let Some(slot) = st.recent.iter_mut().rev().find(|r| r.id == d.id) {
            *slot = d.clone();
        }
        self.store.send(Op::Delivery(Box::new(d.clone())));
        d
    }

    fn prune(&self, st: &mut State, now: DateTime<Utc>) {
        if st.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        st.last_prune = Instant::now();
        let cutoff = before(now, self.config.forget_incidents_after);
        let stale: Vec<String> = st
            .incidents
            .values()
            .filter(|r| r.last_seen_at < cutoff)
            .map(|r| r.incident_id.clone())
            .collect();
        if !stale.is_empty() {
            for id in &stale {
                st.incidents.remove(id);
            }
            tracing::debug!(forgotten = stale.len(), "forgot old incidents");
            self.store.send(Op::Forget(stale));
        }
    }

    /// Recent deliveries, newest first.
    pub fn deliveries(&self, filter: &DeliveryFilter) -> Vec<Delivery> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        self.lock()
            .recent
            .iter()
            .rev()
            .filter(|d| filter.matches(d))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The configured channels, secrets redacted.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|c| ChannelInfo {
                name: c.name.clone(),
                kind: c.channel.kind(),
                target: c.channel.target(),
                rate_limit_per_minute: c
                    .bucket
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .per_minute(),
            })
            .collect()
    }

    pub fn stats(&self) -> NotifyStats {
        let c = &self.counters;
        NotifyStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.count(),
            insights_received: c.insights_received.load(Ordering::Relaxed),
        }
    }

    /// The figures every service reports alike (the `Stats` RPC). Lag is
    /// the age of the oldest delivery still being tried.
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let s = self.stats();
        let f = &self.counters.figures;
        let mut out = f.common.stats(s.insights_received, s.delivered);
        out.queues = vec![trailhound_proto::common::v1::QueueDepth {
            name: "deliveries_in_flight".into(),
            depth: f.pending.depth(),
            capacity: self.config.max_in_flight as u64,
        }];
        let latency = f.delivery.summary();
        out.backend_calls = latency.count;
        out.batch_latency = Some(latency);
        out.backend_latency = Some(latency);
        out.errors.insert("delivery".into(), s.failed);
        out.dead_letters = s.dead_letters;
        out.lag_seconds = f.pending.oldest_age_seconds();
        for (k, v) in [("skipped", s.skipped), ("retries", s.retries)] {
            out.gauges.insert(k.into(), v as f64);
        }
        out
    }

    /// The newest `analyzed_at` handled from insights' stream.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        *self.watermark.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the watermark forward (never back) and saves it.
    pub fn advance_watermark(&self, t: DateTime<Utc>) {
        let mut w = self.watermark.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none_or(|cur| t > cur) {
            *w = Some(t);
            self.store.send(Op::Watermark(t));
        }
    }

    /// Re-sends every entry of the dead-letter file through its channel
    /// (with the channel's retries). Those delivered are recorded as
    /// delivered and leave the file; the rest stay. One run at a time: a
    /// second call waits for the first and finds what it left.
    pub async fn retry_dead_letters(&self) -> std::io::Result<RetrySummary> {
        let _one = self.retrying.lock().await;
        let (lines, read) = self.dead_letters.read_lines()?;
        let width = self.config.max_in_flight.max(1);
        let results: Vec<(String, bool)> = futures::stream::iter(lines)
            .map(|line| async move {
                let sent = match serde_json::from_str::<StoredDeadLetter>(&line) {
                    Ok(dl) => self.resend(&dl).await,
                    Err(e) => {
                        tracing::warn!(path = %self.dead_letters.path().display(), error = %e, "keeping an unreadable dead letter");
                        false
                    }
                };
                (line, sent)
            })
            .buffered(width)
            .collect()
            .await;
        let mut summary = RetrySummary {
            retried: results.len(),
            ..Default::default()
        };
        let mut keep = Vec::new();
        for (line, sent) in results {
            if sent {
                summary.delivered += 1;
            } else {
                keep.push(line);
            }
        }
        summary.still_failing = keep.len();
        if summary.delivered > 0 {
            self.dead_letters.replace(&keep, read)?;
        }
        tracing::info!(path = %self.dead_letters.path().display(), %summary, "dead letters retried");
        Ok(summary)
    }

    /// One dead letter through its channel; true when delivered (and
    /// recorded).
    async fn resend(&self, dl: &StoredDeadLetter) -> bool {
        let Some(entry) = self.by_name.get(&dl.channel).map(|&i| &self.channels[i]) else {
            tracing::warn!(channel = %dl.channel, insight_id = %dl.insight_id, "dead letter for a channel no longer configured; kept");
            return false;
        };
        let payload = Payload {
            event: if dl.follow_up {
                "insight.follow_up"
            } else {
                "insight.opened"
            },
            delivery_id: dl.delivery_id.clone(),
            summary: format!("re-sent dead letter for insight {}", dl.insight_id),
            body: dl.payload.clone(),
        };
        let outcome = retry::deliver(&*entry.channel, &payload, &entry.policy, || {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        })
        .await;
        if let Err(reason) = outcome.result {
            tracing::warn!(channel = %dl.channel, insight_id = %dl.insight_id, %reason, "dead letter still failing");
            return false;
        }
        let now = Utc::now();
        let detail = format!(
            "delivered on retry from the dead letters (delivery {})",
            dl.delivery_id
        );
        let mut st = self.lock();
        let d = match st.recent.iter_mut().rev().find(|r| r.id == dl.delivery_id) {
            // Still in memory: the failed delivery becomes a delivered one.
            Some(d) => {
                d.status = DeliveryStatus::Delivered;
                d.attempts += outcome.attempts;
                d.detail = detail;
                d.finished_at = Some(now);
                d.clone()
            }
            None => {
                let d = Delivery {
                    id: new_id(now),
                    insight_id: dl.insight_id.clone(),
                    incident_id: dl.incident_id.clone(),
                    channel: entry.name.clone(),
                    channel_kind: entry.channel.kind(),
                    rule: dl.rule.clone(),
                    status: DeliveryStatus::Delivered,
                    follow_up: dl.follow_up,
                    attempts: outcome.attempts,
                    detail,
                    created_at: now,
                    finished_at: Some(now),
                    account_id: String::new(),
                    ou_path: Vec::new(),
                    environment: trailhound_core::Environment::Unknown,
                };
                push_recent(&mut st, &self.config, d.clone());
                d
            }
        };
        drop(st);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(channel = %d.channel, insight_id = %d.insight_id, attempts = outcome.attempts, "dead letter delivered");
        self.store.send(Op::Delivery(Box::new(d)));
        true
    }

    /// Asks the gRPC follower of insights to drop its stream and
    /// reconnect now; says what it did.
    pub fn reconnect(&self) -> String {
        match self.followers.load(Ordering::Relaxed) {
            0 => "notify follows no insights stream over gRPC: nothing to reconnect".into(),
            _ => {
                self.reconnect.notify_one();
                "insights stream dropped; reconnecting now".into()
            }
        }
    }

    /// Resolves when [`Notifier::reconnect`] is asked for.
    pub(crate) async fn reconnect_requested(&self) {
        self.reconnect.notified().await
    }

    /// Counts a running gRPC follower until the guard drops.
    pub(crate) fn follower(self: &Arc<Self>) -> FollowerGuard {
        self.followers.fetch_add(1, Ordering::Relaxed);
        FollowerGuard(self.clone())
    }

    /// Blocks until every state change so far is on disk (tests, shutdown).
    pub fn flush(&self) {
        self.store.flush();
    }
}

/// Counts one running gRPC follower; see [`Notifier::reconnect`].
pub(crate) struct FollowerGuard(Arc<Notifier>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

fn describe(f: &FollowUp) -> String {
    match &f.reason {
        FollowUpReason::Escalated { from, to } => format!("follow-up: severity rose {from} → {to}"),
        FollowUpReason::StillOngoing { since_last_message } => format!(
            "follow-up: still ongoing {} after the last message ({} windows so far)",
            humantime::format_duration(*since_last_message),
            f.totals.windows
        ),
    }
}

/// `t - d`, or the earliest time when that is out of range.
fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn push_recent(st: &mut State, config: &NotifyConfig, d: Delivery) {
    st.recent.push_back(d);
    while st.recent.len() > config.max_recent_deliveries.max(1) {
        st.recent.pop_front();
    }
}
