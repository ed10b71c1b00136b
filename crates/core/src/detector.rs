//! Detectors as configuration: which events count, which numbers they
//! yield, per which entity, and how often windows close.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::fieldpath::{FieldPath, ParsedDocs};

/// How matching events become one number per window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Number of matching events.
    #[default]
    Count,
    /// Sum of a numeric field (arrays count their elements).
    Sum,
}

/// What to do with calls that carry an errorCode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorFilter {
    /// Successful calls only: failed launches cost nothing.
    #[default]
    Exclude,
    Include,
    /// Failed calls only: credential probing, permission bursts.
    Only,
}

/// One measured quantity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(default)]
    pub aggregation: Aggregation,
    /// For sums: paths tried in order, the first present wins.
    #[serde(default)]
    pub fields: Vec<FieldPath>,
}

/// A named field ranked among an anomaly's contributors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributorSpec {
    pub name: String,
    /// Paths tried in order, the first with values wins.
    pub fields: Vec<FieldPath>,
}

fn default_category_fields() -> Vec<FieldPath> {
    ["recipientAccountId", "awsRegion"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}
fn default_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_lateness() -> Duration {
    Duration::from_secs(120)
}
fn yes() -> bool {
    true
}

/// A detector. Deserializes from the `[[detectors]]` tables of the config
/// file, rejecting unknown keys so a typo is an error, not a silent default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Short service label: "ec2", "lambda", "ebs", ... `"*"`: the
    /// service most of an anomaly's events came from (the eventSource
    /// without `.amazonaws.com`), for detectors that match any service.
    pub service: String,
    /// Matches eventSource exactly; empty matches any.
    #[serde(default)]
    pub event_source: String,
    /// eventName exactly, or by prefix with a trailing `*`; empty matches any.
    #[serde(default)]
    pub event_names: Vec<String>,
    #[serde(default)]
    pub errors: ErrorFilter,
    /// errorCode patterns (`prefix*`, `*suffix`, `*infix*`, exact) a failed
    /// call must match; empty matches any. Only with `errors = "only"` or
    /// `"include"`: throttling is not probing.
    #[serde(default)]
    pub error_codes: Vec<String>,
    pub features: Vec<FeatureSpec>,
    #[serde(default = "default_category_fields")]
    pub category_fields: Vec<FieldPath>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_lateness", with = "humantime_serde")]
    pub lateness: Duration,
    #[serde(default)]
    pub contributors: Vec<ContributorSpec>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Anomalies below this grade are not reported.
    #[serde(default)]
    pub min_grade: f64,
    /// Contributor values that make a first use of a region significant
    /// on their own (GPU instance types): `prefix*`, `*suffix` or exact.
    /// A first use with few events, no new principal or IP and none of
    /// these is recorded as context instead of raised.
    #[serde(default)]
    pub notable_values: Vec<String>,
    /// Thresholds the same in every environment: the engine's
    /// `quiet_factor` for development and sandbox accounts does not apply.
    /// For security signals (IAM changes, secret reads, refused calls),
    /// which a busy sandbox does not explain away.
    #[serde(default)]
    pub ignore_quiet_environments: bool,
}

/// The OpenSearch AD limit, kept so detectors stay portable to that engine.
pub const MAX_FEATURES: usize = 5;
/// Entity fields per detector: account × region × one resource (a Lambda
/// function). OpenSearch AD takes two; the OpenSearch path keys a third
/// field into the second (see crates/opensearch).
pub const MAX_CATEGORY_FIELDS: usize = 3;

/// Whether `value` matches one of `patterns` (`prefix*`, `*suffix`,
/// `*infix*`, exact).
pub fn matches_pattern(patterns: &[String], value: &str) -> bool {
    patterns
        .iter()
        .any(|p| match (p.strip_prefix('*'), p.strip_suffix('*')) {
            (Some(_), Some(_)) if p.len() >= 2 => value.contains(&p[1..p.len() - 1]),
            (_, Some(prefix)) => value.starts_with(prefix),
            (Some(suffix), None) => value.ends_with(suffix),
            (None, None) => p == value,
        })
}

