//! The embedded detection engine: events → per-entity interval series →
//! a streaming Random Cut Forest per entity → anomalies.
//!
//! Time is event time. Each detector buckets matching events into windows
//! of its interval per entity (account × region by default). A window
//! closes when the closing watermark — the progress of the slowest account
//! × region still delivering (see [`crate::clock`]) — has passed its end
//! plus the detector's allowed lateness. An event for a window already
//! closed is late: it is counted and handed back as a [`LateEvent`] for the
//! caller to record, never silently dropped. On close, every entity the
//! detector knows is evaluated, including those with no events in the
//! window: that is how a drop to zero is seen. A long silence costs O(1):
//! after two days of it, the rest is skipped in one step.
//!
//! Evaluation of one window of one entity:
//! 1. the seasonal [`Baseline`] gives an expected value and noise scale per
//!    feature; the residual z = (actual − expected) / scale feeds the
//!    entity's [`ThresholdedForest`] (shingled), which yields the grade and
//!    confidence, as in OpenSearch AD but on deseasonalized input;
//! 2. significance gates in the spirit of TRCF's "ignore near expected"
//!    settings keep statistically trivial deviations from alerting: a spike
//!    needs z ≥ `spike_z` and an absolute excess, a drop needs a steadily
//!    active entity falling to ≤ 10% of expectation;
//! 3. the first activity of a detector in a region the account never used
//!    is its own kind of anomaly (the forest has no history to judge it).
//!
//! State is bounded: accounts outside the organization fold into one
//! entity per detector and region, regions not in the list into one
//! `unlisted` region, and each detector keeps at most `max_entities`
//! entities, evicting the longest idle.
//!
//! The engine is synchronous and does no I/O: the service persists what it
//! returns, and the CLI prints it.
//!
//! This file is over 800 lines because `impl Engine` is one state machine
//! (observe, close windows, coordinate, checkpoint) whose steps share its
//! private state; the judging, first-use, sustained-rise, coordination,
//! anomaly-building, configuration and per-entity state live in the
//! submodules.

use std::collections::BTreeMap;

/// The engine's maps are looked up several times per event with keys from
/// the outside (accounts, principals, IPs): foldhash is several times
/// cheaper than SipHash and still seeded per process against crafted keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use trailhound_core::fieldpath::ParsedDocs;
use trailhound_core::{
    AccountMetadata, Anomaly, AnomalyKind, Contributor, DetectorSpec, EnrichedEvent, Environment,
    FeatureValue,
};
use trailhound_rcf::{Detection, DetectorConfig, ForestConfig, ThresholdedForest};

use crate::baseline::{Baseline, Expectation, is_weekend as is_weekend_day};
use crate::clock::{EventClock, partition_key};
use crate::pool::Pool;

// The engine's parts, split by concern; the Engine's own impl (the
// window state machine: observe, close, coordinate, checkpoint) stays here.
mod anomaly;
mod config;
mod coordinate;
mod first_use;
mod judge;
mod state;
mod sustained;
use anomaly::*;
pub use config::*;
use coordinate::*;
use first_use::*;
use judge::*;
use state::*;
use sustained::*;

/// Built-in contributor dimensions, read from every matching event.
const BUILTIN_DIMS: [&str; 5] = [
    "principal",
    "source_ip",
    "user_agent",
    "event_name",
    "error_code",
];

/// The detector definitions, detached from the engine so events can be
/// prepared on other threads.
#[derive(Clone, Debug)]
pub struct Preparer {
    specs: Vec<DetectorSpec>,
    generation: u64,
}

/// Identifies a detector set; unique in the process, so a preparer from
/// before a change (or from another engine) is never mistaken for current.
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One event as [`Engine::apply`] takes it.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The detector set it was prepared against, to catch a stale preparer.
    generation: u64,
    matches: Vec<Match>,
}

/// What one event adds to one detector's window.
#[derive(Clone, Debug)]
struct Match {
    detector: usize,
    key: String,
    values: Vec<f64>,
    /// Per contributor spec of the detector, the event's values.
    contributors: Vec<Vec<String>>,
}

impl Preparer {
    pub fn prepare(&self, ev: &trailhound_core::Event) -> Prepared {
        let mut docs = ParsedDocs::default();
        let mut matches = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            if !spec.enabled || !spec.matches(ev) {
                continue;
            }
            let mut values = Vec::with_capacity(spec.features.len());
            spec.feature_values(ev, &mut docs, &mut values);
            let contributors = spec
                .contributors
                .iter()
                .map(|c| {
                    c.fields
                        .iter()
                        .map(|p| p.strings(ev, &mut docs))
                        .find(|v| !v.is_empty())
                        .unwrap_or_default()
                })
                .collect();
            matches.push(Match {
                detector: i,
                key: spec.entity(ev, &mut docs).join("/"),
                values,
                contributors,
            });
        }
        Prepared {
            generation: self.generation,
            matches,
        }
    }
}

