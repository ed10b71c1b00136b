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

use crate::baseline::{Baseline, Expectation};
use crate::clock::{EventClock, partition_key};
use crate::pool::Pool;

/// Tunables of the engine. Defaults were chosen with the scorer on
/// generated organizations (see the README's quality section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Trees per forest. OpenSearch AD uses 30 trees of 256 points; 15 of
    /// 128 found the same incidents on five generated organizations and
    /// scored the same on NAB, at half the cost per entity window (see the
    /// README's benchmark section), so that is the default.
    pub trees: usize,
    /// Points each tree keeps.
    pub sample_size: usize,
    /// Windows per shingle.
    pub shingle_size: usize,
    /// The forest's threshold learns from every n-th window; other windows
    /// are scored only when something else about them is unusual (see
    /// `evaluate_before`). 1 scores every window.
    pub score_every: u64,
    /// Residuals reach the forest rounded to this many noise units: finer
    /// detail is noise, and a quiet entity then repeats the same shingle
    /// exactly, which the forest skips.
    pub forest_resolution: f64,
    /// Windows that need no verdict are learned by the entity's forest
    /// this many at a time, while its trees are warm in cache. Learning
    /// lags by at most this many windows; a window that needs a verdict
    /// learns everything pending first.
    pub forest_batch: usize,
    /// Residual (in noise units) a spike must reach.
    pub spike_z: f64,
    /// Residual at which a spike is reported even when the forest is not
    /// yet ready or gives grade 0.
    pub strong_z: f64,
    /// Smallest absolute excess over expected a spike needs (in feature units).
    pub min_excess: f64,
    /// Smallest relative excess over expected a spike needs (0.5 = +50%).
    pub min_relative_excess: f64,
    /// Expected level below which a fall to zero is not a drop.
    pub drop_min_expected: f64,
    /// A rise of the primary feature summed over the last one, two or
    /// three hours is raised though no window alone is (a night's launches
    /// several times over, still below the day's) when the sum is this
    /// unlikely, in standard normal units, as counts scattered as the
    /// entity's own (quasi-Poisson), and beyond its usual day-to-day swing.
    /// 0 (the default) turns it off: on the hard profile's tuning seeds,
    /// 4.0 found 2 of 3 night-time rises but added 20 false alarms to 63
    /// (precision 0.68 → 0.60); 4.5 found none.
    pub sustained_z: f64,
    /// …and the ratio of that sum to its expectation.
    pub sustained_ratio: f64,
    /// How far a sustained rise must exceed the entity's usual day-to-day
    /// swing (the second largest of the last week's daily largest span
    /// ratios): a development account's busy day is no intrusion.
    pub sustained_margin: f64,
    /// A steadily active entity (events in most windows) silent for
    /// consecutive windows whose expected events add up to this is a
    /// drop: a function of 2 calls per window after an hour, one of 12
    /// after ten minutes (Poisson: e^-12 by chance).
    pub drop_min_total: f64,
    /// History an entity needs before spikes and drops are judged: three
    /// days, so that the daily rhythm has been seen more than once and a
    /// weekday is not judged by a weekend (on the hard profile's tuning
    /// seeds two thirds of the false alarms were in the first three days).
    /// Backfill (`[ingest] backfill`) gives a new deployment that history
    /// at once.
    pub min_history_hours: u64,
    /// How long an account must have been seen before a new region, a new
    /// principal or a new IP counts as new, in hours.
    pub new_after_hours: u64,
    /// Contributors reported per dimension.
    pub contributors_per_dimension: usize,
    /// Distinct values remembered per account and dimension for "is new".
    pub max_seen_values: usize,
    pub seed: u64,
    /// How far one account × region may fall behind the newest event time
    /// before windows stop waiting for it: CloudTrail delivers each in its
    /// own files, minutes apart (see [`crate::clock`]).
    #[serde(with = "humantime_serde")]
    pub max_partition_lag: Duration,
    /// Entities each detector keeps; a new one past this evicts the
    /// longest idle (a tenth of them at once, so churn stays cheap).
    pub max_entities: usize,
    /// Accounts the organization does not know: folded into one entity
    /// per detector and region (`fold`), or tracked each on its own
    /// (`track`, for running without an organization source).
    pub unknown_accounts: UnknownAccounts,
    /// Region names beyond the built-in list (a region launched after
    /// this build) that are entities of their own rather than `unlisted`.
    pub extra_regions: Vec<String>,
    /// Environments whose swings are normal (developers at work, sandbox
    /// experiments): their thresholds are multiplied by `quiet_factor`.
    pub quiet_environments: Vec<Environment>,
    pub quiet_factor: f64,
    /// Primary-feature total (instances, calls) at which a first use of a
    /// region is significant on its own; below, it needs a new principal
    /// or IP or a notable value (see `DetectorSpec::notable_values`).
    pub new_region_min: f64,
    /// Raise a window while it is still open once it is unmistakably
    /// anomalous (strong residual): the first minutes of a burst, not the
    /// end of its window.
    pub early_raise: bool,
    /// Accounts that must rise together, sharing a principal name (the
    /// account part removed) or a source IP, for a coordinated anomaly.
    pub coordinated_min_accounts: usize,
    /// Windows within which they must rise.
    pub coordinated_windows: u32,
    /// Residual (noise units) at which an account counts as rising.
    pub coordinated_z: f64,
}

/// What becomes of events of accounts outside the organization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAccounts {
    #[default]
    Fold,
    Track,
}

/// The account id folded entities carry: one AWS never assigns.
pub const FOLDED_ACCOUNT: &str = "000000000000";
/// The region folded entities carry.
pub const UNLISTED_REGION: &str = "unlisted";
/// Windows of complete silence judged one by one before the rest of the
/// silence is skipped in one step (two days at 10 minutes).
const SILENT_WINDOWS_JUDGED: u64 = 288;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            trees: 15,
            sample_size: 128,
            shingle_size: 8,
            score_every: 4,
            forest_resolution: 0.05,
            forest_batch: 8,
            spike_z: 5.0,
            strong_z: 8.0,
            min_excess: 3.0,
            min_relative_excess: 0.5,
            drop_min_expected: 5.0,
            drop_min_total: 12.0,
            sustained_z: 0.0,
            sustained_ratio: 2.5,
            sustained_margin: 1.5,
            min_history_hours: 72,
            new_after_hours: 24,
            contributors_per_dimension: 3,
            max_seen_values: 50_000,
            seed: 42,
            max_partition_lag: Duration::from_secs(15 * 60),
            max_entities: 50_000,
            unknown_accounts: UnknownAccounts::Fold,
            extra_regions: Vec::new(),
            quiet_environments: vec![
                Environment::Development,
                Environment::Testing,
                Environment::Sandbox,
            ],
            quiet_factor: 1.6,
            new_region_min: 3.0,
            early_raise: true,
            coordinated_min_accounts: 3,
            coordinated_windows: 6,
            coordinated_z: 2.5,
        }
    }
}

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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WindowAgg {
    values: Vec<f64>,
    events: u64,
    /// Events at which the open window is next checked for an early raise.
    #[serde(default)]
    next_check: u64,
    /// Raised early already (see [`EngineConfig::early_raise`]).
    #[serde(default)]
    early: bool,
    /// (dimension index, value) → (events, weight). Dimension indices past
    /// the built-ins are the detector's contributor fields.
    contributors: Tally,
    account: Option<Arc<AccountMetadata>>,
}

