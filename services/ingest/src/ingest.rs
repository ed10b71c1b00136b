//! The ingest logic: parse, validate, dedupe, dead-letter, forward.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trailhound_core::cloudtrail::{self, Collect, ParseLimits};
use trailhound_core::pipeline::{EventSink, SinkError};
use trailhound_core::reasons::ReasonTally;
use trailhound_core::{Event, Rejection};

use crate::deadletter::DeadLetterSink;
use crate::order::{Sequenced, Sequencer};
use trailhound_trail::dedupe::Dedupe;
use trailhound_trail::files::{delivery_groups, receiving_clock};
use trailhound_trail::read::{parse_group, sort_by_time};

/// Counters since start.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub records_read: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
    pub batches_forwarded: AtomicU64,
    pub forward_errors: AtomicU64,
    /// Events written to the spool because downstream stayed down.
    pub spooled: AtomicU64,
    /// Spooled events not replayed yet.
    pub spooled_pending: AtomicU64,
}

/// What one submission did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    /// The first few rejections, for the caller.
    pub rejections: Vec<Rejection>,
    /// Every rejection, counted by kind.
    pub reasons: ReasonTally,
}

impl Outcome {
    pub fn merge(&mut self, o: Outcome) {
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.duplicates += o.duplicates;
        let room = 10usize.saturating_sub(self.rejections.len());
        self.rejections.extend(o.rejections.into_iter().take(room));
        self.reasons.merge(&o.reasons);
    }
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub limits: ParseLimits,
    /// Events per batch sent downstream.
    pub batch_size: usize,
    /// Batches in flight to downstream at once; beyond this, submitters
    /// wait (backpressure).
    pub max_in_flight: usize,
    /// Event ids remembered for deduplication (two generations of this).
    pub dedupe_capacity: usize,
    /// How long to keep retrying a downstream that is unavailable.
    pub retry_patience: Duration,
    /// Decompressed bytes one request of many records may add up to.
    pub max_request_bytes: usize,
    /// How long a quiet push stream holds back the delivery periods
    /// others have passed (see [`crate::order`]).
    pub stream_idle: Duration,
    /// How long the first stream to open waits for others to join before
    /// anything is forwarded (see [`crate::order`]).
    pub stream_gather: Duration,
    /// Events the sequencer holds before a stream that runs ahead waits.
    pub max_buffered: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            limits: ParseLimits::default(),
            batch_size: 1000,
            max_in_flight: 4,
            dedupe_capacity: 2_000_000,
            retry_patience: Duration::from_secs(120),
            max_request_bytes: 256 << 20,
            stream_idle: Duration::from_secs(10),
            stream_gather: Duration::from_secs(2),
            max_buffered: 500_000,
        }
    }
}

pub struct Ingest {
    options: IngestOptions,
    dedupe: Mutex<Dedupe>,
    dead_letters: Arc<dyn DeadLetterSink>,
    downstream: Arc<dyn EventSink>,
    in_flight: tokio::sync::Semaphore,
    stats: IngestStats,
    figures: Figures,
    /// Where batches go when downstream stays down past `retry_patience`;
    /// `replay_spool` sends them on later. None: the submitter gets the
    /// error and must send again.
    spool: Option<std::path::PathBuf>,
    /// One replay at a time.
    replaying: tokio::sync::Mutex<()>,
    /// Merges concurrent push streams into delivery order.
    sequencer: Sequencer,
    /// Every rejection since start, by kind, for `Stats`.
    reasons: Mutex<ReasonTally>,
    /// Decompression and parsing at once: each may hold a document of up
    /// to `max_document_bytes`, so this bounds their memory.
    parsing: Arc<tokio::sync::Semaphore>,
}

/// What the counters cannot say: latencies, rates and the work in hand.
#[derive(Debug)]
struct Figures {
    common: trailhound_runtime::stats::Common,
    /// One batch from first send to accepted, retries included.
    batch: trailhound_runtime::stats::Histogram,
    /// One call to downstream.
    backend: trailhound_runtime::stats::Histogram,
    /// Submissions parsed but not yet accepted downstream: their age is
    /// the lag ingest adds (it grows while downstream is down).
    pending: trailhound_runtime::stats::Pending,
}

