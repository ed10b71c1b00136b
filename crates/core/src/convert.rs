//! Conversions between domain types and their protobuf contracts, in one
//! place. Proto → domain conversions validate and name the offending field,
//! so every service maps the error to INVALID_ARGUMENT the same way.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use trailhound_proto::common::v1 as pb;
use trailhound_proto::prost_types::Timestamp;

use crate::account::{AccountMetadata, Environment};
use crate::anomaly::{Anomaly, AnomalyKind, Contributor, FeatureValue};
use crate::detector::{Aggregation, ContributorSpec, DetectorSpec, ErrorFilter, FeatureSpec};
use crate::event::{Event, UserIdentity};
use crate::fieldpath::FieldPath;

/// A proto message that failed validation: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn timestamp_ms(ms: i64) -> Timestamp {
    trailhound_proto::time::from_millis(ms)
}

pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.seconds, t.nanos.clamp(0, 999_999_999) as u32)
        .single()
}

fn opt_time(t: &Option<Timestamp>, field: &str) -> Result<DateTime<Utc>, InvalidField> {
    t.as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| InvalidField::new(field, "missing or out of range"))
}

pub fn environment_to_pb(e: Environment) -> pb::Environment {
    match e {
        Environment::Production => pb::Environment::Production,
        Environment::Staging => pb::Environment::Staging,
        Environment::Development => pb::Environment::Development,
        Environment::Testing => pb::Environment::Testing,
        Environment::Sandbox => pb::Environment::Sandbox,
        Environment::Unknown => pb::Environment::Unknown,
    }
}

pub fn environment_from_pb(e: i32) -> Environment {
    match pb::Environment::try_from(e).unwrap_or(pb::Environment::Unspecified) {
        pb::Environment::Production => Environment::Production,
        pb::Environment::Staging => Environment::Staging,
        pb::Environment::Development => Environment::Development,
        pb::Environment::Testing => Environment::Testing,
        pb::Environment::Sandbox => Environment::Sandbox,
        pb::Environment::Unknown | pb::Environment::Unspecified => Environment::Unknown,
    }
}

/// An event on the pipeline's hops (ingest → enrich → detect): without
/// its raw record. Detection reads only the typed fields, the record is
/// most of an event's bytes (copied, encoded and decoded at every hop),
/// and the trail itself stays where it came from (S3, CloudWatch Logs).
pub fn event_to_pb_lean(e: &Event) -> pb::CloudTrailEvent {
    let mut pb = event_to_pb_fields(e);
    pb.raw_json = String::new();
    pb
}

pub fn event_to_pb(e: &Event) -> pb::CloudTrailEvent {
    let mut pb = event_to_pb_fields(e);
    pb.raw_json = e.raw.clone();
    pb
}

fn event_to_pb_fields(e: &Event) -> pb::CloudTrailEvent {
    let u = &e.user_identity;
    pb::CloudTrailEvent {
        event_id: e.event_id.clone(),
        event_time: Some(timestamp_ms(e.event_time_ms)),
        event_source: e.event_source.clone(),
        event_name: e.event_name.clone(),
        aws_region: e.aws_region.clone(),
        recipient_account_id: e.recipient_account_id.clone(),
        user_identity: Some(pb::UserIdentity {
            r#type: u.kind.clone(),
            arn: u.arn.clone(),
            account_id: u.account_id.clone(),
            invoked_by: u.invoked_by.clone(),
            principal_id: u.principal_id.clone(),
            user_name: u.user_name.clone(),
            access_key_id: u.access_key_id.clone(),
            session_issuer_arn: u.session_issuer_arn.clone(),
        }),
        source_ip_address: e.source_ip_address.clone(),
        user_agent: e.user_agent.clone(),
        error_code: e.error_code.clone(),
        error_message: e.error_message.clone(),
        read_only: e.read_only,
        management_event: e.management_event,
        event_category: e.event_category.clone(),
        event_type: e.event_type.clone(),
        event_version: e.event_version.clone(),
        request_parameters_json: e.request_parameters.clone(),
        response_elements_json: e.response_elements.clone(),
        raw_json: String::new(),
    }
}

