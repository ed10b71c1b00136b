//! health against real processes: enrich is killed (SIGKILL) while a trail
//! is being pushed through ingest → enrich → detect, then started again.
//! health reports the system DEGRADED with enrich NOT_SERVING, then
//! SERVING again, and no event is lost: ingest's and detect's counts match
//! what was pushed.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_enrich_mid_stream_loses_nothing_and_health_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let org_dir = dir.path().join("org");
    generated_org(&org_dir, 2, 3, 5, 5);
    let records = trail_records(&org_dir.join("trail"));
    let total = records.len() as u64;
    let mut p = Pipeline::start(dir.path(), &org_dir.join("org.json")).await;

    let hp = free_port();
    let mut health = Service::start(
        "health",
        &dir.path().join("health"),
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

    // Push in chunks from another task, so enrich dies mid-stream.
    let chunks: Vec<Vec<String>> = records
        .chunks(records.len() / 10 + 1)
        .map(|c| c.to_vec())
        .collect();
    let ingest_port = p.ingest_port;
    let pusher = tokio::spawn(async move {
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
                .expect("push (ingest retries while enrich is down)")
                .into_inner()
                .accepted;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        accepted
    });

    // Once some events went through, kill enrich hard.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ingest_stats(p.ingest_port).await.events_out == 0 {
        assert!(Instant::now() < deadline, "nothing flowed\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.enrich.child.kill().expect("kill enrich");
    let _ = p.enrich.child.wait();

    let degraded = wait_for(
        hp,
        "DEGRADED with enrich down",
        Duration::from_secs(20),
        |h| {
            h.status() == hpb::Status::Degraded && status_of(h, "enrich") == hpb::Status::NotServing
        },
    )
    .await;
    let reasons = degraded.reasons.join("; ");
    assert!(reasons.contains("enrich NOT_SERVING"), "{reasons}");

    let args: Vec<&str> = p.enrich_args.iter().map(String::as_str).collect();
    let mut enrich = Service::start("enrich-restarted", &dir.path().join("enrich"), &args);
    wait_ready(&mut enrich, p.enrich_port).await;

    let accepted = tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("pushes finish once enrich is back")
        .expect("pusher");
    assert_eq!(accepted, total, "{}", p.logs());

    let serving = wait_for(
        hp,
        "SERVING after the restart",
        Duration::from_secs(30),
        |h| h.status() == hpb::Status::Serving,
    )
    .await;
    // The restart triggered one replay from ingest's durable buffer.
    assert!(
        serving
            .recent_actions
            .iter()
            .any(|a| a.action == "replay" && a.target == "ingest" && a.ok),
        "{:#?}\n{}",
        serving.recent_actions,
        health.logs()
    );

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
