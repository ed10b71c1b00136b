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
    /// Events per window over the last two weeks, while the sustained
    /// rule is on.
    #[serde(default)]
    pub(super) counts: Counts,
}

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