/// Validates an event that crossed a service boundary. It was validated by
/// ingest already; this guards the contract against other producers.
pub fn event_from_pb(p: pb::CloudTrailEvent) -> Result<Event, InvalidField> {
    if p.event_id.is_empty() {
        return Err(InvalidField::new("event.event_id", "must not be empty"));
    }
    if !crate::is_account_id(&p.recipient_account_id) {
        return Err(InvalidField::new(
            "event.recipient_account_id",
            format!("{:?} is not a 12-digit account id", p.recipient_account_id),
        ));
    }
    if p.aws_region.is_empty() {
        return Err(InvalidField::new("event.aws_region", "must not be empty"));
    }
    let time = opt_time(&p.event_time, "event.event_time")?;
    let u = p.user_identity.unwrap_or_default();
    Ok(Event {
        event_id: p.event_id,
        event_time_ms: time.timestamp_millis(),
        event_source: p.event_source,
        event_name: p.event_name,
        aws_region: p.aws_region,
        recipient_account_id: p.recipient_account_id,
        user_identity: UserIdentity {
            kind: u.r#type,
            arn: u.arn,
            account_id: u.account_id,
            invoked_by: u.invoked_by,
            principal_id: u.principal_id,
            user_name: u.user_name,
            access_key_id: u.access_key_id,
            session_issuer_arn: u.session_issuer_arn,
        },
        source_ip_address: p.source_ip_address,
        user_agent: p.user_agent,
        error_code: p.error_code,
        error_message: p.error_message,
        read_only: p.read_only,
        management_event: p.management_event,
        event_category: p.event_category,
        event_type: p.event_type,
        event_version: p.event_version,
        request_parameters: p.request_parameters_json,
        response_elements: p.response_elements_json,
        raw: p.raw_json,
    })
}

pub fn account_to_pb(a: &AccountMetadata) -> pb::AccountMetadata {
    pb::AccountMetadata {
        account_id: a.account_id.clone(),
        name: a.name.clone(),
        email: a.email.clone(),
        status: a.status.clone(),
        ou_path: a.ou_path.clone(),
        tags: a.tags.clone().into_iter().collect(),
        environment: environment_to_pb(a.environment) as i32,
        team: a.team.clone(),
        cost_center: a.cost_center.clone(),
        known: a.known,
        organization_id: a.organization_id.clone(),
        environment_reason: a.environment_reason.clone(),
    }
}

pub fn account_from_pb(p: pb::AccountMetadata) -> AccountMetadata {
    AccountMetadata {
        account_id: p.account_id,
        name: p.name,
        email: p.email,
        status: p.status,
        ou_path: p.ou_path,
        tags: p.tags.into_iter().collect(),
        environment: environment_from_pb(p.environment),
        environment_reason: p.environment_reason,
        team: p.team,
        cost_center: p.cost_center,
        known: p.known,
        organization_id: p.organization_id,
    }
}

fn kind_to_pb(k: AnomalyKind) -> pb::AnomalyKind {
    match k {
        AnomalyKind::Spike => pb::AnomalyKind::Spike,
        AnomalyKind::Drop => pb::AnomalyKind::Drop,
        AnomalyKind::NewRegion => pb::AnomalyKind::NewRegion,
        AnomalyKind::Coordinated => pb::AnomalyKind::Coordinated,
    }
}

