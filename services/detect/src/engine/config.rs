//! What the engine is told: thresholds, windows, suppressions and limits, with the defaults the README documents.

#[allow(unused_imports)]
use super::*;

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
    /// A rise in an entity's events over the last one, two or three hours
    /// is raised though no window alone is (a night's launches several
    /// times over, still below the day's) when, against the same hours of
    /// at least four earlier days, it is above every one of them,
    /// `sustained_ratio` times their mean, and this unlikely in standard
    /// normal units (quasi-Poisson, widened by the days' own scatter and
    /// by how clumped the entity's events are). Only entities with at
    /// most one event per window on those days, whose events do not come
    /// in bursts, are judged: elsewhere the windows show a rise
    /// themselves, or a burst passes for one; nor in development, testing
    /// and sandbox accounts, whose busy days are their swing. 0 turns it
    /// off. Default 4: on the hard profile's looked-at seeds it found 4 of
    /// 16 night-time rises (none without) for about 0.02 of precision.
    pub sustained_z: f64,
    /// …and the ratio of that sum to the earlier days' mean.
    pub sustained_ratio: f64,
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
pub(super) const SILENT_WINDOWS_JUDGED: u64 = 288;

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
            sustained_z: 4.0,
            sustained_ratio: 2.5,
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
