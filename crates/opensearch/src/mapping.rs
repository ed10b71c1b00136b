//! How an enriched event looks in `cwl-multiaccounts-*`.
//!
//! Field names follow CloudTrail's (`recipientAccountId`, `awsRegion`,
//! `userIdentity.arn`, …) so a detector's category fields name index
//! fields directly, and dashboards built for the reference implementation
//! keep working. Everything searchable is `keyword`; `sourceIPAddress`
//! stays the raw string (CloudTrail puts `lambda.amazonaws.com` there) and
//! `sourceIP` is an `ip` field set only when the value parses. The mapping
//! is `dynamic: false`: unknown fields are kept in `_source` but never
//! widen the mapping, so one odd record cannot cause a mapping explosion.
//!
//! Detectors are evaluated at index time: each matching detector's name is
//! in `th.detectors`, its feature values in `th.features.<detector>.<feature>`
//! and its contributor values in `th.contrib.<detector>.<name>`. The AD
//! plugin then needs only `sum` aggregations and a `term` filter, whatever
//! JSON path the feature reads (array lengths included), and the series the
//! gRPC API serves are the same numbers the detectors see.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use trailhound_core::fieldpath::ParsedDocs;
use trailhound_core::{DetectorSpec, EnrichedEvent};

use crate::config::{IndexMode, OpenSearchConfig};

/// Category fields the index holds as top-level keywords, by the name a
/// detector configuration uses.
pub const CATEGORY_FIELDS: &[&str] = &[
    "recipientAccountId",
    "awsRegion",
    "eventSource",
    "eventName",
    "sourceIPAddress",
    "userAgent",
    "errorCode",
    "userIdentity.arn",
    "userIdentity.type",
    "userIdentity.accountId",
    "userIdentity.userName",
    "userIdentity.invokedBy",
];

fn kw() -> Value {
    json!({"type": "keyword", "ignore_above": 1024})
}

/// The properties of trailhound's own per-detector fields.
fn detector_properties(detectors: &[DetectorSpec]) -> Value {
    let mut features = Map::new();
    let mut contrib = Map::new();
    for d in detectors {
        let mut f = Map::new();
        for feat in &d.features {
            f.insert(feat.name.clone(), json!({"type": "double"}));
        }
        features.insert(d.name.clone(), json!({ "properties": f }));
        let mut c = Map::new();
        for spec in &d.contributors {
            c.insert(spec.name.clone(), kw());
        }
        contrib.insert(d.name.clone(), json!({ "properties": c }));
    }
    let keys: Map<String, Value> = detectors
        .iter()
        .filter(|d| keyed(d))
        .map(|d| (d.name.clone(), kw()))
        .collect();
    json!({
        "properties": {
            "detectors": {"type": "keyword"},
            "features": {"properties": features},
            "contrib": {"properties": contrib},
            "keys": {"properties": keys},
        }
    })
}

/// The mappings of an event index.
pub fn event_mappings(detectors: &[DetectorSpec]) -> Value {
    json!({
        "dynamic": false,
        "properties": {
            "@timestamp": {"type": "date"},
            "eventTime": {"type": "date"},
            "eventID": {"type": "keyword"},
            "eventSource": kw(),
            "eventName": kw(),
            "awsRegion": kw(),
            "recipientAccountId": kw(),
            "accountName": kw(),
            "environment": kw(),
            "ouPath": kw(),
            "team": kw(),
            "costCenter": kw(),
            "principalArn": kw(),
            "userIdentity": {"properties": {
                "type": kw(), "arn": kw(), "accountId": kw(), "invokedBy": kw(),
                "principalId": kw(), "userName": kw(), "accessKeyId": kw(),
                "sessionIssuerArn": kw(),
            }},
            "sourceIPAddress": kw(),
            "sourceIP": {"type": "ip"},
            "userAgent": kw(),
            "errorCode": kw(),
            "errorMessage": {"type": "text"},
            "readOnly": {"type": "boolean"},
            "managementEvent": {"type": "boolean"},
            "eventCategory": kw(),
            "eventType": kw(),
            "requestParameters": {"type": "text", "index": false},
            "responseElements": {"type": "text", "index": false},
            "th": detector_properties(detectors),
        }
    })
}

/// The index template for `<prefix>-*`.
pub fn index_template(config: &OpenSearchConfig, detectors: &[DetectorSpec]) -> Value {
    let mut settings = json!({
        "number_of_shards": config.shards,
        "number_of_replicas": config.replicas,
    });
    if config.index_mode == IndexMode::Rollover {
        settings["plugins.index_state_management.rollover_alias"] = json!(write_alias(config));
    }
    json!({
        "index_patterns": [config.index_pattern()],
        "priority": 100,
        "template": {
            "settings": settings,
            "mappings": event_mappings(detectors),
        },
        "_meta": {"managed_by": "trailhound"},
    })
}

