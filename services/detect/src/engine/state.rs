//! What the engine keeps per entity, per detector and per account between windows (checkpointed), and the open windows' tallies.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct WindowAgg {
    pub(super) values: Vec<f64>,
    pub(super) events: u64,
    /// Events at which the open window is next checked for an early raise.
    #[serde(default)]
    pub(super) next_check: u64,
    /// Raised early already (see [`EngineConfig::early_raise`]).
    #[serde(default)]
    pub(super) early: bool,
    /// (dimension index, value) → (events, weight). Dimension indices past
    /// the built-ins are the detector's contributor fields.
    pub(super) contributors: Tally,
    pub(super) account: Option<Arc<AccountMetadata>>,
}

/// Per contributor dimension, value → (events, weight). Looked up by
/// `&str`, so counting an event allocates only for a value new to the
/// window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Tally(pub(super) Vec<HashMap<String, (u64, f64)>>);

impl Tally {
    pub(super) fn add(&mut self, dim: usize, value: &str, weight: f64) {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = (u8, &String, &(u64, f64))> {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(d, m)| m.iter().map(move |(v, c)| (d as u8, v, c)))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct EntityState {
    pub(super) entity: Vec<(String, String)>,
    pub(super) account_id: String,
    pub(super) region: String,
    pub(super) forest: ThresholdedForest,
    pub(super) baseline: Baseline,
    /// Consecutive windows with activity, for "steadily active".
    pub(super) active_streak: u32,
    /// Contributor occurrences in earlier windows (bounded).
    pub(super) seen: HashMap<(u8, String), u64>,
    pub(super) account: Arc<AccountMetadata>,
    /// Start of the last window with events: the longest idle are evicted
    /// first.
    pub(super) last_active_ms: i64,
    /// Expected primary-feature total of the current run of silent
    /// windows (0 when the last window had events).
    #[serde(default)]
    pub(super) silent_expected: f64,
    /// The primary feature's (actual, expected, dispersion) in the last
    /// [`SUSTAINED_WINDOWS`] windows, for a rise no window alone shows.
    #[serde(default)]
    pub(super) recent: std::collections::VecDeque<(f32, f32, f32)>,
    /// Per day of the last week, the largest ratio of a two-hour span's
    /// total to its expected total (over spans expected to hold
    /// [`SWING_MIN_EVENTS`] or more): how far this entity's days swing (a
    /// sandbox's busy day is twice the usual), which a sustained rise must
    /// clear by `sustained_margin`.
    #[serde(default)]
    pub(super) swings: Vec<(i32, f32)>,
    /// How much more the primary feature scatters around its expectation
    /// than counts of independent events would (variance over mean, in
    /// event units; about a day's memory): a function fed by a queue comes
    /// in clumps, and its sums over hours are judged by that, not as
    /// Poisson counts.
    #[serde(default)]
    pub(super) overdispersion: f32,
}

/// Expected events (in event units) a span needs for its ratio to say
/// something about the day rather than about chance.
pub(super) const SWING_MIN_EVENTS: f64 = 5.0;

/// Span, in windows, the day-to-day swing is measured over.
pub(super) const SWING_SPAN: usize = 12;

impl EntityState {
    /// Learns the overdispersion from one window (actual, expected,
    /// dispersion) of the primary feature.
    pub(super) fn note_scatter(&mut self, x: f64, e: f64, d: f64) {
        if d <= 0.0 {
            return;
        }
        let (ux, ue) = (x / d, e / d);
        let phi = ((ux - ue) * (ux - ue) / ue.max(0.25)).min(1e4) as f32;
        self.overdispersion += (phi - self.overdispersion) / 144.0;
    }

    /// Notes the span ending with the window just pushed to `recent`.
    pub(super) fn note_swing(&mut self, window_start_ms: i64) {
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
    pub(super) fn usual_swing(&self, window_start_ms: i64) -> Option<f64> {
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
pub(super) const SUSTAINED_WINDOWS: usize = SUSTAINED_SPANS[SUSTAINED_SPANS.len() - 1];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct DetectorState {
    pub(super) spec: DetectorSpec,
    /// Checkpointed one by one (see [`Checkpoint`]), not with the rest.
    #[serde(skip)]
    pub(super) entities: HashMap<String, EntityState>,
    pub(super) open: BTreeMap<i64, HashMap<String, WindowAgg>>,
    /// Start of the oldest window not yet closed; None before any event.
    pub(super) next_close: Option<i64>,
    /// Until a window has closed, an event older than `next_close` moves
    /// it back instead of being late (the first event to arrive need not
    /// be the oldest).
    pub(super) closed_any: bool,
    /// Windows closed in a row in which no entity had an event.
    pub(super) silent_windows: u64,
    pub(super) late_events: u64,
    /// Accounts rising in the last few windows (see `Engine::coordinate`).
    #[serde(default)]
    pub(super) rising: Vec<Rising>,
}

/// First-seen times per account, for "new region", "new principal", "new IP".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct AccountHistory {
    pub(super) first_seen_ms: i64,
    pub(super) regions: HashMap<String, i64>,
    /// [principal, source_ip, user_agent] value → first seen.
    pub(super) values: [HashMap<String, i64>; 3],
}

impl AccountHistory {
    /// Whether `value` of dimension `dim` (principal, source IP, user
    /// agent) was first seen within `horizon` before `now`, in an account
    /// watched for longer than that: new to it, not new to us.
    pub(super) fn is_new(&self, dim: usize, value: &str, now: i64, horizon: i64) -> bool {
        self.values
            .get(dim)
            .and_then(|m| m.get(value))
            .is_some_and(|first| *first >= now - horizon && *first - self.first_seen_ms >= horizon)
    }
}

impl DetectorState {
    pub(super) fn new(spec: DetectorSpec) -> Self {
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