pub fn anomaly_to_pb(a: &Anomaly) -> pb::Anomaly {
    pb::Anomaly {
        id: a.id.clone(),
        detector: a.detector.clone(),
        service: a.service.clone(),
        entity: a
            .entity
            .iter()
            .map(|(field, value)| pb::EntityValue {
                field: field.clone(),
                value: value.clone(),
            })
            .collect(),
        account_id: a.account_id.clone(),
        region: a.region.clone(),
        window_start: Some(timestamp(a.window_start)),
        window_end: Some(timestamp(a.window_end)),
        observed_until: Some(timestamp(a.observed_until)),
        actual: a.actual,
        expected: a.expected,
        features: a
            .features
            .iter()
            .map(|f| pb::FeatureValue {
                name: f.name.clone(),
                actual: f.actual,
                expected: f.expected,
            })
            .collect(),
        grade: a.grade,
        confidence: a.confidence,
        kind: kind_to_pb(a.kind) as i32,
        account: Some(account_to_pb(&a.account)),
        top_contributors: a
            .top_contributors
            .iter()
            .map(|c| pb::Contributor {
                dimension: c.dimension.clone(),
                value: c.value.clone(),
                count: c.count,
                share: c.share,
                baseline_count: c.baseline_count,
                is_new: c.is_new,
            })
            .collect(),
        score: a.score,
        detected_at: Some(timestamp(a.detected_at)),
        event_count: a.event_count,
    }
}

/// Validates an anomaly that crossed a service boundary.
pub fn anomaly_from_pb(p: pb::Anomaly) -> Result<Anomaly, InvalidField> {
    if p.id.is_empty() {
        return Err(InvalidField::new("anomaly.id", "must not be empty"));
    }
    if p.detector.is_empty() {
        return Err(InvalidField::new("anomaly.detector", "must not be empty"));
    }
    if !crate::is_account_id(&p.account_id) {
        return Err(InvalidField::new(
            "anomaly.account_id",
            format!("{:?} is not a 12-digit account id", p.account_id),
        ));
    }
    if !(0.0..=1.0).contains(&p.grade) {
        return Err(InvalidField::new("anomaly.grade", "must be within 0..1"));
    }
    if !(0.0..=1.0).contains(&p.confidence) {
        return Err(InvalidField::new(
            "anomaly.confidence",
            "must be within 0..1",
        ));
    }
    if !p.actual.is_finite() || !p.expected.is_finite() {
        return Err(InvalidField::new(
            "anomaly.actual",
            "actual and expected must be finite numbers",
        ));
    }
    let window_start = opt_time(&p.window_start, "anomaly.window_start")?;
    let window_end = opt_time(&p.window_end, "anomaly.window_end")?;
    if window_end <= window_start {
        return Err(InvalidField::new(
            "anomaly.window_end",
            "must be after window_start",
        ));
    }
    let account = p
        .account
        .map(account_from_pb)
        .unwrap_or_else(|| AccountMetadata::external(&p.account_id));
    let kind = match pb::AnomalyKind::try_from(p.kind).unwrap_or(pb::AnomalyKind::Unspecified) {
        pb::AnomalyKind::Drop => AnomalyKind::Drop,
        pb::AnomalyKind::NewRegion => AnomalyKind::NewRegion,
        pb::AnomalyKind::Coordinated => AnomalyKind::Coordinated,
        _ => AnomalyKind::Spike,
    };
    // Absent (an older sender): the window as closed.
    let observed_until = match &p.observed_until {
        Some(t) => from_timestamp(t)
            .ok_or_else(|| InvalidField::new("anomaly.observed_until", "not a valid timestamp"))?,
        None => window_end,
    };
    Ok(Anomaly {
        id: p.id,
        detector: p.detector,
        service: p.service,
        kind,
        account_id: p.account_id,
        account_name: account.name.clone(),
        environment: account.environment,
        ou_path: account.ou_path.clone(),
        region: p.region,
        entity: p.entity.into_iter().map(|e| (e.field, e.value)).collect(),
        window_start,
        window_end,
        observed_until,
        actual: p.actual,
        expected: p.expected,
        features: p
            .features
            .into_iter()
            .map(|f| FeatureValue {
                name: f.name,
                actual: f.actual,
                expected: f.expected,
            })
            .collect(),
        grade: p.grade,
        confidence: p.confidence,
        score: p.score,
        event_count: p.event_count,
        top_contributors: p
            .top_contributors
            .into_iter()
            .map(|c| Contributor {
                dimension: c.dimension,
                value: c.value,
                count: c.count,
                share: c.share,
                baseline_count: c.baseline_count,
                is_new: c.is_new,
            })
            .collect(),
        detected_at: p
            .detected_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now),
        account,
    })
}

