//! CloudTrail parsers: S3 log files (`{"Records":[...]}`, plain or gzip),
//! JSON arrays of records, single records, and CloudWatch Logs subscription
//! payloads.
//!
//! Every parser streams: each record is validated on its own and handed to a
//! [`RecordSink`] as an [`Event`] or a [`Rejection`], so one bad record never
//! costs the good ones around it. A syntax error part-way through a file
//! keeps every record before it and rejects the remainder with the position.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use base64::Engine;
use chrono::DateTime;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{Event, UserIdentity};
use crate::is_account_id;

mod scan;

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
fn normalize(
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

struct Ctx<'s, S> {
    sink: &'s mut S,
    source: &'s str,
    limits: &'s ParseLimits,
    now_ms: i64,
    index: usize,
    /// Records the one-pass reader already handed to the sink: the general
    /// reader, taking over part-way through a document, counts them again
    /// without handing them over twice.
    skip: usize,
}

impl<S: RecordSink> Ctx<'_, S> {
    fn record(&mut self, raw: &RawValue) {
        let index = self.index;
        self.index += 1;
        if index < self.skip {
            return;
        }
        let text = raw.get();
        let result = parse_record(text, self.limits, self.now_ms);
        self.deliver(index, result, text);
    }

    fn deliver(&mut self, index: usize, result: Result<Event, String>, text: &str) {
        match result {
            Ok(event) => self.sink.event(event),
            Err(reason) => {
                let source = format!("{}#{}", self.source, index);
                self.sink.reject(Rejection::new(source, reason, text))
            }
        }
    }

    /// The one-pass reader for `[record, ...]` and `{"Records":[record,
    /// ...]}`: each record is deserialized straight into its typed form,
    /// and its text is the span the deserializer consumed. The general
    /// reader first scans each record as raw JSON and then parses that text
    /// again; this gives the same results with half the scanning.
    ///
    /// Returns false when it meets anything else (a record that does not
    /// deserialize, other keys around `Records`, malformed JSON): the
    /// general reader must then take over, skipping the `self.index`
    /// records already delivered, so every reason and position it reports
    /// is its own.
    fn one_pass(&mut self, text: &str, records_object: bool) -> bool {
        let bytes = text.as_bytes();
        let mut pos = skip_ws(bytes, 0);
        if records_object {
            let Some(p) = expect(bytes, pos, b"{") else {
                return false;
            };
            let Some(p) = expect(bytes, skip_ws(bytes, p), b"\"Records\"") else {
                return false;
            };
            let Some(p) = expect(bytes, skip_ws(bytes, p), b":") else {
                return false;
            };
            pos = skip_ws(bytes, p);
        }
        let Some(p) = expect(bytes, pos, b"[") else {
            return false;
        };
        pos = skip_ws(bytes, p);
        if let Some(p) = expect(bytes, pos, b"]") {
            pos = p;
        } else {
            loop {
                let rest = &text[pos..];
                // The hand-written reader takes the usual records; serde
                // takes the rest.
                let (wire, end) = match scan::record(rest) {
                    Some(found) => found,
                    None => {
                        let mut stream = serde_json::Deserializer::from_str(rest).into_iter();
                        match stream.next() {
                            Some(Ok(w)) => (w, stream.byte_offset()),
                            _ => return false,
                        }
                    }
                };
                let record = &rest[..end];
                let index = self.index;
                self.index += 1;
                let result = if record.len() > self.limits.max_record_bytes {
                    Err(record_too_large(record.len(), self.limits))
                } else {
                    normalize(wire, record, self.limits, self.now_ms)
                };
                self.deliver(index, result, record);
                pos = skip_ws(bytes, pos + end);
                if let Some(p) = expect(bytes, pos, b",") {
                    pos = skip_ws(bytes, p);
                } else if let Some(p) = expect(bytes, pos, b"]") {
                    pos = p;
                    break;
                } else {
                    return false;
                }
            }
        }
        if records_object {
            let Some(p) = expect(bytes, skip_ws(bytes, pos), b"}") else {
                return false;
            };
            pos = p;
        }
        skip_ws(bytes, pos) == bytes.len()
    }
}

/// The position after JSON whitespace (space, tab, CR, LF) from `pos`.
fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// The position after `token` if the input has it at `pos`.
fn expect(bytes: &[u8], pos: usize, token: &[u8]) -> Option<usize> {
    bytes
        .get(pos..)
        .is_some_and(|rest| rest.starts_with(token))
        .then_some(pos + token.len())
}