/// Per contributor dimension, value → (events, weight). Looked up by
/// `&str`, so counting an event allocates only for a value new to the
/// window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tally(Vec<HashMap<String, (u64, f64)>>);

impl Tally {
    fn add(&mut self, dim: usize, value: &str, weight: f64) {
        if self.0.len() <= dim {
            self.0.resize_with(dim + 1, HashMap::default);
        }
        let map = &mut self.0[dim];
        match map.get_mut(value) {
            Some(c) => {
                c.0 += 1;
                c.1 += weight;
            }
            None => {
                map.insert(value.to_string(), (1, weight));
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u8, &String, &(u64, f64))> {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(d, m)| m.iter().map(move |(v, c)| (d as u8, v, c)))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct EntityState {
    entity: Vec<(String, String)>,
    account_id: String,
    region: String,
    forest: ThresholdedForest,
    baseline: Baseline,
    /// Consecutive windows with activity, for "steadily active".
    active_streak: u32,
    /// Contributor occurrences in earlier windows (bounded).
    seen: HashMap<(u8, String), u64>,
    account: Arc<AccountMetadata>,
    /// Start of the last window with events: the longest idle are evicted
    /// first.
    last_active_ms: i64,
    /// Expected primary-feature total of the current run of silent
    /// windows (0 when the last window had events).
    #[serde(default)]
    silent_expected: f64,
    /// The primary feature's (actual, expected, dispersion) in the last
    /// [`SUSTAINED_WINDOWS`] windows, for a rise no window alone shows.
    #[serde(default)]
    recent: std::collections::VecDeque<(f32, f32, f32)>,
    /// Per day of the last week, the largest ratio of a two-hour span's
    /// total to its expected total (over spans expected to hold
    /// [`SWING_MIN_EVENTS`] or more): how far this entity's days swing (a
    /// sandbox's busy day is twice the usual), which a sustained rise must
    /// clear by `sustained_margin`.
    #[serde(default)]
    swings: Vec<(i32, f32)>,
    /// How much more the primary feature scatters around its expectation
    /// than counts of independent events would (variance over mean, in
    /// event units; about a day's memory): a function fed by a queue comes
    /// in clumps, and its sums over hours are judged by that, not as
    /// Poisson counts.
    #[serde(default)]
    overdispersion: f32,
}

/// Expected events (in event units) a span needs for its ratio to say
/// something about the day rather than about chance.
const SWING_MIN_EVENTS: f64 = 5.0;
/// Span, in windows, the day-to-day swing is measured over.
const SWING_SPAN: usize = 12;

impl EntityState {
    /// Learns the overdispersion from one window (actual, expected,
    /// dispersion) of the primary feature.
    fn note_scatter(&mut self, x: f64, e: f64, d: f64) {
        if d <= 0.0 {
            return;
        }
        let (ux, ue) = (x / d, e / d);
        let phi = ((ux - ue) * (ux - ue) / ue.max(0.25)).min(1e4) as f32;
        self.overdispersion += (phi - self.overdispersion) / 144.0;
    }

    /// Notes the span ending with the window just pushed to `recent`.
    fn note_swing(&mut self, window_start_ms: i64) {
        if self.recent.len() < SWING_SPAN {
            return;
        }
        let span = self.recent.iter().skip(self.recent.len() - SWING_SPAN);
        let Some(SpanTotals { x, e, d, .. }) = SpanTotals::of(span.map(widen)) else {
            return;
        };
        if e / d < SWING_MIN_EVENTS {
            return;
        }
        let ratio = (x / e) as f32;
        let Ok(day) = i32::try_from(window_start_ms.div_euclid(86_400_000)) else {
            return;
        };
        match self.swings.iter_mut().find(|(d, _)| *d == day) {
            Some((_, m)) => *m = m.max(ratio),
            None => {
                self.swings.retain(|(d, _)| day - *d < 7);
                self.swings.push((day, ratio));
            }
        }
    }

    /// The second largest daily swing of the last week before this day,
    /// None with fewer than two days known.
    fn usual_swing(&self, window_start_ms: i64) -> Option<f64> {
        let day = window_start_ms.div_euclid(86_400_000);
        let mut v: Vec<f32> = self
            .swings
            .iter()
            .filter(|(d, _)| i64::from(*d) < day && day - i64::from(*d) <= 7)
            .map(|(_, r)| *r)
            .collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v.get(1).map(|r| f64::from(*r))
    }
}

/// Windows of the primary feature kept for a sustained rise (the longest
/// of [`SUSTAINED_SPANS`]).
const SUSTAINED_WINDOWS: usize = SUSTAINED_SPANS[SUSTAINED_SPANS.len() - 1];

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DetectorState {
    spec: DetectorSpec,
    /// Checkpointed one by one (see [`Checkpoint`]), not with the rest.
    #[serde(skip)]
    entities: HashMap<String, EntityState>,
    open: BTreeMap<i64, HashMap<String, WindowAgg>>,
    /// Start of the oldest window not yet closed; None before any event.
    next_close: Option<i64>,
    /// Until a window has closed, an event older than `next_close` moves
    /// it back instead of being late (the first event to arrive need not
    /// be the oldest).
    closed_any: bool,
    /// Windows closed in a row in which no entity had an event.
    silent_windows: u64,
    late_events: u64,
    /// Accounts rising in the last few windows (see `Engine::coordinate`).
    #[serde(default)]
    rising: Vec<Rising>,
}

/// First-seen times per account, for "new region", "new principal", "new IP".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AccountHistory {
    first_seen_ms: i64,
    regions: HashMap<String, i64>,
    /// [principal, source_ip, user_agent] value → first seen.
    values: [HashMap<String, i64>; 3],
}

impl AccountHistory {
    /// Whether `value` of dimension `dim` (principal, source IP, user
    /// agent) was first seen within `horizon` before `now`, in an account
    /// watched for longer than that: new to it, not new to us.
    fn is_new(&self, dim: usize, value: &str, now: i64, horizon: i64) -> bool {
        self.values
            .get(dim)
            .and_then(|m| m.get(value))
            .is_some_and(|first| *first >= now - horizon && *first - self.first_seen_ms >= horizon)
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
                    recent: Default::default(),
                    swings: Vec::new(),
                    overdispersion: 4.0,
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
        let groups: Vec<(String, usize)> = accounts
            .into_iter()
            .filter(|(_, a)| a.len() >= cfg.coordinated_min_accounts)
            .map(|(k, a)| (k.to_string(), a.len()))
            .collect();
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

/// What judging one entity's window works out before its forest runs.
struct Judging {
    values: Vec<f64>,
    exp: Vec<Expectation>,
    z: Vec<f64>,
    /// The forest's input.
    rounded: Vec<f64>,
    history: u64,
    first_use: FirstUse,
    /// Threshold factor of the entity's environment.
    sensitivity: f64,
    /// Expected total of the silent run including this window.
    silent_total: f64,
    silence: Silence,
    sustained: Sustained,
    /// Whether the forest's grade can matter (see `evaluate_before`).
    needed: bool,
}

/// Evaluates one closed window of one entity, up to its forest: the window
/// against the baseline, and what the forest is to be given.
#[allow(clippy::too_many_arguments)]
fn evaluate_before(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    sums: &[bool],
    ent: &mut EntityState,
    agg: &WindowAgg,
    hist: Option<&AccountHistory>,
    start: i64,
    interval: i64,
) -> Judging {
    let nfeat = spec.features.len();
    let mut exp = Vec::with_capacity(nfeat);
    let values = if agg.values.is_empty() {
        vec![0.0; nfeat]
    } else {
        agg.values.clone()
    };
    if let Some(a) = &agg.account {
        ent.account = a.clone();
    }
    ent.baseline.expect(start, &mut exp);
    let z: Vec<f64> = values
        .iter()
        .zip(&exp)
        .map(|(x, e)| ((x - e.expected) / e.scale).clamp(-50.0, 50.0))
        .collect();
    // The forest sees residuals rounded to 0.05 noise units: finer detail is
    // noise, and an idle entity then repeats the same shingle exactly, which
    // the forest recognises and skips (most entities are idle most windows).
    let res = cfg.forest_resolution.max(1e-6);
    let rounded: Vec<f64> = z.iter().map(|v| (v / res).round() * res).collect();
    let history = ent.baseline.windows();
    let first_use = first_seen(
        cfg,
        spec,
        hist,
        &ent.region,
        agg,
        start,
        interval,
        history,
        &values,
    );
    let sensitivity = sensitivity(cfg, spec, &ent.account);
    let silent_total = if agg.events == 0 {
        ent.silent_expected + exp.first().map_or(0.0, |e| e.expected.max(0.0))
    } else {
        0.0
    };
    let silence = Silence {
        crossed: silent_total >= cfg.drop_min_total && ent.silent_expected < cfg.drop_min_total,
        active_share: ent.baseline.active_share(),
    };
    // Judged only once the entity's days are known to swing so much
    // (two days with busy spans), and by the larger of the two ratios.
    let sustained = match (values.first(), exp.first()) {
        (Some(x), Some(e)) if cfg.sustained_z > 0.0 => match ent.usual_swing(start) {
            Some(swing) => Sustained::of(
                &ent.recent,
                (*x, e.expected, e.dispersion),
                cfg.sustained_ratio.max(cfg.sustained_margin * swing),
                f64::from(ent.overdispersion).max(1.0),
            ),
            None => Sustained::default(),
        },
        _ => Sustained::default(),
    };
    // The forest's grade can only turn a window anomalous (or suppressed,
    // which must be told apart from quiet) that would be so at the highest
    // grade: for every other window (nearly all) its verdict cannot
    // matter, and the forest just learns the step.
    let w = Window {
        values: &values,
        exp: &exp,
        z: &z,
        sums,
    };
    let needed = matches!(
        judge(
            cfg,
            &w,
            1.0,
            history,
            interval,
            ent.active_streak,
            first_use,
            sensitivity,
            silence,
            sustained,
        ),
        Verdict::Raise(..)
            | Verdict::Suppressed(
                Suppression::Environment | Suppression::Weekly | Suppression::Bursts
            )
    );
    Judging {
        values,
        exp,
        z,
        rounded,
        history,
        first_use,
        sensitivity,
        silent_total,
        silence,
        sustained,
        needed,
    }
}

/// The factor an account's thresholds are multiplied by.
fn sensitivity(cfg: &EngineConfig, spec: &DetectorSpec, account: &AccountMetadata) -> f64 {
    if !spec.ignore_quiet_environments && cfg.quiet_environments.contains(&account.environment) {
        cfg.quiet_factor.max(1.0)
    } else {
        1.0
    }
}

/// How an entity's first window looks: a first use of a region (raised
/// when significant, else counted), or activity of an account × region
/// detector too young to have a rhythm, in an account watched long enough
/// (IAM changes or secret reads where there were next to none), raised
/// when it is both large and by a principal or from an address new to the
/// account.
#[allow(clippy::too_many_arguments)]
fn first_seen(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    hist: Option<&AccountHistory>,
    region: &str,
    agg: &WindowAgg,
    start: i64,
    interval: i64,
    history: u64,
    values: &[f64],
) -> FirstUse {
    if new_region(cfg, hist, region, start, interval, history) {
        return first_use(cfg, spec, hist, agg, start, values);
    }
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    let Some(h) = hist else {
        return FirstUse::No;
    };
    // Young entities too: one IAM change yesterday gives no rhythm to
    // judge today's burst by.
    if (history * interval.max(1) as u64) >= cfg.min_history_hours * 3_600_000
        || agg.events == 0
        || spec.category_fields.len() > 2
        || start - h.first_seen_ms < horizon
        || values.first().copied().unwrap_or(0.0) < 2.0 * cfg.new_region_min
    {
        return FirstUse::No;
    }
    // The burst must be the newcomer's: a function's own role invoking it
    // once for the first time in a busy window is not.
    let mut by_newcomers = [0.0f64; 2];
    for (dim, v, (_, w)) in agg.contributors.iter() {
        if dim <= 1 && h.is_new(usize::from(dim), v, start, horizon) {
            by_newcomers[usize::from(dim)] += *w;
        }
    }
    let total = values.first().copied().unwrap_or(0.0);
    let newcomers = by_newcomers[0].max(by_newcomers[1]);
    if newcomers >= 2.0 * cfg.new_region_min && newcomers >= 0.5 * total {
        FirstUse::Activity
    } else {
        FirstUse::No
    }
}

/// Whether a first use of a region matters on its own: many events, a
/// principal or IP new to the account, or a notable value (GPU types).
fn first_use(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    hist: Option<&AccountHistory>,
    agg: &WindowAgg,
    start: i64,
    values: &[f64],
) -> FirstUse {
    if values.first().copied().unwrap_or(0.0) >= cfg.new_region_min {
        return FirstUse::Significant;
    }
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    let notable = agg.contributors.iter().any(|(dim, v, _)| match dim {
        0 | 1 => hist.is_some_and(|h| h.is_new(usize::from(dim), v, start, horizon)),
        d if usize::from(d) >= BUILTIN_DIMS.len() => {
            trailhound_core::detector::matches_pattern(&spec.notable_values, v)
        }
        _ => false,
    });
    if notable {
        FirstUse::Significant
    } else {
        FirstUse::Insignificant
    }
}

/// An account rising in a window, remembered for a few windows to find
/// accounts rising together (see [`EngineConfig::coordinated_min_accounts`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rising {
    window_start: i64,
    account_id: String,
    entity_key: String,
    /// What accounts acting together share: `principal:NAME` and `ip:ADDR`
    /// for an account rising, `actor:ROLE@ADDR` for an address new to the
    /// account acting in it.
    keys: Vec<String>,
    /// The coordinated anomaly to raise if others join; None once raised,
    /// or when the window was anomalous on its own.
    candidate: Option<Anomaly>,
}

/// A role's name without its session (`assumed-role/Ops/alice` →
/// `assumed-role/Ops`): sessions are named per run, the role is the actor.
fn role_name(name: &str) -> &str {
    match name.strip_prefix("assumed-role/") {
        Some(rest) => match rest.find('/') {
            Some(i) => &name[..("assumed-role/".len() + i)],
            None => name,
        },
        None => name,
    }
}

/// A principal's name without the account it lives in:
/// `arn:aws:sts::111122223333:assumed-role/Ops/alice` → `assumed-role/Ops/alice`,
/// the same name in every account.
fn principal_name(p: &str) -> &str {
    if p.starts_with("arn:") {
        p.splitn(6, ':').nth(5).unwrap_or(p)
    } else {
        p
    }
}

/// The heaviest of `values` (ties: the smallest value, for determinism).
fn heaviest<'a>(
    values: impl Iterator<Item = (&'a String, &'a (u64, f64))>,
) -> Option<(&'a String, &'a (u64, f64))> {
    values.max_by(|a, b| a.1.1.total_cmp(&b.1.1).then_with(|| b.0.cmp(a.0)))
}

/// The value of dimension `dim` behind at least 40% of the window's weight.
fn dominant(agg: &WindowAgg, dim: u8, total: f64) -> Option<&str> {
    heaviest(agg.contributors.0.get(usize::from(dim))?.iter())
        .filter(|(_, (_, w))| *w >= 0.4 * total)
        .map(|(v, _)| v.as_str())
}

/// Evaluates one closed window of one entity, given what its forest said
/// about `judging.rounded`: the window's result, why it was not raised if
/// it stood out, and whether the account is rising (for coordination).
#[allow(clippy::too_many_arguments)]
fn evaluate_after(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    sums: &[bool],
    key: &str,
    ent: &mut EntityState,
    agg: WindowAgg,
    hist: Option<&AccountHistory>,
    start: i64,
    interval: i64,
    judging: Judging,
    detection: Detection,
) -> (WindowResult, Option<Suppression>, Option<Rising>) {
    let Judging {
        values,
        exp,
        z,
        rounded: _,
        history,
        first_use,
        sensitivity,
        silent_total,
        silence,
        sustained,
        needed,
    } = judging;
    let w = Window {
        values: &values,
        exp: &exp,
        z: &z,
        sums,
    };
    let verdict = judge(
        cfg,
        &w,
        if needed { detection.grade } else { 0.0 },
        history,
        interval,
        ent.active_streak,
        first_use,
        sensitivity,
        silence,
        sustained,
    );
    ent.silent_expected = silent_total;
    if let (Some(x), Some(e)) = (values.first(), exp.first()) {
        if ent.recent.len() >= SUSTAINED_WINDOWS {
            ent.recent.pop_front();
        }
        ent.recent
            .push_back((*x as f32, e.expected as f32, e.dispersion as f32));
        // What only the sustained rule reads is learned only when it is on.
        if cfg.sustained_z > 0.0 {
            ent.note_swing(start);
            ent.note_scatter(*x, e.expected, e.dispersion);
        }
    }
    let (grade, kind, suppressed) = match verdict {
        Verdict::Raise(g, k) => (g, k, None),
        Verdict::Suppressed(why) => (0.0, AnomalyKind::Spike, Some(why)),
        Verdict::Quiet => (0.0, AnomalyKind::Spike, None),
    };
    let grade = if grade < spec.min_grade { 0.0 } else { grade };
    let subject = Subject {
        entity: &ent.entity,
        account_id: &ent.account_id,
        region: &ent.region,
        account: &ent.account,
        seen: Some(&ent.seen),
    };
    let anomaly = (grade > 0.0).then(|| {
        build_anomaly(
            cfg,
            spec,
            &subject,
            hist,
            &agg,
            start,
            interval,
            &values,
            &exp,
            grade,
            match kind {
                // The forest of a new entity knows nothing yet; what makes
                // "never used this region" trustworthy is how long the
                // account has been watched.
                AnomalyKind::NewRegion => hist
                    .map(|h| {
                        let hours = (start - h.first_seen_ms).max(0) as f64 / 3_600_000.0;
                        1.0 - (-hours / 48.0).exp()
                    })
                    .unwrap_or(0.0),
                _ => detection.confidence,
            },
            detection.score,
            kind,
        )
    });
    // Accounts rising together: each only somewhat above its own normal,
    // together unmistakable (see `Engine::coordinate`).
    let total = values.first().copied().unwrap_or(0.0);
    let e0 = exp.first().map_or(0.0, |e| e.expected);
    let rises = cfg.coordinated_min_accounts >= 2
        && (history * interval.max(1) as u64) >= cfg.min_history_hours * 3_600_000
        && ent.account_id != FOLDED_ACCOUNT
        && z.first().copied().unwrap_or(0.0) >= cfg.coordinated_z
        && total - e0 >= cfg.min_excess
        && total - e0 >= cfg.min_relative_excess * e0;
    // An address the account has never seen acting in it: one intruder
    // working through several accounts is new in each.
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    // It must do something of note there: a CI role launching one test
    // instance in each account from a runner's fresh address is routine.
    let new_ip = (cfg.coordinated_min_accounts >= 2
        && ent.account_id != FOLDED_ACCOUNT
        && total - e0 >= cfg.min_excess)
        .then(|| {
            let h = hist?;
            heaviest(agg.contributors.0.get(1)?.iter().filter(|(ip, _)| {
                ip.parse::<std::net::IpAddr>().is_ok() && h.is_new(1, ip, start, horizon)
            }))
            .map(|(ip, _)| ip.clone())
        })
        .flatten();
    let rising = (rises || new_ip.is_some())
        .then(|| {
            // An AWS service acting in every account (Auto Scaling under
            // its service-linked role) is no one's coordination: the
            // window must come from an address, a person's or a tool's.
            let ip = dominant(&agg, 1, total)
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                .unwrap_or("");
            let principal = if ip.is_empty() {
                ""
            } else {
                dominant(&agg, 0, total).map(principal_name).unwrap_or("")
            };
            let mut keys = Vec::new();
            if rises {
                if !principal.is_empty() {
                    keys.push(format!("principal:{principal}"));
                }
                if !ip.is_empty() {
                    keys.push(format!("ip:{ip}"));
                }
            }
            if let Some(addr) = &new_ip {
                // The principal behind the new address's calls.
                let who = agg
                    .contributors
                    .0
                    .first()
                    .and_then(|m| heaviest(m.iter()))
                    .map(|(p, _)| role_name(principal_name(p)))
                    .unwrap_or("");
                keys.push(format!("actor:{who}@{addr}"));
            }
            Rising {
                window_start: start,
                account_id: ent.account_id.clone(),
                entity_key: key.to_string(),
                keys,
                candidate: anomaly.is_none().then(|| {
                    let mut a = build_anomaly(
                        cfg,
                        spec,
                        &subject,
                        hist,
                        &agg,
                        start,
                        interval,
                        &values,
                        &exp,
                        0.5,
                        detection.confidence,
                        detection.score,
                        AnomalyKind::Coordinated,
                    );
                    a.id.push_str(":coordinated");
                    a
                }),
            }
        })
        .filter(|r| !r.keys.is_empty());
    // An anomalous window enters the history clipped to the band
    // around what was expected: a lasting change is still learned,
    // step by step, but one storm or outage cannot skew the next
    // days' expectations. Its real values are kept aside for the weekly
    // comparison: a weekly job is expected at its real size next week.
    let recorded: Vec<f64> = if anomaly.is_some() {
        ent.baseline.record_anomalous_raw(start, &values);
        values
            .iter()
            .zip(&exp)
            .map(|(x, e)| {
                x.clamp(
                    (e.expected - cfg.spike_z * e.scale).max(0.0),
                    e.expected + cfg.spike_z * e.scale,
                )
            })
            .collect()
    } else {
        values.clone()
    };
    ent.baseline.note_window(start, &values, &exp, agg.events);
    ent.baseline
        .record_events(start, &recorded, agg.events, &exp, anomaly.is_some());
    ent.active_streak = if agg.events > 0 {
        ent.last_active_ms = start;
        ent.active_streak.saturating_add(1)
    } else {
        0
    };
    if ent.seen.len() < cfg.max_seen_values {
        for (dim, v, (n, _)) in agg.contributors.iter() {
            match ent.seen.get_mut(&(dim, v.clone())) {
                Some(seen) => *seen += n,
                None => {
                    ent.seen.insert((dim, v.clone()), *n);
                }
            }
        }
    }
    let result = WindowResult {
        detector: spec.name.clone(),
        entity_key: key.to_string(),
        window_start_ms: start,
        lower: exp
            .iter()
            .map(|e| (e.expected - cfg.spike_z * e.scale).max(0.0))
            .collect(),
        upper: exp
            .iter()
            .map(|e| e.expected + cfg.spike_z * e.scale)
            .collect(),
        expected: exp.iter().map(|e| e.expected).collect(),
        actual: values,
        grade,
        anomaly,
        extra: false,
    };
    (result, suppressed, rising)
}

/// Per feature, whether it is a sum (heavy-tailed: needs `strong_z`).
fn sums_of(spec: &DetectorSpec) -> Vec<bool> {
    spec.features
        .iter()
        .map(|f| f.aggregation == trailhound_core::Aggregation::Sum)
        .collect()
}

/// The grade of an open window of an entity with a rhythm, if what has
/// arrived already passes the strong residual (and is no weekly repeat
/// or habitual burst).
fn early_spike_grade(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    account: &AccountMetadata,
    values: &[f64],
    exp: &[Expectation],
) -> Option<f64> {
    let z: Vec<f64> = values
        .iter()
        .zip(exp)
        .map(|(x, e)| ((x - e.expected) / e.scale).clamp(-50.0, 50.0))
        .collect();
    let sums = sums_of(spec);
    let w = Window {
        values,
        exp,
        z: &z,
        sums: &sums,
    };
    let k = sensitivity(cfg, spec, account);
    let spiking = w.spiking(cfg, k);
    let zmax = spiking.iter().map(|(_, z)| *z).reduce(f64::max)?;
    if zmax < k * cfg.strong_z
        || w.repeats_last_week(cfg, &spiking)
        || w.within_usual_bursts(&spiking)
    {
        return None;
    }
    Some(magnitude(cfg, zmax / k))
}

/// The anomaly an open window already is, if it is unmistakable: a strong
/// residual on what has arrived so far (the rest of the window can only
/// add to it, so its close raises it too), or a significant first use of a
/// region. `t` is the event time the window has been seen up to.
#[allow(clippy::too_many_arguments)]
fn early_anomaly(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    ent: Option<&EntityState>,
    key: &str,
    agg: &WindowAgg,
    hist: Option<&AccountHistory>,
    window: i64,
    t: i64,
) -> Option<Anomaly> {
    let interval = spec.interval_ms();
    let account = agg.account.as_ref()?;
    let watched = |h: Option<&AccountHistory>| {
        h.map(|h| {
            let hours = (window - h.first_seen_ms).max(0) as f64 / 3_600_000.0;
            1.0 - (-hours / 48.0).exp()
        })
        .unwrap_or(0.0)
    };
    let mut a = match ent {
        Some(ent) => {
            let history = ent.baseline.windows();
            let mut exp = Vec::with_capacity(agg.values.len());
            ent.baseline.expect(window, &mut exp);
            let grade = if (history * interval.max(1) as u64) < cfg.min_history_hours * 3_600_000 {
                // Too young for a rhythm: only a large burst by someone new.
                let young = first_seen(
                    cfg,
                    spec,
                    hist,
                    &ent.region,
                    agg,
                    window,
                    interval,
                    history,
                    &agg.values,
                );
                if young != FirstUse::Activity {
                    return None;
                }
                let total = agg.values.first().copied().unwrap_or(0.0);
                first_seen_grade(AnomalyKind::Spike, total)
            } else {
                early_spike_grade(cfg, spec, account, &agg.values, &exp)?
            };
            let subject = Subject {
                entity: &ent.entity,
                account_id: &ent.account_id,
                region: &ent.region,
                account,
                seen: Some(&ent.seen),
            };
            build_anomaly(
                cfg,
                spec,
                &subject,
                hist,
                agg,
                window,
                interval,
                &agg.values,
                &exp,
                grade,
                watched(hist),
                0.0,
                AnomalyKind::Spike,
            )
        }
        None => {
            let entity = entity_of(spec, key);
            let field = |name: &str| entity_field(&entity, name);
            let region = field("awsRegion");
            let kind = match first_seen(
                cfg,
                spec,
                hist,
                region,
                agg,
                window,
                interval,
                0,
                &agg.values,
            ) {
                FirstUse::Significant => AnomalyKind::NewRegion,
                FirstUse::Activity => AnomalyKind::Spike,
                _ => return None,
            };
            let account_id = match field("recipientAccountId") {
                "" => account.account_id.as_str(),
                id => id,
            };
            let total = agg.values.first().copied().unwrap_or(0.0);
            let exp = vec![
                Expectation {
                    expected: 0.0,
                    scale: 1.0,
                    weekly: 0.0,
                    usual_peak: 0.0,
                    dispersion: 0.0,
                };
                agg.values.len()
            ];
            let subject = Subject {
                entity: &entity,
                account_id,
                region,
                account,
                seen: None,
            };
            build_anomaly(
                cfg,
                spec,
                &subject,
                hist,
                agg,
                window,
                interval,
                &agg.values,
                &exp,
                first_seen_grade(kind, total),
                watched(hist),
                0.0,
                kind,
            )
        }
    };
    a.observed_until = ts(t.clamp(window, window + interval));
    Some(a)
}

fn note_first(map: &mut HashMap<String, i64>, key: &str, t: i64, cap: usize) {
    if let Some(first) = map.get_mut(key) {
        *first = (*first).min(t);
    } else if map.len() < cap {
        map.insert(key.to_string(), t);
    }
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether this window is the entity's first activity in a region its
/// account had never used before (and the account is old enough for
/// "never" to mean something).
fn new_region(
    cfg: &EngineConfig,
    hist: Option<&AccountHistory>,
    region: &str,
    start: i64,
    interval: i64,
    history: u64,
) -> bool {
    let Some(h) = hist else { return false };
    if history > 0 || region.is_empty() {
        return false;
    }
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    match h.regions.get(region) {
        Some(first) => *first >= start - interval && *first - h.first_seen_ms >= horizon,
        None => false,
    }
}

/// A grade from a residual: 0.3 at `spike_z`, rising to 1 at 4.4 times it.
fn magnitude(cfg: &EngineConfig, z: f64) -> f64 {
    ((z.abs() - cfg.spike_z) / (2.0 * cfg.spike_z) + 0.3).clamp(0.05, 1.0)
}

/// The grade of a first window raised for its own sake, by its total: a
/// first use of a region starts higher than a young entity's burst.
fn first_seen_grade(kind: AnomalyKind, total: f64) -> f64 {
    let base = if kind == AnomalyKind::NewRegion {
        0.6
    } else {
        0.5
    };
    (base + 0.1 * (1.0 + total).log2()).min(1.0)
}

/// Why a window that stood out was not raised (counted in the stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suppression {
    /// Within the swings of a development or sandbox account.
    Environment,
    /// No more than the same weekday's slot had one or two weeks before.
    Weekly,
    /// A first use of a region with nothing notable about it.
    NewRegion,
    /// A burst no larger than the entity's bursts on other days.
    Bursts,
}

/// What judging one window of one entity decided.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Raise(f64, AnomalyKind),
    Suppressed(Suppression),
    Quiet,
}

/// Whether a window is its entity's first activity in a region the account
/// never used, and whether that matters on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstUse {
    No,
    /// Many events, a new principal or IP, or a notable value (GPU types).
    Significant,
    /// One ordinary call: context for later anomalies, not an alert.
    Insignificant,
    /// Not a new region, but the detector's first activity in the account
    /// and region: large, and by someone new.
    Activity,
}

