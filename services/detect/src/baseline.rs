//! What "normal" is for one entity: a seasonal baseline per feature.
//!
//! CloudTrail usage has strong daily and weekly rhythms, and a Random Cut
//! Forest over raw counts sees a quiet night as an outlier against a busy
//! day, or misses a night-time rise that stays below the daytime peak. So
//! the forest is fed residuals instead: how far a window is from what the
//! same time of day looked like on recent days of the same kind (weekday or
//! weekend), in units of that entity's own noise. The baseline also gives
//! the expected value and band that anomalies and usage series report.

use serde::{Deserialize, Serialize};

/// Days of history kept per slot.
pub const HISTORY_DAYS: usize = 14;

/// One entity's baseline across its features.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    slots: usize,
    features: usize,
    /// [feature][slot][day % HISTORY_DAYS], NaN where nothing was recorded.
    history: Vec<f32>,
    /// The day number (days since epoch) each ring cell was written on.
    history_day: Vec<i32>,
    /// EWMA level per feature, for when no seasonal history exists yet.
    level: Vec<f64>,
    /// EW variance of residuals per feature, from normal windows only.
    resid_var: Vec<f64>,
    windows: u64,
    /// Treat values as counts of events: noise at least that of a
    /// compound Poisson process.
    counts: bool,
    /// Decayed sums of each feature's values and of events, whose ratio is
    /// the typical value per event (1 for counts, the usual volume size for
    /// GiB sums). A sum of N events of size u has noise ≈ u·√(N + 1), not
    /// √(sum + 1).
    unit_values: Vec<f64>,
    unit_events: f64,
    /// Decayed mean of the squared value of single-event windows: E[v²],
    /// which sets the noise of a sum of heavy-tailed sizes (one 500 GiB
    /// volume among many 8 GiB ones).
    square_values: Vec<f64>,
    square_windows: f64,
    /// The values anomalous windows really had: `history` keeps them
    /// clipped (one storm must not skew the days after), but a weekly job
    /// seen once is expected at its real size a week later.
    /// (day, slot, values), for the last [`HISTORY_DAYS`] days.
    #[serde(default)]
    raw_anomalous: Vec<(i32, u16, Vec<f32>)>,
    /// Share of recent windows (about three days) with events.
    #[serde(default)]
    active_share: f64,
    /// Per day of the last week, each feature's largest excess of a window
    /// over its expectation (real values): (day, excesses).
    #[serde(default)]
    daily_max: Vec<(i32, Vec<f32>)>,
}

const ACTIVE_ALPHA: f64 = 1.0 / 432.0;
const PEAK_DAYS: i64 = 7;

/// Expected value and noise scale of one feature in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expectation {
    pub expected: f64,
    pub scale: f64,
    /// The most this slot (± one window) had on the same weekday one and
    /// two weeks ago, 0 when that is not known: a weekly job. A spike must
    /// also clear this.
    pub weekly: f64,
    /// The largest excess over expected of a window not raised in the last
    /// seven days (0 with none): bursts at any hour, of a size the entity
    /// has already had without anyone calling them anomalous, are its
    /// habit (a function fired by a queue), and a spike must clear them
    /// too. Raised windows are left out, so one storm does not excuse the
    /// next.
    pub usual_peak: f64,
    /// Variance over mean of the feature's events for counts and sums of
    /// sizes (E[v²]/E[v]; 1 for a plain count): X/dispersion is roughly
    /// Poisson, which is how a rise summed over hours is judged. 0 for
    /// measurements, which are not counts.
    pub dispersion: f64,
}

const LEVEL_ALPHA: f64 = 0.1;
const VAR_ALPHA: f64 = 0.02;
/// Per active window: the typical size per event follows the last few
/// hundred events.
const UNIT_DECAY: f64 = 0.995;

/// Saturday or Sunday (UTC), for days since the epoch.
pub fn is_weekend(day: i64) -> bool {
    // 1970-01-01 was a Thursday: day 2 is Saturday, day 3 Sunday.
    matches!(day.rem_euclid(7), 2 | 3)
}