fn record_too_large(len: usize, limits: &ParseLimits) -> String {
    format!(
        "record is {} bytes, over the {} byte limit",
        len, limits.max_record_bytes
    )
}

/// Streams the elements of a JSON array of records into the sink.
struct RecordArray<'c, 's, S>(&'c mut Ctx<'s, S>);

impl<'de, S: RecordSink> Visitor<'de> for RecordArray<'_, '_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of CloudTrail records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            self.0.record(raw);
        }
        Ok(())
    }
}

impl<'de, S: RecordSink> DeserializeSeed<'de> for RecordArray<'_, '_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// Visits `{"Records":[...], ...}`, streaming the Records array.
struct RecordsObject<'c, 's, S>(&'c mut Ctx<'s, S>);

impl<'de, S: RecordSink> Visitor<'de> for RecordsObject<'_, '_, S> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudTrail log document {\"Records\":[...]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "Records" {
                map.next_value_seed(RecordArray(&mut *self.0))?;
                found = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// What kind of JSON document a body holds, from its first bytes.
fn document_shape(text: &str) -> Shape {
    let t = text.trim_start();
    if t.starts_with('[') {
        return Shape::Array;
    }
    if let Some(rest) = t.strip_prefix('{') {
        if rest.trim_start().starts_with("\"Records\"") {
            return Shape::RecordsObject;
        }
        if is_json_lines(t) {
            return Shape::Lines;
        }
        return Shape::Single;
    }
    Shape::Unknown
}

/// Whether `t` (starting with `{`) is one JSON object per line, as
/// exports and log shippers write: its first line is a whole object and
/// something follows it.
fn is_json_lines(t: &str) -> bool {
    let Some((first, rest)) = t.split_once('\n') else {
        return false;
    };
    !rest.trim().is_empty() && serde_json::from_str::<IgnoredAny>(first.trim()).is_ok()
}

enum Shape {
    Array,
    RecordsObject,
    Single,
    /// JSON Lines: one record per line.
    Lines,
    Unknown,
}

/// Parses a decompressed CloudTrail document: `{"Records":[...]}`, a JSON
/// array of records, or one record. Returns how many records it saw.
pub fn parse_document<S: RecordSink>(
    text: &str,
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    // A byte-order mark, as some editors and exports write, is not JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    parse_document_with(text, source, limits, now_ms, sink, true)
}

/// [`parse_document`], with the one-pass reader or without it (tests check
/// that both agree).
fn parse_document_with<S: RecordSink>(
    text: &str,
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
    one_pass: bool,
) -> usize {
    let mut ctx = Ctx {
        sink,
        source,
        limits,
        now_ms,
        index: 0,
        skip: 0,
    };
    let shape = document_shape(text);
    if one_pass && matches!(shape, Shape::Array | Shape::RecordsObject) {
        if ctx.one_pass(text, matches!(shape, Shape::RecordsObject)) {
            return ctx.index;
        }
        ctx.skip = ctx.index;
        ctx.index = 0;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let result = match shape {
        Shape::Array => RecordArray(&mut ctx).deserialize(&mut de).map(|_| true),
        Shape::RecordsObject => de.deserialize_map(RecordsObject(&mut ctx)),
        Shape::Single => {
            ctx.record_text(text);
            return ctx.index;
        }
        Shape::Lines => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                ctx.record_text(line);
            }
            return ctx.index;
        }
        Shape::Unknown => {
            ctx.sink.reject(Rejection::new(
                source,
                "not a CloudTrail document: expected {\"Records\":[...]}, an array of records, one record, or one record per line (JSON Lines)",
                text,
            ));
            return 0;
        }
    };
    let result = result.and_then(|found| de.end().map(|_| found));
    match result {
        Ok(true) => {}
        Ok(false) => ctx.sink.reject(Rejection::new(
            source,
            "CloudTrail document has no Records array",
            text,
        )),
        Err(e) => {
            let seen = ctx.index;
            ctx.sink.reject(Rejection::new(
                format!("{source}#{seen}"),
                format!("malformed JSON after {seen} records, rest of document skipped: {e}"),
                "",
            ))
        }
    }
    ctx.index
}

impl<S: RecordSink> Ctx<'_, S> {
    fn record_text(&mut self, text: &str) {
        let source = format!("{}#{}", self.source, self.index);
        self.index += 1;
        match parse_record(text.trim(), self.limits, self.now_ms) {
            Ok(event) => self.sink.event(event),
            Err(reason) => self.sink.reject(Rejection::new(source, reason, text)),
        }
    }
}