/// One window's figures as judged.
struct Window<'a> {
    values: &'a [f64],
    exp: &'a [Expectation],
    z: &'a [f64],
    /// Per feature, whether it is a sum (heavy-tailed: needs `strong_z`).
    sums: &'a [bool],
}

impl Window<'_> {
    /// Features that spike at thresholds scaled by `k`, with their residual.
    fn spiking(&self, cfg: &EngineConfig, k: f64) -> Vec<(usize, f64)> {
        self.values
            .iter()
            .zip(self.exp)
            .zip(self.z)
            .enumerate()
            .filter(|(i, ((x, e), zz))| {
                let sum = self.sums.get(*i).copied().unwrap_or(false);
                **zz >= k * if sum { cfg.strong_z } else { cfg.spike_z }
                    && *x - e.expected >= k * cfg.min_excess
                    && *x - e.expected >= k * cfg.min_relative_excess * e.expected
            })
            .map(|(i, (_, zz))| (i, *zz))
            .collect()
    }

    /// Whether every spiking feature stays within the excess the entity's
    /// bursts reached on other days (see `Expectation::usual_peak`).
    fn within_usual_bursts(&self, spiking: &[(usize, f64)]) -> bool {
        !spiking.is_empty()
            && spiking.iter().all(|(i, _)| {
                let Some(e) = self.exp.get(*i) else {
                    return false;
                };
                let x = self.values.get(*i).copied().unwrap_or(0.0);
                e.usual_peak > 0.0 && x - e.expected < 1.5 * e.usual_peak
            })
    }

    /// Whether every spiking feature stays within what the same weekday's
    /// slot had a week or two before: a weekly job seen once.
    fn repeats_last_week(&self, cfg: &EngineConfig, spiking: &[(usize, f64)]) -> bool {
        !spiking.is_empty()
            && spiking.iter().all(|(i, _)| {
                let weekly = self.exp.get(*i).map_or(0.0, |e| e.weekly);
                let x = self.values.get(*i).copied().unwrap_or(0.0);
                weekly > 0.0 && x - weekly < cfg.min_excess.max(cfg.min_relative_excess * weekly)
            })
    }
}

