//! From S3 to an anomaly: a generated organization's trail is written to
//! the bucket, its first day backfilled and its second day announced object
//! by object with real S3 → SQS notifications and read by the S3 source;
//! the events forwarded are enough for detect to find the injected
//! cryptomining burst (a GPU launch in a region the account never used).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trailhound_core::{AccountMetadata, EnrichedEvent};
use trailhound_generate::{GenerateConfig, IncidentKind};
use trailhound_ingest::s3::{ObjectReader, SqsS3Source, SqsSourceOptions};
use trailhound_testkit::Emulator;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_trail_through_s3_notifications_reaches_an_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let trail_dir = dir.path().join("org");
    let summary = trailhound_generate::generate(
        &GenerateConfig {
            days: 2,
            accounts: 1,
            seed: 1,
            noise_per_account_hour: 5,
            ..GenerateConfig::default()
        },
        &trail_dir,
    )
    .unwrap();
    let labels = trailhound_generate::read_labels(&trail_dir.join("labels.json")).unwrap();
    let mining = labels
        .incidents
        .iter()
        .find(|i| i.kind == IncidentKind::Cryptomining)
        .expect("the generator injects a cryptomining burst")
        .clone();

    let t0 = std::time::Instant::now();
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let (url, arn) = queue(&c, "trail-events").await;
    c.s3.create_bucket()
        .bucket("org-trail")
        .send()
        .await
        .unwrap();
    let root = trail_dir.join("trail");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".json.gz") {
                let key = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
                files.push((key, p));
            }
        }
    }
    assert_eq!(files.len() as u64, summary.files);
    // The first day is history, there before the notification was set up
    // (read by the backfill); the second day arrives live, object by
    // object, announced on the queue.
    let first_day = labels.start.format("_%Y%m%dT").to_string();
    let (history, live): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|(k, _)| k.contains(&first_day));
    let upload = |files: Vec<(String, std::path::PathBuf)>| {
        use futures::StreamExt;
        let c = &c;
        futures::stream::iter(files).for_each_concurrent(8, move |(key, p)| async move {
            put(c, "org-trail", &key, std::fs::read(&p).unwrap()).await;
        })
    };
    upload(history).await;
    bucket_notifying_queue(&c, "org-trail", &arn).await;
    upload(live).await;
    eprintln!("uploaded {:?}", t0.elapsed());

    let (ingest, sink, dl) = pipeline_with(trailhound_ingest::IngestOptions {
        batch_size: 1000,
        ..options()
    });
    let reader = ObjectReader::new(c.s3.clone(), ingest, c.aws.limiter());
    let location = trailhound_ingest::config::S3Location::parse("s3://org-trail/AWSLogs/").unwrap();
    let stop = CancellationToken::new();
    let backfilled = trailhound_ingest::s3::backfill(&reader, &location, None, 8, &stop)
        .await
        .unwrap();
    assert!(backfilled.objects > 0);
    eprintln!("backfilled {:?}", t0.elapsed());
    let source = Arc::new(SqsS3Source::new(
        c.sqs.clone(),
        reader,
        SqsSourceOptions {
            wait_time: Duration::from_secs(1),
            max_objects_in_flight: 8,
            ..SqsSourceOptions::new(&url)
        },
    ));
    let task = tokio::spawn(source.clone().run(stop.clone()));
    wait_until(60, "the whole trail", || async {
        sink.len() as u64 == summary.events && queue_depth(&c, &url).await == (0, 0)
    })
    .await;
    eprintln!("ingested {:?}", t0.elapsed());
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(dead_letters(&dl).is_empty(), "{:?}", dead_letters(&dl));
    sink.assert_no_duplicates();

    // enrich's part, trivially (every account as external), then detect.
    let mut events = std::mem::take(&mut *sink.events.lock().unwrap());
    events.sort_by_key(|e| e.event_time_ms);
    let enriched: Vec<EnrichedEvent> = events
        .into_iter()
        .map(|event| EnrichedEvent {
            account: Arc::new(AccountMetadata::external(&event.recipient_account_id)),
            event,
        })
        .collect();
    // Every account is external here (no organization source): tracked
    // one by one, as detect does when run without one.
    let mut config = trailhound_detect::DetectConfig::default();
    config.engine.unknown_accounts = trailhound_detect::engine::UnknownAccounts::Track;
    let detect = trailhound_detect::build(&config, &dir.path().join("detect"), None).unwrap();
    let mut anomalies = Vec::new();
    for chunk in enriched.chunks(5000) {
        anomalies.extend(detect.observe(chunk).unwrap().anomalies);
    }
    anomalies.extend(detect.flush().unwrap());
    eprintln!("detected {:?}", t0.elapsed());
    let found = anomalies.iter().any(|a| {
        a.detector == mining.detector
            && a.account_id == mining.account_id
            && a.region == mining.region
            && a.window_end >= mining.start
            && a.window_start <= mining.end
    });
    assert!(
        found,
        "no {} anomaly for {} in {} around {}; found: {:?}",
        mining.detector,
        mining.account_id,
        mining.region,
        mining.start,
        anomalies
            .iter()
            .map(|a| (&a.detector, &a.account_id, &a.region, a.window_start))
            .collect::<Vec<_>>()
    );
}