/// A resource's name where CloudTrail gives either a name or an ARN: a
/// Lambda function is called by `name`, `name:alias` or its full ARN, and
/// all of them are the same function.
pub fn resource_name(value: &str) -> &str {
    match value.split_once(":function:") {
        Some((arn, rest)) if arn.starts_with("arn:") => rest.split(':').next().unwrap_or(rest),
        _ => match value.split_once(':') {
            // name:alias or name:version
            Some((name, _)) if !value.starts_with("arn:") => name,
            _ => value,
        },
    }
}

impl DetectorSpec {
    /// Checks everything serde cannot: names, counts, bounds.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 64
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "detector name {n:?} must be 1-64 characters of a-z, 0-9, - or _"
            ));
        }
        if self.service.trim().is_empty() {
            return Err(format!("detector {n}: service must not be empty"));
        }
        if self.features.is_empty() || self.features.len() > MAX_FEATURES {
            return Err(format!(
                "detector {n}: needs 1 to {MAX_FEATURES} features, has {}",
                self.features.len()
            ));
        }
        for f in &self.features {
            if f.name.trim().is_empty() {
                return Err(format!("detector {n}: a feature has an empty name"));
            }
            if f.aggregation == Aggregation::Sum && f.fields.is_empty() {
                return Err(format!(
                    "detector {n}: feature {} sums but names no fields",
                    f.name
                ));
            }
        }
        if self.category_fields.is_empty() || self.category_fields.len() > MAX_CATEGORY_FIELDS {
            return Err(format!(
                "detector {n}: needs 1 to {MAX_CATEGORY_FIELDS} category fields, has {}",
                self.category_fields.len()
            ));
        }
        let secs = self.interval.as_secs();
        if !(60..=86_400).contains(&secs)
            || self.interval.subsec_nanos() != 0
            || !secs.is_multiple_of(60)
        {
            return Err(format!(
                "detector {n}: interval must be whole minutes from 1m to 24h, got {}s",
                self.interval.as_secs_f64()
            ));
        }
        if self.lateness > Duration::from_secs(86_400) {
            return Err(format!("detector {n}: lateness must be at most 24h"));
        }
        if !(0.0..=1.0).contains(&self.min_grade) {
            return Err(format!("detector {n}: min_grade must be within 0..1"));
        }
        Ok(())
    }

    pub fn interval_ms(&self) -> i64 {
        self.interval.as_millis() as i64
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness.as_millis() as i64
    }

    /// Whether an event counts for this detector.
    pub fn matches(&self, e: &Event) -> bool {
        if !self.event_source.is_empty() && self.event_source != e.event_source {
            return false;
        }
        if !self.event_names.is_empty()
            && !self.event_names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => e.event_name.starts_with(prefix),
                None => *n == e.event_name,
            })
        {
            return false;
        }
        match self.errors {
            ErrorFilter::Exclude => !e.is_error(),
            ErrorFilter::Include => {
                !e.is_error()
                    || self.error_codes.is_empty()
                    || matches_pattern(&self.error_codes, &e.error_code)
            }
            ErrorFilter::Only => {
                e.is_error()
                    && (self.error_codes.is_empty()
                        || matches_pattern(&self.error_codes, &e.error_code))
            }
        }
    }

    /// The value one matching event adds to each feature.
    pub fn feature_values(&self, e: &Event, docs: &mut ParsedDocs, out: &mut Vec<f64>) {
        out.clear();
        for f in &self.features {
            let v = match f.aggregation {
                Aggregation::Count => 1.0,
                Aggregation::Sum => f
                    .fields
                    .iter()
                    .find_map(|p| p.number(e, docs))
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .unwrap_or(0.0),
            };
            out.push(v);
        }
    }

    /// The entity values of an event, in category-field order. A
    /// resource named by ARN or by name is one entity (see
    /// [`resource_name`]); '/' would split the entity key, so it becomes '_'.
    pub fn entity(&self, e: &Event, docs: &mut ParsedDocs) -> Vec<String> {
        self.category_fields
            .iter()
            .map(|p| {
                let v = p.strings(e, docs).into_iter().next().unwrap_or_default();
                let name = resource_name(&v);
                if name.len() == v.len() && !v.contains('/') {
                    v
                } else {
                    name.replace('/', "_")
                }
            })
            .collect()
    }
}

