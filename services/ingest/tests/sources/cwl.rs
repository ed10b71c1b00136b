//! The FilterLogEvents poller against moto: read once, checkpoint written,
//! a restarted poller reads nothing twice and picks up what is new.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio_util::sync::CancellationToken;
use trailhound_ingest::cwl_poll::{Checkpoint, CwlPoller, PollerOptions};
use trailhound_testkit::Emulator;

use crate::common::*;

const GROUP: &str = "aws-cloudtrail-logs-111122223333";

async fn put_events(c: &Clients, group: &str, stream: &str, events: &[(u32, i64)]) {
    let mut req = c
        .logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (id, ts) in events {
        req = req.log_events(
            InputLogEvent::builder()
                .timestamp(*ts)
                .message(record(*id, "2026-03-01T10:00:00Z"))
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

async fn log_group(c: &Clients, group: &str, streams: &[&str]) {
    c.logs
        .create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    for s in streams {
        c.logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(*s)
            .send()
            .await
            .unwrap();
    }
}

fn poller_options(group: &str, path: &std::path::Path, lookback: Duration) -> PollerOptions {
    PollerOptions {
        lookback,
        start: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        page_limit: Some(2),
        ..PollerOptions::new(group, path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_reads_each_event_once_across_restarts() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let streams = [
        "111122223333_CloudTrail_us-east-1",
        "111122223333_CloudTrail_eu-west-1",
    ];
    let now = chrono::Utc::now().timestamp_millis() - 60_000;
    let dir = tempfile::tempdir().unwrap();
    for (case, lookback) in [Duration::from_secs(300), Duration::ZERO]
        .into_iter()
        .enumerate()
    {
        let group = format!("{GROUP}-{case}");
        let group = group.as_str();
        log_group(&c, group, &streams).await;
        // Two events share the newest timestamp, across streams.
        put_events(&c, group, streams[0], &[(1, now - 2_000), (2, now)]).await;
        put_events(&c, group, streams[1], &[(3, now - 1_000), (4, now)]).await;
        // Not CloudTrail: dead-lettered once, never again.
        c.logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(streams[1])
            .log_events(
                InputLogEvent::builder()
                    .timestamp(now - 500)
                    .message("START RequestId: 1234")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();

        let path = dir.path().join(format!("cloudwatch-poll-{case}.json"));
        // A poller on a new ingest, as a (re)start makes it.
        let start_poller = || {
            let (ingest, sink, dl) = pipeline();
            let poller = CwlPoller::new(
                c.logs.clone(),
                ingest,
                poller_options(group, &path, lookback),
            )
            .unwrap();
            (poller, sink, dl)
        };
        let (mut poller, sink, dl) = start_poller();
        let out = poller.poll_once().await.unwrap();
        assert_eq!(out.read, 5, "{out:?}");
        assert!(out.pages >= 3, "pages of 2 were all read: {out:?}");
        assert_eq!((out.outcome.accepted, out.outcome.rejected), (4, 1));
        let mut ids = sink.ids();
        ids.sort();
        assert_eq!(ids, [1, 2, 3, 4].map(event_id).to_vec());
        let letters = dead_letters(&dl);
        assert!(
            letters[0]
                .0
                .starts_with(&format!("cloudwatch:{group}/{}#", streams[1])),
            "{letters:?}"
        );

        let cp = Checkpoint::load(&path, group).unwrap().unwrap();
        assert_eq!(cp.high_water_ms, Some(now));
        let expected_ids = if lookback.is_zero() { 2 } else { 5 };
        assert_eq!(cp.seen_count(), expected_ids, "{cp:?}");

        // A restart: a new poller, a new ingest (its dedupe memory is gone).
        let (mut poller, sink, dl) = start_poller();
        let out = poller.poll_once().await.unwrap();
        assert_eq!(out.read, 0, "{out:?}");
        assert_eq!(out.already_seen as usize, expected_ids);
        assert_eq!(sink.len(), 0);
        assert!(dead_letters(&dl).is_empty());

        // New events, one at the newest timestamp already seen.
        put_events(&c, group, streams[0], &[(5, now)]).await;
        put_events(&c, group, streams[1], &[(6, now + 1_000)]).await;
        let out = poller.poll_once().await.unwrap();
        assert_eq!(out.read, 2, "{out:?}");
        let mut ids = sink.ids();
        ids.sort();
        assert_eq!(ids, [5, 6].map(event_id).to_vec());
        let out = poller.poll_once().await.unwrap();
        assert_eq!(out.read, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_poller_picks_up_new_events_and_keeps_its_checkpoint_on_failure() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let stream = "111122223333_CloudTrail_us-east-1";
    log_group(&c, GROUP, &[stream]).await;
    let now = chrono::Utc::now().timestamp_millis() - 60_000;
    put_events(&c, GROUP, stream, &[(1, now)]).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.json");
    let (ingest, sink, _dl) = pipeline();
    let options = PollerOptions {
        interval: Duration::from_secs(1),
        ..poller_options(GROUP, &path, Duration::from_secs(300))
    };
    let poller = CwlPoller::new(c.logs.clone(), ingest, options).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(poller.run(stop.clone()));
    // The checkpoint is written once the poll's events were accepted,
    // just after the sink saw them.
    wait_until(20, "the first event and its checkpoint", || async {
        sink.len() == 1 && path.exists()
    })
    .await;

    // Downstream away: the poll fails and the checkpoint does not move.
    sink.failing.store(true, Ordering::SeqCst);
    let before = std::fs::read_to_string(&path).unwrap();
    put_events(&c, GROUP, stream, &[(2, now + 10)]).await;
    wait_until(20, "a failed delivery", || async {
        sink.failures.load(Ordering::SeqCst) > 0
    })
    .await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    sink.failing.store(false, Ordering::SeqCst);
    wait_until(20, "the second event", || async { sink.len() == 2 }).await;
    sink.assert_no_duplicates();
    let cp = Checkpoint::load(&path, GROUP).unwrap().unwrap();
    assert_eq!(cp.high_water_ms, Some(now + 10));
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_log_group_fails_the_start_with_an_explanation() {
    let emu = Emulator::start_messaging().await;
    let c = clients(&emu).await;
    let dir = tempfile::tempdir().unwrap();
    let (ingest, _sink, _dl) = pipeline();
    let poller = CwlPoller::new(
        c.logs.clone(),
        ingest,
        poller_options(GROUP, &dir.path().join("cp.json"), Duration::ZERO),
    )
    .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        poller.run(CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("logs:FilterLogEvents"), "{err}");
    assert!(err.contains(GROUP), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}