/// One closed window of one entity: a point of its usage series, and the
/// anomaly if there is one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    pub detector: String,
    /// Entity values in category-field order, joined by '/'.
    pub entity_key: String,
    pub window_start_ms: i64,
    pub actual: Vec<f64>,
    pub expected: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub grade: f64,
    pub anomaly: Option<Anomaly>,
    /// Not a point of the entity's series: an anomaly raised while its
    /// window was still open (figures partial; the window's close raises
    /// it again, same id, with the full figures), or a coordinated one.
    #[serde(default)]
    pub extra: bool,
}

impl WindowResult {
    /// An anomaly outside the series (see `extra`): its figures, no band.
    fn extra(entity_key: String, window_start_ms: i64, a: Anomaly) -> Self {
        Self {
            detector: a.detector.clone(),
            entity_key,
            window_start_ms,
            actual: a.features.iter().map(|f| f.actual).collect(),
            expected: a.features.iter().map(|f| f.expected).collect(),
            lower: Vec::new(),
            upper: Vec::new(),
            grade: a.grade,
            anomaly: Some(a),
            extra: true,
        }
    }
}

/// Engine counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    pub events: u64,
    pub late_events: u64,
    pub windows_closed: u64,
    /// Entity windows judged (closed windows × entities known then).
    pub evaluations: u64,
    pub anomalies: u64,
    /// Of `windows_closed`, those skipped in one step inside a long
    /// silence.
    pub windows_skipped: u64,
    /// Events of accounts outside the organization, folded.
    pub folded_account_events: u64,
    /// Events in regions not in the list, folded into `unlisted`.
    pub unlisted_region_events: u64,
    /// Entities evicted at `max_entities`.
    pub entities_evicted: u64,
    /// Windows not raised, by reason: they would have been at the
    /// production sensitivity (`quiet_environments`); they only repeated
    /// what the same weekday's slot had a week or two before; a first use
    /// of a region with nothing notable about it.
    #[serde(default)]
    pub suppressed_environment: u64,
    #[serde(default)]
    pub suppressed_weekly: u64,
    #[serde(default)]
    pub suppressed_new_region: u64,
    #[serde(default)]
    pub suppressed_bursts: u64,
    /// Anomalies raised while their window was open.
    #[serde(default)]
    pub early_raised: u64,
    /// Coordinated anomalies (accounts rising together).
    #[serde(default)]
    pub coordinated: u64,
}

/// An event that arrived for a window already closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LateEvent {
    pub detector: String,
    pub event_id: String,
    pub account_id: String,
    pub region: String,
    pub event_time_ms: i64,
    pub window_start_ms: i64,
    /// The closing watermark when it arrived.
    pub watermark_ms: i64,
    pub reason: String,
}

/// Late events the engine hands back per call at most; beyond, they are
/// only counted (a flood must not grow memory).
const LATE_KEPT: usize = 10_000;

/// Everything needed to resume after a restart, in pieces: the store keeps
/// each entity and each account's history as its own value, so no single
/// value grows with the organization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub header: CheckpointHeader,
    /// (detector name, entity key, state).
    pub entities: Vec<(String, String, EntityChunk)>,
    pub accounts: Vec<(String, AccountChunk)>,
}

/// Everything but the entities and account histories.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointHeader {
    config: EngineConfig,
    detectors: Vec<DetectorState>,
    clock: EventClock,
    stats: EngineStats,
}

/// One entity's learned state, opaque outside the engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntityChunk(EntityState);

impl EntityChunk {
    /// When the entity last had events, for shedding the oldest.
    pub fn last_active_ms(&self) -> i64 {
        self.0.last_active_ms
    }
}

/// One account's first-seen history, opaque outside the engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountChunk(AccountHistory);

pub struct Engine {
    config: EngineConfig,
    detectors: Vec<DetectorState>,
    accounts: HashMap<String, AccountHistory>,
    clock: EventClock,
    /// The closing watermark windows were last closed at.
    closed_at: i64,
    stats: EngineStats,
    late: Vec<LateEvent>,
    /// Changes whenever the detector set does (see [`Preparer`]).
    generation: u64,
    pool: Pool<Evaluation>,
    folded: Arc<AccountMetadata>,
    /// With `detect --shard`: the accounts this replica saw rising, for the
    /// other replicas' coordination rule (see [`Engine::take_shared`]).
    /// None when the engine sees every account.
    shared: Option<Vec<SharedRising>>,
}

/// An account rising in a window, as one replica tells the others: the
/// coordination rule counts accounts across the whole organization, and
/// with `detect --shard` no replica sees them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRising {
    pub detector: String,
    pub window_start_ms: i64,
    pub account_id: String,
    pub keys: Vec<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("detectors", &self.detectors.len())
            .field("closed_at", &self.closed_at)
            .finish_non_exhaustive()
    }
}

/// Metadata of the entity accounts outside the organization fold into.
fn folded_account() -> Arc<AccountMetadata> {
    let mut a = AccountMetadata::external(FOLDED_ACCOUNT);
    a.name = "accounts outside the organization".into();
    Arc::new(a)
}

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

