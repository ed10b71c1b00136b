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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trailhound_core::Rejection;
use trailhound_core::cloudtrail::{self, Collect};
use trailhound_core::pipeline::SinkError;

use crate::config::S3Location;
use crate::ingest::{Ingest, Outcome};
use crate::source::{BackfillStop, Backoff, SourceError, sleep_or_stop};
use trailhound_trail::files::{delivery_time, group_by_delivery};

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

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader").finish_non_exhaustive()
    }
}

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

/// Tunables of the SQS-driven source.
#[derive(Clone, Debug)]
pub struct SqsSourceOptions {
    pub queue_url: String,
    pub max_objects_in_flight: usize,
    pub visibility_timeout: Duration,
    pub wait_time: Duration,
    pub retry_delay: Duration,
    /// On shutdown, how long messages being processed may still take;
    /// those not done by then are left on the queue.
    pub drain_timeout: Duration,
    /// Longest pause between receives while the downstream or SQS fails.
    pub max_backoff: Duration,
}

impl SqsSourceOptions {
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            max_objects_in_flight: 4,
            visibility_timeout: Duration::from_secs(300),
            wait_time: Duration::from_secs(20),
            retry_delay: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct SqsSourceStats {
    pub received: AtomicU64,
    /// Messages deleted after their objects were accepted or dead-lettered.
    pub deleted: AtomicU64,
    /// Messages left on the queue to be tried again.
    pub retried: AtomicU64,
    /// Messages that were not S3 notifications (dead-lettered).
    pub not_s3: AtomicU64,
    pub test_events: AtomicU64,
    pub objects: AtomicU64,
    /// Visibility extensions while a message was being processed.
    pub extensions: AtomicU64,
}

enum Handled {
    Done,
    Retry { downstream: bool },
}

/// Reads S3 event notifications from an SQS queue and ingests the objects
/// they name.
pub struct SqsS3Source {
    sqs: aws_sdk_sqs::Client,
    reader: ObjectReader,
    options: SqsSourceOptions,
    stats: SqsSourceStats,
}

impl std::fmt::Debug for SqsS3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsS3Source")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl SqsS3Source {
    pub fn new(sqs: aws_sdk_sqs::Client, reader: ObjectReader, options: SqsSourceOptions) -> Self {
        Self {
            sqs,
            reader,
            options,
            stats: SqsSourceStats::default(),
        }
    }

    pub fn stats(&self) -> &SqsSourceStats {
        &self.stats
    }

