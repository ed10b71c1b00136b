//! health against real processes, while a trail is being pushed through
//! ingest → enrich → detect:
//! - enrich is killed (SIGKILL) and started again within ingest's retry
//!   patience: ingest holds the push meanwhile;
//! - detect is killed and started again: it resumes from its checkpoint
//!   and write-ahead log, and batches whose answer was lost are not
//!   counted twice;
//! - enrich stays down longer than ingest's retry patience: ingest spools
//!   the batches to its durable buffer, and health's `replay` sends them on
//!   once enrich is back.
//!
//! Each time health reports the system DEGRADED with the killed service
//! NOT_SERVING, then SERVING again, and no event is lost or counted twice:
//! ingest's and detect's counts match what was pushed.

use std::path::Path;
use std::time::{Duration, Instant};

use trailhound_proto::common::v1::{ServiceStats, StatsRequest};
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::health::v1 as hpb;
use trailhound_proto::health::v1::health_service_client::HealthServiceClient;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::harness::{Pipeline, Service, free_port, generated_org, trail_records, wait_ready};

async fn system(port: u16) -> hpb::SystemHealth {
    let mut c = HealthServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect health");
    c.get_system_health(hpb::GetSystemHealthRequest {})
        .await
        .expect("health")
        .into_inner()
}