fn ts(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Engine {
    pub fn new(specs: Vec<DetectorSpec>, config: EngineConfig) -> Self {
        Self {
            detectors: specs.into_iter().map(DetectorState::new).collect(),
            clock: EventClock::new(config.max_partition_lag.as_millis() as i64),
            config,
            accounts: HashMap::default(),
            closed_at: i64::MIN,
            stats: EngineStats::default(),
            late: Vec::new(),
            generation: next_generation(),
            pool: Pool::default(),
            folded: folded_account(),
            shared: None,
        }
    }

    /// Resumes from a checkpoint. What was learned keeps the settings it
    /// was learned with; the bounds (`max_entities`, `max_partition_lag`,
    /// `unknown_accounts`, `extra_regions`) are `limits`' own, and a
    /// detector over `max_entities` sheds its longest idle entities here,
    /// so a start never fails because state grew.
    pub fn from_checkpoint(c: Checkpoint, limits: &EngineConfig) -> Self {
        let Checkpoint {
            header,
            entities,
            accounts,
        } = c;
        let mut config = header.config;
        config.max_partition_lag = limits.max_partition_lag;
        config.max_entities = limits.max_entities;
        config.unknown_accounts = limits.unknown_accounts;
        config.extra_regions = limits.extra_regions.clone();
        let mut clock = header.clock;
        clock.restore();
        clock.set_max_lag(config.max_partition_lag.as_millis() as i64);
        let mut detectors = header.detectors;
        let mut shed = 0usize;
        let mut by_detector: HashMap<String, Vec<(String, EntityState)>> = HashMap::default();
        for (detector, key, EntityChunk(state)) in entities {
            by_detector.entry(detector).or_default().push((key, state));
        }
        for d in &mut detectors {
            let mut list = by_detector.remove(&d.spec.name).unwrap_or_default();
            if list.len() > config.max_entities {
                list.sort_by_key(|(_, e)| std::cmp::Reverse(e.last_active_ms));
                shed += list.len() - config.max_entities;
                list.truncate(config.max_entities);
            }
            d.entities = list.into_iter().collect();
        }
        if shed > 0 {
            tracing::warn!(
                shed,
                max_entities = config.max_entities,
                "checkpoint held more entities than max_entities: the longest idle were shed"
            );
        }
        let mut stats = header.stats;
        stats.entities_evicted += shed as u64;
        Self {
            detectors,
            clock,
            accounts: accounts
                .into_iter()
                .map(|(k, AccountChunk(h))| (k, h))
                .collect(),
            closed_at: i64::MIN,
            stats,
            config,
            late: Vec::new(),
            generation: next_generation(),
            pool: Pool::default(),
            folded: folded_account(),
            shared: None,
        }
    }

    /// Keeps the accounts this engine sees rising for the other replicas
    /// (`detect --shard`): [`Engine::take_shared`] hands them out, and
    /// [`Engine::observe_shared`] takes theirs in.
    pub fn share_rising(&mut self) {
        self.shared.get_or_insert_with(Vec::new);
    }

    /// What rose here since the last call, for the other replicas.
    pub fn take_shared(&mut self) -> Vec<SharedRising> {
        self.shared.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Counts other replicas' rising accounts in the coordination rule:
    /// this replica's own candidates in a group they complete are raised
    /// now, as they would have been by one engine seeing every account.
    /// The same report twice counts once (a group is a set of accounts).
    pub fn observe_shared(&mut self, rising: &[SharedRising], out: &mut Vec<WindowResult>) {
        for i in 0..self.detectors.len() {
            let d = &mut self.detectors[i];
            let theirs: Vec<Rising> = rising
                .iter()
                .filter(|r| r.detector == d.spec.name)
                .map(|r| Rising {
                    window_start: r.window_start_ms,
                    account_id: r.account_id.clone(),
                    entity_key: String::new(),
                    keys: r.keys.clone(),
                    candidate: None,
                })
                .collect();
            if theirs.is_empty() {
                continue;
            }
            let interval = d.spec.interval_ms();
            // The newest window closed here: theirs older than the rule's
            // reach from it are history.
            let newest = d
                .rising
                .iter()
                .map(|r| r.window_start)
                .chain(d.next_close.map(|c| c - interval))
                .max()
                .unwrap_or(i64::MIN);
            let reach = i64::from(self.config.coordinated_windows.max(1) - 1) * interval;
            let theirs: Vec<Rising> = theirs
                .into_iter()
                .filter(|r| r.window_start >= newest.saturating_sub(reach))
                .collect();
            self.join_rising(i, theirs, newest.max(0), out);
        }
    }

    /// A copy of all state, for the checkpoint store.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            header: CheckpointHeader {
                config: self.config.clone(),
                detectors: self.detectors.clone(),
                clock: self.clock.clone(),
                stats: self.stats.clone(),
            },
            entities: self
                .detectors
                .iter()
                .flat_map(|d| {
                    d.entities
                        .iter()
                        .map(|(k, e)| (d.spec.name.clone(), k.clone(), EntityChunk(e.clone())))
                })
                .collect(),
            accounts: self
                .accounts
                .iter()
                .map(|(k, h)| (k.clone(), AccountChunk(h.clone())))
                .collect(),
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The closing watermark: windows ending before it (less their
    /// lateness) are closed.
    pub fn watermark_ms(&mut self) -> i64 {
        self.clock.watermark()
    }

    /// The newest plausible event time seen (a lone outlier excluded).
    pub fn newest_ms(&self) -> i64 {
        self.clock.newest()
    }

    /// Account × region partitions whose progress the watermark follows.
    pub fn partitions(&self) -> usize {
        self.clock.partitions()
    }

    /// Late events since the last call (at most [`LATE_KEPT`]; the rest
    /// are only counted in [`EngineStats::late_events`]).
    pub fn take_late(&mut self) -> Vec<LateEvent> {
        std::mem::take(&mut self.late)
    }

    pub fn entity_count(&self) -> usize {
        self.detectors.iter().map(|d| d.entities.len()).sum()
    }

    /// The account's metadata (OU path, environment) as its events last
    /// brought it, from any entity of the account; None when the engine
    /// holds none. Scoped reads of an account without anomalies need it.
    pub fn account(&self, account_id: &str) -> Option<Arc<AccountMetadata>> {
        self.detectors
            .iter()
            .flat_map(|d| d.entities.values())
            .find(|e| e.account_id == account_id)
            .map(|e| e.account.clone())
    }

    pub fn specs(&self) -> impl Iterator<Item = &DetectorSpec> {
        self.detectors.iter().map(|d| &d.spec)
    }

    /// Adds or replaces a detector. A replaced detector whose features,
    /// entity or interval changed starts learning afresh; otherwise its
    /// learned state is kept.
    pub fn upsert_detector(&mut self, spec: DetectorSpec) {
        self.generation = next_generation();
        match self.detectors.iter_mut().find(|d| d.spec.name == spec.name) {
            Some(d) => {
                let same_shape = d.spec.features == spec.features
                    && d.spec.category_fields == spec.category_fields
                    && d.spec.interval == spec.interval
                    && d.spec.event_source == spec.event_source
                    && d.spec.event_names == spec.event_names
                    && d.spec.errors == spec.errors;
                if same_shape {
                    d.spec = spec;
                } else {
                    *d = DetectorState::new(spec);
                }
            }
            None => self.detectors.push(DetectorState::new(spec)),
        }
    }

    pub fn remove_detector(&mut self, name: &str) -> bool {
        self.generation = next_generation();
        let before = self.detectors.len();
        self.detectors.retain(|d| d.spec.name != name);
        before != self.detectors.len()
    }

    /// Feeds one event; windows the new watermark closes are appended to `out`.
    pub fn observe(&mut self, e: &EnrichedEvent, out: &mut Vec<WindowResult>) {
        let contributions = self.preparer().prepare(&e.event);
        self.apply(e, contributions, out);
    }

    /// What [`Engine::apply`] needs from each event, computable on any
    /// thread: which detectors match, the entity, the feature values and
    /// the detector's own contributor values. This is the per-event cost
    /// that parallelizes (field paths into requestParameters and
    /// responseElements parse JSON); `apply` is the part that does not.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            specs: self.detectors.iter().map(|d| d.spec.clone()).collect(),
            generation: self.generation,
        }
    }

    /// Counts one event into the windows of the detectors it matches, as
    /// `prepared` by a [`Preparer`] taken after the last detector change
    /// (one taken before is detected and the event prepared again);
    /// windows the new watermark closes are appended to `out`.
    pub fn apply(&mut self, e: &EnrichedEvent, prepared: Prepared, out: &mut Vec<WindowResult>) {
        let prepared = if prepared.generation == self.generation {
            prepared
        } else {
            self.preparer().prepare(&e.event)
        };
        self.stats.events += 1;
        let ev = &e.event;
        let t = ev.event_time_ms;
        let (account, region) = self.fold(e);
        let newest_before = self.clock.newest();
        self.clock.observe(partition_key(account, region), t);
        self.note_account(ev, account, region);
        let folded = account != ev.recipient_account_id || region != ev.aws_region;
        for m in prepared.matches {
            let Some(d) = self.detectors.get_mut(m.detector) else {
                continue;
            };
            let interval = d.spec.interval_ms();
            let window = t.div_euclid(interval) * interval;
            let next_close = d.next_close.get_or_insert(window);
            if window < *next_close {
                if !d.closed_any {
                    *next_close = window;
                } else {
                    d.late_events += 1;
                    self.stats.late_events += 1;
                    if self.late.len() < LATE_KEPT {
                        let watermark = self.clock.watermark();
                        self.late.push(LateEvent {
                            detector: d.spec.name.clone(),
                            event_id: ev.event_id.clone(),
                            account_id: ev.recipient_account_id.clone(),
                            region: ev.aws_region.clone(),
                            event_time_ms: t,
                            window_start_ms: window,
                            watermark_ms: watermark,
                            reason: format!(
                                "its {}-minute window closed when the watermark passed {} (lateness {}s): the event arrived after it",
                                interval / 60_000,
                                ts(watermark).to_rfc3339(),
                                d.spec.lateness_ms() / 1000
                            ),
                        });
                    }
                    continue;
                }
            }
            let key = if folded {
                fold_key(&d.spec, &m.key, account, region)
            } else {
                m.key
            };
            let aggs = d.open.entry(window).or_default();
            if !aggs.contains_key(&key) {
                aggs.insert(key.clone(), WindowAgg::default());
            }
            let Some(agg) = aggs.get_mut(&key) else {
                continue;
            };
            if agg.values.is_empty() {
                agg.values = vec![0.0; m.values.len()];
                agg.account = Some(if account == FOLDED_ACCOUNT {
                    self.folded.clone()
                } else {
                    e.account.clone()
                });
            }
            for (a, v) in agg.values.iter_mut().zip(&m.values) {
                *a += v;
            }
            agg.events += 1;
            let weight = m.values.first().copied().unwrap_or(1.0);
            let builtin = [
                ev.user_identity.principal(),
                ev.source_ip_address.as_str(),
                ev.user_agent.as_str(),
                ev.event_name.as_str(),
                ev.error_code.as_str(),
            ];
            for (i, v) in builtin.iter().enumerate() {
                if !v.is_empty() {
                    agg.contributors.add(i, v, weight);
                }
            }
            for (j, values) in m.contributors.iter().enumerate() {
                // Each value stands for its share of the event's weight: one
                // RunInstances of 3 instances lists 3 instance types.
                let per = if values.len() > 1 { 1.0 } else { weight };
                for v in values {
                    agg.contributors.add(BUILTIN_DIMS.len() + j, v, per);
                }
            }
            // Checked at 1, 3, 6, 12, … events: a burst is raised within
            // its first events, at a cost logarithmic in the window's.
            if self.config.early_raise && !agg.early && agg.events >= agg.next_check {
                agg.next_check = (agg.events * 2).max(3);
                let hist = self.accounts.get(account);
                if let Some(a) = early_anomaly(
                    &self.config,
                    &d.spec,
                    d.entities.get(&key),
                    &key,
                    agg,
                    hist,
                    window,
                    t,
                ) {
                    agg.early = true;
                    self.stats.early_raised += 1;
                    self.stats.anomalies += 1;
                    out.push(WindowResult::extra(key, window, a));
                }
            }
        }
        if self.clock.newest() > newest_before {
            self.close_due(out);
        }
    }

    /// The account and region `e` counts under: its own, or the folds for
    /// an account outside the organization and a region not in the list.
    fn fold<'a>(&mut self, e: &'a EnrichedEvent) -> (&'a str, &'a str) {
        let ev = &e.event;
        let account = if e.account.known || self.config.unknown_accounts == UnknownAccounts::Track {
            ev.recipient_account_id.as_str()
        } else {
            self.stats.folded_account_events += 1;
            FOLDED_ACCOUNT
        };
        let region = if trailhound_core::regions::is_listed(&ev.aws_region)
            || self.config.extra_regions.contains(&ev.aws_region)
        {
            ev.aws_region.as_str()
        } else {
            self.stats.unlisted_region_events += 1;
            UNLISTED_REGION
        };
        (account, region)
    }

    fn note_account(&mut self, ev: &trailhound_core::Event, account: &str, region: &str) {
        let t = ev.event_time_ms;
        let cap = self.config.max_seen_values;
        if !self.accounts.contains_key(account) {
            self.accounts.insert(
                account.to_string(),
                AccountHistory {
                    first_seen_ms: t,
                    ..Default::default()
                },
            );
        }
        let Some(h) = self.accounts.get_mut(account) else {
            return;
        };
        h.first_seen_ms = h.first_seen_ms.min(t);
        note_first(&mut h.regions, region, t, cap);
        let vals = [
            ev.user_identity.principal(),
            ev.source_ip_address.as_str(),
            ev.user_agent.as_str(),
        ];
        for (map, v) in h.values.iter_mut().zip(vals) {
            if !v.is_empty() {
                note_first(map, v, t, cap);
            }
        }
    }

    /// Moves the watermark forward without an event: for live streams that
    /// go quiet, so their windows still close.
    pub fn advance(&mut self, watermark_ms: i64, out: &mut Vec<WindowResult>) {
        if watermark_ms > self.clock.watermark() {
            self.clock.advance(watermark_ms);
            self.close_due(out);
        }
    }

    /// Closes every open window now: the end of a replay.
    pub fn flush(&mut self, out: &mut Vec<WindowResult>) {
        for i in 0..self.detectors.len() {
            let last_open = self.detectors[i].open.keys().next_back().copied();
            if let Some(last) = last_open {
                let interval = self.detectors[i].spec.interval_ms();
                self.close_until(i, last + interval, out);
            }
        }
    }

    fn close_due(&mut self, out: &mut Vec<WindowResult>) {
        let watermark = self.clock.watermark();
        if watermark <= self.closed_at {
            return;
        }
        self.closed_at = watermark;
        for i in 0..self.detectors.len() {
            let d = &self.detectors[i];
            let horizon = watermark.saturating_sub(d.spec.lateness_ms());
            self.close_until(i, horizon, out);
        }
    }

    /// Closes windows of detector `i` that end at or before `horizon`.
    fn close_until(&mut self, i: usize, horizon: i64, out: &mut Vec<WindowResult>) {
        let interval = self.detectors[i].spec.interval_ms();
        loop {
            let Some(start) = self.detectors[i].next_close else {
                return;
            };
            if start.saturating_add(interval) > horizon {
                return;
            }
            let first_open = self.detectors[i].open.keys().next().copied();
            let d = &mut self.detectors[i];
            // Skip long silent stretches quickly when nothing is known yet.
            if d.entities.is_empty() {
                match first_open {
                    Some(first) if first > start => {
                        d.next_close = Some(first);
                        continue;
                    }
                    None => {
                        let last = horizon.div_euclid(interval) * interval;
                        d.next_close = Some(last.max(start));
                        return;
                    }
                    _ => {}
                }
            }
            // The end of the silence from `start`: the first window with
            // events, or the first not yet due.
            let due_end = horizon.div_euclid(interval) * interval;
            let silence_ends = first_open.map_or(due_end, |f| f.min(due_end));
            if !d.entities.is_empty()
                && d.silent_windows >= SILENT_WINDOWS_JUDGED
                && silence_ends > start
            {
                // A long silence: judged window by window for two days
                // (drops, the forest's view of quiet), the rest at once.
                let skipped = (silence_ends - start) / interval;
                for ent in d.entities.values_mut() {
                    ent.baseline.record_silence(start, silence_ends);
                    ent.active_streak = 0;
                }
                d.next_close = Some(silence_ends);
                self.stats.windows_closed += skipped as u64;
                self.stats.windows_skipped += skipped as u64;
                continue;
            }
            let windows = d.open.remove(&start).unwrap_or_default();
            d.silent_windows = if windows.is_empty() {
                d.silent_windows + 1
            } else {
                0
            };
            d.closed_any = true;
            self.close_window(i, start, windows, out);
            self.detectors[i].next_close = Some(start + interval);
            self.stats.windows_closed += 1;
        }
    }

    fn close_window(
        &mut self,
        i: usize,
        start: i64,
        mut aggs: HashMap<String, WindowAgg>,
        out: &mut Vec<WindowResult>,
    ) {
        let cfg = self.config.clone();
        let d = &mut self.detectors[i];
        let interval = d.spec.interval_ms();
        let nfeat = d.spec.features.len();
        // New entities first appear now; past the cap, the longest idle
        // make room (a tenth at once, so a churn of new ids stays cheap).
        let fresh = aggs.keys().filter(|k| !d.entities.contains_key(*k)).count();
        if fresh > 0 && !d.entities.is_empty() && d.entities.len() + fresh > cfg.max_entities {
            let want = (d.entities.len() + fresh)
                .saturating_sub(cfg.max_entities)
                .max(cfg.max_entities / 10)
                .min(d.entities.len());
            let mut idle: Vec<(i64, String)> = d
                .entities
                .iter()
                .map(|(k, e)| (e.last_active_ms, k.clone()))
                .collect();
            idle.select_nth_unstable_by_key(want.saturating_sub(1), |(t, _)| *t);
            for (_, k) in idle.into_iter().take(want) {
                d.entities.remove(&k);
            }
            self.stats.entities_evicted += want as u64;
        }
        for (key, agg) in &aggs {
            if d.entities.contains_key(key) || d.entities.len() >= cfg.max_entities {
                continue;
            }
            let Some(account) = agg.account.clone() else {
                continue;
            };
            let entity = entity_of(&d.spec, key);
            let field_value = |name: &str| entity_field(&entity, name).to_string();
            let forest = ThresholdedForest::new(DetectorConfig {
                forest: ForestConfig {
                    num_trees: cfg.trees,
                    sample_size: cfg.sample_size,
                    seed: cfg.seed ^ hash(key),
                    ..ForestConfig::default()
                },
                shingle_size: cfg.shingle_size,
                input_dimensions: nfeat,
                score_every: cfg.score_every,
                update_batch: cfg.forest_batch,
                ..DetectorConfig::default()
            });
            d.entities.insert(
                key.clone(),
                EntityState {
                    account_id: if field_value("recipientAccountId").is_empty() {
                        account.account_id.clone()
                    } else {
                        field_value("recipientAccountId")
                    },
                    region: field_value("awsRegion"),
                    entity,
                    forest,
                    baseline: Baseline::new(nfeat, interval),
                    active_streak: 0,
                    seen: HashMap::default(),
                    account,
                    last_active_ms: start,
                    silent_expected: 0.0,
                    counts: Counts::default(),
                },
            );
        }
        let sums = sums_of(&d.spec);
        let spec = &d.spec;
        let accounts = &self.accounts;
        // The entities leave the map for the evaluation (so their forests
        // can go to other threads) and return after it.
        let mut work: Vec<Evaluation> = d
            .entities
            .drain()
            .map(|(key, mut ent)| {
                let agg = aggs.remove(&key).unwrap_or_default();
                let hist = accounts.get(&ent.account_id);
                let judging =
                    evaluate_before(&cfg, spec, &sums, &mut ent, &agg, hist, start, interval);
                Evaluation {
                    key,
                    ent,
                    agg,
                    judging,
                    detection: None,
                }
            })
            .collect();
        work.sort_by(|a, b| a.key.cmp(&b.key));
        // Entities are independent: their forests, which are nearly all of
        // the work, run on every core when there are enough to share.
        if work.len() >= 8 {
            self.pool.run(&mut work, Evaluation::step_forest);
        } else {
            work.iter_mut().for_each(Evaluation::step_forest);
        }
        let mut results = Vec::with_capacity(work.len());
        let mut rising = Vec::new();
        for ev in work {
            let Evaluation {
                key,
                mut ent,
                agg,
                judging,
                detection,
            } = ev;
            // A forest that panicked in the pool gives no verdict for this
            // window (as when it ran on a scoped thread); the entity
            // carries on.
            if let Some(detection) = detection {
                let hist = accounts.get(&ent.account_id);
                let (result, suppressed, rises) = evaluate_after(
                    &cfg, spec, &sums, &key, &mut ent, agg, hist, start, interval, judging,
                    detection,
                );
                match suppressed {
                    Some(Suppression::Environment) => self.stats.suppressed_environment += 1,
                    Some(Suppression::Weekly) => self.stats.suppressed_weekly += 1,
                    Some(Suppression::NewRegion) => self.stats.suppressed_new_region += 1,
                    Some(Suppression::Bursts) => self.stats.suppressed_bursts += 1,
                    None => {}
                }
                rising.extend(rises);
                results.push(result);
            }
            d.entities.insert(key, ent);
        }
        self.stats.evaluations += results.len() as u64;
        self.stats.anomalies += results.iter().filter(|r| r.anomaly.is_some()).count() as u64;
        out.extend(results);
        self.coordinate(i, start, rising, out);
    }

    /// Raises a coordinated anomaly for each account rising within the
    /// last `coordinated_windows` windows with the same principal name or
    /// source IP as at least `coordinated_min_accounts - 1` other accounts:
    /// one role from one address pushing several accounts a little each is
    /// one attack, though no account alone is alarming.
    fn coordinate(&mut self, i: usize, start: i64, new: Vec<Rising>, out: &mut Vec<WindowResult>) {
        let cfg = &self.config;
        let d = &mut self.detectors[i];
        let interval = d.spec.interval_ms();
        let oldest = start - i64::from(cfg.coordinated_windows.max(1) - 1) * interval;
        d.rising.retain(|r| r.window_start >= oldest);
        if let Some(shared) = &mut self.shared {
            shared.extend(new.iter().map(|r| SharedRising {
                detector: d.spec.name.clone(),
                window_start_ms: r.window_start,
                account_id: r.account_id.clone(),
                keys: r.keys.clone(),
            }));
        }
        self.join_rising(i, new, start, out);
    }

    /// Adds rising accounts to detector `i`'s recent ones and raises the
    /// candidates of every group now wide enough (`start`: the window
    /// whose end a raise is stamped with).
    fn join_rising(&mut self, i: usize, new: Vec<Rising>, start: i64, out: &mut Vec<WindowResult>) {
        let cfg = &self.config;
        let d = &mut self.detectors[i];
        let interval = d.spec.interval_ms();
        if new.is_empty() || cfg.coordinated_min_accounts < 2 {
            return;
        }
        d.rising.extend(new);
        // Bounded whatever happens: a whole organization rising at once
        // is still only this many entries.
        let cap = 4 * cfg.max_entities.max(1);
        if d.rising.len() > cap {
            let excess = d.rising.len() - cap;
            d.rising.drain(..excess);
        }
        let mut accounts: HashMap<&str, std::collections::BTreeSet<&str>> = HashMap::default();
        for r in &d.rising {
            for k in &r.keys {
                accounts
                    .entry(k.as_str())
                    .or_default()
                    .insert(r.account_id.as_str());
            }
        }
        let mut groups: Vec<(String, usize)> = accounts
            .into_iter()
            .filter(|(_, a)| a.len() >= cfg.coordinated_min_accounts)
            .map(|(k, a)| (k.to_string(), a.len()))
            .collect();
        // The widest group first, so an account in several is graded by
        // it; and an order that does not depend on the map's per-process
        // hash seed, so every run and every path grades alike.
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let end = ts(start + interval);
        for (sig, n) in groups {
            for r in d.rising.iter_mut() {
                if !r.keys.contains(&sig) {
                    continue;
                }
                let Some(mut a) = r.candidate.take() else {
                    continue;
                };
                a.observed_until = end;
                a.detected_at = now();
                a.grade = (0.4 + 0.1 * n as f64).min(1.0);
                self.stats.coordinated += 1;
                self.stats.anomalies += 1;
                out.push(WindowResult::extra(r.entity_key.clone(), r.window_start, a));
            }
        }
    }
}

