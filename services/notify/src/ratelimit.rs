//! Per-channel rate limits: a token bucket refilled at `per_minute / 60`
//! tokens a second, holding at most `burst`. A message that finds the
//! bucket empty is not queued but recorded SKIPPED (see
//! `ChannelConfig::rate_limit_per_minute` for why).

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_minute: u32,
    capacity: f64,
    tokens: f64,
    refill_per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// `per_minute = 0` means unlimited.
    pub fn new(per_minute: u32, burst: Option<u32>) -> Self {
        let capacity = f64::from(burst.unwrap_or(per_minute).max(1));
        Self {
            per_minute,
            capacity,
            tokens: capacity,
            refill_per_sec: f64::from(per_minute) / 60.0,
            last: Instant::now(),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.refill_per_sec,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, Some(2));
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(b.try_take(t0 + Duration::from_millis(1001)).is_ok());
        let mut unlimited = TokenBucket::new(0, None);
        for _ in 0..10_000 {
            assert!(unlimited.try_take(t0).is_ok());
        }
    }
}