    /// Receives and processes messages until `shutdown`; then lets the
    /// messages in hand finish (up to the drain timeout). Returns an error
    /// only for failures that will not pass by waiting (the queue does not
    /// exist, access is denied).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), SourceError> {
        let permits = Arc::new(Semaphore::new(self.options.max_objects_in_flight.max(1)));
        let mut tasks: tokio::task::JoinSet<Handled> = tokio::task::JoinSet::new();
        let mut backoff = Backoff::new(Duration::from_secs(1), self.options.max_backoff);
        let mut pause = None;
        let mut received_once = false;
        tracing::info!(queue = %self.options.queue_url, "reading S3 notifications");
        loop {
            while let Some(done) = tasks.try_join_next() {
                match done {
                    Ok(Handled::Done) => backoff.reset(),
                    Ok(Handled::Retry { downstream: true }) => pause = Some(backoff.fail()),
                    Ok(Handled::Retry { downstream: false }) => {}
                    Err(e) => tracing::error!(error = %e, "S3 message task failed"),
                }
            }
            if let Some(d) = pause.take() {
                tracing::warn!(wait = ?d, "downstream unavailable: pausing before the next receive");
                if !sleep_or_stop(d, &shutdown).await {
                    break;
                }
            }
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let mut held = vec![first];
            while held.len() < 10 {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            let received = tokio::select! {
                r = self.receive(held.len()) => r,
                _ = shutdown.cancelled() => break,
            };
            match received {
                Ok(messages) => {
                    received_once = true;
                    if !messages.is_empty() {
                        backoff.reset();
                    }
                    for (m, permit) in messages.into_iter().zip(held.drain(..)) {
                        let this = self.clone();
                        tasks.spawn(async move {
                            let _permit = permit;
                            this.handle(m).await
                        });
                    }
                }
                // A queue that cannot be read at all on the first call is
                // a configuration error: stop, with the explanation. Later
                // failures (expired credentials, an outage) are waited out.
                Err(e) if !e.is_retryable() && !received_once => return Err(e),
                Err(e) => {
                    let d = backoff.fail();
                    tracing::warn!(error = %e, wait = ?d, "failed to receive S3 notifications; retrying");
                    if !sleep_or_stop(d, &shutdown).await {
                        break;
                    }
                }
            }
        }
        let drained = tokio::time::timeout(self.options.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "shutting down with S3 messages in progress: they stay on the queue"
            );
            tasks.abort_all();
        }
        Ok(())
    }

    /// Receives one batch (up to 10 messages, one long poll) and processes
    /// it; returns how many messages were received.
    pub async fn poll_once(self: &Arc<Self>) -> Result<usize, SourceError> {
        let messages = self.receive(10).await?;
        let n = messages.len();
        let limit = self.options.max_objects_in_flight.max(1);
        use futures::StreamExt;
        futures::stream::iter(messages)
            .for_each_concurrent(limit, |m| async move {
                self.handle(m).await;
            })
            .await;
        Ok(n)
    }

    /// One ReceiveMessage.
    async fn receive(&self, n: usize) -> Result<Vec<Message>, SourceError> {
        let r = self
            .sqs
            .receive_message()
            .queue_url(&self.options.queue_url)
            .max_number_of_messages(n.clamp(1, 10) as i32)
            .wait_time_seconds(secs(self.options.wait_time).min(20))
            .visibility_timeout(secs(self.options.visibility_timeout))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        match r {
            Ok(out) => {
                let messages = out.messages.unwrap_or_default();
                self.stats
                    .received
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                Ok(messages)
            }
            Err(e) => Err(SourceError::aws(
                &e,
                "sqs:ReceiveMessage",
                &self.options.queue_url,
            )),
        }
    }

    async fn handle(&self, m: Message) -> Handled {
        let Some(receipt) = m.receipt_handle.clone() else {
            tracing::warn!(message_id = ?m.message_id, "SQS message without a receipt handle");
            return Handled::Done;
        };
        let id = m.message_id.clone().unwrap_or_default();
        let body = m.body.as_deref().unwrap_or("");
        let receives = m
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .cloned()
            .unwrap_or_default();
        let handled = match parse_notification(body) {
            Err(reason) => {
                self.stats.not_s3.fetch_add(1, Ordering::Relaxed);
                let source = format!("sqs:{}#{id}", self.options.queue_url);
                tracing::warn!(
                    source,
                    reason,
                    "dead-lettering a message that is not an S3 notification"
                );
                let rejection = Rejection::new(source, reason, body);
                match self
                    .reader
                    .ingest()
                    .submit(Collect {
                        events: Vec::new(),
                        rejections: vec![rejection],
                    })
                    .await
                {
                    Ok(_) => Handled::Done,
                    Err(_) => Handled::Retry { downstream: true },
                }
            }
            Ok(Notice::Test) => {
                self.stats.test_events.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    message_id = id,
                    "S3 test event received: notifications reach the queue"
                );
                Handled::Done
            }
            Ok(Notice::Objects(objects)) => {
                self.with_heartbeat(&receipt, self.ingest_objects(&objects, &id, &receives))
                    .await
            }
        };
        match handled {
            Handled::Done => self.delete(&receipt, &id).await,
            Handled::Retry { .. } => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                // Back on the queue after the retry delay rather than the
                // rest of the visibility timeout.
                self.set_visibility(&receipt, self.options.retry_delay)
                    .await;
            }
        }
        handled
    }

    async fn ingest_objects(&self, objects: &[ObjectRef], id: &str, receives: &str) -> Handled {
        for obj in objects {
            if not_event_records(&obj.key) {
                tracing::debug!(object = %obj.url(), "skipping a CloudTrail digest or Insights object");
                continue;
            }
            self.stats.objects.fetch_add(1, Ordering::Relaxed);
            match self.reader.ingest_object(obj).await {
                Ok(o) => tracing::debug!(
                    object = %obj.url(),
                    accepted = o.accepted,
                    rejected = o.rejected,
                    duplicates = o.duplicates,
                    "read S3 object"
                ),
                Err(ObjectError::Transient(e)) => {
                    tracing::warn!(object = %obj.url(), message_id = id, receives, error = %e,
                        "failed to read S3 object; its message stays on the queue");
                    return Handled::Retry { downstream: false };
                }
                Err(ObjectError::Downstream(e)) => {
                    tracing::warn!(object = %obj.url(), message_id = id, receives, error = %e,
                        "downstream did not accept the object's events; its message stays on the queue");
                    return Handled::Retry { downstream: true };
                }
            }
        }
        Handled::Done
    }

    /// Runs `fut`, extending the message's visibility every half timeout
    /// so a long object is not handed to another consumer meanwhile.
    async fn with_heartbeat<T>(&self, receipt: &str, fut: impl Future<Output = T>) -> T {
        let period = (self.options.visibility_timeout / 2).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick() => {
                    self.stats.extensions.fetch_add(1, Ordering::Relaxed);
                    self.set_visibility(receipt, self.options.visibility_timeout).await;
                }
            }
        }
    }

    async fn set_visibility(&self, receipt: &str, d: Duration) {
        if let Err(e) = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.options.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(d))
            .send()
            .await
        {
            tracing::warn!(
                error = %trailhound_aws::explain(&e, "sqs:ChangeMessageVisibility", &self.options.queue_url),
                "failed to change a message's visibility"
            );
        }
    }

    async fn delete(&self, receipt: &str, id: &str) {
        match self
            .sqs
            .delete_message()
            .queue_url(&self.options.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => {
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
            }
            // The message comes back and its events are dropped as
            // duplicates: wasteful, never lossy.
            Err(e) => tracing::warn!(
                message_id = id,
                error = %trailhound_aws::explain(&e, "sqs:DeleteMessage", &self.options.queue_url),
                "failed to delete a processed message; it will be read again"
            ),
        }
    }
}

