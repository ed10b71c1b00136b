//! The sustained-rise rule: an entity's events over the last one to three hours against the same hours of earlier days (quasi-Poisson, and beyond every one of those days).

#[allow(unused_imports)]
use super::*;

/// A rise in how many events an entity had over the last one, two or
/// three hours, judged against the same hours of the days before: a
/// night's launches three or four times over are 0–2 per window, which no
/// window shows, but more than on any earlier night, and as unlikely as a
/// spike given how much those nights varied.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Sustained {
    /// The tail probability of the span's events against the earlier
    /// days' (quasi-Poisson, corrected for the spans tried), as standard
    /// normal units; 0 when not judged or not a rise.
    pub(super) z: f64,
    /// Events in the span beyond the earlier days' mean.
    pub(super) excess: f64,
    /// The span's events and the earlier days' mean and most.
    pub(super) total: f64,
    pub(super) mean: f64,
    pub(super) most: f64,
    /// The largest one window's events in the span: a sustained rise is
    /// spread over the span, not one burst (the spike rule's business).
    pub(super) largest: f64,
}

/// Span lengths a sustained rise is summed over, in hours.
pub(super) const SUSTAINED_HOURS: [i64; 3] = [1, 2, 3];

/// Events per window, on earlier days' average, above which an entity is
/// too busy for the sustained rule.
pub(super) const SPARSE_PER_WINDOW: f64 = 1.0;

/// Variance over mean of an entity's events per window above which its
/// events come in clumps and the sustained rule does not judge it.
pub(super) const MAX_CLUMPING: f64 = 3.0;

/// Days of per-window event counts kept for the day-over-day comparison.
pub(super) const COUNT_DAYS: i64 = 14;

/// Earlier days (of the same kind, weekday or weekend, when there are
/// enough) a span must be compared with before it is judged.
pub(super) const MIN_DAYS: usize = 4;

/// Events per window of one entity over the last [`COUNT_DAYS`] days, by
/// window number: what the same hours held on earlier days. Kept only
/// while the sustained rule is on (about 4 KB per entity at 10-minute
/// windows).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Counts {
    ring: Vec<u16>,
    /// Window numbers (start / interval) of the oldest and newest cells
    /// recorded; cells between hold counts, silent windows 0.
    first: i64,
    last: i64,
}

impl Counts {
    fn len(interval_ms: i64) -> usize {
        (COUNT_DAYS * 86_400_000 / interval_ms.max(60_000)).max(1) as usize
    }

    /// Records window `window` (a window number) with `events`; windows
    /// skipped since the last record were silent.
    pub(super) fn record(&mut self, window: i64, events: u64, interval_ms: i64) {
        let len = Self::len(interval_ms);
        if self.ring.len() != len {
            self.ring = vec![0; len];
            self.first = window;
            self.last = window - 1;
        }
        if window <= self.last {
            return;
        }
        let from = (self.last + 1).max(window - len as i64 + 1);
        for w in from..window {
            self.ring[w.rem_euclid(len as i64) as usize] = 0;
        }
        self.ring[window.rem_euclid(len as i64) as usize] = events.min(u64::from(u16::MAX)) as u16;
        self.last = window;
    }

    /// The events of window `window`, if it is recorded and still kept.
    pub(super) fn get(&self, window: i64) -> Option<f64> {
        let len = self.ring.len() as i64;
        (len > 0 && window >= self.first && window <= self.last && window > self.last - len)
            .then(|| f64::from(self.ring[window.rem_euclid(len) as usize]))
    }

    /// Variance over mean of the events per window recorded up to
    /// `before` (exclusive): 1 for events that come independently, far
    /// more for an entity whose events come in bursts. 1 with nothing
    /// known.
    pub(super) fn dispersion(&self, before: i64) -> f64 {
        let len = self.ring.len() as i64;
        let from = self.first.max(self.last - len + 1);
        let (mut n, mut sum, mut sq) = (0.0f64, 0.0f64, 0.0f64);
        for w in from..before.min(self.last + 1) {
            let x = f64::from(self.ring[w.rem_euclid(len) as usize]);
            n += 1.0;
            sum += x;
            sq += x * x;
        }
        if n < 2.0 || sum <= 0.0 {
            return 1.0;
        }
        let mean = sum / n;
        ((sq / n - mean * mean) / mean).max(1.0)
    }

