//! The S3 source: CloudTrail log files read from the trail bucket as they
//! are delivered, found through S3 event notifications on an SQS queue,
//! and the backfill that replays a bucket's history.
//!
//! Why SQS and not listing the bucket: an organization trail writes one
//! object per account × region every few minutes; listing would cost a
//! request per prefix per poll and still miss ordering. S3 notifies each
//! object once (at least once) to a queue, directly or through an SNS
//! topic, and the queue gives us at-least-once delivery with visibility
//! timeouts: a message is deleted **only after** its object's events were
//! accepted downstream (`Ingest::submit` returned Ok). A crash or an
//! unavailable downstream leaves the message on the queue; it comes back
//! after `s3_retry_delay` and the events, if some were already accepted,
//! are dropped by the eventID deduplication. A redrive policy on the queue
//! (maxReceiveCount) is the operator's bound on endless retries of
//! something that can only be fixed by hand (a missing kms:Decrypt).
//!
//! What can never succeed is not retried: a message that is not an S3
//! notification, an object that is missing, not CloudTrail or a corrupt
//! gzip goes to the dead-letter sink with its reason and its
//! `s3://bucket/key` (or `sqs:` message) source, and the message is
//! deleted. `s3:TestEvent` (sent when the notification is configured) and
//! events other than ObjectCreated are acknowledged and ignored, as are
//! CloudTrail's digest and Insights files, which are not event records.
//!
//! Keys in notifications are URL-encoded (`+` for space, `%xx`), as S3
//! documents for its event message structure.
//!
//! The backfill lists a prefix (ListObjectsV2, every page) and replays it in
//! delivery order (the delivery time in CloudTrail's file names, as
//! [`trailhound_trail::files`] does for local trees), skipping objects delivered and
//! events that happened before `since`.

use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use tokio::sync::Semaphore;
use trailhound_core::Rejection;
use trailhound_core::cloudtrail::{self, Collect};
use trailhound_core::pipeline::SinkError;

use crate::ingest::{Ingest, Outcome};

mod backfill;
mod notification;
mod sqs;

pub use backfill::{BackfillOutcome, backfill, list_trail_objects};
pub use notification::{Notice, decode_key, parse_notification};
pub use sqs::{SqsS3Source, SqsSourceOptions, SqsSourceStats};

/// An S3 client for `aws`, with path-style addressing when an endpoint
/// override is set (emulators serve buckets under the path, not as
/// virtual hosts).
pub fn s3_client(aws: &trailhound_aws::Aws) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&aws.sdk_config("s3"))
        .force_path_style(aws.endpoint("s3").is_some())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// One object named by a notification or a listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub bucket: String,
    /// Decoded key.
    pub key: String,
    pub size: Option<u64>,
}

impl ObjectRef {
    /// `s3://bucket/key`, the source named in dead letters.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// Objects CloudTrail writes that hold no event records.
fn not_event_records(key: &str) -> bool {
    key.ends_with('/') || trailhound_trail::files::not_event_records(key).is_some()
}

fn looks_like_trail_file(key: &str) -> bool {
    key.ends_with(".json") || key.ends_with(".json.gz") || key.ends_with(".gz")
}

/// Why an object's events did not reach downstream (the message stays).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// S3 failed in a way that may pass (throttling, 5xx, access that can
    /// be granted).
    #[error("{0}")]
    Transient(String),
    #[error(transparent)]
    Downstream(#[from] SinkError),
}

/// Reads CloudTrail objects from S3 and parses them; poison objects come
/// back as rejections, not errors.
#[derive(Clone)]
pub struct ObjectReader {
    s3: aws_sdk_s3::Client,
    ingest: Arc<Ingest>,
    limiter: Arc<Semaphore>,
}

trailhound_core::debug_fields!(ObjectReader { .. });

impl ObjectReader {
    /// `limiter` caps S3 calls in flight (`Aws::limiter`).
    pub fn new(s3: aws_sdk_s3::Client, ingest: Arc<Ingest>, limiter: Arc<Semaphore>) -> Self {
        Self {
            s3,
            ingest,
            limiter,
        }
    }

    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// Reads and parses one object. A missing object, one too large, or one
    /// that is not CloudTrail yields rejections; only failures that may pass
    /// are errors.
    pub async fn fetch(&self, obj: &ObjectRef) -> Result<Collect, ObjectError> {
        let source = obj.url();
        let poison = |reason: String| {
            let mut c = Collect::default();
            c.rejections
                .push(Rejection::new(source.clone(), reason, ""));
            Ok(c)
        };
        let limits = self.ingest.limits().clone();
        if let Some(size) = obj.size
            && size > limits.max_document_bytes as u64
        {
            return poison(format!(
                "object is {size} bytes, over the {} byte document limit",
                limits.max_document_bytes
            ));
        }
        let bytes = {
            let _permit = self.limiter.acquire().await;
            let resp = match self
                .s3
                .get_object()
                .bucket(&obj.bucket)
                .key(&obj.key)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let explained = trailhound_aws::explain(&e, "s3:GetObject", &source);
                    return match e.code() {
                        Some("NoSuchKey" | "NoSuchBucket" | "InvalidObjectState") => {
                            poison(explained)
                        }
                        _ => Err(ObjectError::Transient(explained)),
                    };
                }
            };
            if let Some(len) = resp.content_length()
                && len > 0
                && len as u64 > limits.max_document_bytes as u64
            {
                return poison(format!(
                    "object is {len} bytes, over the {} byte document limit",
                    limits.max_document_bytes
                ));
            }
            resp.body.collect().await.map_err(|e| {
                ObjectError::Transient(format!("failed to read the body of {source}: {e}"))
            })?
        }
        .into_bytes();
        tokio::task::spawn_blocking(move || {
            let mut sink = Collect::default();
            let now = chrono::Utc::now().timestamp_millis();
            let n = cloudtrail::parse_file_bytes(&bytes, &source, &limits, now, &mut sink);
            if n == 0 && sink.events.is_empty() && sink.rejections.is_empty() {
                // `{"Records":[]}` is a valid, empty delivery; anything
                // else that yields nothing is not a trail file.
                tracing::debug!(source, "object holds no records");
            }
            sink
        })
        .await
        .map_err(|e| ObjectError::Transient(format!("parser failed: {e}")))
    }

    /// Reads one object and hands its events to ingest; returns once they
    /// were accepted downstream.
    pub async fn ingest_object(&self, obj: &ObjectRef) -> Result<Outcome, ObjectError> {
        let mut parsed = self.fetch(obj).await?;
        parsed.events.sort_by_key(|e| e.event_time_ms);
        Ok(self.ingest.submit(parsed).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_files_are_not_event_records() {
        assert!(not_event_records(
            "AWSLogs/o-1/111122223333/CloudTrail-Digest/us-east-1/2026/01/05/x.json.gz"
        ));
        assert!(!not_event_records(
            "AWSLogs/o-1/111122223333/CloudTrail/us-east-1/2026/01/05/x.json.gz"
        ));
    }
}
