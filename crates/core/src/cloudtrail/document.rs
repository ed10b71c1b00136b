//! Documents: the records of a `{"Records":[...]}` file, a JSON array or
//! JSON Lines streamed one at a time, with a one-pass fast path for clean
//! files and the general reader behind it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::record::{normalize, parse_record, record_too_large};
use super::{ParseLimits, RecordSink, Rejection, scan};
use crate::event::Event;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is its failure report

    use proptest::prelude::*;

    use super::*;
    use crate::cloudtrail::Collect;

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