impl Baseline {
    /// A baseline for event counts and sums (noise at least Poisson).
    pub fn new(features: usize, interval_ms: i64) -> Self {
        Self::with_noise_floor(features, interval_ms, true)
    }

    /// `counts: false` for measurements (CPU %, latency) whose noise has
    /// nothing to do with their level.
    pub fn with_noise_floor(features: usize, interval_ms: i64, counts: bool) -> Self {
        let slots = (86_400_000 / interval_ms.max(60_000)).max(1) as usize;
        let cells = features * slots * HISTORY_DAYS;
        Self {
            slots,
            features,
            history: vec![f32::NAN; cells],
            history_day: vec![i32::MIN; slots * HISTORY_DAYS],
            level: vec![0.0; features],
            resid_var: vec![0.0; features],
            windows: 0,
            counts,
            unit_values: vec![0.0; features],
            unit_events: 0.0,
            square_values: vec![0.0; features],
            square_windows: 0.0,
            raw_anomalous: Vec::new(),
            active_share: 1.0,
            daily_max: Vec::new(),
        }
    }

    /// The largest of the last week's daily maximal excesses of feature
    /// `f` (before `day`), raised windows left out.
    fn usual_peak(&self, f: usize, day: i64) -> f64 {
        let top = self
            .daily_max
            .iter()
            .filter(|(d, _)| i64::from(*d) < day && day - i64::from(*d) <= PEAK_DAYS)
            .filter_map(|(_, v)| v.get(f).copied())
            .fold(0.0f32, f32::max);
        f64::from(top.max(0.0))
    }

    /// Notes whether a window had events and, unless it was raised, its
    /// real excess over `expected` for the daily maxima.
    pub fn note_window(
        &mut self,
        window_start_ms: i64,
        values: &[f64],
        expected: &[Expectation],
        events: u64,
        raised: bool,
    ) {
        let active = if events > 0 { 1.0 } else { 0.0 };
        self.active_share += ACTIVE_ALPHA * (active - self.active_share);
        if events == 0 || raised {
            return;
        }
        let (_, day) = self.slot_of(window_start_ms);
        let Ok(day) = i32::try_from(day) else { return };
        let excess = values
            .iter()
            .zip(expected)
            .map(|(v, e)| (v - e.expected) as f32);
        match self.daily_max.iter_mut().find(|(d, _)| *d == day) {
            Some((_, m)) => {
                for (m, x) in m.iter_mut().zip(excess) {
                    *m = m.max(x);
                }
            }
            None => {
                self.daily_max
                    .retain(|(d, _)| i64::from(day) - i64::from(*d) <= PEAK_DAYS);
                self.daily_max.push((day, excess.collect()));
            }
        }
    }

    /// Share of recent windows with events.
    pub fn active_share(&self) -> f64 {
        self.active_share
    }

    pub fn windows(&self) -> u64 {
        self.windows
    }

    fn slot_of(&self, window_start_ms: i64) -> (usize, i64) {
        let day = window_start_ms.div_euclid(86_400_000);
        let in_day = window_start_ms.rem_euclid(86_400_000);
        let slot = (in_day as u128 * self.slots as u128 / 86_400_000) as usize;
        (slot.min(self.slots - 1), day)
    }

    /// Values recorded at `slot` ± 1 on earlier days of the same kind
    /// (weekday/weekend) as `day`; all earlier days when there are fewer than
    /// two of the same kind.
    fn seasonal_values(&self, feature: usize, slot: usize, day: i64, out: &mut Vec<f64>) {
        out.clear();
        let weekend = is_weekend(day);
        let mut any = Vec::new();
        let mut days_same = 0;
        let mut days_any = 0;
        for d in 0..HISTORY_DAYS {
            let cell_day = self.history_day[slot * HISTORY_DAYS + d];
            if cell_day == i32::MIN || i64::from(cell_day) >= day {
                continue;
            }
            let same = is_weekend(i64::from(cell_day)) == weekend;
            days_any += 1;
            if same {
                days_same += 1;
            }
            for ds in [self.slots - 1, 0, 1] {
                let s = (slot + ds) % self.slots;
                let idx = ((feature * self.slots + s) * HISTORY_DAYS) + d;
                let v = self.history[idx];
                if v.is_finite() && self.history_day[s * HISTORY_DAYS + d] == cell_day {
                    if same {
                        out.push(f64::from(v));
                    }
                    any.push(f64::from(v));
                }
            }
        }
        if days_same < 2 {
            out.clear();
            if days_any >= 2 {
                out.extend(any);
            }
        }
    }

