//! The labels file: what was injected, where and when.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::GenerateError;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// GPU instances launched by a new principal from a new IP in a region
    /// the account never used.
    Cryptomining,
    /// A Lambda function invoked at many times its usual rate.
    InvokeStorm,
    /// Many large EBS volumes created at once.
    EbsSpike,
    /// A steadily active entity falls silent.
    DropToZero,
    /// A production entity's night-time level rises a few times over,
    /// staying below its daytime peak.
    NightRise,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: String,
    pub kind: IncidentKind,
    /// The trailhound detector that should see it.
    pub detector: String,
    pub account_id: String,
    pub region: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub description: String,
    pub principal_arn: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub instance_type: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Labels {
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub interval_seconds: u32,
    pub incidents: Vec<Incident>,
}

pub fn read_labels(path: &Path) -> Result<Labels, GenerateError> {
    let text = std::fs::read_to_string(path).map_err(|e| GenerateError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| GenerateError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
