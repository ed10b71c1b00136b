//! ingest's configuration: the `[ingest]` section of the config file.
//!
//! The AWS sources are off unless named: `s3_queue_url` (S3 notifications
//! through SQS), `backfill` (+ `since`), `firehose_listen` (CloudWatch Logs
//! through a Firehose HTTP endpoint) and `cloudwatch_log_group` (the
//! FilterLogEvents poller). Any of them that needs AWS also reads the
//! shared `[aws]` section (region, credentials, endpoints).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ingest::IngestOptions;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    /// enrich's gRPC endpoint, where validated events go.
    pub enrich_endpoint: String,
    /// Dead-letter JSON Lines file; default `<data-dir>/dead-letters.jsonl`.
    pub dead_letter_path: Option<PathBuf>,
    /// Directories or files to read at start-up (a CloudTrail S3 export).
    pub watch_paths: Vec<PathBuf>,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub dedupe_capacity: usize,
    /// Largest record accepted, bytes.
    pub max_record_bytes: usize,
    /// Largest document (file, S3 object, CloudWatch Logs payload, Firehose
    /// record) once decompressed, bytes: more is refused, not inflated.
    pub max_document_bytes: usize,
    /// Decompressed bytes one request (a Firehose delivery of many
    /// records) may add up to; the records past it are refused.
    pub max_request_bytes: usize,
    /// How far ahead of the receiving clock (the wall clock, or a file's
    /// delivery time when its name has one) an eventTime may be; further
    /// ahead is quarantined with the reason and never moves a watermark.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// How far behind the receiving clock an eventTime may be; unset (the
    /// default) accepts any age, as a backfill of history needs.
    #[serde(default, with = "humantime_serde::option")]
    pub max_event_age: Option<Duration>,
    /// How long a push stream that has stopped sending holds back the
    /// delivery periods the other streams have passed (see
    /// [`crate::order`]).
    #[serde(with = "humantime_serde")]
    pub stream_idle: Duration,
    /// How long the first push stream to open waits for others that
    /// start with it before anything is forwarded.
    #[serde(with = "humantime_serde")]
    pub stream_gather: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_patience: Duration,

    /// SQS queue that receives the trail bucket's S3 event notifications
    /// (directly or through an SNS topic).
    pub s3_queue_url: Option<String>,
    /// S3 objects processed at once.
    pub s3_max_objects_in_flight: usize,
    /// How long a received message stays invisible to other consumers;
    /// extended every half of it while its object is being processed.
    #[serde(with = "humantime_serde")]
    pub s3_visibility_timeout: Duration,
    /// Long-poll wait of each ReceiveMessage (at most 20 s).
    #[serde(with = "humantime_serde")]
    pub s3_wait_time: Duration,
    /// When an object could not be delivered (downstream unavailable, S3
    /// throttling), its message becomes visible again after this.
    #[serde(with = "humantime_serde")]
    pub s3_retry_delay: Duration,
    /// Replays history at start-up: `s3://bucket/prefix`.
    pub backfill: Option<String>,
    /// Earliest time read by the backfill (objects delivered and events
    /// before it are skipped) and by the poller's first poll.
    #[serde(default, with = "rfc3339_opt")]
    pub since: Option<DateTime<Utc>>,

    /// Address of the Firehose HTTP endpoint (CloudWatch Logs through
    /// Kinesis Data Firehose); off when unset.
    pub firehose_listen: Option<SocketAddr>,
    /// Environment variable holding the access key Firehose must send.
    pub firehose_access_key_env: Option<String>,
    /// File holding the access key Firehose must send.
    pub firehose_access_key_file: Option<PathBuf>,
    /// Largest request body accepted, bytes (Firehose sends up to 64 MiB
    /// of data per request, about 4/3 of that once base64-encoded).
    pub firehose_max_body_bytes: usize,
    /// Requests read and parsed at once; more wait their turn.
    pub firehose_max_concurrent_requests: usize,

    /// Log group the poller reads with FilterLogEvents; off when unset.
    pub cloudwatch_log_group: Option<String>,
    /// Only streams whose names start with this.
    pub cloudwatch_stream_prefix: Option<String>,
    /// A CloudWatch Logs filter pattern (e.g. `{ $.eventSource = "ec2.amazonaws.com" }`).
    pub cloudwatch_filter_pattern: Option<String>,
    /// Time between polls.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How far behind the newest event each poll looks again, for events
    /// that reach CloudWatch Logs late (already seen ones are skipped by id).
    #[serde(with = "humantime_serde")]
    pub cloudwatch_lookback: Duration,
    /// Checkpoint file; default `<data-dir>/cloudwatch-poll-<group>.json`.
    pub cloudwatch_checkpoint_path: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let o = IngestOptions::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            enrich_endpoint: "http://127.0.0.1:50052".into(),
            dead_letter_path: None,
            watch_paths: Vec::new(),
            batch_size: o.batch_size,
            max_in_flight: o.max_in_flight,
            dedupe_capacity: o.dedupe_capacity,
            max_record_bytes: o.limits.max_record_bytes,
            max_document_bytes: o.limits.max_document_bytes,
            max_request_bytes: o.max_request_bytes,
            max_future_skew: Duration::from_millis(o.limits.max_future_skew_ms as u64),
            max_event_age: None,
            stream_idle: o.stream_idle,
            stream_gather: o.stream_gather,
            retry_patience: o.retry_patience,
            s3_queue_url: None,
            s3_max_objects_in_flight: 4,
            s3_visibility_timeout: Duration::from_secs(300),
            s3_wait_time: Duration::from_secs(20),
            s3_retry_delay: Duration::from_secs(30),
            backfill: None,
            since: None,
            firehose_listen: None,
            firehose_access_key_env: None,
            firehose_access_key_file: None,
            firehose_max_body_bytes: 128 << 20,
            firehose_max_concurrent_requests: 4,
            cloudwatch_log_group: None,
            cloudwatch_stream_prefix: None,
            cloudwatch_filter_pattern: None,
            poll_interval: Duration::from_secs(60),
            cloudwatch_lookback: Duration::from_secs(300),
            cloudwatch_checkpoint_path: None,
        }
    }
}