/// Decides whether a window is anomalous, and how badly. `sensitivity`
/// (≥ 1) scales every threshold: an account whose swings are normal needs
/// a larger one.
#[allow(clippy::too_many_arguments)]
fn judge(
    cfg: &EngineConfig,
    w: &Window<'_>,
    forest_grade: f64,
    history: u64,
    interval_ms: i64,
    active_streak: u32,
    first_use: FirstUse,
    sensitivity: f64,
    silence: Silence,
    sustained: Sustained,
) -> Verdict {
    match first_use {
        FirstUse::Significant => {
            let total: f64 = w.values.first().copied().unwrap_or(0.0);
            let kind = AnomalyKind::NewRegion;
            return Verdict::Raise(first_seen_grade(kind, total), kind);
        }
        FirstUse::Insignificant => return Verdict::Suppressed(Suppression::NewRegion),
        FirstUse::Activity => {
            let total: f64 = w.values.first().copied().unwrap_or(0.0);
            let kind = AnomalyKind::Spike;
            return Verdict::Raise(first_seen_grade(kind, total), kind);
        }
        FirstUse::No => {}
    }
    if (history * interval_ms.max(1) as u64) < cfg.min_history_hours * 3_600_000 {
        return Verdict::Quiet;
    }
    let magnitude = |zz: f64| magnitude(cfg, zz);
    // Spike: any feature far above expected, in noise units and in
    // absolute and relative terms. Sums of sizes (GiB, instances per call)
    // are heavy-tailed: one large but ordinary request must not pass for a
    // burst, so a sum needs the strong residual; counts the spike residual.
    let k = sensitivity.max(1.0);
    let spiking = w.spiking(cfg, k);
    if let Some(zmax) = spiking.iter().map(|(_, z)| *z).reduce(f64::max)
        && (forest_grade > 0.0 || zmax >= k * cfg.strong_z)
    {
        if w.repeats_last_week(cfg, &spiking) {
            return Verdict::Suppressed(Suppression::Weekly);
        }
        if w.within_usual_bursts(&spiking) {
            return Verdict::Suppressed(Suppression::Bursts);
        }
        return Verdict::Raise(forest_grade.max(magnitude(zmax / k)), AnomalyKind::Spike);
    }
    if k > 1.0
        && let Some(zmax) = w.spiking(cfg, 1.0).iter().map(|(_, z)| *z).reduce(f64::max)
        && (forest_grade > 0.0 || zmax >= cfg.strong_z)
    {
        return Verdict::Suppressed(Suppression::Environment);
    }
    // A rise over two hours no window alone shows, still going on, judged
    // only against a rhythm known for days (weekdays and weekends apart).
    if cfg.sustained_z > 0.0
        && (history * interval_ms.max(1) as u64) >= 4 * 86_400_000
        && sustained.z >= k * cfg.sustained_z
        && sustained.excess >= 3.0 * k * cfg.min_excess
        && sustained.largest <= 0.4 * sustained.excess
        && w.z.first().is_some_and(|z| *z > 0.0)
    {
        return Verdict::Raise(
            magnitude(sustained.z / k * cfg.spike_z / cfg.sustained_z),
            AnomalyKind::Spike,
        );
    }
    // Drop: a steadily active entity fell to (nearly) nothing.
    let primary = w.values.first().copied().unwrap_or(0.0);
    let expected = w.exp.first().map(|e| e.expected).unwrap_or(0.0);
    let zp = w.z.first().copied().unwrap_or(0.0);
    if expected >= cfg.drop_min_expected
        && primary <= 0.1 * expected
        && zp <= -cfg.spike_z * 0.8
        && (active_streak >= 6 || forest_grade > 0.0)
    {
        return Verdict::Raise(forest_grade.max(magnitude(zp)), AnomalyKind::Drop);
    }
    // Or a steady entity silent for long enough that chance cannot
    // explain it: raised once, when the silence crosses the line.
    if silence.crossed && silence.active_share >= 0.75 {
        return Verdict::Raise(0.6, AnomalyKind::Drop);
    }
    Verdict::Quiet
}