/// What a backfill did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillOutcome {
    /// Objects read.
    pub objects: u64,
    /// Objects skipped: delivered before `since`, or not trail files.
    pub skipped_objects: u64,
    /// Events in the objects read that happened before `since`.
    pub skipped_events: u64,
    pub outcome: Outcome,
}

/// Every trail file under `location` delivered from `since` on, grouped by
/// delivery period, oldest first; and how many objects were skipped.
/// `page_size` is ListObjectsV2's MaxKeys (default 1,000).
pub async fn list_trail_objects(
    s3: &aws_sdk_s3::Client,
    location: &S3Location,
    since: Option<DateTime<Utc>>,
    page_size: Option<i32>,
) -> Result<(Vec<(String, Vec<ObjectRef>)>, u64), SourceError> {
    let mut objects = Vec::new();
    let mut skipped = 0u64;
    let mut token: Option<String> = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(&location.prefix)
            .set_max_keys(page_size)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| SourceError::aws(&e, "s3:ListObjectsV2", &location.to_string()))?;
        for o in out.contents() {
            let Some(key) = o.key() else { continue };
            if not_event_records(key) || !looks_like_trail_file(key) {
                skipped += 1;
                continue;
            }
            let obj = ObjectRef {
                bucket: location.bucket.clone(),
                key: key.to_string(),
                size: o.size().and_then(|s| u64::try_from(s).ok()),
            };
            if let Some(since) = since {
                // The delivery time in the name, else when it was written.
                let delivered = delivery_time(obj.file_name()).or_else(|| {
                    o.last_modified()
                        .and_then(|t| DateTime::from_timestamp(t.secs(), 0))
                });
                if delivered.is_some_and(|t| t < since) {
                    skipped += 1;
                    continue;
                }
            }
            objects.push(obj);
        }
        match out.next_continuation_token() {
            Some(t) if out.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
            _ => break,
        }
    }
    let groups = group_by_delivery(objects, |o| o.file_name());
    Ok((groups, skipped))
}

