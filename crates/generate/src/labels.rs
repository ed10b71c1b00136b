//! The labels file: what was injected, where and when.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::GenerateError;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// Hard profile: one steadily invoked Lambda function stops for hours
    /// while the other functions of its account and region go on.
    LambdaStopped,
    /// Hard profile: hundreds of RunInstances failing with
    /// `Client.UnauthorizedOperation`, from an IP never seen.
    FailedRunInstances,
    /// Hard profile: several accounts launch several times their usual
    /// instances within an hour, one principal name from one IP.
    CoordinatedLaunch,
    /// Hard profile: a burst of Secrets Manager GetSecretValue over many
    /// secrets by a principal that never read secrets (credential
    /// harvesting).
    SecretsHarvest,
    /// Hard profile: IAM users, access keys, login profiles and admin
    /// policies created in a burst by an unusual principal (persistence).
    IamPersistence,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Cryptomining => "cryptomining",
            IncidentKind::InvokeStorm => "invoke_storm",
            IncidentKind::EbsSpike => "ebs_spike",
            IncidentKind::DropToZero => "drop_to_zero",
            IncidentKind::NightRise => "night_rise",
            IncidentKind::LambdaStopped => "lambda_stopped",
            IncidentKind::FailedRunInstances => "failed_run_instances",
            IncidentKind::CoordinatedLaunch => "coordinated_launch",
            IncidentKind::SecretsHarvest => "secrets_harvest",
            IncidentKind::IamPersistence => "iam_persistence",
        }
    }
}

/// One account (and its region) an incident touches, for incidents that
/// span several accounts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub account_id: String,
    pub region: String,
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
    /// The service an anomaly of this incident names (`ec2`, `lambda`,
    /// `ebs`, `secretsmanager`, `iam`): a detector other than `detector`
    /// whose anomaly names this service matches too. Hard profile only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The entity the detector should name beyond account and region, as
    /// (field, value), e.g. ("function", "payments-api-handler"). An
    /// anomaly whose entity has this field with another value does not
    /// match. Hard profile only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity: Vec<(String, String)>,
    /// Every account and region of a multi-account incident (coordinated);
    /// empty means just `account_id` and `region`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
}

impl Incident {
    /// The (account, region) pairs this incident touches.
    pub fn targets(&self) -> Vec<Target> {
        if self.targets.is_empty() {
            vec![Target {
                account_id: self.account_id.clone(),
                region: self.region.clone(),
            }]
        } else {
            self.targets.clone()
        }
    }
}

/// Something unusual but benign the hard profile puts in on purpose (a
/// weekly or monthly job, a first call in a new region, a throttling
/// burst, cross-account automation): not an incident, so anomalies on it
/// are false alarms, which the scorer attributes to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Benign {
    pub kind: String,
    pub account_id: String,
    pub region: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub description: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Labels {
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub interval_seconds: u32,
    pub incidents: Vec<Incident>,
    /// Generator profile (`hard`); absent for the default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Active accounts in the organization (hard profile; otherwise the
    /// scorer counts them in the org.json beside the labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<u32>,
    /// Benign traps put in on purpose (hard profile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub benign: Vec<Benign>,
}

pub fn read_labels(path: &Path) -> Result<Labels, GenerateError> {
    let text = std::fs::read_to_string(path).map_err(|e| GenerateError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| GenerateError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
