//! The documented `[ingest]` + `[aws]` example loads as written, and
//! mistakes are refused with the key named.

use std::time::Duration;

use trailhound_aws::AwsConfig;
use trailhound_ingest::IngestConfig;

const EXAMPLE: &str = r#"
[aws]
region = "us-east-1"
assume_role_arn = "arn:aws:iam::111122223333:role/trailhound-reader"

[ingest]
# S3: the trail bucket notifies this queue (directly or through SNS).
s3_queue_url = "https://sqs.us-east-1.amazonaws.com/111122223333/trailhound-cloudtrail"
s3_max_objects_in_flight = 8
s3_visibility_timeout = "5m"
# Replay history once at start-up, from a date on.
backfill = "s3://org-trail-bucket/AWSLogs/o-a1b2c3d4e5/"
since = 2026-01-01T00:00:00Z
# CloudWatch Logs through Firehose (behind a TLS load balancer).
firehose_listen = "0.0.0.0:8080"
firehose_access_key_file = "/run/secrets/firehose-key"
# CloudWatch Logs without a subscription.
cloudwatch_log_group = "aws-cloudtrail-logs-111122223333"
cloudwatch_filter_pattern = '{ $.eventSource = "ec2.amazonaws.com" }'
poll_interval = "1m"
cloudwatch_lookback = "5m"
"#;

#[test]
fn the_documented_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trailhound.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let ingest: IngestConfig = trailhound_runtime::load_section(Some(&path), "ingest").unwrap();
    ingest.validate().unwrap();
    assert!(ingest.needs_aws());
    assert_eq!(
        ingest.since.map(|s| s.to_rfc3339()),
        Some("2026-01-01T00:00:00+00:00".to_string())
    );
    assert_eq!(
        ingest.backfill_location().unwrap().unwrap().bucket,
        "org-trail-bucket"
    );
    assert_eq!(ingest.poll_interval, Duration::from_secs(60));
    assert_eq!(
        ingest.cloudwatch_checkpoint_path(dir.path(), "aws-cloudtrail-logs-111122223333"),
        dir.path()
            .join("cloudwatch-poll-aws-cloudtrail-logs-111122223333.json")
    );
    let aws: AwsConfig = trailhound_runtime::load_section(Some(&path), "aws").unwrap();
    assert_eq!(aws.region.as_deref(), Some("us-east-1"));
}

#[test]
fn mistakes_name_their_key() {
    let bad = |patch: fn(&mut IngestConfig)| {
        let mut c = IngestConfig::default();
        patch(&mut c);
        c.validate().unwrap_err()
    };
    assert!(bad(|c| c.backfill = Some("bucket/prefix".into())).contains("ingest.backfill"));
    assert!(bad(|c| c.s3_queue_url = Some("trailhound-queue".into())).contains("s3_queue_url"));
    assert!(bad(|c| c.s3_wait_time = Duration::from_secs(60)).contains("s3_wait_time"));
    assert!(
        bad(|c| {
            c.firehose_access_key_env = Some("KEY".into());
            c.firehose_access_key_file = Some("/k".into());
        })
        .contains("not both")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "[ingest]\ns3_queue = \"x\"\n").unwrap();
    let err = trailhound_runtime::load_section::<IngestConfig>(Some(&path), "ingest")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ingest"), "{err}");
}
