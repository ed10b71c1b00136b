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
use serde::Serialize;
use trailhound_core::Insight;

use crate::channel::{self, Channel, OpenContext, Publisher};
use crate::config::{ChannelKind, ConfigError, NotifyConfig};
use crate::incident::{FollowUp, IncidentRecord};
use crate::ratelimit::TokenBucket;
use crate::retry::RetryPolicy;
use crate::route::Router;
use crate::secret::{EnvLookup, process_env};
use crate::store::{DeadLetters, Op, Store, StoreError};

pub use crate::delivery::{Delivery, DeliveryStatus};

mod dead_letters;
mod deliver;
mod views;

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
