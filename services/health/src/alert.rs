//! health's own alerts: every status change is logged, and sent through
//! notify as an insight on the "trailhound-health" detector so the usual
//! routing rules (Slack, Teams, SNS, ...) apply. When notify itself is down
//! the log says so: the alert is never silently lost.

use std::time::Duration;

use async_trait::async_trait;
use trailhound_proto::common::v1 as common;
use trailhound_proto::health::v1 as pb;
use trailhound_proto::insights::v1 as ipb;
use trailhound_proto::notify::v1::NotifyRequest;
use trailhound_proto::notify::v1::notify_service_client::NotifyServiceClient;

/// One thing an operator should know.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The service, or "system".
    pub subject: String,
    pub from: pb::Status,
    pub to: pb::Status,
    pub reasons: Vec<String>,
    pub at_ms: i64,
}

impl Alert {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "trailhound {} is {} (was {})",
            self.subject,
            label(self.to),
            label(self.from)
        );
        if !self.reasons.is_empty() {
            s.push_str(": ");
            s.push_str(&self.reasons.join("; "));
        }
        s
    }
}

pub fn label(s: pb::Status) -> &'static str {
    match s {
        pb::Status::Serving => "SERVING",
        pb::Status::Degraded => "DEGRADED",
        pb::Status::NotServing => "NOT_SERVING",
        pb::Status::Unspecified => "UNKNOWN",
    }
}

/// Where alerts go besides the log.
#[async_trait]
pub trait Alerter: Send + Sync {
    async fn send(&self, alert: &Alert) -> Result<(), crate::HealthError>;
}

/// Alerts through notify's Notify RPC.
#[derive(Debug)]
pub struct NotifyAlerter {
    endpoint: String,
}

impl NotifyAlerter {
    pub fn new(endpoint: String) -> Self {
        Self { endpoint }
    }
}

/// The insight that carries an alert: severity follows the new status.
pub fn alert_insight(a: &Alert) -> ipb::Insight {
    let id = format!("health-{}-{}-{}", a.subject, label(a.to), a.at_ms);
    let ts = trailhound_proto::time::from_millis(a.at_ms);
    let severity = match a.to {
        pb::Status::Serving => ipb::Severity::Low,
        pb::Status::Degraded => ipb::Severity::Medium,
        _ => ipb::Severity::High,
    };
    ipb::Insight {
        id: id.clone(),
        incident_id: format!("health-{}", a.subject),
        anomaly: Some(common::Anomaly {
            id,
            detector: "trailhound-health".into(),
            service: "trailhound".into(),
            // No AWS account is involved: a reserved, valid-looking id.
            account_id: "000000000000".into(),
            region: "global".into(),
            window_start: Some(ts),
            window_end: Some(trailhound_proto::time::from_millis(a.at_ms + 1000)),
            detected_at: Some(ts),
            grade: if a.to == pb::Status::Serving {
                0.0
            } else {
                1.0
            },
            confidence: 1.0,
            kind: common::AnomalyKind::Spike as i32,
            ..Default::default()
        }),
        summary: a.summary(),
        severity: severity as i32,
        severity_reasons: a.reasons.clone(),
        analyzed_at: Some(ts),
        ..Default::default()
    }
}

#[async_trait]
impl Alerter for NotifyAlerter {
    async fn send(&self, alert: &Alert) -> Result<(), crate::HealthError> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| crate::HealthError::BadEndpoint {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10));
        let channel = trailhound_runtime::client::traced(&endpoint);
        NotifyServiceClient::new(channel)
            .notify(NotifyRequest {
                insight: Some(alert_insight(alert)),
            })
            .await
            .map(|_| ())
            .map_err(crate::HealthError::from)
    }
}

/// For tests and for `alert_endpoint = ""`: the log only.
#[derive(Debug, Default)]
pub struct LogOnly;

#[async_trait]
impl Alerter for LogOnly {
    async fn send(&self, _alert: &Alert) -> Result<(), crate::HealthError> {
        Ok(())
    }
}