    /// The most feature `f` had at `slot` ± 1 on the same weekday 7 and 14
    /// days before `day` (real values, not clipped), or 0.
    fn weekly(&self, f: usize, slot: usize, day: i64) -> f64 {
        let mut most = 0.0f64;
        for back in [7i64, 14] {
            let d = day - back;
            let Ok(d32) = i32::try_from(d) else { continue };
            let cell = d.rem_euclid(HISTORY_DAYS as i64) as usize;
            for ds in [self.slots - 1, 0, 1] {
                let s = (slot + ds) % self.slots;
                if self.history_day[s * HISTORY_DAYS + cell] != d32 {
                    continue;
                }
                let raw = self
                    .raw_anomalous
                    .iter()
                    .find(|(rd, rs, _)| *rd == d32 && usize::from(*rs) == s)
                    .and_then(|(_, _, v)| v.get(f).copied());
                let v = raw.unwrap_or(self.history[((f * self.slots + s) * HISTORY_DAYS) + cell]);
                if v.is_finite() {
                    most = most.max(f64::from(v));
                }
            }
        }
        most
    }

    /// Keeps what an anomalous window really had (see `raw_anomalous`).
    pub fn record_anomalous_raw(&mut self, window_start_ms: i64, values: &[f64]) {
        let (slot, day) = self.slot_of(window_start_ms);
        let Ok(day) = i32::try_from(day) else { return };
        self.raw_anomalous
            .retain(|(d, _, _)| i64::from(day) - i64::from(*d) <= HISTORY_DAYS as i64);
        // Bounded whatever happens: a few per day is the normal case.
        if self.raw_anomalous.len() >= 4 * HISTORY_DAYS * 8 {
            self.raw_anomalous.remove(0);
        }
        self.raw_anomalous
            .push((day, slot as u16, values.iter().map(|v| *v as f32).collect()));
    }

    /// What each feature is expected to be in the window starting at
    /// `window_start_ms`, with its noise scale.
    pub fn expect(&self, window_start_ms: i64, out: &mut Vec<Expectation>) {
        out.clear();
        let (slot, day) = self.slot_of(window_start_ms);
        let mut vals = Vec::with_capacity(3 * HISTORY_DAYS);
        for f in 0..self.features {
            self.seasonal_values(f, slot, day, &mut vals);
            // A trimmed mean: unbiased for sparse counts, whose median is 0
            // (which would make any small burst look huge), and robust to one
            // anomalous day (its values are the ones trimmed).
            let expected = if vals.is_empty() {
                self.level[f]
            } else {
                vals.sort_by(f64::total_cmp);
                let trim = if vals.len() >= 6 {
                    vals.len().div_ceil(10)
                } else {
                    0
                };
                let kept = &vals[..vals.len() - trim];
                kept.iter().sum::<f64>() / kept.len() as f64
            };
            // Counts are roughly Poisson: noise grows with the square root of
            // the level. Sums (GiB) spread wider; the residual variance
            // learned from normal windows captures that.
            let mut dispersion = 0.0;
            let floor = if self.counts {
                // Compound Poisson: N ~ Poisson(λ) events of size v has
                // variance λ·E[v²]; +1 keeps quiet entities from alarming on
                // a single event.
                let u = if self.unit_events > 0.0 {
                    (self.unit_values[f] / self.unit_events).max(1e-9)
                } else {
                    1.0
                };
                let v2 = if self.square_windows > 0.0 {
                    (self.square_values[f] / self.square_windows).max(u * u)
                } else {
                    u * u
                };
                dispersion = v2 / u;
                ((expected.abs() / u + 1.0) * v2).sqrt()
            } else {
                1e-3 * (expected.abs() + 1.0)
            };
            let scale = floor.max(self.resid_var[f].sqrt());
            let weekly = self.weekly(f, slot, day);
            out.push(Expectation {
                expected,
                scale,
                weekly,
                usual_peak: self.usual_peak(f, day),
                dispersion,
            });
        }
    }