/// Decompresses gzip input (by magic number, so a mislabelled file still
/// works), refusing to inflate past `limit` bytes. Plain input is returned
/// as is.
pub fn maybe_gunzip(bytes: Vec<u8>, limit: usize) -> Result<Vec<u8>, String> {
    if !is_gzip(&bytes) {
        if bytes.len() > limit {
            return Err(format!(
                "document is {} bytes, over the {limit} byte limit",
                bytes.len()
            ));
        }
        return Ok(bytes);
    }
    let mut out = Vec::new();
    let len = gunzip_into(&bytes, limit, &mut out)?;
    out.truncate(len);
    Ok(out)
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Decompresses into `out`, refusing more than `limit` bytes of output, and
/// returns the length of the output, which is `out[..len]`. `out` is grown
/// (zero-filled) only when it is too short and never shrunk, so a buffer
/// reused across files is not cleared again for each one.
fn gunzip_into(bytes: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<usize, String> {
    // `bytes` is already in memory: the `bufread` decoder reads it in place.
    let mut decoder = flate2::bufread::MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    let mut filled = 0;
    loop {
        if filled == out.len() {
            let grow = out.len().clamp(32 << 10, 16 << 20);
            out.resize(out.len() + grow, 0);
        }
        match decoder.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("corrupt or truncated gzip: {e}")),
        }
    }
    if filled > limit {
        return Err(format!(
            "decompressed document exceeds the {limit} byte limit"
        ));
    }
    Ok(filled)
}

