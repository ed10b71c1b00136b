//! Reading an SQS message: an S3 event notification, direct or wrapped in
//! SNS, or `s3:TestEvent`, with keys decoded as S3 encodes them.

use serde_json::Value;

use super::ObjectRef;

/// What an SQS message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Objects to read (possibly none: deletions are ignored).
    Objects(Vec<ObjectRef>),
    /// `s3:TestEvent`, sent when a notification is configured.
    Test,
}

/// Reads an SQS message body: an S3 event notification, the same wrapped
/// in an SNS notification (raw message delivery off), or `s3:TestEvent`.
/// The error says why the body is none of these.
pub fn parse_notification(body: &str) -> Result<Notice, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        format!("message body is not JSON ({e}); expected an S3 event notification")
    })?;
    parse_value(&v, false)
}

fn parse_value(v: &Value, inside_sns: bool) -> Result<Notice, String> {
    if v.get("Type").and_then(Value::as_str) == Some("Notification") && !inside_sns {
        let msg = v
            .get("Message")
            .and_then(Value::as_str)
            .ok_or("SNS notification without a Message string")?;
        let inner: Value = serde_json::from_str(msg).map_err(|e| {
            format!(
                "SNS notification's Message is not JSON ({e}); expected an S3 event notification"
            )
        })?;
        return parse_value(&inner, true);
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    let Some(records) = v.get("Records").and_then(Value::as_array) else {
        return Err(
            "not an S3 event notification: expected {\"Records\":[...]} from aws:s3, \
                    an SNS notification wrapping one, or s3:TestEvent"
                .into(),
        );
    };
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let source = r.get("eventSource").and_then(Value::as_str).unwrap_or("");
        if source != "aws:s3" {
            return Err(format!(
                "record {i} has eventSource {source:?}, not \"aws:s3\": not an S3 event notification \
                 (is something other than S3 sending to this queue?)"
            ));
        }
        let name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
        if !name.starts_with("ObjectCreated") {
            // Deletions, restores, replication: nothing new to read.
            continue;
        }
        let s3 = r.get("s3");
        let bucket = s3
            .and_then(|s| s.get("bucket"))
            .and_then(|b| b.get("name"))
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("record {i} has no s3.bucket.name"))?;
        let raw_key = s3
            .and_then(|s| s.get("object"))
            .and_then(|o| o.get("key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("record {i} has no s3.object.key"))?;
        let key =
            decode_key(raw_key).map_err(|e| format!("record {i}: object key {raw_key:?} {e}"))?;
        let size = s3
            .and_then(|s| s.get("object"))
            .and_then(|o| o.get("size"))
            .and_then(Value::as_u64);
        out.push(ObjectRef {
            bucket: bucket.to_string(),
            key,
            size,
        });
    }
    Ok(Notice::Objects(out))
}

/// Decodes a key as S3 writes it in notifications: `+` is a space and
/// `%xx` a byte.
pub fn decode_key(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("has a bad %-escape at byte {i}"))?;
                out.push(hex);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "decodes to bytes that are not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn s3_record(event: &str, key: &str) -> String {
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"{event}","s3":{{"bucket":{{"name":"trail"}},"object":{{"key":"{key}","size":42}}}}}}"#
        )
    }

    #[test]
    fn reads_direct_and_sns_wrapped_notifications() {
        let direct = format!(
            r#"{{"Records":[{},{}]}}"#,
            s3_record("ObjectCreated:Put", "AWSLogs/1/a+b%3Dc.json.gz"),
            s3_record("ObjectRemoved:Delete", "AWSLogs/1/old.json.gz")
        );
        let expected = Notice::Objects(vec![ObjectRef {
            bucket: "trail".into(),
            key: "AWSLogs/1/a b=c.json.gz".into(),
            size: Some(42),
        }]);
        assert_eq!(parse_notification(&direct), Ok(expected.clone()));
        let sns = serde_json::json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:trail",
            "Message": direct,
        })
        .to_string();
        assert_eq!(parse_notification(&sns), Ok(expected));
    }

    #[test]
    fn test_events_and_strangers() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"trail"}"#;
        assert_eq!(parse_notification(test), Ok(Notice::Test));
        let sns_test = serde_json::json!({"Type":"Notification","Message":test}).to_string();
        assert_eq!(parse_notification(&sns_test), Ok(Notice::Test));
        let err = parse_notification("hello").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = parse_notification(r#"{"orders":[1]}"#).unwrap_err();
        assert!(err.contains("not an S3 event notification"), "{err}");
        let err =
            parse_notification(r#"{"Records":[{"eventSource":"ec2.amazonaws.com"}]}"#).unwrap_err();
        assert!(err.contains("ec2.amazonaws.com"), "{err}");
        let err = parse_notification(&format!(
            r#"{{"Records":[{}]}}"#,
            s3_record("ObjectCreated:Put", "bad%zzkey")
        ))
        .unwrap_err();
        assert!(err.contains("%-escape"), "{err}");
    }

    /// S3's encoding of keys in notifications (Python's quote_plus).
    fn encode(key: &str) -> String {
        let mut out = String::new();
        for b in key.bytes() {
            match b {
                b' ' => out.push('+'),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn decoding_inverts_s3_key_encoding(key in "\\PC{0,40}") {
            prop_assert_eq!(decode_key(&encode(&key)), Ok(key));
        }

        #[test]
        fn decoding_never_panics(s in "[%+a-f0-9]{0,12}") {
            let _ = decode_key(&s);
        }
    }
}
