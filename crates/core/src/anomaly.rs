//! Anomalies: an unusual window of one entity for one detector, with what
//! was expected and who and what accounts for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::{AccountMetadata, Environment};

/// Why an anomaly was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Far above what the model expected.
    Spike,
    /// A steadily active entity fell to zero or far below expected.
    Drop,
    /// First activity in a region the account never used.
    NewRegion,
    /// Several accounts at once: the same principal name or source IP
    /// acting in each, or all rising together.
    Coordinated,
}

impl AnomalyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::Drop => "drop",
            AnomalyKind::NewRegion => "new_region",
            AnomalyKind::Coordinated => "coordinated",
        }
    }
}

/// One feature's value in the window and what was expected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureValue {
    pub name: String,
    pub actual: f64,
    pub expected: f64,
}

/// Something that accounts for part of a window's activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    /// "principal", "source_ip", "user_agent", "event_name", "error_code",
    /// or a detector's contributor name such as "instance_type".
    pub dimension: String,
    pub value: String,
    pub count: u64,
    /// Share of the window's matching events (or summed value), 0..1.
    pub share: f64,
    /// Occurrences in this entity's earlier windows.
    pub baseline_count: u64,
    /// Never seen for this account before the window.
    pub is_new: bool,
}

/// An unusual window. The flat account fields repeat what `account` holds so
/// that the JSON Lines output is easy to filter with jq.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub id: String,
    pub detector: String,
    pub service: String,
    pub kind: AnomalyKind,
    pub account_id: String,
    pub account_name: String,
    pub environment: Environment,
    pub ou_path: Vec<String>,
    pub region: String,
    /// Category field → value, in the detector's order.
    pub entity: Vec<(String, String)>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// The event time up to which the window had been seen when this was
    /// raised: its end once closed, earlier when raised while still open.
    /// The delay from an incident's start to this is detection's own.
    #[serde(default)]
    pub observed_until: DateTime<Utc>,
    pub actual: f64,
    pub expected: f64,
    pub features: Vec<FeatureValue>,
    pub grade: f64,
    pub confidence: f64,
    pub score: f64,
    pub event_count: u64,
    pub top_contributors: Vec<Contributor>,
    pub detected_at: DateTime<Utc>,
    pub account: AccountMetadata,
}

impl Anomaly {
    /// The deterministic id: the same window of the same entity always gets
    /// the same id, so a replay updates rather than duplicates.
    pub fn make_id(detector: &str, entity: &[(String, String)], window_start_ms: i64) -> String {
        let mut id = String::with_capacity(64);
        id.push_str(detector);
        for (_, v) in entity {
            id.push(':');
            id.push_str(v);
        }
        id.push(':');
        id.push_str(&window_start_ms.to_string());
        id
    }
}

/// Anomalies for tests (this crate's, and other crates' with the
/// `testsuite` feature): one spike that every test varies in the fields it
/// is about.
#[cfg(any(test, feature = "testsuite"))]
pub mod testing {
    use chrono::{DateTime, Duration, Utc};

    use super::{Anomaly, AnomalyKind};
    use crate::AccountMetadata;

    /// A spike of `detector` (calls to `service`) in `account`, us-east-1,
    /// in the ten minutes from `start`, numbered `n` in its id; grade and
    /// confidence 0.9, score 3, and no figures, features or contributors.
    pub fn spike(
        detector: &str,
        service: &str,
        account: AccountMetadata,
        n: i64,
        start: DateTime<Utc>,
    ) -> Anomaly {
        let id = account.account_id.clone();
        Anomaly {
            id: format!("{detector}:{id}:us-east-1:{n}"),
            detector: detector.into(),
            service: service.into(),
            kind: AnomalyKind::Spike,
            account_name: account.name.clone(),
            environment: account.environment,
            ou_path: account.ou_path.clone(),
            region: "us-east-1".into(),
            entity: vec![
                ("recipientAccountId".into(), id.clone()),
                ("awsRegion".into(), "us-east-1".into()),
            ],
            account_id: id,
            window_start: start,
            window_end: start + Duration::minutes(10),
            observed_until: start + Duration::minutes(10),
            actual: 0.0,
            expected: 0.0,
            features: Vec::new(),
            grade: 0.9,
            confidence: 0.9,
            score: 3.0,
            event_count: 0,
            top_contributors: Vec::new(),
            detected_at: start,
            account,
        }
    }
}
