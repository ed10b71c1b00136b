//! Rate limits for automated recovery: each action on each service runs at
//! most once per `min_interval` and `max_per_hour` times an hour, so a
//! fault that recovery cannot fix produces a few logged attempts and an
//! alert, never a loop that hammers a struggling service.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::RecoveryConfig;

/// Remembers when each (action, service) last ran.
#[derive(Debug)]
pub struct Limiter {
    config: RecoveryConfig,
    runs: HashMap<(String, String), VecDeque<Instant>>,
}

/// Why an action was held back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Disabled,
    TooSoon { wait: Duration },
    HourlyLimit,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Disabled => f.write_str("recovery is disabled"),
            Refusal::TooSoon { wait } => {
                write!(f, "rate limited: next allowed in {}s", wait.as_secs())
            }
            Refusal::HourlyLimit => f.write_str("rate limited: hourly limit reached"),
        }
    }
}

impl Limiter {
    pub fn new(config: RecoveryConfig) -> Self {
        Self {
            config,
            runs: HashMap::new(),
        }
    }

    /// Takes a slot for `action` on `target` at `now`, or says why not.
    pub fn try_acquire(&mut self, action: &str, target: &str, now: Instant) -> Result<(), Refusal> {
        if !self.config.enabled {
            return Err(Refusal::Disabled);
        }
        let runs = self
            .runs
            .entry((action.to_string(), target.to_string()))
            .or_default();
        while runs
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            runs.pop_front();
        }
        if let Some(last) = runs.back() {
            let since = now.duration_since(*last);
            if since < self.config.min_interval {
                return Err(Refusal::TooSoon {
                    wait: self.config.min_interval - since,
                });
            }
        }
        if runs.len() >= self.config.max_per_hour as usize {
            return Err(Refusal::HourlyLimit);
        }
        runs.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_interval_and_respects_the_hourly_cap() {
        let mut l = Limiter::new(RecoveryConfig {
            enabled: true,
            min_interval: Duration::from_secs(60),
            max_per_hour: 2,
        });
        let t0 = Instant::now();
        assert!(l.try_acquire("replay", "ingest", t0).is_ok());
        for s in [0, 1, 30, 59] {
            assert!(matches!(
                l.try_acquire("replay", "ingest", t0 + Duration::from_secs(s)),
                Err(Refusal::TooSoon { .. })
            ));
        }
        // Another action or service has its own budget.
        assert!(l.try_acquire("replay", "enrich", t0).is_ok());
        assert!(l.try_acquire("reconnect", "ingest", t0).is_ok());
        assert!(
            l.try_acquire("replay", "ingest", t0 + Duration::from_secs(60))
                .is_ok()
        );
        assert_eq!(
            l.try_acquire("replay", "ingest", t0 + Duration::from_secs(200)),
            Err(Refusal::HourlyLimit)
        );
        assert!(
            l.try_acquire("replay", "ingest", t0 + Duration::from_secs(3601))
                .is_ok()
        );
        let mut off = Limiter::new(RecoveryConfig {
            enabled: false,
            ..Default::default()
        });
        assert_eq!(off.try_acquire("a", "b", t0), Err(Refusal::Disabled));
    }
}
