//! CloudWatch Logs subscription deliveries: base64 of gzip JSON whose log
//! events are CloudTrail records.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;

use super::{ParseLimits, REJECTION_SNIPPET, RecordSink, Rejection, maybe_gunzip, parse_record};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CwlPayload<'a> {
    #[serde(borrow)]
    message_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    log_group: Option<Cow<'a, str>>,
    #[serde(borrow)]
    log_stream: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    log_events: Vec<CwlLogEvent<'a>>,
}

#[derive(Deserialize)]
struct CwlLogEvent<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// Parses a CloudWatch Logs subscription delivery: base64 of gzip JSON with
/// `logEvents`, each `message` one CloudTrail record. `CONTROL_MESSAGE`
/// deliveries (sent when a subscription is created) carry no events and are
/// ignored. Returns the number of log events seen.
pub fn parse_cloudwatch_payload<S: RecordSink>(
    data: &str,
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    let compressed = match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
        Ok(b) => b,
        Err(e) => {
            sink.reject(Rejection::new(
                source,
                format!("CloudWatch Logs payload is not valid base64: {e}"),
                data,
            ));
            return 0;
        }
    };
    let body = match maybe_gunzip(compressed, limits.max_document_bytes) {
        Ok(b) => b,
        Err(reason) => {
            sink.reject(Rejection::new(
                source,
                format!("CloudWatch Logs payload: {reason}"),
                "",
            ));
            return 0;
        }
    };
    parse_cloudwatch_json(&body, source, limits, now_ms, sink)
}

/// Parses the decompressed JSON of a CloudWatch Logs subscription delivery.
pub fn parse_cloudwatch_json<S: RecordSink>(
    body: &[u8],
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    let payload: CwlPayload<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            sink.reject(Rejection::new(
                source,
                format!("malformed CloudWatch Logs payload: {e}"),
                &String::from_utf8_lossy(&body[..body.len().min(REJECTION_SNIPPET)]),
            ));
            return 0;
        }
    };
    if payload.message_type.as_deref() == Some("CONTROL_MESSAGE") {
        return 0;
    }
    let group = payload.log_group.as_deref().unwrap_or("");
    let stream = payload.log_stream.as_deref().unwrap_or("");
    let n = payload.log_events.len();
    for (i, ev) in payload.log_events.into_iter().enumerate() {
        let id = ev.id.map(Cow::into_owned).unwrap_or_else(|| i.to_string());
        let src = format!("{source}:{group}/{stream}#{id}");
        match ev.message {
            Some(msg) => match parse_record(msg.trim(), limits, now_ms) {
                Ok(event) => sink.event(event),
                Err(reason) => sink.reject(Rejection::new(src, reason, &msg)),
            },
            None => sink.reject(Rejection::new(src, "log event has no message", "")),
        }
    }
    n
}
