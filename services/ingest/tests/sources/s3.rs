//! The S3 source against moto: real bucket notifications to SQS (and
//! through SNS), the delete-after-acceptance rule, poison objects and
//! strangers on the queue, and the backfill's order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trailhound_ingest::IngestConfig;
use trailhound_ingest::config::S3Location;
use trailhound_ingest::s3::{
    ObjectReader, SqsS3Source, SqsSourceOptions, backfill, list_trail_objects,
};
use trailhound_testkit::Emulator;

use crate::common::*;

/// The S3 notification source on the queue at `url`, reading objects
/// into `ingest`.
fn sqs_source(c: &Clients, url: &str, ingest: Arc<trailhound_ingest::Ingest>) -> Arc<SqsS3Source> {
    let reader = ObjectReader::new(c.s3.clone(), ingest, c.aws.limiter());
    Arc::new(SqsS3Source::new(c.sqs.clone(), reader, source_options(url)))
}

/// [`sqs_source`], running until the token is cancelled.
fn run_source(
    c: &Clients,
    url: &str,
    ingest: Arc<trailhound_ingest::Ingest>,
) -> (
    Arc<SqsS3Source>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), trailhound_ingest::SourceError>>,
) {
    let source = sqs_source(c, url, ingest);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.clone().run(stop.clone()));
    (source, stop, task)
}