    /// Events of the `span` windows ending with `end`, if all are known.
    pub(super) fn span_sum(&self, end: i64, span: i64) -> Option<f64> {
        (end - span + 1..=end).map(|w| self.get(w)).sum()
    }
}

impl Sustained {
    /// Judges the spans ending with the window `window` (not yet
    /// recorded), which had `now` events. `is_weekend(window)` tells the
    /// kind of day a window falls on. Spans below `min_ratio` times the
    /// earlier days' mean, or not above every one of them, are not rises.
    pub(super) fn of(
        counts: &Counts,
        window: i64,
        now: f64,
        interval_ms: i64,
        min_ratio: f64,
        is_weekend: impl Fn(i64) -> bool,
    ) -> Self {
        let interval = interval_ms.max(60_000);
        let per_day = 86_400_000 / interval;
        let weekend = is_weekend(window);
        let mut best = Self::default();
        let mut clumping = None;
        for hours in SUSTAINED_HOURS {
            let span = (hours * 3_600_000 / interval).max(1);
            let Some(before) = counts.span_sum(window - 1, span - 1) else {
                break;
            };
            let total = before + now;
            // A handful of events is no rise worth a test.
            if total < 6.0 {
                continue;
            }
            let mut same = Vec::with_capacity(COUNT_DAYS as usize);
            let mut any = Vec::with_capacity(COUNT_DAYS as usize);
            for d in 1..COUNT_DAYS {
                let end = window - d * per_day;
                let Some(s) = counts.span_sum(end, span) else {
                    break;
                };
                if is_weekend(end) == weekend {
                    same.push(s);
                }
                any.push(s);
            }
            let days = if same.len() >= MIN_DAYS { same } else { any };
            if days.len() < MIN_DAYS {
                continue;
            }
            let n = days.len() as f64;
            let mean = days.iter().sum::<f64>() / n;
            // Where earlier days had an event per window or more, a rise
            // of this size shows in the windows themselves (the spike
            // rule's); sums over hours are for what windows cannot show.
            if mean > SPARSE_PER_WINDOW * span as f64 {
                continue;
            }
            let most = days.iter().copied().fold(0.0, f64::max);
            if total <= most || total < min_ratio * mean.max(1.0) {
                continue;
            }
            // Still rising: the last hour holds its share of the rise, so a
            // sum that only remembers a rise over is not raised for hours.
            let hour = (3_600_000 / interval).clamp(1, span);
            let recent = counts.span_sum(window - 1, hour - 1).unwrap_or(0.0) + now;
            if recent < min_ratio * mean * hour as f64 / span as f64 {
                continue;
            }
            let var = days.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / (n - 1.0);
            // Quasi-Poisson: the earlier days' own scatter (a sandbox's busy
            // days) and the clumping of the entity's windows (a queue-fed
            // function's bursts) widen the test, never narrow it below
            // Poisson; the mean itself is known from n days only.
            let clumping = *clumping.get_or_insert_with(|| counts.dispersion(window - span));
            // An entity whose events come in clumps (a queue-fed function's
            // bursts) has sums over hours that say nothing a burst does not.
            if clumping > MAX_CLUMPING {
                break;
            }
            let phi = (var / mean.max(1.0)).max(clumping).max(1.0) * (1.0 + 1.0 / n);
            let ln_p = poisson_ln_tail(total / phi, mean.max(1.0) / phi)
                + (SUSTAINED_HOURS.len() as f64).ln();
            let z = normal_units(ln_p);
            if z > best.z {
                let largest = (window - span + 1..window)
                    .filter_map(|w| counts.get(w))
                    .fold(now, f64::max);
                best = Self {
                    z,
                    excess: total - mean,
                    total,
                    mean,
                    most,
                    largest,
                };
            }
        }
        best
    }
}

/// ln P(N ≥ k) for N ~ Poisson(mu), k real (the sum of the terms from k
/// on); 0 when k ≤ mu, where only large tails matter.
pub(super) fn poisson_ln_tail(k: f64, mu: f64) -> f64 {
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
pub(super) fn ln_gamma(x: f64) -> f64 {
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
pub(super) fn normal_units(ln_p: f64) -> f64 {
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
