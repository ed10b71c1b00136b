//! One retry policy for every hop and every backend call.
//!
//! Waits double from a first pause up to a cap and are jittered (uniformly
//! between half and all of the nominal wait), so clients that failed
//! together — every replica after a restart of the service they call — do
//! not retry together, and no wait is shorter than half what the policy
//! says. [`Backoff`] is the schedule for loops that retry until stopped;
//! [`retry`] runs one call again while its error is retryable and its
//! patience lasts.

use std::future::Future;
use std::time::Duration;

/// Exponential backoff with jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            next: None,
        }
    }

    /// The nominal wait after one more failure (before jitter): `first`,
    /// then doubling up to `max`.
    pub fn nominal(&mut self) -> Duration {
        let d = self.next.unwrap_or(self.first);
        self.next = Some(d.saturating_mul(2).min(self.max));
        d
    }

    /// The wait before the next attempt after one more failure: the
    /// nominal wait, jittered into [half, all] of it.
    pub fn fail(&mut self) -> Duration {
        jitter(self.nominal())
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// Whether the schedule has reached its cap.
    pub fn at_cap(&self) -> bool {
        self.next.is_some_and(|n| n >= self.max)
    }
}

/// `d` jittered uniformly into [d/2, d].
pub fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let spread = (d - half).as_nanos().min(u128::from(u64::MAX)) as u64;
    half + Duration::from_nanos(rand::random_range(0..=spread))
}

/// How long one call is retried: waits from `first` doubling to `max`,
/// attempts until `patience` has passed since the first (a patience of
/// zero: one attempt, as the hops had before this helper).
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub first: Duration,
    pub max: Duration,
    pub patience: Duration,
}

impl Policy {
    /// A pipeline hop (ingest → enrich → detect → insights): quick first
    /// retries, then patience for a restart.
    pub fn hop(patience: Duration) -> Self {
        Self {
            first: Duration::from_millis(50),
            max: Duration::from_secs(2),
            patience,
        }
    }
}

/// Runs `call` until it succeeds, fails with an error `retryable` refuses,
/// or `policy`'s patience runs out (then the last error). `on_retry` sees
/// each error that will be retried, with the wait before the next attempt
/// (for counters and logs).
pub async fn retry<T, E, F, Fut>(
    policy: Policy,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, Duration),
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + policy.patience;
    let mut backoff = Backoff::new(policy.first, policy.max);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && tokio::time::Instant::now() < deadline => {
                let wait = backoff.fail();
                on_retry(&e, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One gRPC call to the next pipeline hop, `downstream`: retried on the
/// retryable codes for `patience` ([`Policy::hop`]), each retry logged at
/// debug; a failure is the downstream's refusal as a sink error.
pub async fn hop<T, F, Fut>(
    downstream: &str,
    patience: Duration,
    call: F,
) -> Result<T, trailhound_core::pipeline::SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    retry(
        Policy::hop(patience),
        |s: &tonic::Status| crate::status::is_retryable(s.code()),
        |s, wait| tracing::debug!(code = ?s.code(), ?wait, "{downstream} unavailable, retrying"),
        call,
    )
    .await
    .map_err(|s| crate::status::to_sink_error(downstream, &s))
}

/// Sleeps, or returns false early when `shutdown` is cancelled.
pub async fn sleep_or_stop(d: Duration, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_to_the_cap_jittered_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let nominal: Vec<u64> = (0..5).map(|_| b.nominal().as_secs()).collect();
        assert_eq!(nominal, vec![1, 2, 4, 5, 5]);
        assert!(b.at_cap());
        b.reset();
        assert!(!b.at_cap());
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
            let waits: Vec<Duration> = (0..4).map(|_| b.fail()).collect();
            for (w, n) in waits.iter().zip([1, 2, 4, 5]) {
                let n = Duration::from_secs(n);
                assert!(*w >= n / 2 && *w <= n, "{w:?} outside [{:?}, {n:?}]", n / 2);
            }
        }
        // Jittered: not every wait is the same.
        let waits: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(5)).fail())
            .collect();
        assert!(waits.len() > 1);
    }

    /// [`retry`] of an operation that always fails with `error` (only
    /// "transient" is worth retrying), counting its calls in `calls`.
    async fn always_failing(
        policy: Policy,
        error: &'static str,
        calls: &AtomicU32,
    ) -> Result<(), &'static str> {
        retry(
            policy,
            |e: &&str| *e == "transient",
            |_, _| {},
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(error)
            },
        )
        .await
    }

    #[tokio::test]
    async fn retry_stops_at_success_at_a_permanent_error_or_when_patience_ends() {
        let policy = Policy {
            first: Duration::from_millis(5),
            max: Duration::from_millis(40),
            patience: Duration::from_millis(300),
        };
        let calls = AtomicU32::new(0);
        let seen = AtomicU32::new(0);
        // Two transient failures, then success.
        let r: Result<u32, &str> = retry(
            policy,
            |e: &&str| *e == "transient",
            |_, _| {
                seen.fetch_add(1, Ordering::Relaxed);
            },
            || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0 | 1 => Err("transient"),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(r, Ok(2));
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        // A permanent error is returned at once.
        calls.store(0, Ordering::Relaxed);
        let r = always_failing(policy, "permanent", &calls).await;
        assert_eq!(r, Err("permanent"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // Always transient: retried until the patience has passed, then
        // the last error.
        calls.store(0, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let r = always_failing(policy, "transient", &calls).await;
        assert_eq!(r, Err("transient"));
        assert!(started.elapsed() >= policy.patience);
        assert!(calls.load(Ordering::Relaxed) > 3);
        // No patience: one attempt, no retry.
        calls.store(0, Ordering::Relaxed);
        let none = Policy {
            patience: Duration::ZERO,
            ..policy
        };
        let r = always_failing(none, "transient", &calls).await;
        assert_eq!(r, Err("transient"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