/// One entity's closed window on its way through [`Engine::close_window`].
struct Evaluation {
    key: String,
    ent: EntityState,
    agg: WindowAgg,
    judging: Judging,
    /// The forest's verdict, once it has run.
    detection: Option<Detection>,
}

impl Evaluation {
    /// Leaves `detection` None if it panics (a bug): the pool then costs
    /// this window's verdict, not the entity.
    fn step_forest(&mut self) {
        let j = &self.judging;
        self.detection = Some(self.ent.forest.process_if(&j.rounded, j.needed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn poisson_tails_match_the_exact_sums() {
        // P(N ≥ 12 | 3) and P(N ≥ 100 | 50), from the exact series.
        assert!(close(poisson_ln_tail(12.0, 3.0).exp(), 7.138_66e-5, 1e-4));
        assert!(close(
            poisson_ln_tail(100.0, 50.0).exp(),
            3.200_07e-10,
            1e-4
        ));
        assert_eq!(poisson_ln_tail(2.0, 3.0), 0.0);
        assert!(close(ln_gamma(11.0), 3_628_800f64.ln(), 1e-12));
    }

    #[test]
    fn tail_probabilities_read_as_normal_units() {
        assert!(close(normal_units(2.866_5e-7f64.ln()), 5.0, 0.01));
        assert!(close(normal_units(7.138_66e-5f64.ln()), 3.80, 0.01));
        assert_eq!(normal_units(0.7f64.ln()), 0.0);
    }

    /// Counts of `days` earlier days, each the same: `per_window` events
    /// in every window, then `today` windows of `rise` events.
    fn counts_with(days: i64, per_window: u64, today: &[u64]) -> (Counts, i64) {
        let interval = 600_000;
        let mut c = Counts::default();
        let mut w = 0;
        for _ in 0..days * 144 {
            c.record(w, per_window, interval);
            w += 1;
        }
        for &x in today {
            c.record(w, x, interval);
            w += 1;
        }
        (c, w)
    }

    #[test]
    fn a_rise_over_hours_beyond_every_earlier_day_is_sustained_and_one_burst_is_not() {
        let weekday = |_: i64| false;
        // Earlier days: 1 event per window, 6 per hour. Today: 3 per window
        // for three hours (the window judged is the last).
        let (c, w) = counts_with(8, 1, &[3; 17]);
        let s = Sustained::of(&c, w, 3.0, 600_000, 2.5, weekday);
        assert!(s.z > 4.0, "{s:?}");
        assert_eq!((s.total, s.mean, s.most), (54.0, 18.0, 18.0));
        assert!(s.largest <= 0.4 * s.total);
        // The same events in one window: as unlikely, but not spread.
        let mut today = vec![1; 17];
        today[14] = 37;
        let (c, w) = counts_with(8, 1, &today);
        let s = Sustained::of(&c, w, 1.0, 600_000, 2.5, weekday);
        assert!(s.largest > 0.4 * s.total, "{s:?}");
        // Too few earlier days: not judged.
        let (c, w) = counts_with(2, 1, &[3; 17]);
        assert_eq!(Sustained::of(&c, w, 3.0, 600_000, 2.5, weekday).z, 0.0);
    }

    #[test]
    fn a_span_no_higher_than_an_earlier_day_is_no_rise() {
        let interval = 600_000;
        let mut c = Counts::default();
        // Six quiet days and one busy one (3 per window), then a busy today.
        for w in 0..7 * 144 {
            c.record(w, if w / 144 == 3 { 3 } else { 1 }, interval);
        }
        let end = 7 * 144 + 17;
        for w in 7 * 144..end {
            c.record(w, 3, interval);
        }
        let s = Sustained::of(&c, end, 3.0, interval, 2.5, |_| false);
        assert_eq!(s.z, 0.0, "{s:?}");
    }

    #[test]
    fn counts_skip_silent_windows_and_forget_after_two_weeks() {
        let interval = 600_000;
        let mut c = Counts::default();
        c.record(10, 5, interval);
        c.record(14, 2, interval);
        assert_eq!(c.span_sum(14, 5), Some(7.0));
        assert_eq!(c.span_sum(14, 6), None, "before the first record");
        c.record(14 + 14 * 144, 1, interval);
        assert_eq!(c.span_sum(14 + 14 * 144, 2), Some(1.0));
        assert_eq!(c.span_sum(14, 1), None, "overwritten");
    }

    #[test]
    fn a_bursty_entity_s_clumps_are_no_sustained_rise() {
        // Earlier days: quiet (1 in every third window) with a burst of 40
        // every 8 hours, at other hours than the three judged; today those
        // three hours hold 3 in every window, beyond every earlier day's.
        let interval = 600_000;
        let mut c = Counts::default();
        let day = 144;
        for w in 0..8 * day {
            let x = if w % 48 == 30 {
                40
            } else {
                u64::from(w % 3 == 0)
            };
            c.record(w, x, interval);
        }
        assert!(c.dispersion(8 * day) > 10.0, "{}", c.dispersion(8 * day));
        let end = 8 * day + 17;
        for w in 8 * day..end {
            c.record(w, 3, interval);
        }
        let s = Sustained::of(&c, end, 3.0, interval, 2.5, |_| false);
        assert!(s.z < 4.0, "{s:?}");
        // The same rise in an entity whose events come one by one is one.
        let mut c = Counts::default();
        for w in 0..8 * day {
            c.record(w, u64::from(w % 3 == 0), interval);
        }
        assert!((c.dispersion(8 * day) - 1.0).abs() < 1e-9);
        for w in 8 * day..end {
            c.record(w, 2, interval);
        }
        let s = Sustained::of(&c, end, 2.0, interval, 2.5, |_| false);
        assert!(s.z > 4.0, "{s:?}");
    }
}