trailhound_core::debug_fields!(Ingest { options, .. });

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(chrono::Utc::now().timestamp_micros() as u64);
    h.finish() as u32
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Ingest {
    pub fn new(
        options: IngestOptions,
        dead_letters: Arc<dyn DeadLetterSink>,
        downstream: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            dedupe: Mutex::new(Dedupe::new(options.dedupe_capacity)),
            in_flight: tokio::sync::Semaphore::new(options.max_in_flight.max(1)),
            dead_letters,
            downstream,
            stats: IngestStats::default(),
            figures: Figures {
                common: trailhound_runtime::stats::Common::new("ingest"),
                batch: Default::default(),
                backend: Default::default(),
                pending: Default::default(),
            },
            spool: None,
            replaying: tokio::sync::Mutex::new(()),
            sequencer: Sequencer::new(
                options.stream_idle,
                options.stream_gather,
                options.max_buffered,
            ),
            reasons: Mutex::new(ReasonTally::default()),
            parsing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            )),
            options,
        }
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// Marks a submission in hand until the guard drops: its age is the
    /// lag `Stats` reports.
    pub fn track_pending(&self) -> trailhound_runtime::stats::PendingGuard<'_> {
        self.figures.pending.begin()
    }

    /// Runs `parse` on a blocking thread once a parsing slot is free (see
    /// `parsing`): decompression and JSON are CPU work that must neither
    /// stall the async runtime nor, many at once, exhaust memory.
    pub async fn parse_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        parse: impl FnOnce(&Ingest) -> T + Send + 'static,
    ) -> Result<T, String> {
        let _slot = self
            .parsing
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "ingest is shutting down".to_string())?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || parse(&me))
            .await
            .map_err(|e| format!("parser failed: {e}"))
    }

    /// Keeps batches downstream would not take in `dir` (the durable
    /// buffer) instead of failing the submission.
    pub fn with_spool(mut self, dir: std::path::PathBuf) -> Self {
        self.spool = Some(dir);
        self
    }

    fn spool_files(&self) -> Vec<std::path::PathBuf> {
        match &self.spool {
            Some(dir) => trailhound_runtime::private::files_with_extension(dir, "jsonl"),
            None => Vec::new(),
        }
    }

    /// Writes a batch's raw records to the spool, one per line; the file
    /// appears whole (written aside, then renamed) or not at all.
    fn spool_batch(&self, batch: &[Event]) -> std::io::Result<()> {
        let Some(dir) = &self.spool else {
            return Err(std::io::Error::other("no spool configured"));
        };
        trailhound_runtime::private::dir(dir)?;
        let name = format!(
            "{:020}-{:08x}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            rand_suffix()
        );
        let tmp = dir.join(format!("{name}.tmp"));
        let mut text = String::new();
        for e in batch {
            text.push_str(&e.raw.replace('\n', " "));
            text.push('\n');
        }
        trailhound_runtime::private::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(format!("{name}.jsonl")))
    }

    /// Sends every spooled batch downstream, oldest first, deleting each
    /// once accepted; stops at the first failure (the rest stay for the
    /// next replay). Returns (files, events) replayed.
    pub async fn replay_spool(&self) -> Result<(usize, u64), SinkError> {
        let _one = self.replaying.lock().await;
        let mut files = 0;
        let mut events = 0;
        for path in self.spool_files() {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "failed to read spool file");
                    continue;
                }
            };
            let source = path.display().to_string();
            let mut parsed = Collect::default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let c = self.parse_json(line, &source);
                parsed.events.extend(c.events);
            }
            let n = parsed.events.len() as u64;
            // These ids were accepted once: no dedupe, straight downstream.
            self.send_with_retry(parsed.events).await?;
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "failed to remove replayed spool file");
            }
            let _ = self.stats.spooled_pending.fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |v| Some(v.saturating_sub(n)),
            );
            files += 1;
            events += n;
        }
        Ok((files, events))
    }

    /// The figures every service reports alike (the `Stats` RPC).
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let f = &self.figures;
        let mut out = f.common.stats(load(&s.records_read), load(&s.accepted));
        let capacity = self.options.max_in_flight.max(1) as u64;
        let free = self.in_flight.available_permits() as u64;
        out.queues = vec![
            trailhound_runtime::stats::queue(
                "forward_in_flight",
                capacity.saturating_sub(free),
                capacity,
            ),
            trailhound_runtime::stats::queue("submissions_pending", f.pending.depth(), 0),
        ];
        out.batch_latency = Some(f.batch.summary());
        out.backend_latency = Some(f.backend.summary());
        out.backend_calls = f.backend.count();
        // Rejected records are bad input, not a fault of ingest: reported
        // by kind apart from the errors.
        out.input_rejected = self
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .top(20)
            .into_iter()
            .map(|(n, example)| (example.chars().take(200).collect(), n))
            .collect();
        out.errors.insert("forward".into(), load(&s.forward_errors));
        out.dead_letters = load(&s.rejected);
        out.lag_seconds = f.pending.oldest_age_seconds();
        out.gauges
            .insert("duplicates".into(), load(&s.duplicates) as f64);
        out.gauges
            .insert("spooled_pending".into(), load(&s.spooled_pending) as f64);
        out.queues.push(trailhound_runtime::stats::queue(
            "spool",
            load(&s.spooled_pending),
            0,
        ));
        out.gauges.insert(
            "batches_forwarded".into(),
            load(&s.batches_forwarded) as f64,
        );
        out
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    pub fn dead_letters(&self) -> &Arc<dyn DeadLetterSink> {
        &self.dead_letters
    }

    pub fn limits(&self) -> &ParseLimits {
        &self.options.limits
    }

    pub fn max_request_bytes(&self) -> usize {
        self.options.max_request_bytes
    }

    /// Parses one JSON document: a record, an array, `{"Records":[...]}`
    /// or JSON Lines. Event times are checked against the wall clock, or
    /// the delivery time in `source`'s file name when it has one.
    pub fn parse_json(&self, json: &str, source: &str) -> Collect {
        let mut sink = Collect::default();
        let clock = receiving_clock(source, now_ms());
        cloudtrail::parse_document(json, source, &self.options.limits, clock, &mut sink);
        sink
    }

    /// Parses a CloudWatch Logs subscription delivery.
    pub fn parse_cloudwatch(&self, data: &str, source: &str) -> Collect {
        let mut sink = Collect::default();
        cloudtrail::parse_cloudwatch_payload(
            data,
            source,
            &self.options.limits,
            now_ms(),
            &mut sink,
        );
        sink
    }

    /// Dedupes, dead-letters the rejections, and forwards the events in
    /// time order, returning once downstream accepted them all.
    pub async fn submit(&self, parsed: Collect) -> Result<Outcome, SinkError> {
        let _pending = self.figures.pending.begin();
        let (fresh, mut outcome) = self.screen(parsed);
        outcome.accepted = self.forward_sorted(fresh).await?;
        Ok(outcome)
    }

    /// What every submission goes through first: counts what was read,
    /// dead-letters the rejections, and drops duplicates. Returns the
    /// fresh events and an outcome with nothing accepted yet.
    pub fn screen(&self, parsed: Collect) -> (Vec<Event>, Outcome) {
        let Collect { events, rejections } = parsed;
        let read = (events.len() + rejections.len()) as u64;
        self.stats.records_read.fetch_add(read, Ordering::Relaxed);
        self.dead_letters.write(&rejections);
        self.stats
            .rejected
            .fetch_add(rejections.len() as u64, Ordering::Relaxed);
        let before = events.len();
        let fresh: Vec<Event> = {
            let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            events
                .into_iter()
                .filter(|e| d.first_time(&e.recipient_account_id, &e.event_id))
                .collect()
        };
        let duplicates = (before - fresh.len()) as u64;
        self.stats
            .duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        let mut reasons = ReasonTally::default();
        for r in &rejections {
            reasons.add(&r.reason);
        }
        if !reasons.is_empty() {
            self.reasons
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge(&reasons);
        }
        let outcome = Outcome {
            accepted: 0,
            rejected: rejections.len() as u64,
            duplicates,
            rejections: rejections.into_iter().take(10).collect(),
            reasons,
        };
        (fresh, outcome)
    }

    /// Sorts events by time and forwards them in that order.
    pub async fn forward_sorted(&self, mut events: Vec<Event>) -> Result<u64, SinkError> {
        sort_by_time(&mut events);
        self.forward(events).await
    }

    /// Sends events downstream in batches, one after another so detection
    /// sees them in the order given (other submissions' batches go
    /// meanwhile, at most `max_in_flight` at once across all). Events of
    /// batches that were not accepted are forgotten by the deduplicator,
    /// so sending them again works.
    async fn forward(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        use futures::StreamExt;
        if events.is_empty() {
            return Ok(0);
        }
        let batches = self.batches(events);
        // A pipelined downstream (a stream to enrich) takes every batch
        // now, in order, and acknowledges them as it goes.
        let batches = match self.queue_batches(batches) {
            Ok(queued) => return self.settle_queued(queued).await,
            Err(batches) => batches,
        };
        let mut results = futures::stream::iter(batches)
            .map(|batch| async move {
                let sent = match self.in_flight.acquire().await {
                    Ok(_permit) => match self.send_with_retry(batch.clone()).await {
                        Err(e) => self.spool_or_fail(&batch, e),
                        ok => ok,
                    },
                    Err(_) => Err(SinkError {
                        downstream: "enrich".into(),
                        message: "ingest is shutting down".into(),
                        retryable: true,
                    }),
                };
                (batch, sent)
            })
            .buffered(1);
        let mut accepted = 0;
        let mut first_error = None;
        while let Some((batch, r)) = results.next().await {
            match r {
                Ok(n) => accepted += n,
                Err(e) => {
                    self.forget(&batch);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(accepted),
        }
    }

    /// A batch downstream did not take: kept in the durable buffer for a
    /// replay when downstream stayed down and there is a spool, rather
    /// than failed; else the error.
    fn spool_or_fail(&self, batch: &[Event], e: SinkError) -> Result<u64, SinkError> {
        if !(e.retryable && self.spool.is_some()) {
            return Err(e);
        }
        match self.spool_batch(batch) {
            Ok(()) => {
                let n = batch.len() as u64;
                self.stats.spooled.fetch_add(n, Ordering::Relaxed);
                self.stats.spooled_pending.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(events = n, error = %e, "downstream unavailable: batch spooled for replay");
                Ok(n)
            }
            Err(io) => {
                tracing::error!(error = %io, "failed to spool a batch");
                Err(e)
            }
        }
    }

    /// Events of a batch that was neither accepted nor spooled are
    /// forgotten by the deduplicator, so sending them again works.
    fn forget(&self, batch: &[Event]) {
        let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
        for e in batch {
            d.forget(&e.recipient_account_id, &e.event_id);
        }
    }

    /// Counts a batch downstream accepted, `started` when it was first sent.
    fn note_forwarded(&self, n: u64, started: std::time::Instant) {
        self.figures.batch.record(started.elapsed());
        self.stats.batches_forwarded.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// `events` in batches of `batch_size`, in order.
    fn batches(&self, mut events: Vec<Event>) -> Vec<Vec<Event>> {
        let size = self.options.batch_size.max(1);
        let mut batches = Vec::with_capacity(events.len() / size + 1);
        while !events.is_empty() {
            let rest = events.split_off(events.len().min(size));
            batches.push(std::mem::replace(&mut events, rest));
        }
        batches
    }

    /// [`Self::forward`] to a pipelined downstream: every batch queued at
    /// once, in order (`queue_batches`; Err when downstream takes one at a
    /// time); each acknowledgement awaited for `retry_patience`
    /// (the stream's driver retries meanwhile, in order), then the batch
    /// spooled (or its events forgotten by the deduplicator), as a batch
    /// sent alone would be.
    fn queue_batches(&self, batches: Vec<Vec<Event>>) -> Result<Queued, Vec<Vec<Event>>> {
        let Some(first) = batches.first().and_then(|b| self.downstream.queue(b)) else {
            return Err(batches);
        };
        let mut acks = Vec::with_capacity(batches.len());
        acks.push(first);
        for b in &batches[1..] {
            acks.push(self.downstream.queue(b).unwrap_or_else(|| {
                Box::pin(std::future::ready(Err(SinkError {
                    downstream: "enrich".into(),
                    message: "downstream stopped taking queued batches".into(),
                    retryable: true,
                })))
            }));
        }
        Ok(batches.into_iter().zip(acks).collect())
    }

    async fn settle_queued(&self, queued: Queued) -> Result<u64, SinkError> {
        let started = std::time::Instant::now();
        let patience = self.options.retry_patience;
        let mut accepted = 0;
        let mut first_error = None;
        for (batch, ack) in queued {
            let sent = match tokio::time::timeout(patience, ack).await {
                Ok(r) => r,
                Err(_) => Err(SinkError {
                    downstream: "enrich".into(),
                    message: format!("no acknowledgement within {patience:?}"),
                    retryable: true,
                }),
            };
            let sent = match sent {
                Ok(_) => {
                    self.figures.backend.record(started.elapsed());
                    self.note_forwarded(batch.len() as u64, started);
                    Ok(batch.len() as u64)
                }
                Err(e) => {
                    self.stats.forward_errors.fetch_add(1, Ordering::Relaxed);
                    self.spool_or_fail(&batch, e)
                }
            };
            match sent {
                Ok(n) => accepted += n,
                Err(e) => {
                    self.forget(&batch);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(accepted),
        }
    }

    async fn send_with_retry(&self, batch: Vec<Event>) -> Result<u64, SinkError> {
        let n = batch.len() as u64;
        let started = std::time::Instant::now();
        let sent = trailhound_runtime::retry::retry(
            trailhound_runtime::retry::Policy::hop(self.options.retry_patience),
            |e: &SinkError| e.retryable,
            |e, wait| {
                self.stats.forward_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, ?wait, "downstream unavailable, retrying");
            },
            || {
                self.figures
                    .backend
                    .time(self.downstream.send(batch.clone()))
            },
        )
        .await;
        match sent {
            Ok(_) => {
                self.note_forwarded(n, started);
                Ok(n)
            }
            Err(e) => {
                self.stats.forward_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Reads a CloudTrail file or a whole `AWSLogs/...` tree, in delivery
    /// order, each delivery period's events sorted by time.
    pub async fn ingest_path(&self, path: &Path) -> Result<Outcome, IngestPathError> {
        let groups = delivery_groups(path).map_err(|e| IngestPathError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut total = Outcome::default();
        for g in groups {
            let limits = self.options.limits.clone();
            let parsed = tokio::task::spawn_blocking(move || parse_group(&g.files, &limits))
                .await
                .map_err(|e| IngestPathError::Internal(e.to_string()))?;
            total.merge(self.submit(parsed).await?);
        }
        Ok(total)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestPathError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Downstream(#[from] SinkError),
    #[error("ingest failed: {0}")]
    Internal(String),
}

/// Batches queued to a pipelined downstream, each with its acknowledgement.
type Queued = Vec<(Vec<Event>, trailhound_core::pipeline::Ack)>;

/// The sequencer forwards merged push streams through ingest.
#[async_trait::async_trait]
impl Sequenced for Ingest {
    fn sequencer(&self) -> &Sequencer {
        Ingest::sequencer(self)
    }

    async fn forward_sorted(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        Ingest::forward_sorted(self, events).await
    }

    fn queue_sorted(
        self: Arc<Self>,
        mut events: Vec<Event>,
    ) -> Result<crate::order::Settle, Vec<Event>> {
        sort_by_time(&mut events);
        match self.queue_batches(self.batches(events)) {
            Ok(queued) => Ok(Box::pin(async move { self.settle_queued(queued).await })),
            Err(batches) => Err(batches.concat()),
        }
    }
}
