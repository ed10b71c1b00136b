//! The parsers against real CloudTrail shapes and hostile input.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::io::Write;
use std::path::PathBuf;

use trailhound_core::cloudtrail::{
    Collect, ParseLimits, parse_cloudwatch_payload, parse_document, parse_file_bytes, parse_record,
};

const NOW: i64 = 1_800_000_000_000; // 2027-01-15

fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cloudtrail")
}

fn record(extra: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.09","eventID":"7d5b7e0c-0000-4000-8000-000000000001","eventTime":"2026-03-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333","sourceIPAddress":"198.51.100.7","userAgent":"Boto3/1.34.2"{extra}}}"#
    )
}

#[test]
fn every_record_of_the_real_trails_parses() {
    let mut total = 0;
    for dir in ["invictus-ir-aws_dataset/CloudTrail", "stratus-red-team"] {
        let dir = shared_data().join(dir);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let mut sink = Collect::default();
            let bytes = std::fs::read(&path).unwrap();
            parse_file_bytes(
                &bytes,
                &path.display().to_string(),
                &ParseLimits::default(),
                NOW,
                &mut sink,
            );
            assert!(
                sink.rejections.is_empty(),
                "{}: {:?}",
                path.display(),
                sink.rejections.first()
            );
            total += sink.events.len();
        }
    }
    // 2,900 invictus events + 310 stratus events.
    assert_eq!(total, 3210);
}

