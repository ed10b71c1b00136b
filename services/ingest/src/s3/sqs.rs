//! The SQS-driven source: notifications received, their objects ingested
//! under a heartbeat, and each message deleted only once its events were
//! accepted (or dead-lettered).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trailhound_core::Rejection;
use trailhound_core::cloudtrail::Collect;

use super::{Notice, ObjectError, ObjectReader, ObjectRef, not_event_records, parse_notification};
use crate::source::{Backoff, SourceError, sleep_or_stop};

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

trailhound_core::debug_fields!(SqsS3Source { options, .. });

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
