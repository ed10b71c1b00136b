//! Delivering one payload with bounded retries, written once for every
//! channel kind.
//!
//! Each attempt is bounded by the channel's timeout, so a webhook that
//! hangs costs at most `timeout × max_attempts` plus the pauses, and only
//! to its own delivery: other channels' deliveries run beside it. Between
//! attempts the pause is the server's `Retry-After` when it sent one (up to
//! `max_retry_after`; longer ends the retries), otherwise exponential
//! backoff with full jitter — a random pause in `0..=min(max_backoff,
//! initial_backoff × 2^(n-1))` — so many notifiers retrying one endpoint
//! spread out instead of arriving together.

use std::time::Duration;

use crate::channel::{Channel, Payload, SendError};
use crate::config::RetryConfig;

/// How one channel retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn from_config(c: &RetryConfig, timeout: Option<Duration>, attempts: Option<u32>) -> Self {
        Self {
            max_attempts: attempts.unwrap_or(c.max_attempts).max(1),
            initial_backoff: c.initial_backoff,
            max_backoff: c.max_backoff,
            timeout: timeout.unwrap_or(c.timeout),
            max_retry_after: c.max_retry_after,
        }
    }

    /// The pause before retry number `retry` (1 = after the first attempt):
    /// uniformly random up to the exponential cap.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1).min(30)));
        let cap = exp.min(self.max_backoff);
        if cap.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(
            0..=cap.as_nanos().min(u64::MAX as u128) as u64,
        ))
    }
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `Err` holds the last failure's reason, secrets scrubbed.
    pub result: Result<(), String>,
    pub attempts: u32,
}

/// Sends `payload` on `channel`, retrying as `policy` says; `on_retry` is
/// called before each retry (for the stats).
pub async fn deliver(
    channel: &dyn Channel,
    payload: &Payload,
    policy: &RetryPolicy,
    on_retry: impl Fn(),
) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match tokio::time::timeout(policy.timeout, channel.send(payload)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::retryable(format!(
                "timed out after {}",
                humantime::format_duration(policy.timeout)
            ))),
        };
        let fail = |reason: String| Outcome {
            result: Err(channel.scrub(&reason)),
            attempts: attempt,
        };
        let (reason, retry_after) = match result {
            Ok(()) => {
                return Outcome {
                    result: Ok(()),
                    attempts: attempt,
                };
            }
            Err(SendError::Permanent { reason }) => {
                return fail(format!("{reason} (not retryable)"));
            }
            Err(SendError::Retryable {
                reason,
                retry_after,
            }) => (reason, retry_after),
        };
        if attempt >= policy.max_attempts {
            return fail(format!("{reason} (gave up after {attempt} attempts)"));
        }
        let pause = match retry_after {
            Some(ra) if ra > policy.max_retry_after => {
                return fail(format!(
                    "{reason}; the server asked to retry after {}, longer than max_retry_after {}",
                    humantime::format_duration(ra),
                    humantime::format_duration(policy.max_retry_after)
                ));
            }
            Some(ra) => ra,
            None => policy.backoff(attempt),
        };
        tracing::debug!(attempt, pause = ?pause, reason = %channel.scrub(&reason), "retrying delivery");
        on_retry();
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            timeout: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(2) <= Duration::from_millis(200));
            assert!(p.backoff(3) <= Duration::from_millis(350));
            assert!(p.backoff(40) <= Duration::from_millis(350));
        }
        // Full jitter: pauses spread over the range rather than sitting at the cap.
        let spread: std::collections::BTreeSet<u128> =
            (0..50).map(|_| p.backoff(3).as_millis() / 50).collect();
        assert!(spread.len() > 3, "{spread:?}");
    }
}
