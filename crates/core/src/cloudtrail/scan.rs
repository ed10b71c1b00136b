//! A hand-written reader for CloudTrail records as CloudTrail writes them,
//! about three times faster than serde's derived reader on the replay's
//! records (most of the parsing cost of a replay is here).
//!
//! It answers only where it is sure and leaves everything else to serde:
//! it reads a subset of JSON (keys and kept strings without escapes, the
//! wire structs' fields in any order, unknown fields skipped with the checks
//! `serde_json`'s `ignore_value` makes, nesting up to [`MAX_DEPTH`]) and
//! returns `None` for anything outside it: other shapes, escapes, duplicate
//! fields, wrong types, malformed JSON. Where it returns a record, serde
//! would have read the same record with the same values (the tests compare
//! the two on generated records), so which reader took a record never
//! shows.

use std::borrow::Cow;

use super::{Raw, Text, WireIdentity, WireIssuer, WireRecord, WireSessionContext};

/// How deep the reader follows a skipped value; deeper ones go to serde.
const MAX_DEPTH: usize = 64;

/// Reads the record `text` starts with: the record and its length in bytes.
pub(super) fn record(text: &str) -> Option<(WireRecord<'_>, usize)> {
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let record = c.record()?;
    Some((record, c.pos))
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// The offset of the first `"`, `\` or control character in `b`, eight
/// bytes at a time (the test serde_json's string scanner makes).
fn find_special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    let mut chunks = b.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let control = v.wrapping_sub(ONES * 0x20) & !v;
        let q = v ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = v ^ (ONES * u64::from(b'\\'));
        let backslash = s.wrapping_sub(ONES) & !s;
        // The lowest flagged byte is exact (borrows only run upwards).
        let hits = (control | quote | backslash) & (ONES << 7);
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| offset + p)
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.pos += 1)
    }

    fn eat_literal(&mut self, lit: &[u8]) -> Option<()> {
        if self.bytes.get(self.pos..)?.starts_with(lit) {
            self.pos += lit.len();
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes, its quote next, borrowed from the input.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let end = start + find_special(self.bytes.get(start..)?)?;
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        self.text.get(start..end)
    }

    /// Any string, its quote next, checked as `ignore_str` checks it.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            let at = self.pos + find_special(self.bytes.get(self.pos..)?)?;
            match self.bytes.get(at)? {
                b'"' => {
                    self.pos = at + 1;
                    return Some(());
                }
                b'\\' => {
                    self.pos = at + 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.pos + 1..self.pos + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number, with the grammar `ignore_value` accepts.
    fn skip_number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// An object key in a skipped value, and its colon.
    fn skipped_key(&mut self) -> Option<()> {
        self.skip_string()?;
        self.ws();
        self.eat(b':')?;
        Some(())
    }

    /// Any JSON value, its first byte next, without keeping it.
    fn skip_value(&mut self) -> Option<()> {
        let mut open = [0u8; MAX_DEPTH];
        let mut depth = 0;
        loop {
            self.ws();
            match self.peek()? {
                b'n' => self.eat_literal(b"null")?,
                b't' => self.eat_literal(b"true")?,
                b'f' => self.eat_literal(b"false")?,
                b'"' => self.skip_string()?,
                b'-' | b'0'..=b'9' => self.skip_number()?,
                bracket @ (b'[' | b'{') => {
                    self.pos += 1;
                    self.ws();
                    let close = if bracket == b'[' { b']' } else { b'}' };
                    if self.eat(close).is_none() {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        open[depth] = bracket;
                        depth += 1;
                        if bracket == b'{' {
                            self.skipped_key()?;
                        }
                        continue;
                    }
                }
                _ => return None,
            }
            // A value ended: close what it ended, or go on to the next one.
            loop {
                let Some(&bracket) = depth.checked_sub(1).and_then(|d| open.get(d)) else {
                    return Some(());
                };
                self.ws();
                match (self.peek()?, bracket) {
                    (b',', _) => {
                        self.pos += 1;
                        if bracket == b'{' {
                            self.ws();
                            self.skipped_key()?;
                        }
                        break;
                    }
                    (b']', b'[') | (b'}', b'{') => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object, its brace next; `field` reads each value (whitespace
    /// before it skipped), given its key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.plain_string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Whether the value next is `null` (then read).
    fn null(&mut self) -> Option<bool> {
        if self.peek()? == b'n' {
            self.eat_literal(b"null")?;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// An `Option<Text>` field: null or a string without escapes.
    fn text(&mut self) -> Option<Option<Text<'a>>> {
        if self.null()? {
            return Some(None);
        }
        Some(Some(Text(Cow::Borrowed(self.plain_string()?))))
    }

    /// An `Option<Raw>` field: null, or any value as its text.
    fn raw(&mut self) -> Option<Option<Raw<'a>>> {
        if self.null()? {
            return Some(None);
        }
        let start = self.pos;
        self.skip_value()?;
        Some(Some(Raw(self.text.get(start..self.pos)?)))
    }

    fn record(&mut self) -> Option<WireRecord<'a>> {
        let mut r = WireRecord {
            event_id: None,
            event_time: None,
            event_source: None,
            event_name: None,
            aws_region: None,
            recipient_account_id: None,
            user_identity: None,
            source_ip_address: None,
            user_agent: None,
            error_code: None,
            error_message: None,
            read_only: None,
            management_event: None,
            event_category: None,
            event_type: None,
            event_version: None,
            request_parameters: None,
            response_elements: None,
        };
        // serde rejects a field given twice (even if null the first time).
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "eventID" => r.event_id = seen.first(0, c.text()?)?,
                "eventTime" => r.event_time = seen.first(1, c.text()?)?,
                "eventSource" => r.event_source = seen.first(2, c.text()?)?,
                "eventName" => r.event_name = seen.first(3, c.text()?)?,
                "awsRegion" => r.aws_region = seen.first(4, c.text()?)?,
                "recipientAccountId" => r.recipient_account_id = seen.first(5, c.text()?)?,
                "userIdentity" => r.user_identity = seen.first(6, c.identity()?)?,
                "sourceIPAddress" => r.source_ip_address = seen.first(7, c.text()?)?,
                "userAgent" => r.user_agent = seen.first(8, c.text()?)?,
                "errorCode" => r.error_code = seen.first(9, c.text()?)?,
                "errorMessage" => r.error_message = seen.first(10, c.text()?)?,
                "readOnly" => r.read_only = seen.first(11, c.raw()?)?,
                "managementEvent" => r.management_event = seen.first(12, c.raw()?)?,
                "eventCategory" => r.event_category = seen.first(13, c.text()?)?,
                "eventType" => r.event_type = seen.first(14, c.text()?)?,
                "eventVersion" => r.event_version = seen.first(15, c.text()?)?,
                "requestParameters" => r.request_parameters = seen.first(16, c.raw()?)?,
                "responseElements" => r.response_elements = seen.first(17, c.raw()?)?,
                _ => c.skip_value()?,
            }
            Some(())
        })?;
        Some(r)
    }

    fn identity(&mut self) -> Option<Option<WireIdentity<'a>>> {
        if self.null()? {
            return Some(None);
        }
        let mut id = WireIdentity {
            kind: None,
            arn: None,
            account_id: None,
            invoked_by: None,
            principal_id: None,
            user_name: None,
            access_key_id: None,
            session_context: None,
        };
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "type" => id.kind = seen.first(0, c.text()?)?,
                "arn" => id.arn = seen.first(1, c.text()?)?,
                "accountId" => id.account_id = seen.first(2, c.text()?)?,
                "invokedBy" => id.invoked_by = seen.first(3, c.text()?)?,
                "principalId" => id.principal_id = seen.first(4, c.text()?)?,
                "userName" => id.user_name = seen.first(5, c.text()?)?,
                "accessKeyId" => id.access_key_id = seen.first(6, c.text()?)?,
                "sessionContext" => id.session_context = seen.first(7, c.session_context()?)?,
                _ => c.skip_value()?,
            }
            Some(())
        })?;
        Some(Some(id))
    }

    fn session_context(&mut self) -> Option<Option<WireSessionContext<'a>>> {
        if self.null()? {
            return Some(None);
        }
        let mut ctx = WireSessionContext {
            session_issuer: None,
        };
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "sessionIssuer" => ctx.session_issuer = seen.first(0, c.issuer()?)?,
                _ => c.skip_value()?,
            }
            Some(())
        })?;
        Some(Some(ctx))
    }

    fn issuer(&mut self) -> Option<Option<WireIssuer<'a>>> {
        if self.null()? {
            return Some(None);
        }
        let mut issuer = WireIssuer { arn: None };
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "arn" => issuer.arn = seen.first(0, c.text()?)?,
                _ => c.skip_value()?,
            }
            Some(())
        })?;
        Some(Some(issuer))
    }
}