/// The mappings of the anomaly index ListAnomalies reads.
pub fn anomaly_mappings() -> Value {
    json!({
        "dynamic": false,
        "properties": {
            "id": {"type": "keyword"},
            "detector": {"type": "keyword"},
            "service": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "account_id": {"type": "keyword"},
            "account_name": {"type": "keyword"},
            "environment": {"type": "keyword"},
            "ou_path": {"type": "keyword"},
            "region": {"type": "keyword"},
            "window_start": {"type": "date"},
            "window_end": {"type": "date"},
            "window_start_ms": {"type": "long"},
            "actual": {"type": "double"},
            "expected": {"type": "double"},
            "grade": {"type": "double"},
            "confidence": {"type": "double"},
            "detected_at": {"type": "date"},
        }
    })
}

/// The alias rollover mode writes to.
pub fn write_alias(config: &OpenSearchConfig) -> String {
    format!("{}-write", config.index_prefix)
}

/// The id of rollover mode's ISM policy.
pub fn ism_policy_id(config: &OpenSearchConfig) -> String {
    format!("{}-rollover", config.index_prefix)
}

/// Rollover mode's ISM policy: one `hot` state whose rollover action
/// fires on age or primary shard size; its `ism_template` attaches it to
/// every new `<prefix>-*` index, and the index template's
/// `plugins.index_state_management.rollover_alias` setting tells it which
/// alias to roll.
pub fn ism_policy(config: &OpenSearchConfig) -> Value {
    json!({
        "policy": {
            "description": format!("trailhound: roll {} over by age or size", write_alias(config)),
            "default_state": "hot",
            "states": [{
                "name": "hot",
                "actions": [{"rollover": {
                    "min_index_age": config.rollover_min_index_age,
                    "min_primary_shard_size": config.rollover_min_primary_shard_size,
                }}],
                "transitions": []
            }],
            "ism_template": [{
                "index_patterns": [config.index_pattern()],
                "priority": 100
            }]
        }
    })
}

/// The first backing index of rollover mode.
pub fn first_rollover_index(config: &OpenSearchConfig) -> String {
    format!("{}-000001", config.index_prefix)
}

