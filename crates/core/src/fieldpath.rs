//! Dotted paths into a CloudTrail record, as detectors name them:
//! `eventName`, `userIdentity.arn`, `requestParameters.size`,
//! `responseElements.instancesSet.items` (an array counts its elements),
//! `responseElements.instancesSet.items[].instanceType` (`[]` flattens).
//!
//! Paths are parsed once when a detector is configured, so an unknown field
//! is a configuration error, not a silent zero at run time.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::event::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    EventId,
    EventSource,
    EventName,
    AwsRegion,
    RecipientAccountId,
    SourceIp,
    UserAgent,
    ErrorCode,
    EventCategory,
    EventType,
    UserIdentityType,
    UserIdentityArn,
    UserIdentityAccountId,
    UserIdentityInvokedBy,
    UserIdentityUserName,
    UserIdentityAccessKeyId,
    RequestParameters,
    ResponseElements,
}

const ROOTS: &[(&str, Root)] = &[
    ("eventID", Root::EventId),
    ("eventSource", Root::EventSource),
    ("eventName", Root::EventName),
    ("awsRegion", Root::AwsRegion),
    ("recipientAccountId", Root::RecipientAccountId),
    ("sourceIPAddress", Root::SourceIp),
    ("userAgent", Root::UserAgent),
    ("errorCode", Root::ErrorCode),
    ("eventCategory", Root::EventCategory),
    ("eventType", Root::EventType),
    ("userIdentity.type", Root::UserIdentityType),
    ("userIdentity.arn", Root::UserIdentityArn),
    ("userIdentity.accountId", Root::UserIdentityAccountId),
    ("userIdentity.invokedBy", Root::UserIdentityInvokedBy),
    ("userIdentity.userName", Root::UserIdentityUserName),
    ("userIdentity.accessKeyId", Root::UserIdentityAccessKeyId),
    ("requestParameters", Root::RequestParameters),
    ("responseElements", Root::ResponseElements),
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Flatten,
}

/// A validated path into a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    root: Root,
    segments: Vec<Segment>,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for FieldPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (root, rest) = ROOTS
            .iter()
            .filter(|(name, _)| {
                text == *name
                    || text
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with('.') || r.starts_with("[]"))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(name, root)| (*root, &text[name.len()..]))
            .ok_or_else(|| {
                format!(
                    "unknown field {text:?}: a path starts with one of {}",
                    ROOTS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )
            })?;
        let json_root = matches!(root, Root::RequestParameters | Root::ResponseElements);
        let mut segments = Vec::new();
        let mut rest = rest;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("[]") {
                segments.push(Segment::Flatten);
                rest = r;
            } else if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = &r[..end];
                if key.is_empty() {
                    return Err(format!("field {text:?} has an empty path segment"));
                }
                segments.push(Segment::Key(key.to_string()));
                rest = &r[end..];
            } else {
                return Err(format!("field {text:?}: unexpected {rest:?}"));
            }
        }
        if !json_root && !segments.is_empty() {
            return Err(format!(
                "field {text:?}: only requestParameters and responseElements have sub-fields"
            ));
        }
        Ok(Self {
            text: text.to_string(),
            root,
            segments,
        })
    }
}

impl serde::Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Per-event scratch for reading paths, kept so callers need not change.
/// Paths used to share one parsed tree of each sub-document; they now read
/// the JSON text in place (see [`find`]), which costs less than building
/// one tree even when several paths read the same document.
#[derive(Default)]
pub struct ParsedDocs {
    _private: (),
}

/// A value a path reached, as much of it as paths read.
enum Found<'a> {
    Number(serde_json::Number),
    Text(Cow<'a, str>),
    Bool(bool),
    /// An array, by its length.
    Array(usize),
}

impl Found<'_> {
    fn number(&self) -> Option<f64> {
        match self {
            Found::Number(n) => n.as_f64(),
            Found::Text(s) => s.trim().parse().ok(),
            Found::Array(n) => Some(*n as f64),
            Found::Bool(b) => Some(f64::from(u8::from(*b))),
        }
    }

    fn string(self) -> Option<String> {
        match self {
            Found::Text(s) => Some(s.into_owned()),
            Found::Number(n) => Some(n.to_string()),
            Found::Bool(b) => Some(b.to_string()),
            Found::Array(_) => None,
        }
    }
}

