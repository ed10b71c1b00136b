//! ingest's logic with in-memory downstreams: dead letters, deduplication,
//! backpressure, retries, and files read from an S3-layout tree.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use trailhound_core::Event;
use trailhound_core::pipeline::{EventSink, SinkError};
use trailhound_ingest::deadletter::{DeadLetterSink, JsonlDeadLetter};
use trailhound_ingest::{Ingest, IngestOptions};

fn record(id: u32, minute: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.09","eventID":"0f0e0d0c-0000-4000-8000-{id:012}","eventTime":"2026-03-01T10:{minute:02}:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333"}},"sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15"}}"#
    )
}

/// Accepts everything, slowly, and remembers the most batches it ever had
/// in flight at once.
#[derive(Default)]
struct SlowSink {
    received: Mutex<Vec<Event>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    delay: Duration,
}

#[async_trait]
impl EventSink for SlowSink {
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let n = events.len() as u64;
        self.received.lock().await.extend(events);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(n)
    }
}

/// Fails the first `failures` calls with the given retryability.
struct FlakySink {
    failures: AtomicUsize,
    retryable: bool,
    inner: SlowSink,
}

impl FlakySink {
    /// A sink refusing its first `failures` batches, as retryable or not.
    fn failing(failures: usize, retryable: bool) -> Arc<Self> {
        Arc::new(Self {
            failures: AtomicUsize::new(failures),
            retryable,
            inner: SlowSink::default(),
        })
    }
}

/// An ingest with the test options and dead letters kept in memory,
/// handing batches to `sink`.
fn ingest_into(sink: Arc<dyn EventSink>) -> Ingest {
    Ingest::new(
        options(),
        Arc::new(trailhound_ingest::deadletter::MemoryDeadLetter::default()),
        sink,
    )
}

#[async_trait]
impl EventSink for FlakySink {
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError {
                downstream: "enrich".into(),
                message: "unavailable".into(),
                retryable: self.retryable,
            });
        }
        self.inner.send(events).await
    }
}

fn options() -> IngestOptions {
    IngestOptions {
        batch_size: 10,
        max_in_flight: 2,
        retry_patience: Duration::from_millis(300),
        ..IngestOptions::default()
    }
}

#[tokio::test]
async fn bad_records_are_dead_lettered_with_reasons_and_good_ones_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let dl_path = dir.path().join("dl/dead-letters.jsonl");
    let dl = Arc::new(JsonlDeadLetter::open(&dl_path).unwrap());
    let sink = Arc::new(SlowSink::default());
    let ingest = Ingest::new(options(), dl.clone(), sink.clone());
    let doc = format!(
        r#"{{"Records":[{},{},{},{}]}}"#,
        record(1, 0),
        record(2, 1).replace(
            r#""recipientAccountId":"111122223333""#,
            r#""recipientAccountId":"1234""#
        ),
        record(3, 2).replace("2026-03-01T10:02:00Z", "1970-01-01T00:00:00Z"),
        record(4, 3)
    );
    let out = ingest
        .submit(ingest.parse_json(&doc, "upload.json"))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (2, 2));
    assert_eq!(sink.received.lock().await.len(), 2);
    assert_eq!(dl.count(), 2);
    let text = std::fs::read_to_string(&dl_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("recipientAccountId"), "{reasons:?}");
    assert!(reasons[1].contains("before 2010"), "{reasons:?}");
    for l in &lines {
        assert!(l["source"].as_str().unwrap().starts_with("upload.json#"));
        assert!(l["record"].as_str().unwrap().contains("eventID"));
    }
}