#[test]
fn identity_shapes_are_normalized() {
    let assumed = record(
        r#","userIdentity":{"type":"AssumedRole","principalId":"AROA:ci","arn":"arn:aws:sts::111122223333:assumed-role/ci/ci","accountId":"111122223333","accessKeyId":"ASIA1","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/ci"}}},"readOnly":false,"managementEvent":true,"eventCategory":"Management","eventType":"AwsApiCall","requestParameters":{"instanceType":"p4d.24xlarge"},"responseElements":null"#,
    );
    let e = parse_record(&assumed, &ParseLimits::default(), NOW).unwrap();
    assert_eq!(e.user_identity.kind, "AssumedRole");
    assert_eq!(
        e.user_identity.session_issuer_arn,
        "arn:aws:iam::111122223333:role/ci"
    );
    assert_eq!(
        e.user_identity.principal(),
        "arn:aws:sts::111122223333:assumed-role/ci/ci"
    );
    assert_eq!(e.read_only, Some(false));
    assert_eq!(e.request_parameters, r#"{"instanceType":"p4d.24xlarge"}"#);
    assert_eq!(e.response_elements, "");
    assert_eq!(e.raw, assumed);

    let service = record(
        r#","userIdentity":{"type":"AWSService","invokedBy":"autoscaling.amazonaws.com"},"eventType":"AwsServiceEvent""#,
    );
    let e = parse_record(&service, &ParseLimits::default(), NOW).unwrap();
    assert_eq!(e.user_identity.principal(), "autoscaling.amazonaws.com");

    // Records without userIdentity.type exist (AwsServiceEvent); they parse.
    let no_type =
        record(r#","userIdentity":{"accountId":"111122223333","invokedBy":"AWS Internal"}"#);
    assert!(parse_record(&no_type, &ParseLimits::default(), NOW).is_ok());

    let root = record(
        r#","userIdentity":{"type":"Root","arn":"arn:aws:iam::111122223333:root","accountId":"111122223333"}"#,
    );
    assert_eq!(
        parse_record(&root, &ParseLimits::default(), NOW)
            .unwrap()
            .user_identity
            .kind,
        "Root"
    );

    // Cross-account: the caller's account differs from the recipient.
    let cross = record(
        r#","userIdentity":{"type":"AWSAccount","accountId":"999988887777","principalId":"AIDA:x"}"#,
    );
    let e = parse_record(&cross, &ParseLimits::default(), NOW).unwrap();
    assert_eq!(e.recipient_account_id, "111122223333");
    assert_eq!(e.user_identity.account_id, "999988887777");

    let failed = record(
        r#","errorCode":"Client.UnauthorizedOperation","errorMessage":"You are not authorized""#,
    );
    let e = parse_record(&failed, &ParseLimits::default(), NOW).unwrap();
    assert!(e.is_error());

    let data = record(r#","eventCategory":"Data","managementEvent":false,"readOnly":"false""#);
    let e = parse_record(&data, &ParseLimits::default(), NOW).unwrap();
    assert_eq!(
        (e.management_event, e.read_only, e.event_category.as_str()),
        (Some(false), Some(false), "Data")
    );
}

#[test]
fn bad_records_are_rejected_with_reasons() {
    let l = ParseLimits::default();
    let cases = [
        (
            record("").replace("111122223333", "1234"),
            "recipientAccountId",
        ),
        (
            record("").replace("2026-03-01T10:00:00Z", "1970-01-01T00:00:00Z"),
            "before 2010",
        ),
        (
            record("").replace("2026-03-01T10:00:00Z", "2100-01-01T00:00:00Z"),
            "future",
        ),
        (
            record("").replace("2026-03-01T10:00:00Z", "yesterday"),
            "RFC 3339",
        ),
        (
            record("").replace(r#""eventName":"RunInstances","#, ""),
            "eventName",
        ),
        (record("").replace("us-east-1", "US East"), "awsRegion"),
        (record(r#","readOnly":7"#), "readOnly"),
        ("{not json".to_string(), "malformed record"),
    ];
    for (input, needle) in cases {
        let err = parse_record(&input, &l, NOW).unwrap_err();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn a_huge_record_is_rejected_without_parsing() {
    let big = record(&format!(
        r#","requestParameters":{{"blob":"{}"}}"#,
        "x".repeat(100 << 20)
    ));
    let err = parse_record(&big, &ParseLimits::default(), NOW).unwrap_err();
    assert!(err.contains("byte limit"), "{err}");
}

#[test]
fn good_records_around_bad_ones_survive() {
    let good1 = record("");
    let good2 = record("").replace("0001", "0002");
    let bad = record("").replace("111122223333", "x");
    let doc = format!(r#"{{"Records":[{good1},{bad},42,{good2}]}}"#);
    let mut sink = Collect::default();
    let n = parse_document(&doc, "f.json", &ParseLimits::default(), NOW, &mut sink);
    assert_eq!(n, 4);
    assert_eq!(sink.events.len(), 2);
    assert_eq!(sink.rejections.len(), 2);
    assert_eq!(sink.rejections[0].source, "f.json#1");
}

#[test]
fn truncated_json_keeps_the_records_before_the_cut() {
    let doc = format!(
        r#"{{"Records":[{},{},{{"eventID":"#,
        record(""),
        record("").replace("0001", "0002")
    );
    let mut sink = Collect::default();
    parse_document(&doc, "f.json", &ParseLimits::default(), NOW, &mut sink);
    assert_eq!(sink.events.len(), 2);
    assert_eq!(sink.rejections.len(), 1);
    assert!(
        sink.rejections[0]
            .reason
            .contains("malformed JSON after 2 records"),
        "{:?}",
        sink.rejections
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gzip_files_parse_and_truncated_gzip_is_a_clear_error() {
    let doc = format!(r#"{{"Records":[{}]}}"#, record(""));
    let gz = gzip(doc.as_bytes());
    let mut sink = Collect::default();
    parse_file_bytes(&gz, "a.json.gz", &ParseLimits::default(), NOW, &mut sink);
    assert_eq!(sink.events.len(), 1);

    let mut sink = Collect::default();
    parse_file_bytes(
        &gz[..gz.len() / 2],
        "b.json.gz",
        &ParseLimits::default(),
        NOW,
        &mut sink,
    );
    assert_eq!(sink.events.len(), 0);
    assert!(
        sink.rejections[0].reason.contains("gzip"),
        "{:?}",
        sink.rejections
    );

    // A gzip bomb stops at the limit instead of filling memory.
    let bomb = gzip(&vec![b' '; 10 << 20]);
    let limits = ParseLimits {
        max_document_bytes: 1 << 20,
        ..ParseLimits::default()
    };
    let mut sink = Collect::default();
    parse_file_bytes(&bomb, "bomb.gz", &limits, NOW, &mut sink);
    assert!(sink.rejections[0].reason.contains("limit"));
}

#[test]
fn cloudwatch_logs_payloads() {
    use base64::Engine;
    let msg = serde_json::to_string(&record("")).unwrap();
    let payload = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"111122223333","logGroup":"aws-cloudtrail-logs","logStream":"111122223333_CloudTrail_us-east-1","subscriptionFilters":["all"],"logEvents":[{{"id":"1","timestamp":1,"message":{msg}}},{{"id":"2","timestamp":1,"message":"not json"}}]}}"#
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(gzip(payload.as_bytes()));
    let mut sink = Collect::default();
    assert_eq!(
        parse_cloudwatch_payload(&b64, "cwl", &ParseLimits::default(), NOW, &mut sink),
        2
    );
    assert_eq!(sink.events.len(), 1);
    assert_eq!(sink.rejections.len(), 1);
    assert!(sink.rejections[0].source.ends_with("#2"));

    let control = r#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}"#;
    let b64 = base64::engine::general_purpose::STANDARD.encode(gzip(control.as_bytes()));
    let mut sink = Collect::default();
    assert_eq!(
        parse_cloudwatch_payload(&b64, "cwl", &ParseLimits::default(), NOW, &mut sink),
        0
    );
    assert!(sink.events.is_empty() && sink.rejections.is_empty());

    let mut sink = Collect::default();
    parse_cloudwatch_payload(
        "%%% not base64",
        "cwl",
        &ParseLimits::default(),
        NOW,
        &mut sink,
    );
    assert!(sink.rejections[0].reason.contains("base64"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut sink = Collect::default();
            parse_file_bytes(&bytes, "p", &ParseLimits::default(), NOW, &mut sink);
        }

        #[test]
        fn arbitrary_text_in_a_records_file_never_loses_good_records(junk in "\\PC{0,64}") {
            let junk_json = serde_json::to_string(&junk).unwrap();
            let doc = format!(r#"{{"Records":[{},{junk_json},{}]}}"#, record(""), record("").replace("0001", "0002"));
            let mut sink = Collect::default();
            parse_document(&doc, "p", &ParseLimits::default(), NOW, &mut sink);
            prop_assert_eq!(sink.events.len(), 2);
            prop_assert_eq!(sink.rejections.len(), 1);
        }
    }
}
