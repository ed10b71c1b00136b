//! One record: the wire record read from JSON, validated and normalized
//! into an [`Event`].

use std::borrow::Cow;

use chrono::DateTime;

use super::{ParseLimits, Raw, Text, WireRecord};
use crate::event::{Event, UserIdentity};
use crate::is_account_id;

fn own(s: Option<Text<'_>>) -> String {
    s.map(|t| t.0.into_owned()).unwrap_or_default()
}

fn required<'a>(s: Option<Text<'a>>, field: &str) -> Result<Cow<'a, str>, String> {
    match s {
        Some(Text(v)) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("missing required field {field}")),
    }
}

/// Reads a CloudTrail boolean, which some producers send as a string.
fn lenient_bool(raw: Option<Raw<'_>>, field: &str) -> Result<Option<bool>, String> {
    match raw.map(|r| r.0.trim()) {
        None | Some("null") => Ok(None),
        Some("true") | Some("\"true\"") => Ok(Some(true)),
        Some("false") | Some("\"false\"") => Ok(Some(false)),
        Some(other) => Err(format!("field {field} is not a boolean: {other}")),
    }
}

fn json_text(raw: Option<Raw<'_>>) -> String {
    match raw.map(|r| r.0) {
        None | Some("null") => String::new(),
        Some(s) => s.to_string(),
    }
}

fn valid_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A duration for people: "23h50m", "5m", "3d2h".
fn span(ms: i64) -> String {
    let secs = (ms / 1000).max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() || (s > 0 && d == 0 && h == 0) {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn clock_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Validates and normalizes one CloudTrail record given as JSON text.
pub fn parse_record(json: &str, limits: &ParseLimits, now_ms: i64) -> Result<Event, String> {
    if json.len() > limits.max_record_bytes {
        return Err(record_too_large(json.len(), limits));
    }
    let wire: WireRecord<'_> =
        serde_json::from_str(json).map_err(|e| format!("malformed record: {e}"))?;
    normalize(wire, json, limits, now_ms)
}

/// Validates and normalizes a deserialized record; `json` is its text.
pub(super) fn normalize(
    wire: WireRecord<'_>,
    json: &str,
    limits: &ParseLimits,
    now_ms: i64,
) -> Result<Event, String> {
    let event_id = required(wire.event_id, "eventID")?.into_owned();
    let time_text = required(wire.event_time, "eventTime")?;
    let event_time_ms = DateTime::parse_from_rfc3339(&time_text)
        .map_err(|e| format!("field eventTime is not RFC 3339 ({time_text}): {e}"))?
        .timestamp_millis();
    if event_time_ms < limits.min_time_ms {
        return Err(format!(
            "field eventTime {time_text} is before 2010, implausible for CloudTrail"
        ));
    }
    if event_time_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(format!(
            "field eventTime {time_text} is {} ahead of the receiving clock {} (max_future_skew {}): quarantined",
            span(event_time_ms.saturating_sub(now_ms)),
            clock_text(now_ms),
            span(limits.max_future_skew_ms)
        ));
    }
    if let Some(age) = limits.max_age_ms
        && event_time_ms < now_ms.saturating_sub(age)
    {
        return Err(format!(
            "field eventTime {time_text} is {} behind the receiving clock {} (max_event_age {}): quarantined",
            span(now_ms.saturating_sub(event_time_ms)),
            clock_text(now_ms),
            span(age)
        ));
    }
    let event_source = required(wire.event_source, "eventSource")?.into_owned();
    let event_name = required(wire.event_name, "eventName")?.into_owned();
    let aws_region = required(wire.aws_region, "awsRegion")?.into_owned();
    if !valid_region(&aws_region) {
        return Err(format!(
            "field awsRegion is not a region name: {aws_region:?}"
        ));
    }

    let identity = wire.user_identity.map(|id| UserIdentity {
        kind: own(id.kind),
        arn: own(id.arn),
        account_id: own(id.account_id),
        invoked_by: own(id.invoked_by),
        principal_id: own(id.principal_id),
        user_name: own(id.user_name),
        access_key_id: own(id.access_key_id),
        session_issuer_arn: id
            .session_context
            .and_then(|c| c.session_issuer)
            .map(|i| own(i.arn))
            .unwrap_or_default(),
    });
    let user_identity = identity.unwrap_or_default();

    let recipient_account_id = match wire.recipient_account_id {
        Some(id) => id.0.into_owned(),
        None if !user_identity.account_id.is_empty() => user_identity.account_id.clone(),
        None => return Err("missing required field recipientAccountId".into()),
    };
    if !is_account_id(&recipient_account_id) {
        return Err(format!(
            "field recipientAccountId is not a 12-digit account id: {recipient_account_id:?}"
        ));
    }

    Ok(Event {
        event_id,
        event_time_ms,
        event_source,
        event_name,
        aws_region,
        recipient_account_id,
        user_identity,
        source_ip_address: own(wire.source_ip_address),
        user_agent: own(wire.user_agent),
        error_code: own(wire.error_code),
        error_message: own(wire.error_message),
        read_only: lenient_bool(wire.read_only, "readOnly")?,
        management_event: lenient_bool(wire.management_event, "managementEvent")?,
        event_category: own(wire.event_category),
        event_type: own(wire.event_type),
        event_version: own(wire.event_version),
        request_parameters: json_text(wire.request_parameters),
        response_elements: json_text(wire.response_elements),
        raw: if limits.keep_raw {
            json.to_string()
        } else {
            String::new()
        },
    })
}

pub(super) fn record_too_large(len: usize, limits: &ParseLimits) -> String {
    format!(
        "record is {} bytes, over the {} byte limit",
        len, limits.max_record_bytes
    )
}