thread_local! {
    /// Decompressed text of the file being parsed, reused across files: a
    /// fresh multi-megabyte buffer per file costs more in page faults than
    /// the decompression itself.
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Parses a whole file body (gzip or plain) as a CloudTrail document.
pub fn parse_file_bytes<S: RecordSink>(
    bytes: &[u8],
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    if !is_gzip(bytes) {
        if bytes.len() > limits.max_document_bytes {
            sink.reject(Rejection::new(
                source,
                format!(
                    "document is {} bytes, over the {} byte limit",
                    bytes.len(),
                    limits.max_document_bytes
                ),
                "",
            ));
            return 0;
        }
        return parse_text(bytes, source, limits, now_ms, sink);
    }
    BODY.with(|cell| {
        // Taken out for the parse, so a nested call (none today) could not
        // find the buffer borrowed.
        let mut body = std::mem::take(&mut *cell.borrow_mut());
        let n = match gunzip_into(bytes, limits.max_document_bytes, &mut body) {
            Ok(len) => parse_text(&body[..len], source, limits, now_ms, sink),
            Err(reason) => {
                sink.reject(Rejection::new(source, reason, ""));
                0
            }
        };
        // A rare huge file should not pin its buffer for ever.
        if body.capacity() <= 64 << 20 {
            *cell.borrow_mut() = body;
        }
        n
    })
}

fn parse_text<S: RecordSink>(
    body: &[u8],
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    match std::str::from_utf8(body) {
        Ok(text) => parse_document(text, source, limits, now_ms, sink),
        Err(e) => {
            sink.reject(Rejection::new(source, format!("not UTF-8 text: {e}"), ""));
            0
        }
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is its failure report

    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn both(text: &str, limits: &ParseLimits) -> ((usize, Collect), (usize, Collect)) {
        let mut fast = Collect::default();
        let n_fast = parse_document_with(text, "f", limits, NOW, &mut fast, true);
        let mut general = Collect::default();
        let n_general = parse_document_with(text, "f", limits, NOW, &mut general, false);
        ((n_fast, fast), (n_general, general))
    }

    fn assert_same(text: &str, limits: &ParseLimits) {
        let ((n1, a), (n2, b)) = both(text, limits);
        assert_eq!(n1, n2, "{text}");
        assert_eq!(a.events, b.events, "{text}");
        assert_eq!(a.rejections, b.rejections, "{text}");
    }

    const GOOD: &str = r#"{"eventVersion":"1.09","eventID":"7d5b7e0c-0000-4000-8000-000000000001","eventTime":"2026-03-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333","sourceIPAddress":"198.51.100.7","userAgent":"Boto3/1.34.2","userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/ci/ci","sessionContext":{"sessionIssuer":{"arn":"arn:aws:iam::111122223333:role/ci"}}},"readOnly":"false","requestParameters":{"instanceType":"p4d.24xlarge","x":[1,2,{"y":null}]},"responseElements":null,"tlsDetails":{"tlsVersion":"TLSv1.3"}}"#;

    /// Pieces a record list is built from: good and bad records, things
    /// that are not records, and broken JSON.
    fn element(i: usize) -> String {
        match i {
            0 => GOOD.to_string(),
            1 => GOOD.replace("0001", "0002"),
            2 => GOOD.replace("111122223333\",\"source", "x\",\"source"),
            3 => GOOD.replace("us-east-1", "US East"),
            4 => GOOD.replace("RunInstances", "Run\\u0049nstances\\n"),
            5 => GOOD.replace("\"eventID\"", "\"eventID\":7,\"x\""),
            6 => GOOD.replace("\"eventID\"", "\"eventID\":\"dup\",\"eventID\""),
            7 => "42".into(),
            8 => "null".into(),
            9 => "\"text\"".into(),
            10 => "[]".into(),
            11 => "{}".into(),
            12 => GOOD.replace("}", "},"),
            13 => GOOD.replace("\"readOnly\":\"false\"", "\"readOnly\":7"),
            14 => GOOD.replace("Boto3", "Bo\\ud800to3"),
            15 => format!(" \n{GOOD}\t"),
            16 => GOOD.replace("\"x\":[1,2,", "\"x\":[1,2,,"),
            17 => GOOD.replace("2026-03-01T10:00:00Z", "yesterday"),
            _ => GOOD.replace("ci/ci", &"c".repeat(300)),
        }
    }

    fn document(wrapper: usize, elements: &[usize], sep: &str) -> String {
        let list = elements
            .iter()
            .map(|&i| element(i))
            .collect::<Vec<_>>()
            .join(&format!(",{sep}"));
        match wrapper {
            0 => format!("[{sep}{list}{sep}]"),
            1 => format!("{{{sep}\"Records\"{sep}:{sep}[{list}]{sep}}}{sep}"),
            2 => format!("{{\"Records\":[{list}],\"other\":{{\"a\":[1]}}}}"),
            3 => format!("{{\"other\":1,\"Records\":[{list}]}}"),
            4 => format!("{{\"Records\":[{list}],\"Records\":[{list}]}}"),
            5 => format!("{{\"Records\":[{list}]}} trailing"),
            6 => format!("{{\"Records\":[{list}]"),
            _ => format!("\u{a0}[{list}]"),
        }
    }

    #[test]
    fn one_pass_agrees_on_every_piece() {
        let small = ParseLimits {
            max_record_bytes: 800,
            ..Default::default()
        };
        for limits in [ParseLimits::default(), small] {
            for wrapper in 0..8 {
                for i in 0..19 {
                    for sep in ["", " \n"] {
                        assert_same(&document(wrapper, &[0, i, 1], sep), &limits);
                        assert_same(&document(wrapper, &[i], sep), &limits);
                    }
                }
                assert_same(&document(wrapper, &[], ""), &limits);
            }
        }
    }

    #[test]
    fn one_pass_is_taken_for_clean_documents() {
        let doc = document(1, &[0, 1, 2, 3], "");
        let ((n, fast), _) = both(&doc, &ParseLimits::default());
        assert_eq!(n, 4);
        assert_eq!(fast.events.len(), 2);
        assert_eq!(fast.rejections[0].source, "f#2");
        // Reported exactly as the record reads, with keep_raw.
        assert_eq!(fast.events[0].raw, element(0));
        let mut ctx = Ctx {
            sink: &mut Collect::default(),
            source: "f",
            limits: &ParseLimits::default(),
            now_ms: NOW,
            index: 0,
            skip: 0,
        };
        assert!(ctx.one_pass(&doc, true));
        assert!(!ctx.one_pass(&document(2, &[0], ""), true));
    }

    proptest! {
        #[test]
        fn one_pass_agrees_with_the_general_reader(
            wrapper in 0usize..8,
            elements in proptest::collection::vec(0usize..19, 0..6),
            sep in prop::sample::select(vec!["", " ", "\n\t "]),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            keep_raw in any::<bool>(),
        ) {
            let mut doc = document(wrapper, &elements, sep);
            if truncate {
                let mut at = cut.index(doc.len() + 1);
                while !doc.is_char_boundary(at) {
                    at -= 1;
                }
                doc.truncate(at);
            }
            let limits = ParseLimits { keep_raw, max_record_bytes: 900, ..Default::default() };
            let ((n1, a), (n2, b)) = both(&doc, &limits);
            prop_assert_eq!(n1, n2);
            prop_assert_eq!(a.events, b.events);
            prop_assert_eq!(a.rejections, b.rejections);
        }
    }
}
