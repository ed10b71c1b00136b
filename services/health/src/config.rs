//! The `[health]` section: which services to watch, how often, the
//! objectives that decide SERVING / DEGRADED / NOT_SERVING, how recovery is
//! rate-limited, and where alerts and dashboard data come from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Explicit, configurable objectives. A service missing one is DEGRADED
/// with the objective named in its reasons.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Objectives {
    /// Oldest unprocessed event age, seconds.
    pub max_lag_seconds: f64,
    /// Errors per event received over one check interval, 0..1.
    pub max_error_rate: f64,
    /// New dead letters allowed per check interval.
    pub max_dead_letter_growth: u64,
    /// End-to-end freshness, seconds; unset because a replay of history is
    /// legitimately days behind the wall clock.
    pub max_freshness_seconds: Option<f64>,
    /// p99 batch latency, milliseconds.
    pub max_batch_p99_ms: f64,
    /// A check slower than this marks the service DEGRADED (slow).
    #[serde(with = "humantime_serde")]
    pub max_check_latency: Duration,
    /// Consecutive failed checks after which health asks the service to
    /// report NOT_SERVING on its own grpc.health endpoint, so an
    /// orchestrator restarts it.
    pub not_serving_after: u32,
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            max_lag_seconds: 60.0,
            max_error_rate: 0.01,
            max_dead_letter_growth: 0,
            max_freshness_seconds: None,
            max_batch_p99_ms: 30_000.0,
            max_check_latency: Duration::from_secs(1),
            not_serving_after: 3,
        }
    }
}

/// How often each recovery action may run against one service.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Off: health only observes and alerts.
    pub enabled: bool,
    /// Least time between two runs of one action on one service.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Most runs of one action on one service per hour.
    pub max_per_hour: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_interval: Duration::from_secs(60),
            max_per_hour: 10,
        }
    }
}

/// The `[health]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// gRPC, `/metrics` and the dashboard, all on one port.
    pub listen: SocketAddr,
    /// Service name → gRPC endpoint; default the five others on their
    /// default ports.
    pub targets: BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longest one check (grpc.health plus Stats) may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub objectives: Objectives,
    pub recovery: RecoveryConfig,
    /// notify's endpoint for health's own alerts; default the `notify`
    /// target. Alerts are always logged too.
    pub alert_endpoint: Option<String>,
    /// Incidents (rows) shown on the dashboard, most severe first.
    pub dashboard_anomalies: u32,
    /// Detector of the usage series the dashboard plots.
    pub dashboard_detector: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50056)),
            targets: crate::default_targets("127.0.0.1"),
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            objectives: Objectives::default(),
            recovery: RecoveryConfig::default(),
            alert_endpoint: None,
            dashboard_anomalies: 20,
            dashboard_detector: "ec2-run-instances".into(),
        }
    }
}

impl HealthConfig {
    /// Rejects settings that would make health useless or spin.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval < Duration::from_millis(100) {
            return Err("poll_interval must be at least 100ms".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        let o = &self.objectives;
        if !(0.0..=1.0).contains(&o.max_error_rate) {
            return Err("objectives.max_error_rate must be within 0..1".into());
        }
        if !o.max_lag_seconds.is_finite() || o.max_lag_seconds < 0.0 {
            return Err("objectives.max_lag_seconds must be a non-negative number".into());
        }
        if o.not_serving_after == 0 {
            return Err("objectives.not_serving_after must be at least 1".into());
        }
        for (name, ep) in &self.targets {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(format!(
                    "targets.{name}: {ep:?} must be an http:// or https:// endpoint"
                ));
            }
        }
        Ok(())
    }

    /// Where alerts go: the configured endpoint, else the notify target.
    pub fn alert_endpoint(&self) -> Option<String> {
        self.alert_endpoint
            .clone()
            .or_else(|| self.targets.get("notify").cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objectives_and_rejects_nonsense() {
        let c: HealthConfig = toml::from_str(
            "poll_interval = \"1s\"\n[objectives]\nmax_lag_seconds = 30\nmax_error_rate = 0.05\n[targets]\ningest = \"http://10.0.0.1:50051\"\n",
        )
        .unwrap();
        assert_eq!(c.objectives.max_lag_seconds, 30.0);
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.targets.len(), 1);
        c.validate().unwrap();
        let bad = HealthConfig {
            objectives: Objectives {
                max_error_rate: 2.0,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_error_rate"));
        assert!(toml::from_str::<HealthConfig>("pol_interval = \"1s\"").is_err());
    }
}
