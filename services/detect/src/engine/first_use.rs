//! An entity's first windows: the first use of a region, and activity too young to have a rhythm, raised only when significant.

#[allow(unused_imports)]
use super::*;

/// How an entity's first window looks: a first use of a region (raised
/// when significant, else counted), or activity of an account × region
/// detector too young to have a rhythm, in an account watched for as long
/// as an entity needs to have one (`min_history_hours`: IAM changes or
/// secret reads where there were next to none), raised
/// when it is both large and by a principal or from an address new to the
/// account.
#[allow(clippy::too_many_arguments)]
pub(super) fn first_seen(
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
        // Until the account itself has been watched as long as an entity
        // needs to have a rhythm, nothing about it is new: its weekly
        // jobs and first bursts are still being met for the first time.
        || start - h.first_seen_ms < horizon.max(cfg.min_history_hours as i64 * 3_600_000)
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
pub(super) fn first_use(
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

pub(super) fn note_first(map: &mut HashMap<String, i64>, key: &str, t: i64, cap: usize) {
    if let Some(first) = map.get_mut(key) {
        *first = (*first).min(t);
    } else if map.len() < cap {
        map.insert(key.to_string(), t);
    }
}

pub(super) fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether this window is the entity's first activity in a region its
/// account had never used before (and the account is old enough for
/// "never" to mean something).
pub(super) fn new_region(
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

/// The grade of a first window raised for its own sake, by its total: a
/// first use of a region starts higher than a young entity's burst.
pub(super) fn first_seen_grade(kind: AnomalyKind, total: f64) -> f64 {
    let base = if kind == AnomalyKind::NewRegion {
        0.6
    } else {
        0.5
    };
    (base + 0.1 * (1.0 + total).log2()).min(1.0)
}

/// Whether a window is its entity's first activity in a region the account
/// never used, and whether that matters on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FirstUse {
    No,
    /// Many events, a new principal or IP, or a notable value (GPU types).
    Significant,
    /// One ordinary call: context for later anomalies, not an alert.
    Insignificant,
    /// Not a new region, but the detector's first activity in the account
    /// and region: large, and by someone new.
    Activity,
}
