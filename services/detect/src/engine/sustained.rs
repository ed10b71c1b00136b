//! The sustained-rise rule (off by default): sums of the last one to three hours judged as counts, quasi-Poisson, beyond the entity's usual swing.

#[allow(unused_imports)]
use super::*;

/// A rise of the primary feature summed over the last one, two or three
/// hours, judged as counts: a night's launches three or four times over
/// are 0–2 per window, which no window shows, but a dozen where three are
/// usual is as unlikely by chance as a spike.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sustained {
    /// The Poisson tail probability of the sum, as standard normal units
    /// (corrected for the three spans tried); 0 when not judged.
    pub(super) z: f64,
    pub(super) excess: f64,
    /// The largest one window's excess: a sustained rise is spread over
    /// the span, not one burst.
    pub(super) largest: f64,
}

/// Spans a sustained rise is summed over, in windows (1, 2 and 3 hours
/// at 10 minutes).
pub(super) const SUSTAINED_SPANS: [usize; 3] = [6, 12, 18];

impl Sustained {
    /// `recent` and `now` are (actual, expected, dispersion) of the primary
    /// feature; a dispersion of 0 (a measurement) is never judged, nor a
    /// span below `min_ratio` times its expected total (most, and cheaply).
    pub(super) fn of(
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
pub(super) struct SpanTotals {
    pub(super) x: f64,
    pub(super) e: f64,
    pub(super) d: f64,
    pub(super) largest: f64,
}

impl SpanTotals {
    /// None when a window is a measurement (dispersion 0), not a count.
    pub(super) fn of(windows: impl Iterator<Item = (f64, f64, f64)>) -> Option<Self> {
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
pub(super) fn widen(&(x, e, d): &(f32, f32, f32)) -> (f64, f64, f64) {
    (f64::from(x), f64::from(e), f64::from(d))
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