/// The fields of one struct read so far.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// `value`, if field `bit` had not been read before.
    fn first<T>(&mut self, bit: u32, value: T) -> Option<T> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic in a test is its failure report

    use proptest::prelude::*;

    use super::super::WireRecord;

    /// What serde reads at the start of `text`: the record and its length.
    fn serde_record(text: &str) -> Option<(WireRecord<'_>, usize)> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter();
        match stream.next() {
            Some(Ok(w)) => Some((w, stream.byte_offset())),
            _ => None,
        }
    }

    /// Where the scanner reads a record, serde reads the same one.
    fn check(text: &str) -> bool {
        match super::record(text) {
            Some(fast) => {
                assert_eq!(Some(&fast), serde_record(text).as_ref(), "{text}");
                true
            }
            None => false,
        }
    }

    const INVOKE: &str = r#"{"awsRegion":"us-west-2","eventCategory":"Data","eventID":"f98d4363-be1f-4ffd-aea2-c740f5d39dd7","eventName":"Invoke","eventSource":"lambda.amazonaws.com","eventTime":"2026-01-08T23:00:29Z","eventType":"AwsApiCall","eventVersion":"1.09","managementEvent":false,"readOnly":false,"recipientAccountId":"750853647903","requestID":"eb54c118-1d09-40a0-a522-2a2e24f81d6c","requestParameters":{"functionName":"arn:aws:lambda:us-west-2:750853647903:function:payments-thumbnailer","invocationType":"Event"},"resources":[{"ARN":"arn:aws:lambda:us-west-2:750853647903:function:payments-thumbnailer","accountId":"750853647903","type":"AWS::Lambda::Function"}],"responseElements":null,"sourceIPAddress":"lambda.amazonaws.com","tlsDetails":{"cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"lambda.us-west-2.amazonaws.com","tlsVersion":"TLSv1.3"},"userAgent":"aws-internal/3 aws-sdk-java/1.12.667","userIdentity":{"accessKeyId":"ASIANDI4RTHJ3H4VRZQ2","accountId":"750853647903","arn":"arn:aws:sts::750853647903:assumed-role/app/payments-thumbnailer-session","principalId":"AROA6GFGC5ICDWOK:payments-thumbnailer-session","sessionContext":{"attributes":{"creationDate":"2026-01-01T00:00:00Z","mfaAuthenticated":"false"},"sessionIssuer":{"accountId":"750853647903","arn":"arn:aws:iam::750853647903:role/app","principalId":"AROAEXAMPLEROLEID","type":"Role","userName":"app"}},"type":"AssumedRole"}}"#;

    #[test]
    fn reads_what_cloudtrail_writes() {
        assert!(check(INVOKE));
        assert!(check(&format!("{INVOKE},{{\"next\":1}}")));
        let spaced = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(INVOKE).unwrap(),
        )
        .unwrap();
        assert!(check(&spaced));
        assert!(check("{}"));
        assert!(check(
            r#"{"userIdentity":null,"readOnly":null,"eventID":null}"#
        ));
        assert!(check(
            r#"{"x":[1,-0.5e+3,true,false,null,"a\"b\u00e9",{"y":{}},[]],"requestParameters":[ 1 , {"a" : "\\"} ]}"#
        ));
    }

    #[test]
    fn leaves_the_unusual_to_serde() {
        for text in [
            r#"{"eventID":"a\nb"}"#,
            r#"{"event\u0049D":"x"}"#,
            r#"{"eventID":"x","eventID":"y"}"#,
            r#"{"eventID":null,"eventID":"y"}"#,
            r#"{"eventID":7}"#,
            r#"{"userIdentity":[]}"#,
            r#"{"userIdentity":{"arn":"a","arn":"b"}}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":-}"#,
            r#"{"x":1e}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":{"a":1,}}"#,
            r#"{"x":"\q"}"#,
            r#"{"x":"\u12"}"#,
            r#"{"x":nul}"#,
            r#"{"x":1,}"#,
            r#"{"x" 1}"#,
            "{\"x\":\"tab\there\"}",
            r#"["eventID"]"#,
            r#"{"eventID":"x""#,
        ] {
            assert!(super::record(text).is_none(), "{text}");
        }
        let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(70), "]".repeat(70));
        assert!(super::record(&deep).is_none());
        let ok = format!(r#"{{"x":{}{}}}"#, "[".repeat(60), "]".repeat(60));
        assert!(check(&ok));
    }

    /// Pieces of records: fields the reader keeps, in every form, and
    /// others.
    fn piece() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "eventID",
            "eventTime",
            "eventSource",
            "eventName",
            "awsRegion",
            "recipientAccountId",
            "userIdentity",
            "sourceIPAddress",
            "userAgent",
            "errorCode",
            "errorMessage",
            "readOnly",
            "managementEvent",
            "eventCategory",
            "eventType",
            "eventVersion",
            "requestParameters",
            "responseElements",
            "type",
            "arn",
            "sessionContext",
            "sessionIssuer",
            "other",
            "event\\u0049D",
        ]);
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[a-z0-9 :/.-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            "[a-z\\\\\"\u{e9}]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9\/""#.to_string()),
            Just("01".to_string()),
            Just("\"\\x\"".to_string()),
        ];
        let value = leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key_strategy(), inner), 0..5).prop_map(|kv| {
                    let body: Vec<String> = kv
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        });
        (key, value).prop_map(|(k, v)| format!("\"{k}\":{v}"))
    }

    fn key_strategy() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "arn",
            "type",
            "accountId",
            "sessionContext",
            "sessionIssuer",
            "userName",
            "x",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_serde_on_generated_records(
            pieces in proptest::collection::vec(piece(), 0..8),
            sep in prop::sample::select(vec!["", " ", "\n\t"]),
            tail in prop::sample::select(vec!["", ",{}", "]", " x"]),
        ) {
            let text = format!("{{{sep}{}{sep}}}{tail}", pieces.join(&format!("{sep},{sep}")));
            check(&text);
        }

        #[test]
        fn agrees_with_serde_on_damaged_records(cut in 0usize..2000, byte in any::<u8>()) {
            let mut bytes = INVOKE.as_bytes().to_vec();
            let at = cut % bytes.len();
            bytes[at] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                check(&text);
            }
            check(&INVOKE[..cut % INVOKE.len()]);
        }
    }
}