/// The values at `segments` in the JSON document `text`, in document order
/// (a repeated key counts once, its last value, as in a parsed tree). A
/// document that does not parse has none.
///
/// This reads the text once without building a tree: every value is still
/// deserialized the way `serde_json::Value` would be (same syntax checks,
/// same nesting limit, same numbers), so exactly the documents that would
/// parse do, and a path finds exactly what it would find in the tree.
fn find<'a>(text: &'a str, segments: &[Segment], out: &mut Vec<Found<'a>>) {
    out.clear();
    if text.is_empty() {
        return;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let walked = Walk {
        segments,
        out: &mut *out,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if walked.is_err() {
        out.clear();
    }
}

/// Follows a path through one value, collecting what it reaches.
struct Walk<'p, 'o, 'a> {
    segments: &'p [Segment],
    out: &'o mut Vec<Found<'a>>,
}

impl<'de> Walk<'_, '_, 'de> {
    fn leaf(self, found: Found<'de>) {
        if self.segments.is_empty() {
            self.out.push(found);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Found::Bool(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Found::Number(v.into()));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Found::Number(v.into()));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As `Value` does: a non-finite float is null.
        if let Some(n) = serde_json::Number::from_f64(v) {
            self.leaf(Found::Number(n));
        }
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.leaf(Found::Text(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.segments.is_empty() {
            self.out.push(Found::Text(Cow::Owned(v.to_owned())));
        }
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.segments.split_first() {
            None => {
                let mut n = 0;
                while seq.next_element_seed(Skip)?.is_some() {
                    n += 1;
                }
                self.out.push(Found::Array(n));
            }
            Some((Segment::Flatten, rest)) => {
                while seq
                    .next_element_seed(Walk {
                        segments: rest,
                        out: &mut *self.out,
                    })?
                    .is_some()
                {}
            }
            Some((Segment::Key(_), _)) => while seq.next_element_seed(Skip)?.is_some() {},
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(k), rest)) = self.segments.split_first() else {
            while map.next_key_seed(Skip)?.is_some() {
                map.next_value_seed(Skip)?;
            }
            return Ok(());
        };
        let mark = self.out.len();
        while let Some(key) = map.next_key_seed(Key)? {
            if key == k.as_str() {
                // A later duplicate replaces an earlier one, as in a tree.
                self.out.truncate(mark);
                map.next_value_seed(Walk {
                    segments: rest,
                    out: &mut *self.out,
                })?;
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(())
    }
}

/// Reads a value without keeping it, checked as `Value` would check it
/// (unlike `IgnoredAny`, which skips more leniently and without the
/// nesting limit).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// A map key, borrowed when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl FieldPath {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn scalar<'e>(&self, e: &'e Event) -> Option<&'e str> {
        let s = match self.root {
            Root::EventId => &e.event_id,
            Root::EventSource => &e.event_source,
            Root::EventName => &e.event_name,
            Root::AwsRegion => &e.aws_region,
            Root::RecipientAccountId => &e.recipient_account_id,
            Root::SourceIp => &e.source_ip_address,
            Root::UserAgent => &e.user_agent,
            Root::ErrorCode => &e.error_code,
            Root::EventCategory => &e.event_category,
            Root::EventType => &e.event_type,
            Root::UserIdentityType => &e.user_identity.kind,
            Root::UserIdentityArn => &e.user_identity.arn,
            Root::UserIdentityAccountId => &e.user_identity.account_id,
            Root::UserIdentityInvokedBy => &e.user_identity.invoked_by,
            Root::UserIdentityUserName => &e.user_identity.user_name,
            Root::UserIdentityAccessKeyId => &e.user_identity.access_key_id,
            Root::RequestParameters | Root::ResponseElements => return None,
        };
        Some(s.as_str())
    }

    /// The document this path reads, if it reads one.
    fn document<'e>(&self, e: &'e Event) -> Option<&'e str> {
        match self.root {
            Root::RequestParameters => Some(&e.request_parameters),
            Root::ResponseElements => Some(&e.response_elements),
            _ => None,
        }
    }

    /// The number at this path: numbers and numeric strings as is, arrays by
    /// their length; flattened values are summed. None when absent.
    pub fn number(&self, e: &Event, _docs: &mut ParsedDocs) -> Option<f64> {
        if let Some(s) = self.scalar(e) {
            return s.trim().parse().ok();
        }
        let mut found = Vec::new();
        find(self.document(e)?, &self.segments, &mut found);
        let nums: Vec<f64> = found.iter().filter_map(Found::number).collect();
        if nums.is_empty() {
            None
        } else {
            Some(nums.iter().sum())
        }
    }

    /// The text values at this path (several when the path flattens).
    pub fn strings(&self, e: &Event, _docs: &mut ParsedDocs) -> Vec<String> {
        if let Some(s) = self.scalar(e) {
            return if s.is_empty() {
                Vec::new()
            } else {
                vec![s.to_string()]
            };
        }
        let Some(doc) = self.document(e) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        find(doc, &self.segments, &mut found);
        found.into_iter().filter_map(Found::string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(req: &str, resp: &str) -> Event {
        Event {
            request_parameters: req.into(),
            response_elements: resp.into(),
            ..crate::event::testing::run_instances()
        }
    }

    #[test]
    fn arrays_count_and_flatten() {
        let e = event(
            r#"{"instanceType":"p4d.24xlarge","instancesSet":{"items":[{"maxCount":40}]}}"#,
            r#"{"instancesSet":{"items":[{"instanceType":"p4d.24xlarge"},{"instanceType":"g5.xlarge"}]}}"#,
        );
        let mut d = ParsedDocs::default();
        let p: FieldPath = "responseElements.instancesSet.items".parse().unwrap();
        assert_eq!(p.number(&e, &mut d), Some(2.0));
        let p: FieldPath = "responseElements.instancesSet.items[].instanceType"
            .parse()
            .unwrap();
        assert_eq!(p.strings(&e, &mut d), vec!["p4d.24xlarge", "g5.xlarge"]);
        let p: FieldPath = "requestParameters.instancesSet.items[].maxCount"
            .parse()
            .unwrap();
        assert_eq!(p.number(&e, &mut d), Some(40.0));
        let p: FieldPath = "requestParameters.missing".parse().unwrap();
        assert_eq!(p.number(&e, &mut d), None);
    }

    #[test]
    fn scalar_roots() {
        let e = event("", "");
        let mut d = ParsedDocs::default();
        let p: FieldPath = "sourceIPAddress".parse().unwrap();
        assert_eq!(p.strings(&e, &mut d), vec!["198.51.100.7"]);
        let p: FieldPath = "userIdentity.arn".parse().unwrap();
        assert!(p.strings(&e, &mut d).is_empty());
    }

    /// What paths found when they read a parsed `serde_json::Value` tree
    /// (the implementation before `find`), to check `find` against.
    mod tree {
        use serde_json::Value;

        use super::super::Segment;

        fn walk<'v>(value: &'v Value, segments: &[Segment], out: &mut Vec<&'v Value>) {
            match segments.split_first() {
                None => out.push(value),
                Some((Segment::Key(k), rest)) => {
                    if let Some(v) = value.get(k) {
                        walk(v, rest, out)
                    }
                }
                Some((Segment::Flatten, rest)) => {
                    if let Some(items) = value.as_array() {
                        for v in items {
                            walk(v, rest, out);
                        }
                    }
                }
            }
        }

        fn values(text: &str, segments: &[Segment]) -> Vec<Value> {
            let doc = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(text).unwrap_or(Value::Null)
            };
            let mut out = Vec::new();
            walk(&doc, segments, &mut out);
            out.into_iter().cloned().collect()
        }

        pub fn number(text: &str, segments: &[Segment]) -> Option<f64> {
            let vals = values(text, segments);
            if vals.is_empty() {
                return None;
            }
            let nums: Vec<f64> = vals
                .iter()
                .filter_map(|v| match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    Value::Array(a) => Some(a.len() as f64),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                })
                .collect();
            if nums.is_empty() {
                None
            } else {
                Some(nums.iter().sum())
            }
        }

        pub fn strings(text: &str, segments: &[Segment]) -> Vec<String> {
            values(text, segments)
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect()
        }
    }

    fn assert_same_as_tree(doc: &str, path: &str) {
        let p: FieldPath = path.parse().unwrap();
        let e = event(doc, "");
        let mut d = ParsedDocs::default();
        let number = p.number(&e, &mut d);
        let expected = tree::number(doc, &p.segments);
        assert_eq!(
            number.map(f64::to_bits),
            expected.map(f64::to_bits),
            "{path} in {doc}"
        );
        assert_eq!(
            p.strings(&e, &mut d),
            tree::strings(doc, &p.segments),
            "{path} in {doc}"
        );
    }

    const PATHS: [&str; 8] = [
        "requestParameters",
        "requestParameters.a",
        "requestParameters.a.b",
        "requestParameters.a[]",
        "requestParameters.a[].b",
        "requestParameters.a[][]",
        "requestParameters.a[].b[].c",
        "requestParameters.\u{e9}",
    ];

    #[test]
    fn reading_in_place_finds_what_the_tree_has() {
        let docs = [
            "",
            "null",
            "7",
            "{}",
            "[]",
            r#"{"a":1}"#,
            r#"{"a":-0}"#,
            r#"{"a":-0.0}"#,
            r#"{"a":1.5e300,"b":2}"#,
            r#"{"a":18446744073709551615}"#,
            r#"{"a":-9223372036854775808}"#,
            r#"{"a":" 12 "}"#,
            r#"{"a":"x\"y\u00e9"}"#,
            r#"{"a":true}"#,
            r#"{"a":[1,"2",[3],{"b":4},null,false]}"#,
            r#"{"a":{"b":[1,2]},"a":{"b":"last"}}"#,
            r#"{"a":[{"b":[{"c":1},{"c":"2"}]},{"b":{"c":3}},{"b":[{"c":[1,2]}]}]}"#,
            r#"{"\u0061":{"b":5}}"#,
            r#"{"\u00e9":"key with an escape"}"#,
            r#"{"a":1} trailing"#,
            r#"{"a":1,}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"z":"\ud800","a":1}"#,
            r#"{"a":1e999}"#,
            r#"{"a":01}"#,
            "{\"a\":\"tab\there\"}",
        ];
        for doc in docs {
            for path in PATHS {
                assert_same_as_tree(doc, path);
            }
        }
        // Nesting past serde_json's limit fails to parse as a tree, so it
        // must find nothing here either, even under a key no path reads.
        for depth in [100, 126, 127, 128, 129, 200] {
            let deep = format!(
                r#"{{"a":1,"z":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            for path in PATHS {
                assert_same_as_tree(&deep, path);
            }
        }
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// JSON text, written out by hand so that keys can repeat.
        fn json() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                    .map_or("null".to_string(), |n| n.to_string())),
                "[ab0-9 .\"\\\\]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    proptest::collection::vec(
                        (prop::sample::select(vec!["a", "b", "c", "\\u0061"]), inner),
                        0..4
                    )
                    .prop_map(|kv| {
                        let body: Vec<String> =
                            kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                        format!("{{{}}}", body.join(","))
                    }),
                ]
            })
        }

        proptest! {
            #[test]
            fn reading_in_place_agrees_with_the_tree(doc in json(), path in prop::sample::select(PATHS.to_vec())) {
                assert_same_as_tree(&doc, path);
            }
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_a_reason() {
        let err = "requestParams.size".parse::<FieldPath>().unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        assert!("eventName.x".parse::<FieldPath>().is_err());
        assert!("requestParameters..x".parse::<FieldPath>().is_err());
    }
}
