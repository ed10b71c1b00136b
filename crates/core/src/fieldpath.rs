//! Dotted paths into a CloudTrail record, as detectors name them:
//! `eventName`, `userIdentity.arn`, `requestParameters.size`,
//! `responseElements.instancesSet.items` (an array counts its elements),
//! `responseElements.instancesSet.items[].instanceType` (`[]` flattens).
//!
//! Paths are parsed once when a detector is configured, so an unknown field
//! is a configuration error, not a silent zero at run time.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

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

/// An event's JSON sub-documents, parsed at most once however many paths
/// read them.
#[derive(Default)]
pub struct ParsedDocs {
    request: Option<Value>,
    response: Option<Value>,
}

fn parse_doc<'a>(slot: &'a mut Option<Value>, text: &str) -> &'a Value {
    slot.get_or_insert_with(|| {
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).unwrap_or(Value::Null)
        }
    })
}

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

fn value_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Array(a) => Some(a.len() as f64),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
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

    fn values<'d>(&self, e: &Event, docs: &'d mut ParsedDocs) -> Vec<&'d Value> {
        let doc = match self.root {
            Root::RequestParameters => parse_doc(&mut docs.request, &e.request_parameters),
            Root::ResponseElements => parse_doc(&mut docs.response, &e.response_elements),
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        walk(doc, &self.segments, &mut out);
        out
    }

    /// The number at this path: numbers and numeric strings as is, arrays by
    /// their length; flattened values are summed. None when absent.
    pub fn number(&self, e: &Event, docs: &mut ParsedDocs) -> Option<f64> {
        if let Some(s) = self.scalar(e) {
            return s.trim().parse().ok();
        }
        let vals = self.values(e, docs);
        if vals.is_empty() {
            return None;
        }
        let nums: Vec<f64> = vals.into_iter().filter_map(value_number).collect();
        if nums.is_empty() {
            None
        } else {
            Some(nums.iter().sum())
        }
    }

    /// The text values at this path (several when the path flattens).
    pub fn strings(&self, e: &Event, docs: &mut ParsedDocs) -> Vec<String> {
        if let Some(s) = self.scalar(e) {
            return if s.is_empty() {
                Vec::new()
            } else {
                vec![s.to_string()]
            };
        }
        self.values(e, docs)
            .into_iter()
            .filter_map(value_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(req: &str, resp: &str) -> Event {
        Event {
            event_id: "id".into(),
            event_time_ms: 0,
            event_source: "ec2.amazonaws.com".into(),
            event_name: "RunInstances".into(),
            aws_region: "us-east-1".into(),
            recipient_account_id: "111122223333".into(),
            user_identity: Default::default(),
            source_ip_address: "198.51.100.7".into(),
            user_agent: "Boto3/1.34".into(),
            error_code: String::new(),
            error_message: String::new(),
            read_only: Some(false),
            management_event: Some(true),
            event_category: "Management".into(),
            event_type: "AwsApiCall".into(),
            event_version: "1.09".into(),
            request_parameters: req.into(),
            response_elements: resp.into(),
            raw: String::new(),
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

    #[test]
    fn unknown_fields_are_rejected_with_a_reason() {
        let err = "requestParams.size".parse::<FieldPath>().unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        assert!("eventName.x".parse::<FieldPath>().is_err());
        assert!("requestParameters..x".parse::<FieldPath>().is_err());
    }
}
