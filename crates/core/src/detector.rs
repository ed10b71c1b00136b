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
    /// Short service label: "ec2", "lambda", "ebs", ...
    pub service: String,
    /// Matches eventSource exactly; empty matches any.
    #[serde(default)]
    pub event_source: String,
    /// eventName exactly, or by prefix with a trailing `*`; empty matches any.
    #[serde(default)]
    pub event_names: Vec<String>,
    #[serde(default)]
    pub errors: ErrorFilter,
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
}

/// The OpenSearch AD limit, kept so detectors stay portable to that engine.
pub const MAX_FEATURES: usize = 5;

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
        if self.category_fields.is_empty() || self.category_fields.len() > 2 {
            return Err(format!(
                "detector {n}: needs 1 or 2 category fields, has {}",
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
            ErrorFilter::Include => true,
            ErrorFilter::Only => e.is_error(),
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

    /// The entity values of an event, in category-field order.
    pub fn entity(&self, e: &Event, docs: &mut ParsedDocs) -> Vec<String> {
        self.category_fields
            .iter()
            .map(|p| p.strings(e, docs).into_iter().next().unwrap_or_default())
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
        features: Vec::new(),
        category_fields: default_category_fields(),
        interval: default_interval(),
        lateness: default_lateness(),
        contributors: Vec::new(),
        enabled: true,
        min_grade: 0.0,
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
    vec![ec2, lambda, ebs]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let d = default_detectors();
        assert_eq!(d.len(), 3);
        for spec in &d {
            spec.validate().unwrap();
        }
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