/// Where an event is written: its day's index, or the write alias.
pub fn index_for(config: &OpenSearchConfig, event_time_ms: i64) -> String {
    match config.index_mode {
        IndexMode::Rollover => write_alias(config),
        IndexMode::Daily => {
            let t = DateTime::<Utc>::from_timestamp_millis(event_time_ms).unwrap_or_default();
            format!("{}-{}", config.index_prefix, t.format("%Y.%m.%d"))
        }
    }
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// The document of one event.
pub fn document(e: &EnrichedEvent, detectors: &[DetectorSpec]) -> Value {
    let ev = &e.event;
    let a = &e.account;
    let ui = &ev.user_identity;
    let mut doc = json!({
        "@timestamp": iso(ev.event_time_ms),
        "eventTime": iso(ev.event_time_ms),
        "eventID": ev.event_id,
        "eventSource": ev.event_source,
        "eventName": ev.event_name,
        "awsRegion": ev.aws_region,
        "recipientAccountId": ev.recipient_account_id,
        "accountName": opt_str(&a.name),
        "environment": a.environment.as_str(),
        "ouPath": a.ou_path,
        "team": opt_str(&a.team),
        "costCenter": opt_str(&a.cost_center),
        "principalArn": ui.principal(),
        "userIdentity": {
            "type": opt_str(&ui.kind),
            "arn": opt_str(&ui.arn),
            "accountId": opt_str(&ui.account_id),
            "invokedBy": opt_str(&ui.invoked_by),
            "principalId": opt_str(&ui.principal_id),
            "userName": opt_str(&ui.user_name),
            "accessKeyId": opt_str(&ui.access_key_id),
            "sessionIssuerArn": opt_str(&ui.session_issuer_arn),
        },
        "sourceIPAddress": opt_str(&ev.source_ip_address),
        "userAgent": opt_str(&ev.user_agent),
        "errorCode": opt_str(&ev.error_code),
        "errorMessage": opt_str(&ev.error_message),
        "readOnly": ev.read_only,
        "managementEvent": ev.management_event,
        "eventCategory": opt_str(&ev.event_category),
        "eventType": opt_str(&ev.event_type),
        "requestParameters": opt_str(&ev.request_parameters),
        "responseElements": opt_str(&ev.response_elements),
    });
    if let Ok(ip) = ev.source_ip_address.parse::<IpAddr>() {
        doc["sourceIP"] = Value::String(ip.to_string());
    }
    let mut names = Vec::new();
    let mut features = Map::new();
    let mut contrib = Map::new();
    let mut keys = Map::new();
    let mut docs = ParsedDocs::default();
    let mut values = Vec::new();
    for d in detectors.iter().filter(|d| d.enabled && d.matches(ev)) {
        names.push(Value::String(d.name.clone()));
        if keyed(d) {
            keys.insert(d.name.clone(), json!(d.entity(ev, &mut docs).join("/")));
        }
        d.feature_values(ev, &mut docs, &mut values);
        let f: Map<String, Value> = d
            .features
            .iter()
            .zip(&values)
            .map(|(f, v)| (f.name.clone(), json!(v)))
            .collect();
        features.insert(d.name.clone(), Value::Object(f));
        let mut c = Map::new();
        for spec in &d.contributors {
            let vals = spec
                .fields
                .iter()
                .map(|p| p.strings(ev, &mut docs))
                .find(|v| !v.is_empty())
                .unwrap_or_default();
            if !vals.is_empty() {
                c.insert(spec.name.clone(), json!(vals));
            }
        }
        if !c.is_empty() {
            contrib.insert(d.name.clone(), Value::Object(c));
        }
    }
    if !names.is_empty() {
        doc["th"] = json!({"detectors": names, "features": features, "contrib": contrib});
        if !keys.is_empty() {
            doc["th"]["keys"] = Value::Object(keys);
        }
    }
    doc
}

/// Whether a detector's entity is indexed as one keyword of its own
/// (`th.keys.<detector>`): the plugin takes at most two category fields,
/// all top-level keywords, and a per-function detector needs three.
pub fn keyed(spec: &DetectorSpec) -> bool {
    spec.category_fields.len() > 2
        || spec
            .category_fields
            .iter()
            .any(|f| !CATEGORY_FIELDS.contains(&f.as_str()))
}

/// The index field holding a keyed detector's whole entity.
pub fn key_field(detector: &str) -> String {
    format!("th.keys.{detector}")
}

/// The index field a detector's category field is read from, or why it
/// cannot be one.
pub fn category_field(detector: &str, field: &str) -> Result<String, String> {
    if CATEGORY_FIELDS.contains(&field) {
        Ok(field.to_string())
    } else {
        Err(format!(
            "detector {detector}: category field {field} is not indexed as a keyword in the event indices; use one of {}",
            CATEGORY_FIELDS.join(", ")
        ))
    }
}

/// The index field of one feature.
pub fn feature_field(detector: &str, feature: &str) -> String {
    format!("th.features.{detector}.{feature}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use trailhound_core::detector::default_detectors;
    use trailhound_core::{AccountMetadata, Event};

    fn event(ip: &str) -> EnrichedEvent {
        EnrichedEvent {
            event: Event {
                event_id: "e1".into(),
                event_time_ms: 1_767_571_200_000,
                source_ip_address: ip.into(),
                user_agent: "cli".into(),
                event_version: "1.08".into(),
                request_parameters: r#"{"instanceType":"p4d.24xlarge","maxCount":4}"#.into(),
                response_elements: r#"{"instancesSet":{"items":[{"instanceType":"p4d.24xlarge"},{"instanceType":"p4d.24xlarge"}]}}"#.into(),
                ..trailhound_core::event::testing::run_instances()
            },
            account: Arc::new(AccountMetadata::external("111122223333")),
        }
    }

    #[test]
    fn ip_only_when_it_parses_and_detectors_are_evaluated() {
        let d = default_detectors();
        let doc = document(&event("203.0.113.7"), &d);
        assert_eq!(doc["sourceIP"], "203.0.113.7");
        assert_eq!(doc["th"]["detectors"], json!(["ec2-run-instances"]));
        assert_eq!(doc["th"]["features"]["ec2-run-instances"]["instances"], 2.0);
        assert_eq!(
            doc["th"]["contrib"]["ec2-run-instances"]["instance_type"][0],
            "p4d.24xlarge"
        );
        let doc = document(&event("lambda.amazonaws.com"), &d);
        assert!(doc.get("sourceIP").is_none());
        assert_eq!(doc["sourceIPAddress"], "lambda.amazonaws.com");
        assert_eq!(
            index_for(&OpenSearchConfig::default(), 1_767_571_200_000),
            "cwl-multiaccounts-2026.01.05"
        );
    }
}