/// A rise of the primary feature summed over the last one, two or three
/// hours, judged as counts: a night's launches three or four times over
/// are 0–2 per window, which no window shows, but a dozen where three are
/// usual is as unlikely by chance as a spike.
#[derive(Clone, Copy, Debug, Default)]
struct Sustained {
    /// The Poisson tail probability of the sum, as standard normal units
    /// (corrected for the three spans tried); 0 when not judged.
    z: f64,
    excess: f64,
    /// The largest one window's excess: a sustained rise is spread over
    /// the span, not one burst.
    largest: f64,
}

/// Spans a sustained rise is summed over, in windows (1, 2 and 3 hours
/// at 10 minutes).
const SUSTAINED_SPANS: [usize; 3] = [6, 12, 18];

impl Sustained {
    /// `recent` and `now` are (actual, expected, dispersion) of the primary
    /// feature; a dispersion of 0 (a measurement) is never judged, nor a
    /// span below `min_ratio` times its expected total (most, and cheaply).
    fn of(
        recent: &std::collections::VecDeque<(f32, f32, f32)>,
        now: (f64, f64, f64),
        min_ratio: f64,
        overdispersion: f64,
    ) -> Self {
        let mut best = Self::default();
        for span in SUSTAINED_SPANS {
            if recent.len() + 1 < span {
                break;
            }
            let last = recent
                .iter()
                .skip(recent.len() + 1 - span)
                .map(widen)
                .chain(std::iter::once(now));
            let Some(SpanTotals { x, e, d, largest }) = SpanTotals::of(last) else {
                return Self::default();
            };
            if x < min_ratio * e || x <= e {
                continue;
            }
            // In event units (X/dispersion is about Poisson); at least one
            // event expected, as a quiet entity's noise floor.
            // Quasi-Poisson: scaled down by the entity's overdispersion.
            let d = d * overdispersion.max(1.0);
            let ln_p =
                poisson_ln_tail(x / d, (e / d).max(1.0)) + (SUSTAINED_SPANS.len() as f64).ln();
            let z = normal_units(ln_p);
            if z > best.z {
                best = Self {
                    z,
                    excess: x - e,
                    largest,
                };
            }
        }
        best
    }
}