fn source_options(queue_url: &str) -> SqsSourceOptions {
    SqsSourceOptions {
        wait_time: Duration::from_secs(1),
        visibility_timeout: Duration::from_secs(30),
        retry_delay: Duration::from_secs(1),
        max_backoff: Duration::from_secs(1),
        ..SqsSourceOptions::new(queue_url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_objects_are_ingested_and_their_messages_deleted() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let (url, arn) = queue(&c, "trail-events").await;
    bucket_notifying_queue(&c, "trail", &arn).await;
    // A key S3 must URL-encode in the notification (space, '=', '+').
    let key_a = trail_key("111122223333", "20260301T1000Z", "a b=c+d");
    let key_b = trail_key("111122223333", "20260301T1005Z", "b");
    put(
        &c,
        "trail",
        &key_a,
        trail_file(&[1, 2, 3], "2026-03-01T09:58:00Z"),
    )
    .await;
    put(
        &c,
        "trail",
        &key_b,
        trail_file(&[4, 5], "2026-03-01T10:03:00Z"),
    )
    .await;

    // Started the way `trailhound ingest` and `up` start it.
    let (ingest, sink, dl) = pipeline();
    let config = IngestConfig {
        s3_queue_url: Some(url.clone()),
        s3_wait_time: Duration::from_secs(1),
        ..IngestConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let sources = Running::start(&config, Some(&emu.aws_config()), dir, ingest).await;
    assert_eq!(sources.started.names, vec!["s3-notifications"]);
    let s3 = sources.started.s3.clone().unwrap();

    wait_until(20, "5 events and an empty queue", || async {
        sink.len() == 5 && queue_depth(&c, &url).await == (0, 0)
    })
    .await;
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(ids, (1..=5).map(event_id).collect::<Vec<_>>());
    assert!(dead_letters(&dl).is_empty(), "{:?}", dead_letters(&dl));
    // moto sends s3:TestEvent when the notification is configured.
    assert_eq!(s3.stats().test_events.load(Ordering::Relaxed), 1);
    assert_eq!(s3.stats().deleted.load(Ordering::Relaxed), 3);
    assert_eq!(s3.stats().retried.load(Ordering::Relaxed), 0);

    sources.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_through_sns_are_unwrapped() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let (url, queue_arn) = queue(&c, "trail-events").await;
    let created = sns(
        emu.endpoint(),
        &[("Action", "CreateTopic"), ("Name", "trail")],
    )
    .await;
    let topic = xml_value(&created, "TopicArn");
    sns(
        emu.endpoint(),
        &[
            ("Action", "Subscribe"),
            ("TopicArn", &topic),
            ("Protocol", "sqs"),
            ("Endpoint", &queue_arn),
        ],
    )
    .await;
    bucket_notifying_topic(&c, "trail", &topic).await;
    put(
        &c,
        "trail",
        &trail_key("111122223333", "20260301T1000Z", "sns"),
        trail_file(&[11, 12], "2026-03-01T09:59:00Z"),
    )
    .await;

    // The messages really are SNS envelopes (raw delivery is off): peek,
    // then make them visible again for the source.
    let peeked = c
        .sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(!peeked.is_empty());
    for m in &peeked {
        let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
        assert_eq!(body["Type"], "Notification", "{body}");
        c.sqs
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(m.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }

    let (ingest, sink, dl) = pipeline();
    let (_source, stop, task) = run_source(&c, &url, ingest);
    wait_until(20, "2 events and an empty queue", || async {
        sink.len() == 2 && queue_depth(&c, &url).await == (0, 0)
    })
    .await;
    assert!(dead_letters(&dl).is_empty(), "{:?}", dead_letters(&dl));
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_deleted_only_after_its_events_are_accepted() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let (url, arn) = queue(&c, "trail-events").await;
    bucket_notifying_queue(&c, "trail", &arn).await;
    put(
        &c,
        "trail",
        &trail_key("111122223333", "20260301T1000Z", "x"),
        trail_file(&[21, 22, 23, 24, 25], "2026-03-01T09:59:00Z"),
    )
    .await;

    // Batches of 2: the first is accepted, then downstream goes away, so the
    // object is half delivered when its message is given back.
    let (ingest, sink, _dl) = pipeline_with(trailhound_ingest::IngestOptions {
        batch_size: 2,
        ..options()
    });
    sink.accept_first.store(1, Ordering::SeqCst);
    sink.failing.store(true, Ordering::SeqCst);
    let (source, stop, task) = run_source(&c, &url, ingest.clone());

    wait_until(20, "the message to be given back twice", || async {
        source.stats().retried.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(sink.len(), 2, "only the first batch got through");
    let (visible, in_flight) = queue_depth(&c, &url).await;
    assert_eq!(visible + in_flight, 1, "the message is still on the queue");
    assert_eq!(
        source.stats().deleted.load(Ordering::Relaxed),
        1,
        "only the test event"
    );

    sink.failing.store(false, Ordering::SeqCst);
    wait_until(20, "all events and an empty queue", || async {
        sink.len() == 5 && queue_depth(&c, &url).await == (0, 0)
    })
    .await;
    sink.assert_no_duplicates();
    assert!(
        ingest.stats().duplicates.load(Ordering::Relaxed) >= 2,
        "the first batch was read again and dropped as duplicates"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_objects_and_strangers_are_dead_lettered_and_deleted() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let (url, arn) = queue(&c, "trail-events").await;
    bucket_notifying_queue(&c, "trail", &arn).await;
    let good = trail_key("111122223333", "20260301T1000Z", "good");
    let csv = "AWSLogs/o-test/111122223333/CloudTrail/us-east-1/2026/03/01/report.json";
    let truncated = trail_key("111122223333", "20260301T1005Z", "truncated");
    put(
        &c,
        "trail",
        &good,
        trail_file(&[31, 32], "2026-03-01T09:59:00Z"),
    )
    .await;
    put(&c, "trail", csv, b"account,cost\n1,2\n".to_vec()).await;
    let mut cut = trail_file(&[33, 34], "2026-03-01T10:01:00Z");
    cut.truncate(cut.len() / 2);
    put(&c, "trail", &truncated, cut).await;
    // Not from S3 at all, and a notification for an object that is gone.
    c.sqs
        .send_message()
        .queue_url(&url)
        .message_body("hello from a misconfigured producer")
        .send()
        .await
        .unwrap();
    let gone = serde_json::json!({"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
        "s3":{"bucket":{"name":"trail"},"object":{"key":"AWSLogs/gone.json.gz","size":10}}}]});
    c.sqs
        .send_message()
        .queue_url(&url)
        .message_body(gone.to_string())
        .send()
        .await
        .unwrap();

    let (ingest, sink, dl) = pipeline();
    let (source, stop, task) = run_source(&c, &url, ingest);
    wait_until(20, "an empty queue and 4 dead letters", || async {
        dl.entries.lock().unwrap().len() == 4 && queue_depth(&c, &url).await == (0, 0)
    })
    .await;
    assert_eq!(sink.len(), 2, "the good object went through");
    let letters = dead_letters(&dl);
    let find = |source: &str| {
        letters
            .iter()
            .find(|(s, _)| s.starts_with(source))
            .unwrap_or_else(|| panic!("no dead letter from {source}: {letters:?}"))
            .1
            .clone()
    };
    assert!(
        find(&format!("s3://trail/{csv}")).contains("not a CloudTrail document"),
        "{letters:?}"
    );
    assert!(
        find(&format!("s3://trail/{truncated}")).contains("corrupt or truncated gzip"),
        "{letters:?}"
    );
    assert!(
        find("s3://trail/AWSLogs/gone.json.gz").contains("NoSuchKey"),
        "{letters:?}"
    );
    assert!(
        find(&format!("sqs:{url}#")).contains("not JSON"),
        "{letters:?}"
    );
    assert_eq!(source.stats().not_s3.load(Ordering::Relaxed), 1);
    assert_eq!(source.stats().retried.load(Ordering::Relaxed), 0);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_replays_in_delivery_order_from_since() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    c.s3.create_bucket().bucket("trail").send().await.unwrap();
    // Path order (account first) is not delivery order.
    let objects = [
        (
            "111111111111",
            "20260301T0955Z",
            "early",
            vec![100u32],
            "2026-03-01T09:50:00Z",
        ),
        (
            "111111111111",
            "20260301T1010Z",
            "c",
            vec![3],
            "2026-03-01T10:08:00Z",
        ),
        (
            "111111111111",
            "20260301T1000Z",
            "a",
            vec![1],
            "2026-03-01T09:57:00Z",
        ),
        (
            "222222222222",
            "20260301T1000Z",
            "b",
            vec![2],
            "2026-03-01T10:00:00Z",
        ),
        (
            "222222222222",
            "20260301T1015Z",
            "d",
            vec![4, 5],
            "2026-03-01T10:12:00Z",
        ),
    ];
    for (account, delivery, suffix, ids, time) in &objects {
        put(
            &c,
            "trail",
            &trail_key(account, delivery, suffix),
            trail_file(ids, time),
        )
        .await;
    }
    // Not event records: skipped, not dead-lettered.
    put(
        &c,
        "trail",
        "AWSLogs/o-test/111111111111/CloudTrail-Digest/us-east-1/2026/03/01/111111111111_CloudTrail-Digest_us-east-1_trail_us-east-1_20260301T1100Z.json.gz",
        b"{}".to_vec(),
    )
    .await;
    put(&c, "trail", "AWSLogs/o-test/README.txt", b"hi".to_vec()).await;
    put(
        &c,
        "trail",
        "elsewhere/x.json.gz",
        trail_file(&[99], "2026-03-01T10:00:00Z"),
    )
    .await;

    let location = S3Location::parse("s3://trail/AWSLogs/o-test/").unwrap();
    let since = trailhound_ingest::config::parse_since("2026-03-01T10:00:00Z").ok();
    // Pages of 2 keys: every page is followed.
    let (groups, skipped) = list_trail_objects(&c.s3, &location, since, Some(2))
        .await
        .unwrap();
    let keys: Vec<(&str, usize)> = groups.iter().map(|(k, g)| (k.as_str(), g.len())).collect();
    assert_eq!(
        keys,
        vec![
            ("20260301T1000Z", 2),
            ("20260301T1010Z", 1),
            ("20260301T1015Z", 1)
        ]
    );
    assert_eq!(skipped, 3, "the early object, the digest and the README");

    let (ingest, sink, dl) = pipeline();
    let reader = ObjectReader::new(c.s3.clone(), ingest, c.aws.limiter());
    let out = backfill(&reader, &location, since, 4, &CancellationToken::new())
        .await
        .unwrap();
    // Event 1 (09:57) is in a file delivered at 10:00 but happened before
    // `since`: skipped too.
    assert_eq!(out.objects, 4);
    assert_eq!(out.skipped_objects, 3);
    assert_eq!(out.skipped_events, 1);
    assert_eq!(sink.ids(), [2, 3, 4, 5].map(event_id).to_vec());
    assert!(dead_letters(&dl).is_empty());

    // Without `since`, everything under the prefix in delivery order.
    let (ingest, sink, _dl) = pipeline();
    let reader = ObjectReader::new(c.s3.clone(), ingest, c.aws.limiter());
    backfill(&reader, &location, None, 2, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(sink.ids(), [100, 1, 2, 3, 4, 5].map(event_id).to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_fails_the_start_with_an_explanation() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let (ingest, _sink, _dl) = pipeline();
    let url = format!("{}/{}/no-such-queue", emu.endpoint(), emu.account_id());
    let source = sqs_source(&c, &url, ingest);
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        source.run(CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("sqs:ReceiveMessage"), "{err}");
    assert!(err.contains("no-such-queue"), "{err}");
}
