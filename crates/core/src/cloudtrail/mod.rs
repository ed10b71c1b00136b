//! CloudTrail parsers: S3 log files (`{"Records":[...]}`, plain or gzip),
//! JSON arrays of records, single records, and CloudWatch Logs subscription
//! payloads.
//!
//! Every parser streams: each record is validated on its own and handed to a
//! [`RecordSink`] as an [`Event`] or a [`Rejection`], so one bad record never
//! costs the good ones around it. A syntax error part-way through a file
//! keeps every record before it and rejects the remainder with the position.
//!
//! Here is what the parsers share: limits, rejections, sinks and the wire
//! shape of a record.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::value::RawValue;

use crate::event::Event;

mod cloudwatch;
mod document;
mod file;
mod record;
mod scan;

pub use cloudwatch::{parse_cloudwatch_json, parse_cloudwatch_payload};
pub use document::parse_document;
pub use file::{maybe_gunzip, parse_file_bytes};
pub use record::parse_record;

/// Bounds that keep one hostile input from exhausting memory or poisoning
/// the timeline.
#[derive(Clone, Debug)]
pub struct ParseLimits {
    /// Largest single record accepted, in bytes (CloudTrail's own events are
    /// far below 256 KiB).
    pub max_record_bytes: usize,
    /// Largest decompressed document accepted, in bytes: CloudTrail's own
    /// files are a few MB; more is a bomb or not CloudTrail.
    pub max_document_bytes: usize,
    /// Earliest plausible eventTime, ms since epoch (CloudTrail began in 2013).
    pub min_time_ms: i64,
    /// How far past the receiving clock an eventTime may be, ms. Anything
    /// further ahead is quarantined: it never reaches a watermark.
    pub max_future_skew_ms: i64,
    /// How far behind the receiving clock an eventTime may be, ms; None
    /// for no bound (replays of history).
    pub max_age_ms: Option<i64>,
    /// Keep each record's original JSON in `Event::raw`. Services keep it
    /// (it travels in the contract); a local replay that only detects does
    /// not need the copy.
    pub keep_raw: bool,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: 1 << 20,
            max_document_bytes: 128 << 20,
            // 2010-01-01T00:00:00Z
            min_time_ms: 1_262_304_000_000,
            max_future_skew_ms: 5 * 60 * 1000,
            max_age_ms: None,
            keep_raw: true,
        }
    }
}

/// A record that could not be accepted, with why and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    pub source: String,
    pub reason: String,
    /// The start of the offending input (at most 2 KiB), for the dead letter.
    pub record: String,
}

const REJECTION_SNIPPET: usize = 2048;

impl Rejection {
    pub fn new(source: impl Into<String>, reason: impl Into<String>, record: &str) -> Self {
        let mut end = record.len().min(REJECTION_SNIPPET);
        while !record.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            source: source.into(),
            reason: reason.into(),
            record: record[..end].to_string(),
        }
    }
}

/// Receives what a parser finds.
pub trait RecordSink {
    fn event(&mut self, event: Event);
    fn reject(&mut self, rejection: Rejection);
}

/// A sink that collects into vectors; handy for tests and small inputs.
#[derive(Debug, Default)]
pub struct Collect {
    pub events: Vec<Event>,
    pub rejections: Vec<Rejection>,
}

impl RecordSink for Collect {
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
    fn reject(&mut self, rejection: Rejection) {
        self.rejections.push(rejection);
    }
}

/// A JSON string field, borrowed from the input when it has no escapes
/// (`Option<Cow<str>>` would always copy: serde borrows only a bare `Cow`).
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            // Word for word what `String` expects, so errors read the same.
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_string(TextVisitor)
    }
}

/// A JSON value kept as its text (what `&RawValue` holds, but a plain
/// `&str` so that [`scan`] can make one too).
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Raw<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| Raw(r.get()))
    }
}

// The record as serde reads it. `scan` reads the same fields by hand: a
// field added here must be added there too (its struct literals will not
// compile until it is).
#[cfg_attr(test, derive(Debug, PartialEq))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord<'a> {
    #[serde(rename = "eventID", borrow)]
    event_id: Option<Text<'a>>,
    #[serde(borrow)]
    event_time: Option<Text<'a>>,
    #[serde(borrow)]
    event_source: Option<Text<'a>>,
    #[serde(borrow)]
    event_name: Option<Text<'a>>,
    #[serde(borrow)]
    aws_region: Option<Text<'a>>,
    #[serde(borrow)]
    recipient_account_id: Option<Text<'a>>,
    #[serde(borrow)]
    user_identity: Option<WireIdentity<'a>>,
    #[serde(rename = "sourceIPAddress", borrow)]
    source_ip_address: Option<Text<'a>>,
    #[serde(borrow)]
    user_agent: Option<Text<'a>>,
    #[serde(borrow)]
    error_code: Option<Text<'a>>,
    #[serde(borrow)]
    error_message: Option<Text<'a>>,
    #[serde(borrow)]
    read_only: Option<Raw<'a>>,
    #[serde(borrow)]
    management_event: Option<Raw<'a>>,
    #[serde(borrow)]
    event_category: Option<Text<'a>>,
    #[serde(borrow)]
    event_type: Option<Text<'a>>,
    #[serde(borrow)]
    event_version: Option<Text<'a>>,
    #[serde(borrow)]
    request_parameters: Option<Raw<'a>>,
    #[serde(borrow)]
    response_elements: Option<Raw<'a>>,
}

#[cfg_attr(test, derive(Debug, PartialEq))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentity<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    arn: Option<Text<'a>>,
    #[serde(borrow)]
    account_id: Option<Text<'a>>,
    #[serde(borrow)]
    invoked_by: Option<Text<'a>>,
    #[serde(borrow)]
    principal_id: Option<Text<'a>>,
    #[serde(borrow)]
    user_name: Option<Text<'a>>,
    #[serde(borrow)]
    access_key_id: Option<Text<'a>>,
    #[serde(borrow)]
    session_context: Option<WireSessionContext<'a>>,
}

#[cfg_attr(test, derive(Debug, PartialEq))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSessionContext<'a> {
    #[serde(borrow)]
    session_issuer: Option<WireIssuer<'a>>,
}

#[cfg_attr(test, derive(Debug, PartialEq))]
#[derive(Deserialize)]
struct WireIssuer<'a> {
    #[serde(borrow)]
    arn: Option<Text<'a>>,
}