/// A bucket and key prefix, from `s3://bucket/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!("{url:?}: {bucket:?} is not an S3 bucket name"));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl IngestConfig {
    pub fn dead_letter_path(&self, data_dir: &Path) -> PathBuf {
        self.dead_letter_path
            .clone()
            .unwrap_or_else(|| data_dir.join("dead-letters.jsonl"))
    }

    pub fn options(&self) -> IngestOptions {
        let mut o = IngestOptions {
            batch_size: self.batch_size.max(1),
            max_in_flight: self.max_in_flight.max(1),
            dedupe_capacity: self.dedupe_capacity.max(1),
            retry_patience: self.retry_patience,
            max_request_bytes: self.max_request_bytes,
            stream_idle: self.stream_idle,
            stream_gather: self.stream_gather,
            ..IngestOptions::default()
        };
        o.limits.max_record_bytes = self.max_record_bytes;
        o.limits.max_document_bytes = self.max_document_bytes;
        o.limits.max_future_skew_ms = self.max_future_skew.as_millis() as i64;
        o.limits.max_age_ms = self.max_event_age.map(|d| d.as_millis() as i64);
        o
    }

    /// Whether a source that calls AWS is configured (and `[aws]` is
    /// needed).
    pub fn needs_aws(&self) -> bool {
        self.s3_queue_url.is_some()
            || self.backfill.is_some()
            || self.cloudwatch_log_group.is_some()
    }

    /// The backfill location, validated.
    pub fn backfill_location(&self) -> Result<Option<S3Location>, String> {
        self.backfill
            .as_deref()
            .map(|b| S3Location::parse(b).map_err(|e| format!("ingest.backfill: {e}")))
            .transpose()
    }

    /// The poller's checkpoint file.
    pub fn cloudwatch_checkpoint_path(&self, data_dir: &Path, group: &str) -> PathBuf {
        self.cloudwatch_checkpoint_path.clone().unwrap_or_else(|| {
            let name: String = group
                .trim_matches('/')
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            data_dir.join(format!("cloudwatch-poll-{name}.json"))
        })
    }

    /// Checks the source settings, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.backfill_location()?;
        if let Some(url) = &self.s3_queue_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "ingest.s3_queue_url: {url:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
            ));
        }
        if self.s3_wait_time > Duration::from_secs(20) {
            return Err("ingest.s3_wait_time: SQS long polls wait at most 20s".into());
        }
        let vis = self.s3_visibility_timeout.as_secs();
        if !(2..=12 * 3600).contains(&vis) {
            return Err(
                "ingest.s3_visibility_timeout: must be between 2s and 12h (the SQS limits)".into(),
            );
        }
        if self.s3_retry_delay > Duration::from_secs(12 * 3600) {
            return Err("ingest.s3_retry_delay: at most 12h (the SQS limit)".into());
        }
        if self.firehose_access_key_env.is_some() && self.firehose_access_key_file.is_some() {
            return Err(
                "ingest.firehose_access_key_env and firehose_access_key_file: set one, not both"
                    .into(),
            );
        }
        if let Some(g) = &self.cloudwatch_log_group
            && g.trim().is_empty()
        {
            return Err("ingest.cloudwatch_log_group: empty".into());
        }
        if self.poll_interval < Duration::from_secs(1) {
            return Err("ingest.poll_interval: at least 1s".into());
        }
        Ok(())
    }
}

/// `since` as RFC 3339 text, or as a TOML date-time written unquoted.
mod rfc3339_opt {
    use std::fmt;

    use chrono::{DateTime, Utc};
    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    struct V;

    impl<'de> Visitor<'de> for V {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            super::parse_since(s).map(Some).map_err(E::custom)
        }
        // TOML date-times arrive as a one-entry map holding their text.
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            match map.next_entry::<String, String>()? {
                Some((_, text)) => self.visit_str(&text),
                None => Err(de::Error::custom("empty date-time")),
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(V)
    }
}

/// Parses `since`: RFC 3339 with an offset (`2026-01-01T00:00:00Z`).
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_locations() {
        assert_eq!(
            S3Location::parse("s3://trail-bucket/AWSLogs/o-1/").unwrap_or_else(|e| panic!("{e}")),
            S3Location {
                bucket: "trail-bucket".into(),
                prefix: "AWSLogs/o-1/".into()
            }
        );
        assert_eq!(
            S3Location::parse("s3://trail-bucket")
                .unwrap_or_else(|e| panic!("{e}"))
                .prefix,
            ""
        );
        assert!(S3Location::parse("trail-bucket/x").is_err());
        assert!(S3Location::parse("s3://Bad_Bucket/x").is_err());
    }

    #[test]
    fn since_reads_quoted_and_toml_date_times() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, with = "rfc3339_opt")]
            since: Option<DateTime<Utc>>,
        }
        for text in [
            "since = \"2026-01-01T00:00:00Z\"",
            "since = 2026-01-01T00:00:00Z",
        ] {
            let t: T = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                t.since.map(|s| s.to_rfc3339()),
                Some("2026-01-01T00:00:00+00:00".into())
            );
        }
        let t: T = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.since.is_none());
        assert!(toml::from_str::<T>("since = \"yesterday\"").is_err());
    }
}