#[tokio::test]
async fn duplicates_are_dropped_by_event_id() {
    let sink = Arc::new(SlowSink::default());
    let ingest = ingest_into(sink.clone());
    let doc = format!(r#"[{},{},{}]"#, record(1, 0), record(2, 1), record(1, 0));
    let first = ingest.submit(ingest.parse_json(&doc, "a")).await.unwrap();
    assert_eq!((first.accepted, first.duplicates), (2, 1));
    let again = ingest
        .submit(ingest.parse_json(&record(2, 1), "b"))
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
}

#[tokio::test]
async fn a_slow_downstream_bounds_batches_in_flight() {
    let sink = Arc::new(SlowSink {
        delay: Duration::from_millis(20),
        ..SlowSink::default()
    });
    let ingest = Arc::new(ingest_into(sink.clone()));
    // Three submitters at once, 50 events (5 batches) each.
    let mut tasks = Vec::new();
    for s in 0..3u32 {
        let ingest = ingest.clone();
        tasks.push(tokio::spawn(async move {
            let doc = format!(
                "[{}]",
                (0..50)
                    .map(|i| record(s * 100 + i, i % 60))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            ingest.submit(ingest.parse_json(&doc, "s")).await.unwrap()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().accepted;
    }
    assert_eq!(accepted, 150);
    assert_eq!(sink.received.lock().await.len(), 150);
    let peak = sink.peak.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&peak),
        "peak {peak} batches in flight, limit 2"
    );
}

#[tokio::test]
async fn unavailable_downstreams_are_retried_then_reported_and_nothing_is_lost() {
    // Two transient failures: retried, everything arrives.
    let flaky = FlakySink::failing(2, true);
    let ingest = ingest_into(flaky.clone());
    let out = ingest
        .submit(ingest.parse_json(&record(1, 0), "a"))
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(ingest.stats().forward_errors.load(Ordering::Relaxed), 2);

    // A permanent failure is returned, and the events are not remembered
    // as seen: sending them again once the downstream is back works.
    let broken = FlakySink::failing(1, false);
    let ingest = ingest_into(broken.clone());
    let err = ingest
        .submit(ingest.parse_json(&record(7, 0), "a"))
        .await
        .unwrap_err();
    assert!(!err.retryable && err.message.contains("unavailable"));
    let again = ingest
        .submit(ingest.parse_json(&record(7, 0), "a"))
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (1, 0));
}

#[tokio::test]
async fn an_s3_tree_is_read_in_delivery_order_with_bad_files_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let day = dir
        .path()
        .join("AWSLogs/111122223333/CloudTrail/us-east-1/2026/03/01");
    std::fs::create_dir_all(&day).unwrap();
    let gz = |body: &str| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body.as_bytes()).unwrap();
        enc.finish().unwrap()
    };
    std::fs::write(
        day.join("111122223333_CloudTrail_us-east-1_20260301T1005Z_b.json.gz"),
        gz(&format!(r#"{{"Records":[{}]}}"#, record(2, 4))),
    )
    .unwrap();
    std::fs::write(
        day.join("111122223333_CloudTrail_us-east-1_20260301T1000Z_a.json.gz"),
        gz(&format!(r#"{{"Records":[{}]}}"#, record(1, 0))),
    )
    .unwrap();
    let truncated = gz(&format!(r#"{{"Records":[{}]}}"#, record(3, 9)));
    std::fs::write(
        day.join("111122223333_CloudTrail_us-east-1_20260301T1010Z_c.json.gz"),
        &truncated[..truncated.len() / 2],
    )
    .unwrap();
    let sink = Arc::new(SlowSink::default());
    let dl = Arc::new(trailhound_ingest::deadletter::MemoryDeadLetter::default());
    let ingest = Ingest::new(options(), dl.clone(), sink.clone());
    let out = ingest
        .ingest_path(&dir.path().join("AWSLogs"))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (2, 1));
    let received = sink.received.lock().await;
    assert!(received[0].event_time_ms < received[1].event_time_ms);
    let entries = dl.entries.lock().unwrap();
    assert!(entries[0].reason.contains("gzip"), "{:?}", entries[0]);
}

/// A record of `account` at 2026-03-01 `hour`:`minute`.
fn record_at(id: u32, account: &str, hour: u32, minute: u32) -> String {
    record(id, minute)
        .replace("10:", &format!("{hour:02}:"))
        .replace("111122223333", account)
}

#[tokio::test]
async fn concurrent_streams_are_forwarded_in_delivery_order() {
    use trailhound_ingest::order::Stream;
    let sink = Arc::new(SlowSink::default());
    let ingest = Arc::new(Ingest::new(
        IngestOptions {
            stream_gather: Duration::from_millis(200),
            ..options()
        },
        Arc::new(trailhound_ingest::deadletter::MemoryDeadLetter::default()),
        sink.clone(),
    ));
    // Two shippers share the files of hours 10, 11 and 12: one sends all
    // of its share at once, the other a period at a time, slowly.
    let fast = Stream::open(ingest.clone());
    let slow = Stream::open(ingest.clone());
    let mut id = 0;
    let mut events = |account: &str, hour: u32| {
        let mut out = Vec::new();
        for minute in [50, 10, 30] {
            id += 1;
            let doc = record_at(id, account, hour, minute);
            out.extend(ingest.parse_json(&doc, "x.json").events);
        }
        out
    };
    let periods = [
        (10, "20260301T1105Z"),
        (11, "20260301T1205Z"),
        (12, "20260301T1305Z"),
    ];
    let fast_share: Vec<_> = periods
        .iter()
        .map(|(h, p)| (p.to_string(), events("111122223333", *h)))
        .collect();
    let slow_share: Vec<_> = periods
        .iter()
        .map(|(h, p)| (p.to_string(), events("444455556666", *h)))
        .collect();
    let fast_task = tokio::spawn(async move {
        for (p, ev) in fast_share {
            fast.touch(&p);
            fast.add(&p, ev).await;
        }
        fast.finish().await
    });
    for (p, ev) in slow_share {
        tokio::time::sleep(Duration::from_millis(300)).await;
        slow.touch(&p);
        slow.add(&p, ev).await;
    }
    assert_eq!(slow.finish().await.unwrap(), 9);
    assert_eq!(fast_task.await.unwrap().unwrap(), 9);
    let received = sink.received.lock().await;
    let times: Vec<i64> = received.iter().map(|e| e.event_time_ms).collect();
    assert_eq!(times.len(), 18);
    assert!(times.is_sorted(), "{times:?}");
    assert_eq!(ingest.sequencer().buffered(), 0);
}

#[tokio::test]
async fn an_event_ahead_of_the_receiving_clock_is_quarantined_with_the_reason() {
    let sink = Arc::new(SlowSink::default());
    let ingest = ingest_into(sink.clone());
    let future = (chrono::Utc::now() + chrono::Duration::hours(23))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let doc = format!(
        "[{},{}]",
        record(1, 0),
        record(2, 0).replace("2026-03-01T10:00:00Z", &future)
    );
    let out = ingest
        .submit(ingest.parse_json(&doc, "push"))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (1, 1));
    let reason = &out.rejections[0].reason;
    assert!(reason.contains("ahead of the receiving clock"), "{reason}");
    assert!(reason.contains("quarantined"), "{reason}");
    // In a file named with its delivery time, that time is the clock: an
    // event after the file was delivered is implausible, years ago or not.
    let named = "111122223333_CloudTrail_us-east-1_20260301T1005Z_abc.json";
    let doc = format!("[{},{}]", record(3, 4), record(4, 30));
    let parsed = ingest.parse_json(&doc, named);
    assert_eq!((parsed.events.len(), parsed.rejections.len()), (1, 1));
    assert!(parsed.rejections[0].reason.contains("2026-03-01T10:05:00Z"));
}

#[tokio::test]
async fn json_lines_a_byte_order_mark_and_ids_in_other_accounts_or_case_are_accepted() {
    let sink = Arc::new(SlowSink::default());
    let ingest = ingest_into(sink.clone());
    let same_id_other_account = record(1, 1).replace("111122223333", "444455556666");
    let upper = record(1, 2).replace("0f0e0d0c", "0F0E0D0C");
    let doc = format!(
        "\u{feff}{}\n{}\n\n{}\n{}\n",
        record(1, 0),
        same_id_other_account,
        upper,
        record(1, 0)
    );
    let out = ingest
        .submit(ingest.parse_json(&doc, "lines.jsonl"))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected, out.duplicates), (3, 0, 1));
}