    /// Records a closed window. Anomalous windows go into the seasonal
    /// history (the median shrugs off a day of them, and a lasting change
    /// must be learned eventually) but not into the noise estimate.
    pub fn record(
        &mut self,
        window_start_ms: i64,
        values: &[f64],
        expected: &[Expectation],
        anomalous: bool,
    ) {
        self.record_events(window_start_ms, values, 0, expected, anomalous)
    }

    /// Like [`record`](Self::record), also learning each feature's value per
    /// event from a window that had `events` events.
    pub fn record_events(
        &mut self,
        window_start_ms: i64,
        values: &[f64],
        events: u64,
        expected: &[Expectation],
        anomalous: bool,
    ) {
        let (slot, day) = self.slot_of(window_start_ms);
        let d = day.rem_euclid(HISTORY_DAYS as i64) as usize;
        self.history_day[slot * HISTORY_DAYS + d] =
            day.clamp(i64::from(i32::MIN + 1), i64::from(i32::MAX)) as i32;
        for (f, &v) in values.iter().enumerate().take(self.features) {
            let idx = ((f * self.slots + slot) * HISTORY_DAYS) + d;
            self.history[idx] = v as f32;
            if !anomalous {
                if events > 0 {
                    self.unit_values[f] = self.unit_values[f] * UNIT_DECAY + v;
                }
                self.level[f] += LEVEL_ALPHA * (v - self.level[f]);
                if let Some(e) = expected.get(f) {
                    let r = v - e.expected;
                    self.resid_var[f] += VAR_ALPHA * (r * r - self.resid_var[f]);
                }
            }
        }
        if !anomalous && events > 0 {
            self.unit_events = self.unit_events * UNIT_DECAY + events as f64;
        }
        if !anomalous && events == 1 {
            for (sq, v) in self.square_values.iter_mut().zip(values) {
                *sq = *sq * UNIT_DECAY + v * v;
            }
            self.square_windows = self.square_windows * UNIT_DECAY + 1.0;
        }
        self.windows += 1;
    }
}