/// One span of the primary feature: totals of actual and expected, the
/// largest dispersion, and the largest one window's excess.
struct SpanTotals {
    x: f64,
    e: f64,
    d: f64,
    largest: f64,
}

impl SpanTotals {
    /// None when a window is a measurement (dispersion 0), not a count.
    fn of(windows: impl Iterator<Item = (f64, f64, f64)>) -> Option<Self> {
        let mut t = Self {
            x: 0.0,
            e: 0.0,
            d: 0.0,
            largest: 0.0,
        };
        for (x, e, d) in windows {
            if d <= 0.0 {
                return None;
            }
            t.x += x;
            t.e += e;
            t.d = t.d.max(d);
            t.largest = t.largest.max(x - e);
        }
        Some(t)
    }
}

/// A `recent` entry in full precision.
fn widen(&(x, e, d): &(f32, f32, f32)) -> (f64, f64, f64) {
    (f64::from(x), f64::from(e), f64::from(d))
}

/// ln P(N ≥ k) for N ~ Poisson(mu), k real (the sum of the terms from k
/// on); 0 when k ≤ mu, where only large tails matter.
fn poisson_ln_tail(k: f64, mu: f64) -> f64 {
    if k <= mu || mu <= 0.0 {
        return 0.0;
    }
    let ln_mu = mu.ln();
    let first = -mu + k * ln_mu - ln_gamma(k + 1.0);
    // Terms shrink by mu/(k+i+1) < 1 from the first on.
    let (mut sum, mut term) = (1.0f64, 1.0f64);
    let mut i = 1.0;
    while i < 10_000.0 {
        term *= mu / (k + i);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
        i += 1.0;
    }
    (first + sum.ln()).min(0.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7), to about 1e-13.
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The z whose standard normal upper tail is e^ln_p (from the tail's
/// asymptotic form, close enough above z = 2); 0 for p ≥ 0.5.
fn normal_units(ln_p: f64) -> f64 {
    if ln_p >= (0.5f64).ln() {
        return 0.0;
    }
    // tail(z) ≈ φ(z)/z: solve -ln_p = z²/2 + ln(z·√(2π)).
    let c = (2.0 * std::f64::consts::PI).sqrt();
    let mut z = (-2.0 * ln_p).sqrt();
    for _ in 0..4 {
        z = (-2.0 * ln_p - 2.0 * (z.max(1.0) * c).ln()).max(0.0).sqrt();
    }
    z
}

/// A run of silent windows as judged for a drop.
#[derive(Clone, Copy, Debug, Default)]
struct Silence {
    /// This window took the run's expected total past `drop_min_total`.
    crossed: bool,
    /// The entity's share of recent windows with events.
    active_share: f64,
}

/// Who an anomaly is about: an entity, or one about to be (an early raise
/// of a first window).
struct Subject<'a> {
    entity: &'a [(String, String)],
    account_id: &'a str,
    region: &'a str,
    account: &'a Arc<AccountMetadata>,
    seen: Option<&'a HashMap<(u8, String), u64>>,
}

#[allow(clippy::too_many_arguments)]
fn build_anomaly(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    ent: &Subject<'_>,
    hist: Option<&AccountHistory>,
    agg: &WindowAgg,
    start: i64,
    interval: i64,
    values: &[f64],
    exp: &[Expectation],
    grade: f64,
    confidence: f64,
    score: f64,
    kind: AnomalyKind,
) -> Anomaly {
    let account = ent.account.clone();
    let mut service = spec.service.clone();
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    let total_weight: f64 = values.first().copied().unwrap_or(0.0).max(1e-9);
    let mut by_dim: BTreeMap<u8, Vec<(&String, u64, f64)>> = BTreeMap::new();
    for (dim, v, (n, w)) in agg.contributors.iter() {
        by_dim.entry(dim).or_default().push((v, *n, *w));
    }
    let mut contributors = Vec::new();
    for (dim, mut list) in by_dim {
        list.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(b.0)));
        let name = match BUILTIN_DIMS.get(dim as usize) {
            Some(n) => n.to_string(),
            None => spec
                .contributors
                .get(dim as usize - BUILTIN_DIMS.len())
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        };
        for (v, n, w) in list.into_iter().take(cfg.contributors_per_dimension) {
            let is_new = match (dim, hist) {
                (0..=2, Some(h)) => h.is_new(usize::from(dim), v, start, horizon),
                _ => false,
            };
            contributors.push(Contributor {
                dimension: name.clone(),
                value: v.clone(),
                count: n,
                share: if spec.features.is_empty() {
                    0.0
                } else {
                    (w / total_weight).min(1.0)
                },
                baseline_count: ent
                    .seen
                    .and_then(|s| s.get(&(dim, v.clone())).copied())
                    .unwrap_or(0),
                is_new,
            });
        }
    }
    if service == "*" {
        // A detector of any service: the one most of the window came from.
        service = contributors
            .iter()
            .find(|c| c.dimension == "service")
            .map(|c| c.value.trim_end_matches(".amazonaws.com").to_string())
            .unwrap_or_else(|| "aws".into());
    }
    let entity = ent.entity.to_vec();
    Anomaly {
        id: Anomaly::make_id(&spec.name, &entity, start),
        detector: spec.name.clone(),
        service,
        kind,
        account_id: ent.account_id.to_string(),
        account_name: account.name.clone(),
        environment: account.environment,
        ou_path: account.ou_path.clone(),
        region: ent.region.to_string(),
        entity,
        window_start: ts(start),
        window_end: ts(start + interval),
        observed_until: ts(start + interval),
        actual: values.first().copied().unwrap_or(0.0),
        expected: exp.first().map(|e| e.expected).unwrap_or(0.0),
        features: spec
            .features
            .iter()
            .zip(values.iter().zip(exp))
            .map(|(f, (a, e))| FeatureValue {
                name: f.name.clone(),
                actual: *a,
                expected: e.expected,
            })
            .collect(),
        grade,
        confidence,
        score,
        event_count: agg.events,
        top_contributors: contributors,
        detected_at: now(),
        account: (*account).clone(),
    }
}