async fn wait_for(
    port: u16,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&hpb::SystemHealth) -> bool,
) -> hpb::SystemHealth {
    let deadline = Instant::now() + timeout;
    loop {
        let h = system(port).await;
        if ok(&h) {
            return h;
        }
        if Instant::now() > deadline {
            panic!("health never showed {what}; last: {h:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of(h: &hpb::SystemHealth, name: &str) -> hpb::Status {
    h.services
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.status())
        .unwrap_or(hpb::Status::Unspecified)
}

async fn ingest_stats(port: u16) -> ServiceStats {
    IngestServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect ingest")
        .stats(StatsRequest {})
        .await
        .expect("ingest stats")
        .into_inner()
}

async fn detect_stats(port: u16) -> ServiceStats {
    DetectServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect detect")
        .stats(StatsRequest {})
        .await
        .expect("detect stats")
        .into_inner()
}

fn gauge(s: &ServiceStats, name: &str) -> f64 {
    s.gauges.get(name).copied().unwrap_or(0.0)
}

fn spooled(s: &ServiceStats) -> u64 {
    s.queues
        .iter()
        .find(|q| q.name == "spool")
        .map_or(0, |q| q.depth)
}

/// health watching the pipeline every 200 ms, SERVING before it returns.
async fn start_health(dir: &Path, p: &Pipeline) -> (Service, u16) {
    let hp = free_port();
    let mut health = Service::start(
        "health",
        &dir.join("health"),
        &[
            "health",
            "--health-listen",
            &format!("127.0.0.1:{hp}"),
            "--watch",
            &format!("ingest=http://127.0.0.1:{}", p.ingest_port),
            "--watch",
            &format!("enrich=http://127.0.0.1:{}", p.enrich_port),
            "--watch",
            &format!("detect=http://127.0.0.1:{}", p.detect_port),
            "--poll-interval",
            "200ms",
            // No notify here: alerts go to the log only.
            "--alert-endpoint=",
        ],
    );
    wait_ready(&mut health, hp).await;
    wait_for(hp, "SERVING at start", Duration::from_secs(20), |h| {
        h.status() == hpb::Status::Serving
    })
    .await;
    (health, hp)
}

/// Pushes the records in ten chunks from another task, so a service can
/// die mid-stream; returns what ingest accepted.
fn push_in_chunks(records: &[String], ingest_port: u16) -> tokio::task::JoinHandle<u64> {
    let chunks: Vec<Vec<String>> = records
        .chunks(records.len() / 10 + 1)
        .map(|c| c.to_vec())
        .collect();
    tokio::spawn(async move {
        let mut client = IngestServiceClient::connect(format!("http://127.0.0.1:{ingest_port}"))
            .await
            .expect("connect ingest");
        let mut accepted = 0;
        for chunk in chunks {
            let stream = tokio_stream::iter(chunk.into_iter().map(|json| PushEventsRequest {
                json,
                source: String::new(),
            }));
            accepted += client
                .push_events(stream)
                .await
                .expect("push (ingest retries or spools while downstream is down)")
                .into_inner()
                .accepted;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        accepted
    })
}

/// Waits until `service` reports NOT_SERVING and the system DEGRADED, and
/// checks the reason names it.
async fn wait_degraded_by(hp: u16, service: &str) {
    let degraded = wait_for(
        hp,
        &format!("DEGRADED with {service} down"),
        Duration::from_secs(20),
        |h| h.status() == hpb::Status::Degraded && status_of(h, service) == hpb::Status::NotServing,
    )
    .await;
    let reasons = degraded.reasons.join("; ");
    assert!(
        reasons.contains(&format!("{service} NOT_SERVING")),
        "{reasons}"
    );
}

/// Waits for SERVING after a restart and checks that the restart made
/// health ask ingest to replay its durable buffer.
async fn wait_serving_with_replay(hp: u16, health: &Service) -> hpb::SystemHealth {
    let serving = wait_for(
        hp,
        "SERVING after the restart",
        Duration::from_secs(30),
        |h| h.status() == hpb::Status::Serving,
    )
    .await;
    assert!(
        serving
            .recent_actions
            .iter()
            .any(|a| a.action == "replay" && a.target == "ingest" && a.ok),
        "{:#?}\n{}",
        serving.recent_actions,
        health.logs()
    );
    serving
}

/// A generated org (seed `seed`) being pushed in chunks to a pipeline
/// (ingest with `ingest_flags`) that health watches, the start of every
/// kill test: the temp dir, the pipeline, health and its port, how many
/// events the trail holds, and the push (it answers how many ingest
/// accepted).
async fn pushing(
    seed: u64,
    ingest_flags: &[&str],
) -> (
    tempfile::TempDir,
    Pipeline,
    (Service, u16),
    u64,
    tokio::task::JoinHandle<u64>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let org_dir = dir.path().join("org");
    generated_org(&org_dir, 2, 3, seed, 5);
    let records = trail_records(&org_dir.join("trail"));
    let total = records.len() as u64;
    let p = Pipeline::start_with(dir.path(), &org_dir.join("org.json"), ingest_flags).await;
    let health = start_health(dir.path(), &p).await;
    let pusher = push_in_chunks(&records, p.ingest_port);
    (dir, p, health, total, pusher)
}

/// Once ingest has handed some events on, kills enrich hard and waits
/// until health (on `hp`) sees it.
async fn kill_enrich_once_events_flow(p: &mut Pipeline, hp: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ingest_stats(p.ingest_port).await.events_out == 0 {
        assert!(Instant::now() < deadline, "nothing flowed\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.enrich.kill();
    wait_degraded_by(hp, "enrich").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_enrich_mid_stream_loses_nothing_and_health_sees_it() {
    let (dir, mut p, (health, hp), total, pusher) = pushing(5, &[]).await;

    // Once some events went through, kill enrich hard.
    kill_enrich_once_events_flow(&mut p, hp).await;

    let enrich = p
        .start_again("enrich", dir.path(), "enrich-restarted")
        .await;

    let accepted = tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("pushes finish once enrich is back")
        .expect("pusher");
    assert_eq!(accepted, total, "{}", p.logs());
    wait_serving_with_replay(hp, &health).await;

    let i = ingest_stats(p.ingest_port).await;
    assert_eq!(i.events_in, total);
    assert_eq!(i.events_out, total, "ingest handed on every event");
    let d = detect_stats(p.detect_port).await;
    assert_eq!(
        d.events_in,
        total,
        "detect saw every event exactly once\n{}",
        p.logs()
    );
    assert!(
        health.logs().contains("health alert"),
        "alerts are logged:\n{}",
        health.logs()
    );
    drop(enrich);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_detect_mid_stream_loses_nothing_and_health_sees_it() {
    let (dir, mut p, (health, hp), total, pusher) = pushing(6, &[]).await;

    // Once detect has counted some events, kill it hard: what it learned
    // since its last checkpoint is only in its write-ahead log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let d = detect_stats(p.detect_port).await;
        if d.events_in > 0 {
            break d.events_in;
        }
        assert!(Instant::now() < deadline, "nothing flowed\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(before < total, "the kill must come mid-stream");
    p.detect.kill();
    wait_degraded_by(hp, "detect").await;

    let detect = p
        .start_again("detect", dir.path(), "detect-restarted")
        .await;
    let restarted = detect_stats(p.detect_port).await;
    assert!(
        gauge(&restarted, "replayed_entries") > 0.0 && restarted.events_in >= before,
        "the restart replayed the log: {restarted:#?}\n{}",
        detect.logs()
    );

    let accepted = tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("pushes finish once detect is back")
        .expect("pusher");
    assert_eq!(accepted, total, "{}", p.logs());
    wait_serving_with_replay(hp, &health).await;

    let i = ingest_stats(p.ingest_port).await;
    assert_eq!(i.events_out, total, "ingest handed on every event");
    let d = detect_stats(p.detect_port).await;
    assert_eq!(
        d.events_in,
        total,
        "detect counted every event exactly once across the kill: {d:#?}\n{}\n--- detect after the restart ---\n{}",
        p.logs(),
        detect.logs()
    );
    drop(detect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_spooled_while_enrich_is_down_are_replayed_once_it_is_back() {
    // Past one second of refusals, a batch goes to the spool.
    let (dir, mut p, (health, hp), total, pusher) = pushing(7, &["--retry-patience", "1s"]).await;

    kill_enrich_once_events_flow(&mut p, hp).await;

    // enrich stays down until ingest has given up retrying and spooled.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let i = ingest_stats(p.ingest_port).await;
        if spooled(&i) > 0 {
            break i;
        }
        assert!(Instant::now() < deadline, "nothing spooled\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(gauge(&held, "spooled_pending") > 0.0, "{held:#?}");

    let enrich = p
        .start_again("enrich", dir.path(), "enrich-restarted")
        .await;

    // Spooled batches count as accepted: the push does not wait for them.
    let accepted = tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("pushes finish")
        .expect("pusher");
    assert_eq!(accepted, total, "{}", p.logs());
    let serving = wait_serving_with_replay(hp, &health).await;

    // The replay drains the spool and detect ends with every event once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = ingest_stats(p.ingest_port).await;
        let d = detect_stats(p.detect_port).await;
        if spooled(&i) == 0 && i.events_out == total && d.events_in >= total {
            assert_eq!(gauge(&i, "spooled_pending"), 0.0);
            assert_eq!(
                d.events_in,
                total,
                "detect counted every event exactly once: {d:#?}\n{}",
                p.logs()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool was not drained: ingest {i:#?}\ndetect events_in {}\nactions {:#?}\n{}\n{}",
            d.events_in,
            serving.recent_actions,
            p.logs(),
            health.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replays: Vec<_> = serving
        .recent_actions
        .iter()
        .filter(|a| a.action == "replay" && a.target == "ingest")
        .collect();
    assert!(
        replays
            .iter()
            .any(|a| a.detail.contains("replayed") && !a.detail.starts_with("replayed 0 ")),
        "health's replay sent the spooled events: {replays:#?}"
    );
    drop(enrich);
}