impl Baseline {
    /// Records the windows from `from_ms` up to `to_ms` (window starts) as
    /// silent, at a cost bounded by the history kept, not by the length of
    /// the silence: only its last [`HISTORY_DAYS`] can be remembered.
    pub fn record_silence(&mut self, from_ms: i64, to_ms: i64) {
        let interval = (86_400_000 / self.slots as i64).max(1);
        let span = HISTORY_DAYS as i64 * 86_400_000;
        let windows = (to_ms.saturating_sub(from_ms) / interval).max(0);
        let start = from_ms.max(to_ms.saturating_sub(span));
        let start = start + (from_ms - start).rem_euclid(interval);
        let mut t = start;
        while t < to_ms {
            let (slot, day) = self.slot_of(t);
            let d = day.rem_euclid(HISTORY_DAYS as i64) as usize;
            self.history_day[slot * HISTORY_DAYS + d] =
                day.clamp(i64::from(i32::MIN + 1), i64::from(i32::MAX)) as i32;
            for f in 0..self.features {
                self.history[((f * self.slots + slot) * HISTORY_DAYS) + d] = 0.0;
            }
            t += interval;
        }
        self.active_share *= (1.0 - ACTIVE_ALPHA).powi(windows.min(i64::from(i32::MAX)) as i32);
        let decay = (1.0 - LEVEL_ALPHA).powi(windows.min(i64::from(i32::MAX)) as i32);
        for l in &mut self.level {
            *l *= decay;
        }
        self.windows = self.windows.saturating_add(windows as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MIN: i64 = 600_000;
    const DAY: i64 = 86_400_000;
    // 2026-01-05, a Monday.
    const MONDAY: i64 = 1_767_571_200_000;

    fn daily(t: i64) -> f64 {
        let hour = (t.rem_euclid(DAY)) / 3_600_000;
        if (9..18).contains(&hour) { 100.0 } else { 10.0 }
    }

    #[test]
    fn learns_the_daily_rhythm() {
        let mut b = Baseline::new(1, TEN_MIN);
        let mut exp = Vec::new();
        for i in 0..(3 * 144) {
            let t = MONDAY + i * TEN_MIN;
            b.expect(t, &mut exp);
            b.record(t, &[daily(t)], &exp, false);
        }
        // Thursday 10:00 and 03:00.
        b.expect(MONDAY + 3 * DAY + 10 * 3_600_000, &mut exp);
        assert_eq!(exp[0].expected, 100.0);
        b.expect(MONDAY + 3 * DAY + 3 * 3_600_000, &mut exp);
        assert_eq!(exp[0].expected, 10.0);
        assert!(exp[0].scale >= (11.0f64).sqrt());
    }

    #[test]
    fn weekends_use_weekend_history_once_there_is_some() {
        let mut b = Baseline::new(1, TEN_MIN);
        let mut exp = Vec::new();
        for i in 0..(14 * 144) {
            let t = MONDAY + i * TEN_MIN;
            let day = t.div_euclid(DAY);
            let v = if is_weekend(day) { 5.0 } else { 50.0 };
            b.expect(t, &mut exp);
            b.record(t, &[v], &exp, false);
        }
        // The third Saturday: two Saturdays/Sundays of history exist.
        b.expect(MONDAY + 19 * DAY + 12 * 3_600_000, &mut exp);
        assert_eq!(exp[0].expected, 5.0);
        b.expect(MONDAY + 21 * DAY + 12 * 3_600_000, &mut exp);
        assert_eq!(exp[0].expected, 50.0);
    }

    #[test]
    fn a_silence_of_ages_costs_no_more_than_its_last_two_weeks() {
        let mut b = Baseline::new(1, TEN_MIN);
        let mut exp = Vec::new();
        for i in 0..(3 * 144) {
            let t = MONDAY + i * TEN_MIN;
            b.expect(t, &mut exp);
            b.record(t, &[daily(t)], &exp, false);
        }
        // A million days: a loop over every window would not end in time
        // for any test run.
        let from = MONDAY + 3 * DAY;
        let to = from + 1_000_000 * DAY;
        b.record_silence(from, to);
        assert_eq!(b.windows(), 3 * 144 + 1_000_000 * 144);
        // The last two weeks are remembered as silent.
        b.expect(to + 10 * 3_600_000, &mut exp);
        assert_eq!(exp[0].expected, 0.0);
    }

    #[test]
    fn without_history_the_level_is_the_expectation() {
        let mut b = Baseline::new(2, TEN_MIN);
        let mut exp = Vec::new();
        for i in 0..50 {
            let t = MONDAY + i * TEN_MIN;
            b.expect(t, &mut exp);
            b.record(t, &[4.0, 400.0], &exp, false);
        }
        b.expect(MONDAY + 50 * TEN_MIN, &mut exp);
        assert!((exp[0].expected - 4.0).abs() < 0.1, "{exp:?}");
        assert!((exp[1].expected - 400.0).abs() < 10.0, "{exp:?}");
    }

    #[test]
    fn the_usual_peak_leaves_raised_windows_out() {
        let mut b = Baseline::new(1, TEN_MIN);
        let e = [Expectation {
            expected: 1.0,
            scale: 1.0,
            weekly: 0.0,
            usual_peak: 0.0,
            dispersion: 1.0,
        }];
        // A burst of 20 on Monday (not raised), a storm of 200 on Tuesday
        // (raised).
        b.note_window(MONDAY + 3_600_000, &[21.0], &e, 21, false);
        b.note_window(MONDAY + DAY + 3_600_000, &[201.0], &e, 201, true);
        let mut exp = Vec::new();
        b.expect(MONDAY + 2 * DAY, &mut exp);
        assert_eq!(exp[0].usual_peak, 20.0);
    }
}