fn paths(list: &[&str]) -> Vec<FieldPath> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

/// The detectors trailhound runs when the configuration names none.
pub fn default_detectors() -> Vec<DetectorSpec> {
    let base = |name: &str, service: &str, source: &str, names: &[&str]| DetectorSpec {
        name: name.into(),
        description: String::new(),
        service: service.into(),
        event_source: source.into(),
        event_names: names.iter().map(|s| s.to_string()).collect(),
        errors: ErrorFilter::Exclude,
        error_codes: Vec::new(),
        features: Vec::new(),
        category_fields: default_category_fields(),
        interval: default_interval(),
        lateness: default_lateness(),
        contributors: Vec::new(),
        enabled: true,
        min_grade: 0.0,
        notable_values: Vec::new(),
        ignore_quiet_environments: false,
    };
    let mut ec2 = base(
        "ec2-run-instances",
        "ec2",
        "ec2.amazonaws.com",
        &["RunInstances"],
    );
    ec2.description = "EC2 instances launched by RunInstances".into();
    ec2.features = vec![FeatureSpec {
        name: "instances".into(),
        aggregation: Aggregation::Sum,
        fields: paths(&[
            "responseElements.instancesSet.items",
            "requestParameters.instancesSet.items[].maxCount",
            "requestParameters.maxCount",
        ]),
    }];
    ec2.contributors = vec![ContributorSpec {
        name: "instance_type".into(),
        fields: paths(&[
            "responseElements.instancesSet.items[].instanceType",
            "requestParameters.instanceType",
        ]),
    }];
    // Accelerated, high-memory and bare-metal types: what miners and
    // thieves of compute launch, and what costs most per hour.
    ec2.notable_values = [
        "p2.*",
        "p3.*",
        "p3dn.*",
        "p4d.*",
        "p4de.*",
        "p5.*",
        "p5e.*",
        "p5en.*",
        "p6*",
        "g3.*",
        "g3s.*",
        "g4dn.*",
        "g4ad.*",
        "g5.*",
        "g5g.*",
        "g6.*",
        "g6e.*",
        "gr6.*",
        "inf1.*",
        "inf2.*",
        "trn1.*",
        "trn1n.*",
        "trn2.*",
        "dl1.*",
        "dl2q.*",
        "f1.*",
        "f2.*",
        "vt1.*",
        "x1.*",
        "x1e.*",
        "x2*",
        "u-*",
        "*.metal",
        "*.metal-*",
        "*.16xlarge",
        "*.24xlarge",
        "*.32xlarge",
        "*.48xlarge",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut lambda = base(
        "lambda-invoke",
        "lambda",
        "lambda.amazonaws.com",
        &["Invoke"],
    );
    lambda.description = "Lambda Invoke calls (a data event)".into();
    lambda.features = vec![FeatureSpec {
        name: "invocations".into(),
        aggregation: Aggregation::Count,
        fields: Vec::new(),
    }];
    lambda.contributors = vec![ContributorSpec {
        name: "function".into(),
        fields: paths(&["requestParameters.functionName"]),
    }];

    let mut ebs = base(
        "ebs-create-volume",
        "ebs",
        "ec2.amazonaws.com",
        &["CreateVolume"],
    );
    ebs.description = "EBS volumes created, by count and GiB".into();
    ebs.features = vec![
        FeatureSpec {
            name: "volumes".into(),
            aggregation: Aggregation::Count,
            fields: Vec::new(),
        },
        FeatureSpec {
            name: "gib".into(),
            aggregation: Aggregation::Sum,
            fields: paths(&["requestParameters.size"]),
        },
    ];
    ebs.contributors = vec![ContributorSpec {
        name: "volume_type".into(),
        fields: paths(&["requestParameters.volumeType"]),
    }];
    // One entity per function (account × region × function name): a
    // steadily invoked function that stops, or one function that storms
    // while the others go on, is invisible in the account's total.
    let mut function = base(
        "lambda-function",
        "lambda",
        "lambda.amazonaws.com",
        &["Invoke"],
    );
    function.description = "Lambda Invoke calls per function (a data event)".into();
    function.features = lambda.features.clone();
    function.category_fields = paths(&[
        "recipientAccountId",
        "awsRegion",
        "requestParameters.functionName",
    ]);

    // Calls refused for want of permission, in any service: credential
    // probing, a stolen key trying what it can, a misconfigured role.
    let mut failed = base("failed-calls", "*", "", &[]);
    failed.description = "Calls refused as unauthorized or access denied, in any service".into();
    failed.errors = ErrorFilter::Only;
    failed.error_codes = [
        "AccessDenied*",
        "*UnauthorizedOperation",
        "UnauthorizedAccess*",
        "*NotAuthorized*",
        "AuthFailure*",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "*AccessDeniedException",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    failed.features = vec![FeatureSpec {
        name: "failed_calls".into(),
        aggregation: Aggregation::Count,
        fields: Vec::new(),
    }];
    failed.contributors = vec![ContributorSpec {
        name: "service".into(),
        fields: paths(&["eventSource"]),
    }];
    failed.ignore_quiet_environments = true;

    // Reading secrets in bulk is how stolen credentials are turned into
    // more credentials.
    let mut secrets = base(
        "secrets-read",
        "secretsmanager",
        "secretsmanager.amazonaws.com",
        &["GetSecretValue", "BatchGetSecretValue"],
    );
    secrets.description = "Secrets Manager secret values read".into();
    secrets.features = vec![FeatureSpec {
        name: "reads".into(),
        aggregation: Aggregation::Count,
        fields: Vec::new(),
    }];
    secrets.contributors = vec![ContributorSpec {
        name: "secret".into(),
        fields: paths(&["requestParameters.secretId"]),
    }];
    secrets.ignore_quiet_environments = true;

    // New users, keys, passwords and policies: how an intruder stays.
    let mut iam = base(
        "iam-changes",
        "iam",
        "iam.amazonaws.com",
        &[
            "CreateUser",
            "CreateAccessKey",
            "CreateLoginProfile",
            "UpdateLoginProfile",
            "AttachUserPolicy",
            "PutUserPolicy",
            "AddUserToGroup",
            "AttachRolePolicy",
            "PutRolePolicy",
            "CreateRole",
            "UpdateAssumeRolePolicy",
            "CreatePolicyVersion",
        ],
    );
    iam.description = "IAM users, keys, passwords and policies created or changed".into();
    iam.features = vec![FeatureSpec {
        name: "changes".into(),
        aggregation: Aggregation::Count,
        fields: Vec::new(),
    }];
    iam.contributors = vec![ContributorSpec {
        name: "user".into(),
        fields: paths(&["requestParameters.userName", "requestParameters.roleName"]),
    }];
    iam.ignore_quiet_environments = true;
    vec![ec2, lambda, ebs, function, failed, secrets, iam]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let d = default_detectors();
        let names: Vec<&str> = d.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ec2-run-instances",
                "lambda-invoke",
                "ebs-create-volume",
                "lambda-function",
                "failed-calls",
                "secrets-read",
                "iam-changes"
            ]
        );
        for spec in &d {
            spec.validate().unwrap();
        }
        // Security signals are judged alike in every environment; usage
        // (launches, invocations, volumes) is allowed a sandbox's swings.
        let alike: Vec<&str> = d
            .iter()
            .filter(|s| s.ignore_quiet_environments)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(alike, ["failed-calls", "secrets-read", "iam-changes"]);
    }

    fn event(source: &str, name: &str, error: &str) -> Event {
        Event {
            event_source: source.into(),
            event_name: name.into(),
            error_code: error.into(),
            ..crate::event::testing::run_instances()
        }
    }

    #[test]
    fn failed_calls_match_refusals_in_any_service_not_throttling() {
        let failed = default_detectors()
            .into_iter()
            .find(|d| d.name == "failed-calls")
            .unwrap();
        for code in [
            "Client.UnauthorizedOperation",
            "AccessDenied",
            "AccessDeniedException",
            "UnauthorizedAccess",
            "AuthFailure",
        ] {
            assert!(
                failed.matches(&event("ec2.amazonaws.com", "RunInstances", code)),
                "{code}"
            );
        }
        for code in ["ThrottlingException", "Client.RequestLimitExceeded", ""] {
            assert!(
                !failed.matches(&event("s3.amazonaws.com", "GetObject", code)),
                "{code:?}"
            );
        }
    }

    #[test]
    fn patterns_and_resource_names() {
        let p: Vec<String> = ["p4d.*", "*.metal", "*Denied*", "exact"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(matches_pattern(&p, "p4d.24xlarge"));
        assert!(matches_pattern(&p, "m5.metal"));
        assert!(matches_pattern(&p, "Client.AccessDeniedX"));
        assert!(matches_pattern(&p, "exact"));
        assert!(!matches_pattern(&p, "m5.large"));
        assert!(!matches_pattern(&p, "exactly"));
        assert_eq!(resource_name("orders"), "orders");
        assert_eq!(resource_name("orders:live"), "orders");
        assert_eq!(
            resource_name("arn:aws:lambda:us-east-1:111122223333:function:orders"),
            "orders"
        );
        assert_eq!(
            resource_name("arn:aws:lambda:us-east-1:111122223333:function:orders:3"),
            "orders"
        );
        assert_eq!(
            resource_name("arn:aws:s3:::bucket/key"),
            "arn:aws:s3:::bucket/key"
        );
    }

    #[test]
    fn a_function_called_by_name_or_arn_is_one_entity() {
        let f = default_detectors()
            .into_iter()
            .find(|d| d.name == "lambda-function")
            .unwrap();
        let mut docs = ParsedDocs::default();
        let mut a = event("lambda.amazonaws.com", "Invoke", "");
        a.request_parameters = r#"{"functionName":"orders"}"#.into();
        let mut b = a.clone();
        b.request_parameters =
            r#"{"functionName":"arn:aws:lambda:us-east-1:111122223333:function:orders:live"}"#
                .into();
        let ka = f.entity(&a, &mut docs);
        let mut docs = ParsedDocs::default();
        let kb = f.entity(&b, &mut docs);
        assert_eq!(ka, kb);
        assert_eq!(ka[2], "orders");
    }

    #[test]
    fn toml_rejects_unknown_keys_and_bad_paths() {
        let ok = r#"
            name = "iam-keys"
            service = "iam"
            event_source = "iam.amazonaws.com"
            event_names = ["CreateAccessKey"]
            interval = "5m"
            features = [{ name = "keys" }]
        "#;
        let spec: DetectorSpec = toml::from_str(ok).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.interval, Duration::from_secs(300));
        assert_eq!(spec.category_fields.len(), 2);

        let typo = ok.replace("interval", "intervall");
        let err = toml::from_str::<DetectorSpec>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall"), "{err}");

        let bad_path =
            format!("{ok}\ncontributors = [{{ name = \"x\", fields = [\"reqParams.a\"] }}]");
        let err = toml::from_str::<DetectorSpec>(&bad_path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut d = default_detectors().remove(0);
        d.interval = Duration::from_secs(30);
        assert!(d.validate().unwrap_err().contains("interval"));
        let mut d = default_detectors().remove(0);
        d.features = (0..6)
            .map(|i| FeatureSpec {
                name: format!("f{i}"),
                aggregation: Aggregation::Count,
                fields: vec![],
            })
            .collect();
        assert!(d.validate().unwrap_err().contains("features"));
        let mut d = default_detectors().remove(0);
        d.name = "Bad Name".into();
        assert!(d.validate().unwrap_err().contains("name"));
    }
}