impl DetectorState {
    fn new(spec: DetectorSpec) -> Self {
        Self {
            spec,
            entities: HashMap::default(),
            open: BTreeMap::new(),
            next_close: None,
            closed_any: false,
            silent_windows: 0,
            late_events: 0,
            rising: Vec::new(),
        }
    }
}

/// The entity an entity key (category values joined by '/') stands for.
fn entity_of(spec: &DetectorSpec, key: &str) -> Vec<(String, String)> {
    spec.category_fields
        .iter()
        .zip(key.split('/'))
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

/// One field's value in an entity, empty when it has none.
fn entity_field<'a>(entity: &'a [(String, String)], name: &str) -> &'a str {
    entity
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// `key` (category values joined by '/') with the account and region
/// fields replaced by the folds `account` and `region`.
fn fold_key(spec: &DetectorSpec, key: &str, account: &str, region: &str) -> String {
    spec.category_fields
        .iter()
        .zip(key.split('/'))
        .map(|(field, value)| match field.to_string().as_str() {
            "recipientAccountId" => account,
            "awsRegion" => region,
            _ => value,
        })
        .collect::<Vec<_>>()
        .join("/")
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

    #[test]
    fn a_sparse_rise_over_hours_is_sustained_and_one_burst_is_not() {
        // Expected 0.25 per window; 1 per window for two hours.
        let mut recent = std::collections::VecDeque::new();
        for _ in 0..17 {
            recent.push_back((1.0f32, 0.25f32, 1.0f32));
        }
        let s = Sustained::of(&recent, (1.0, 0.25, 1.0), 2.5, 1.0);
        assert!(s.z > 4.0, "{s:?}");
        assert!(close(s.excess, 13.5, 1e-9));
        assert!(s.largest <= 0.4 * s.excess);
        // The same total in one window: as unlikely, but not spread.
        let mut recent = std::collections::VecDeque::new();
        for _ in 0..17 {
            recent.push_back((0.0f32, 0.25f32, 1.0f32));
        }
        let s = Sustained::of(&recent, (18.0, 0.25, 1.0), 2.5, 1.0);
        assert!(s.largest > 0.4 * s.excess, "{s:?}");
        // A measurement (dispersion 0) is never judged.
        assert_eq!(Sustained::of(&recent, (18.0, 0.25, 0.0), 2.5, 1.0).z, 0.0);
    }
}