pub fn detector_to_pb(d: &DetectorSpec) -> pb::Detector {
    pb::Detector {
        name: d.name.clone(),
        description: d.description.clone(),
        service: d.service.clone(),
        event_source: d.event_source.clone(),
        event_names: d.event_names.clone(),
        errors: match d.errors {
            ErrorFilter::Exclude => pb::ErrorFilter::Exclude,
            ErrorFilter::Include => pb::ErrorFilter::Include,
            ErrorFilter::Only => pb::ErrorFilter::Only,
        } as i32,
        features: d
            .features
            .iter()
            .map(|f| pb::Feature {
                name: f.name.clone(),
                aggregation: match f.aggregation {
                    Aggregation::Count => pb::Aggregation::Count,
                    Aggregation::Sum => pb::Aggregation::Sum,
                } as i32,
                fields: f.fields.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
        category_fields: d.category_fields.iter().map(|p| p.to_string()).collect(),
        interval_seconds: d.interval.as_secs() as u32,
        lateness_seconds: d.lateness.as_secs() as u32,
        contributors: d
            .contributors
            .iter()
            .map(|c| pb::ContributorField {
                name: c.name.clone(),
                fields: c.fields.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
        enabled: d.enabled,
        min_grade: d.min_grade,
        error_codes: d.error_codes.clone(),
        notable_values: d.notable_values.clone(),
        ignore_quiet_environments: d.ignore_quiet_environments,
    }
}

fn paths(list: Vec<String>, field: &str) -> Result<Vec<FieldPath>, InvalidField> {
    list.iter()
        .map(|s| s.parse().map_err(|e: String| InvalidField::new(field, e)))
        .collect()
}

/// Validates a detector sent over gRPC, defaulting what proto3 cannot say
/// was left out (interval 600 s, lateness 120 s, account × region).
pub fn detector_from_pb(p: pb::Detector) -> Result<DetectorSpec, InvalidField> {
    let errors = match pb::ErrorFilter::try_from(p.errors) {
        Ok(pb::ErrorFilter::Exclude) | Ok(pb::ErrorFilter::Unspecified) => ErrorFilter::Exclude,
        Ok(pb::ErrorFilter::Include) => ErrorFilter::Include,
        Ok(pb::ErrorFilter::Only) => ErrorFilter::Only,
        Err(_) => return Err(InvalidField::new("errors", "unknown error filter")),
    };
    let mut features = Vec::new();
    for (i, f) in p.features.into_iter().enumerate() {
        let aggregation = match pb::Aggregation::try_from(f.aggregation) {
            Ok(pb::Aggregation::Sum) => Aggregation::Sum,
            Ok(_) => Aggregation::Count,
            Err(_) => {
                return Err(InvalidField::new(
                    format!("features[{i}].aggregation"),
                    "unknown aggregation",
                ));
            }
        };
        features.push(FeatureSpec {
            name: f.name,
            aggregation,
            fields: paths(f.fields, &format!("features[{i}].fields"))?,
        });
    }
    let category_fields = if p.category_fields.is_empty() {
        paths(
            vec!["recipientAccountId".into(), "awsRegion".into()],
            "category_fields",
        )?
    } else {
        paths(p.category_fields, "category_fields")?
    };
    let mut contributors = Vec::new();
    for (i, c) in p.contributors.into_iter().enumerate() {
        contributors.push(ContributorSpec {
            name: c.name,
            fields: paths(c.fields, &format!("contributors[{i}].fields"))?,
        });
    }
    let spec = DetectorSpec {
        name: p.name,
        description: p.description,
        service: p.service,
        event_source: p.event_source,
        event_names: p.event_names,
        errors,
        error_codes: p.error_codes,
        features,
        category_fields,
        interval: Duration::from_secs(if p.interval_seconds == 0 {
            600
        } else {
            u64::from(p.interval_seconds)
        }),
        lateness: Duration::from_secs(if p.lateness_seconds == 0 {
            120
        } else {
            u64::from(p.lateness_seconds)
        }),
        contributors,
        enabled: p.enabled,
        min_grade: p.min_grade,
        notable_values: p.notable_values,
        ignore_quiet_environments: p.ignore_quiet_environments,
    };
    spec.validate().map_err(|reason| {
        let field = [
            "name",
            "service",
            "features",
            "category_fields",
            "interval",
            "lateness",
            "min_grade",
        ]
        .into_iter()
        .find(|f| reason.contains(f.trim_end_matches('s')))
        .unwrap_or("detector");
        InvalidField::new(field, reason)
    })?;
    Ok(spec)
}

// ---- insights ----

use crate::insight::{CostImpact, CostLine, Factor, Insight, Recommendation, RootCause, Severity};
use trailhound_proto::insights::v1 as ipb;

pub fn severity_to_pb(s: Severity) -> ipb::Severity {
    match s {
        Severity::Low => ipb::Severity::Low,
        Severity::Medium => ipb::Severity::Medium,
        Severity::High => ipb::Severity::High,
        Severity::Critical => ipb::Severity::Critical,
    }
}

/// None for UNSPECIFIED (a filter that was not set).
pub fn severity_from_pb(v: i32) -> Result<Option<Severity>, InvalidField> {
    match ipb::Severity::try_from(v) {
        Ok(ipb::Severity::Unspecified) => Ok(None),
        Ok(ipb::Severity::Low) => Ok(Some(Severity::Low)),
        Ok(ipb::Severity::Medium) => Ok(Some(Severity::Medium)),
        Ok(ipb::Severity::High) => Ok(Some(Severity::High)),
        Ok(ipb::Severity::Critical) => Ok(Some(Severity::Critical)),
        Err(_) => Err(InvalidField::new("severity", format!("unknown value {v}"))),
    }
}

pub fn insight_to_pb(i: &Insight) -> ipb::Insight {
    ipb::Insight {
        traceparent: i.trace_parent.clone(),
        id: i.id.clone(),
        anomaly: Some(anomaly_to_pb(&i.anomaly)),
        incident_id: i.incident_id.clone(),
        summary: i.summary.clone(),
        cost: Some(ipb::CostImpact {
            usd_per_hour: i.cost.usd_per_hour,
            usd_per_day: i.cost.usd_per_day,
            usd_per_30_days: i.cost.usd_per_30_days,
            estimated: i.cost.estimated,
            lines: i
                .cost
                .lines
                .iter()
                .map(|l| ipb::CostLine {
                    item: l.item.clone(),
                    quantity: l.quantity,
                    unit: l.unit.clone(),
                    usd_per_hour: l.usd_per_hour,
                    estimated: l.estimated,
                    basis: l.basis.clone(),
                })
                .collect(),
            assumptions: i.cost.assumptions.clone(),
            price_table_as_of: i.cost.price_table_as_of.clone(),
        }),
        root_cause: Some(ipb::RootCause {
            explanation: i.root_cause.explanation.clone(),
            factors: i
                .root_cause
                .factors
                .iter()
                .map(|f| ipb::Factor {
                    dimension: f.dimension.clone(),
                    value: f.value.clone(),
                    count: f.count,
                    share: f.share,
                    is_new: f.is_new,
                    baseline_count: f.baseline_count,
                })
                .collect(),
        }),
        severity: severity_to_pb(i.severity) as i32,
        severity_reasons: i.severity_reasons.clone(),
        recommendations: i
            .recommendations
            .iter()
            .map(|r| ipb::Recommendation {
                rule: r.rule.clone(),
                title: r.title.clone(),
                actions: r.actions.clone(),
            })
            .collect(),
        correlation: i.correlation.as_ref().map(|c| ipb::Correlation {
            id: c.id.clone(),
            kind: c.kind.clone(),
            value: c.value.clone(),
            account_ids: c.account_ids.clone(),
            account_names: c.account_names.clone(),
            anomaly_ids: c.anomaly_ids.clone(),
        }),
        suppressed_by: i.suppressed_by.clone().unwrap_or_default(),
        analyzed_at: Some(timestamp(i.analyzed_at)),
        investigate: i.investigate.clone(),
    }
}

/// Validates an insight that crossed a service boundary (notify's input).
pub fn insight_from_pb(p: ipb::Insight) -> Result<Insight, InvalidField> {
    let anomaly = anomaly_from_pb(
        p.anomaly
            .ok_or_else(|| InvalidField::new("insight.anomaly", "missing"))?,
    )
    .map_err(|e| InvalidField::new(format!("insight.{}", e.field), e.reason))?;
    if p.id.is_empty() {
        return Err(InvalidField::new("insight.id", "must not be empty"));
    }
    let severity = severity_from_pb(p.severity)
        .map_err(|e| InvalidField::new("insight.severity", e.reason))?
        .ok_or_else(|| InvalidField::new("insight.severity", "must be set"))?;
    let cost = p.cost.unwrap_or_default();
    let root = p.root_cause.unwrap_or_default();
    let finite = |v: f64, field: &str| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(InvalidField::new(
                field,
                "must be a finite, non-negative amount",
            ))
        }
    };
    Ok(Insight {
        trace_parent: p.traceparent,
        incident_id: if p.incident_id.is_empty() {
            p.id.clone()
        } else {
            p.incident_id
        },
        id: p.id,
        anomaly,
        summary: p.summary,
        cost: CostImpact {
            usd_per_hour: finite(cost.usd_per_hour, "insight.cost.usd_per_hour")?,
            usd_per_day: finite(cost.usd_per_day, "insight.cost.usd_per_day")?,
            usd_per_30_days: finite(cost.usd_per_30_days, "insight.cost.usd_per_30_days")?,
            estimated: cost.estimated,
            lines: cost
                .lines
                .into_iter()
                .map(|l| CostLine {
                    item: l.item,
                    quantity: l.quantity,
                    unit: l.unit,
                    usd_per_hour: l.usd_per_hour,
                    estimated: l.estimated,
                    basis: l.basis,
                })
                .collect(),
            assumptions: cost.assumptions,
            price_table_as_of: cost.price_table_as_of,
        },
        root_cause: RootCause {
            explanation: root.explanation,
            factors: root
                .factors
                .into_iter()
                .map(|f| Factor {
                    dimension: f.dimension,
                    value: f.value,
                    count: f.count,
                    share: f.share,
                    is_new: f.is_new,
                    baseline_count: f.baseline_count,
                })
                .collect(),
        },
        severity,
        severity_reasons: p.severity_reasons,
        recommendations: p
            .recommendations
            .into_iter()
            .map(|r| Recommendation {
                rule: r.rule,
                title: r.title,
                actions: r.actions,
            })
            .collect(),
        correlation: p.correlation.map(|c| crate::insight::Correlation {
            id: c.id,
            kind: c.kind,
            value: c.value,
            account_ids: c.account_ids,
            account_names: c.account_names,
            anomaly_ids: c.anomaly_ids,
        }),
        suppressed_by: (!p.suppressed_by.is_empty()).then_some(p.suppressed_by),
        analyzed_at: opt_time(&p.analyzed_at, "insight.analyzed_at")?,
        investigate: p.investigate,
    })
}
