//! Shared fixtures: a recording downstream that can be made to fail, the
//! emulator's SDK clients, CloudTrail records and files.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use trailhound_aws::Aws;
use trailhound_core::Event;
use trailhound_core::pipeline::{EventSink, SinkError};
use trailhound_ingest::deadletter::MemoryDeadLetter;
use trailhound_ingest::{Ingest, IngestOptions};
use trailhound_testkit::Emulator;

/// Records what it accepts. Accepts `accept_first` batches, then fails
/// (retryably) while `failing` is set.
#[derive(Default)]
pub struct Recorder {
    pub events: std::sync::Mutex<Vec<Event>>,
    pub failing: AtomicBool,
    pub accept_first: AtomicUsize,
    pub calls: AtomicUsize,
    pub failures: AtomicUsize,
}

impl Recorder {
    pub fn ids(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Every event id received exactly once.
    pub fn assert_no_duplicates(&self) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for id in self.ids() {
            *counts.entry(id).or_default() += 1;
        }
        let dups: Vec<_> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(dups.is_empty(), "duplicated downstream: {dups:?}");
    }
}

#[async_trait]
impl EventSink for Recorder {
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) && call >= self.accept_first.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(SinkError {
                downstream: "enrich".into(),
                message: "unavailable (test)".into(),
                retryable: true,
            });
        }
        let n = events.len() as u64;
        self.events.lock().unwrap().extend(events);
        Ok(n)
    }
}

/// Sources started the way `trailhound ingest` and `up` start them, with
/// their state in `dir`.
pub struct Running {
    pub started: trailhound_ingest::StartedSources,
    stop: tokio_util::sync::CancellationToken,
    set: tokio::task::JoinSet<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub async fn start(
        config: &trailhound_ingest::IngestConfig,
        aws: Option<&trailhound_aws::AwsConfig>,
        dir: tempfile::TempDir,
        ingest: Arc<Ingest>,
    ) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut set = tokio::task::JoinSet::new();
        let started = trailhound_ingest::start_sources_with(
            config,
            aws,
            dir.path(),
            ingest,
            &mut set,
            stop.clone(),
        )
        .await
        .unwrap();
        Self {
            started,
            stop,
            set,
            _dir: dir,
        }
    }

    /// Stops the sources without waiting for them.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Stops the sources and waits until each has ended well.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while let Some(r) = self.set.join_next().await {
            r.unwrap().unwrap();
        }
    }
}

pub fn options() -> IngestOptions {
    IngestOptions {
        batch_size: 100,
        max_in_flight: 1,
        retry_patience: Duration::from_millis(200),
        ..IngestOptions::default()
    }
}

pub fn pipeline_with(
    options: IngestOptions,
) -> (Arc<Ingest>, Arc<Recorder>, Arc<MemoryDeadLetter>) {
    let sink = Arc::new(Recorder::default());
    let dl = Arc::new(MemoryDeadLetter::default());
    let ingest = Arc::new(Ingest::new(options, dl.clone(), sink.clone()));
    (ingest, sink, dl)
}

pub fn pipeline() -> (Arc<Ingest>, Arc<Recorder>, Arc<MemoryDeadLetter>) {
    pipeline_with(options())
}

/// The dead letters as (source, reason).
pub fn dead_letters(dl: &MemoryDeadLetter) -> Vec<(String, String)> {
    dl.entries
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.source.clone(), r.reason.clone()))
        .collect()
}

pub fn event_id(n: u32) -> String {
    format!("7d5b7e0c-0000-4000-8000-{n:012}")
}

/// One CloudTrail record.
pub fn record(n: u32, time: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.09","eventID":"{}","eventTime":"{time}","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333"}},"sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15","requestParameters":{{"instanceType":"m5.large"}}}}"#,
        event_id(n)
    )
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b).unwrap();
    enc.finish().unwrap()
}

/// A CloudTrail log file: gzip of `{"Records":[...]}`.
pub fn trail_file(ids: &[u32], time: &str) -> Vec<u8> {
    let records: Vec<String> = ids.iter().map(|i| record(*i, time)).collect();
    gzip(format!(r#"{{"Records":[{}]}}"#, records.join(",")).as_bytes())
}

/// A CloudTrail key for account, region and delivery time `YYYYMMDDTHHMMZ`.
pub fn trail_key(account: &str, delivery: &str, suffix: &str) -> String {
    format!(
        "AWSLogs/o-test/{account}/CloudTrail/us-east-1/{}/{}/{}/{account}_CloudTrail_us-east-1_{delivery}_{suffix}.json.gz",
        &delivery[0..4],
        &delivery[4..6],
        &delivery[6..8]
    )
}

pub struct Clients {
    pub aws: Aws,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

pub async fn clients(emu: &Emulator) -> Clients {
    let aws = Aws::load(&emu.aws_config()).await.unwrap();
    Clients {
        s3: trailhound_ingest::s3::s3_client(&aws),
        sqs: aws_sdk_sqs::Client::new(&aws.sdk_config("sqs")),
        logs: aws_sdk_cloudwatchlogs::Client::new(&aws.sdk_config("logs")),
        aws,
    }
}

/// Creates a queue; returns (url, arn).
pub async fn queue(c: &Clients, name: &str) -> (String, String) {
    let url = c
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn = attrs
        .attributes
        .unwrap()
        .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .unwrap()
        .clone();
    (url, arn)
}

/// Messages on the queue, visible and in flight.
pub async fn queue_depth(c: &Clients, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let get = |a: &A| attrs.get(a).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(&A::ApproximateNumberOfMessages),
        get(&A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Creates a bucket that notifies `queue_arn` of every object created.
pub async fn bucket_notifying_queue(c: &Clients, bucket: &str, queue_arn: &str) {
    use aws_sdk_s3::types::QueueConfiguration;
    let to_queue = QueueConfiguration::builder()
        .queue_arn(queue_arn)
        .events(created())
        .build()
        .unwrap();
    bucket_notifying(c, bucket, |n| n.queue_configurations(to_queue)).await;
}

/// Creates a bucket that notifies the SNS topic `topic_arn` of every object
/// created.
pub async fn bucket_notifying_topic(c: &Clients, bucket: &str, topic_arn: &str) {
    use aws_sdk_s3::types::TopicConfiguration;
    let to_topic = TopicConfiguration::builder()
        .topic_arn(topic_arn)
        .events(created())
        .build()
        .unwrap();
    bucket_notifying(c, bucket, |n| n.topic_configurations(to_topic)).await;
}

fn created() -> aws_sdk_s3::types::Event {
    aws_sdk_s3::types::Event::from("s3:ObjectCreated:*")
}

async fn bucket_notifying(
    c: &Clients,
    bucket: &str,
    target: impl FnOnce(
        aws_sdk_s3::types::builders::NotificationConfigurationBuilder,
    ) -> aws_sdk_s3::types::builders::NotificationConfigurationBuilder,
) {
    use aws_sdk_s3::types::NotificationConfiguration;
    c.s3.create_bucket().bucket(bucket).send().await.unwrap();
    c.s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(target(NotificationConfiguration::builder()).build())
        .send()
        .await
        .unwrap();
}

pub async fn put(c: &Clients, bucket: &str, key: &str, body: Vec<u8>) {
    c.s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// Waits until `check` holds, failing the test after `secs` seconds.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls moto's SNS query API (test set-up only; the code under test reads
/// SNS's envelope from SQS with the SDK).
pub async fn sns(endpoint: &str, params: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let body: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        // moto picks the service from the credential scope.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "SNS {params:?}: {status} {text}");
    text
}

/// The text of the first `<tag>` element.
pub fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_string()
}
