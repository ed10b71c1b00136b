//! The figures every service reports alike (`trailhound.common.v1.ServiceStats`)
//! and the small, lock-light instruments services keep them with.
//!
//! Services already count what they do; these helpers add what plain
//! counters cannot give: latency percentiles ([`Histogram`]), recent rates
//! ([`RateMeter`]) and the age of the oldest unfinished work ([`Pending`]),
//! which is what pipeline lag means. One [`StatsHandle`] per server feeds
//! the `Stats` RPC, the Prometheus `/metrics` endpoint and OpenTelemetry
//! metrics, so the three never disagree.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trailhound_proto::common::v1::{LatencySummary, QueueDepth, ServiceStats};

/// Produces a service's figures on demand; cheap enough to call per scrape.
#[derive(Clone)]
pub struct StatsHandle(Arc<dyn Fn() -> ServiceStats + Send + Sync>);

impl StatsHandle {
    pub fn new(f: impl Fn() -> ServiceStats + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The figures `figures` reads off a service shared behind an `Arc`,
    /// e.g. `StatsHandle::of(ingest.clone(), Ingest::service_stats)`.
    pub fn of<T: Send + Sync + 'static>(service: Arc<T>, figures: fn(&T) -> ServiceStats) -> Self {
        Self::new(move || figures(&service))
    }

    pub fn get(&self) -> ServiceStats {
        (self.0)()
    }
}

/// The answer to a service's own `Stats` RPC: its figures with the
/// process's security figures, as ControlService.Stats gives them.
pub fn reply(figures: ServiceStats) -> Result<tonic::Response<ServiceStats>, tonic::Status> {
    Ok(tonic::Response::new(crate::security::with_figures(figures)))
}

/// A queue as `Stats` reports it; a `capacity` of 0 means unbounded.
pub fn queue(name: &str, depth: u64, capacity: u64) -> QueueDepth {
    QueueDepth {
        name: name.into(),
        depth,
        capacity,
    }
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsHandle")
    }
}

/// Quarter-octave buckets of microseconds: under 19% error at any scale,
/// from 1 µs to over an hour, in 1 KiB of atomics.
const BUCKETS: usize = 128;

/// A latency histogram that many threads record into without a lock.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    let idx = ((us as f64).log2() * 4.0).ceil() as usize;
    idx.min(BUCKETS - 1)
}

fn bucket_upper_us(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Times `f` and records it.
    pub async fn time<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = f.await;
        self.record(start.elapsed());
        out
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// p50/p95/p99 as bucket upper bounds, capped at the true maximum.
    pub fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let max_ms = self.max_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let pct = |q: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return (bucket_upper_us(i) / 1000.0).min(max_ms);
                }
            }
            max_ms
        };
        LatencySummary {
            count: total,
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            max_ms,
        }
    }
}

/// Per-second rates of two cumulative counters over roughly the last
/// `window`, from samples taken whenever stats are read.
#[derive(Debug)]
pub struct RateMeter {
    window: Duration,
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Default for RateMeter {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl RateMeter {
    pub fn new(window: Duration) -> Self {
        let mut samples = VecDeque::new();
        samples.push_back((Instant::now(), 0, 0));
        Self {
            window,
            samples: Mutex::new(samples),
        }
    }

    /// Records the counters now and returns (in/s, out/s) since the oldest
    /// sample still inside the window. A counter that went backwards (a
    /// reset) restarts the window instead of yielding a negative rate.
    pub fn rates(&self, events_in: u64, events_out: u64) -> (f64, f64) {
        self.rates_at(Instant::now(), events_in, events_out)
    }

    fn rates_at(&self, now: Instant, events_in: u64, events_out: u64) -> (f64, f64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, i, o)) = s.back()
            && (events_in < i || events_out < o)
        {
            s.clear();
        }
        // Keep one sample older than the window as the base.
        while s.len() >= 2 && now.duration_since(s[1].0) >= self.window {
            s.pop_front();
        }
        let rates = match s.front() {
            Some(&(t, i, o)) if now > t => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                (
                    events_in.saturating_sub(i) as f64 / dt,
                    events_out.saturating_sub(o) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        };
        // One sample per second at most keeps the deque small under scrapes.
        if s.back()
            .is_none_or(|b| now.duration_since(b.0) >= Duration::from_secs(1))
        {
            s.push_back((now, events_in, events_out));
        }
        rates
    }
}

/// Work that has arrived but not finished: its count and the age of the
/// oldest item, which is the lag this service adds to the pipeline.
#[derive(Debug, Default)]
pub struct Pending {
    next: AtomicU64,
    items: Mutex<BTreeMap<u64, Instant>>,
}

/// Ends a piece of pending work when dropped (also on error or cancel).
#[derive(Debug)]
pub struct PendingGuard<'a> {
    owner: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.owner
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Pending {
    /// Marks work as started; it counts until the guard is dropped.
    pub fn begin(&self) -> PendingGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
        PendingGuard { owner: self, id }
    }

    pub fn depth(&self) -> u64 {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// Seconds since the oldest unfinished item started; 0 when idle.
    pub fn oldest_age_seconds(&self) -> f64 {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .next()
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// The parts of [`ServiceStats`] every service fills the same way.
#[derive(Debug)]
pub struct Common {
    pub service: &'static str,
    pub started: Instant,
    pub rates: RateMeter,
}

impl Common {
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            started: Instant::now(),
            rates: RateMeter::default(),
        }
    }

    /// A ServiceStats with name, time, uptime, counters and rates set;
    /// the caller fills in the rest.
    pub fn stats(&self, events_in: u64, events_out: u64) -> ServiceStats {
        let (rate_in, rate_out) = self.rates.rates(events_in, events_out);
        ServiceStats {
            service: self.service.to_string(),
            collected_at: Some(trailhound_proto::time::from_millis(now_ms())),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            events_in,
            events_out,
            events_in_per_second: rate_in,
            events_out_per_second: rate_out,
            ..Default::default()
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_close_to_the_truth() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() / 50.0 < 0.2, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() / 99.0 < 0.2, "{s:?}");
        assert!(s.p99_ms <= s.max_ms && (s.max_ms - 100.0).abs() < 0.01);
        assert_eq!(Histogram::default().summary().p99_ms, 0.0);
    }

    #[test]
    fn rates_use_the_window_and_survive_a_reset() {
        let m = RateMeter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        m.samples.lock().unwrap()[0].0 = t0;
        let (i, o) = m.rates_at(t0 + Duration::from_secs(2), 200, 100);
        assert!((i - 100.0).abs() < 1e-6 && (o - 50.0).abs() < 1e-6);
        let (i, _) = m.rates_at(t0 + Duration::from_secs(30), 200, 100);
        assert!(i < 10.0, "old samples leave the window: {i}");
        let (i, o) = m.rates_at(t0 + Duration::from_secs(31), 5, 5);
        assert!(i >= 0.0 && o >= 0.0);
    }

    #[test]
    fn pending_reports_depth_and_age() {
        let p = Pending::default();
        assert_eq!(p.oldest_age_seconds(), 0.0);
        let g = p.begin();
        let _h = p.begin();
        assert_eq!(p.depth(), 2);
        drop(g);
        assert_eq!(p.depth(), 1);
    }
}
