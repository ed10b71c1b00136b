//! Insights: an anomaly explained — what it costs, what caused it, how bad
//! it is, what to do, and whether other accounts see the same. insights
//! makes them, notify delivers them; both share these types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::anomaly::Anomaly;

/// How urgently a person should look. Ordered: `Low < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Upper-case label for messages.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "{other:?} is not a severity (low, medium, high, critical)"
            )),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One priced item of a cost estimate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub usd_per_hour: f64,
    pub estimated: bool,
    pub basis: String,
}

/// What the excess above the expected level costs if it keeps running.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostImpact {
    pub usd_per_hour: f64,
    pub usd_per_day: f64,
    pub usd_per_30_days: f64,
    pub estimated: bool,
    pub lines: Vec<CostLine>,
    pub assumptions: Vec<String>,
    pub price_table_as_of: String,
}

impl CostImpact {
    /// Builds the totals from the lines.
    pub fn from_lines(lines: Vec<CostLine>, assumptions: Vec<String>, as_of: &str) -> Self {
        let per_hour: f64 = lines.iter().map(|l| l.usd_per_hour).sum();
        Self {
            usd_per_hour: per_hour,
            usd_per_day: per_hour * 24.0,
            usd_per_30_days: per_hour * 24.0 * 30.0,
            estimated: lines.iter().any(|l| l.estimated),
            lines,
            assumptions,
            price_table_as_of: as_of.to_string(),
        }
    }
}

/// Something that accounts for part of the anomalous window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub dimension: String,
    pub value: String,
    pub count: u64,
    pub share: f64,
    pub is_new: bool,
    pub baseline_count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub explanation: String,
    pub factors: Vec<Factor>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub rule: String,
    pub title: String,
    pub actions: Vec<String>,
}

/// The same principal, IP or pattern in several accounts within a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub id: String,
    /// "principal", "source_ip" or "pattern".
    pub kind: String,
    pub value: String,
    pub account_ids: Vec<String>,
    pub account_names: Vec<String>,
    pub anomaly_ids: Vec<String>,
}

/// An anomaly, explained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// The anomaly's id.
    pub id: String,
    pub anomaly: Anomaly,
    /// The id of the first anomaly of the incident this window belongs to.
    pub incident_id: String,
    pub summary: String,
    pub cost: CostImpact,
    pub root_cause: RootCause,
    pub severity: Severity,
    pub severity_reasons: Vec<String>,
    pub recommendations: Vec<Recommendation>,
    pub correlation: Option<Correlation>,
    /// The suppression rule that matched, if any.
    pub suppressed_by: Option<String>,
    pub analyzed_at: DateTime<Utc>,
    pub investigate: Vec<String>,
    /// W3C `traceparent` of the span the insight was made in, so notify's
    /// delivery joins the trace of the events behind it across the
    /// WatchInsights stream. Empty outside a trace; not stored or sent to
    /// channels (it is only meaningful while the trace is live).
    #[serde(skip)]
    pub trace_parent: String,
}

impl Insight {
    pub fn is_suppressed(&self) -> bool {
        self.suppressed_by.is_some()
    }
}