/// Replays a bucket prefix in delivery order, each delivery period's
/// events sorted by time, skipping what happened before `since`. Stops at
/// the first object that cannot be read or delivered, saying where to
/// resume.
pub async fn backfill(
    reader: &ObjectReader,
    location: &S3Location,
    since: Option<DateTime<Utc>>,
    concurrency: usize,
    shutdown: &CancellationToken,
) -> Result<BackfillOutcome, SourceError> {
    use futures::StreamExt;
    let (groups, skipped) = list_trail_objects(&reader.s3, location, since, None).await?;
    let total: usize = groups.iter().map(|(_, g)| g.len()).sum();
    tracing::info!(location = %location, objects = total, skipped, "backfill listed");
    let since_ms = since.map(|s| s.timestamp_millis());
    let mut out = BackfillOutcome {
        skipped_objects: skipped,
        ..BackfillOutcome::default()
    };
    for (delivery, objects) in groups {
        if shutdown.is_cancelled() {
            tracing::info!(location = %location, objects = out.objects, "backfill interrupted by shutdown");
            break;
        }
        let stop = |obj: &ObjectRef, message: String, done: u64| {
            SourceError::Backfill(Box::new(BackfillStop {
                location: location.to_string(),
                key: obj.url(),
                delivery: if delivery.is_empty() {
                    "at an unknown time".into()
                } else {
                    delivery.clone()
                },
                resume: delivery_time(&delivery)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .or_else(|| since.map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                    .unwrap_or_else(|| "<the same since>".into()),
                done,
                message,
            }))
        };
        let fetched: Vec<(ObjectRef, Result<Collect, ObjectError>)> =
            futures::stream::iter(objects)
                .map(|obj| async move {
                    let r = reader.fetch(&obj).await;
                    (obj, r)
                })
                .buffered(concurrency.max(1))
                .collect()
                .await;
        let mut group = Collect::default();
        let first_obj = fetched.first().map(|(o, _)| o.clone());
        for (obj, r) in fetched {
            match r {
                Ok(c) => {
                    group.events.extend(c.events);
                    group.rejections.extend(c.rejections);
                    out.objects += 1;
                }
                Err(e) => return Err(stop(&obj, e.to_string(), out.objects)),
            }
        }
        if let Some(since_ms) = since_ms {
            let before = group.events.len();
            group.events.retain(|e| e.event_time_ms >= since_ms);
            out.skipped_events += (before - group.events.len()) as u64;
        }
        group.events.sort_by_key(|e| e.event_time_ms);
        match reader.ingest.submit(group).await {
            Ok(o) => out.outcome.merge(o),
            Err(e) => {
                let obj = first_obj.unwrap_or_else(|| ObjectRef {
                    bucket: location.bucket.clone(),
                    key: location.prefix.clone(),
                    size: None,
                });
                return Err(stop(&obj, e.to_string(), out.objects));
            }
        }
    }
    Ok(out)
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

    #[test]
    fn digest_files_are_not_event_records() {
        assert!(not_event_records(
            "AWSLogs/o-1/111122223333/CloudTrail-Digest/us-east-1/2026/01/05/x.json.gz"
        ));
        assert!(!not_event_records(
            "AWSLogs/o-1/111122223333/CloudTrail/us-east-1/2026/01/05/x.json.gz"
        ));
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
