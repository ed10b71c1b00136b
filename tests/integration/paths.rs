//! One truth on every path: the same trail gives the same anomalies when
//! replayed (`trailhound detect --input`), when pushed to `trailhound up`,
//! and when pushed by four concurrent shippers to ingest, enrich and
//! detect as separate processes — on CloudTrail's own many-small-files
//! layout too — and no event is late or lost on the way. The services
//! count the same traffic on both deployed paths: `up` runs the services'
//! own hand-offs, not copies of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{FlushRequest, ListLateEventsRequest};

use crate::harness::{Pipeline, Service, free_port, trailhound_bin, wait_ready};

/// An anomaly as the paths must agree on it.
type Found = (String, String, String, String);

fn generate(dir: &Path, file_minutes: u32) {
    let cfg = trailhound_generate::GenerateConfig {
        days: 3,
        accounts: 4,
        seed: 23,
        noise_per_account_hour: 12,
        file_minutes,
        ..Default::default()
    };
    trailhound_generate::generate(&cfg, dir).expect("generate");
}

fn replay(org: &Path) -> BTreeSet<Found> {
    crate::harness::replay(org)
        .into_iter()
        .map(|a| {
            (
                a.detector,
                a.account_id,
                a.region,
                a.window_start.to_rfc3339(),
            )
        })
        .collect()
}

/// Pushes `inputs` concurrently, one `trailhound push` process each.
fn push_all(ingest_port: u16, inputs: &[PathBuf]) {
    let children: Vec<_> = inputs
        .iter()
        .map(|input| {
            Command::new(trailhound_bin())
                .args(["push", "--ingest"])
                .arg(format!("http://127.0.0.1:{ingest_port}"))
                .arg("--input")
                .arg(input)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start push")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("run push");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Flushes detect and lists every anomaly; asserts nothing was late.
async fn found(detect_port: u16) -> BTreeSet<Found> {
    let mut detect = DetectServiceClient::connect(format!("http://127.0.0.1:{detect_port}"))
        .await
        .expect("connect detect");
    detect.flush(FlushRequest {}).await.expect("flush");
    let late = detect
        .list_late_events(ListLateEventsRequest::default())
        .await
        .expect("late events")
        .into_inner()
        .events;
    assert!(late.is_empty(), "late: {late:#?}");
    let all = trailhound_detect::grpc::all_anomalies(&mut detect)
        .await
        .expect("list");
    all.into_iter()
        .map(|a| {
            let a = trailhound_core::convert::anomaly_from_pb(a).expect("valid anomaly");
            (
                a.detector,
                a.account_id,
                a.region,
                a.window_start.to_rfc3339(),
            )
        })
        .collect()
}

/// What ingest, enrich and detect report through `Stats`: events in, events
/// out and errors by kind (batches differ with the number of shippers).
async fn flow(
    ingest: u16,
    enrich: u16,
    detect: u16,
) -> Vec<(String, u64, u64, BTreeMap<String, u64>)> {
    use trailhound_proto::common::v1::{ServiceStats, StatsRequest};
    use trailhound_proto::enrich::v1::enrich_service_client::EnrichServiceClient;
    use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let stats: [ServiceStats; 3] = [
        IngestServiceClient::connect(url(ingest))
            .await
            .expect("connect ingest")
            .stats(StatsRequest {})
            .await
            .expect("ingest stats")
            .into_inner(),
        EnrichServiceClient::connect(url(enrich))
            .await
            .expect("connect enrich")
            .stats(StatsRequest {})
            .await
            .expect("enrich stats")
            .into_inner(),
        DetectServiceClient::connect(url(detect))
            .await
            .expect("connect detect")
            .stats(StatsRequest {})
            .await
            .expect("detect stats")
            .into_inner(),
    ];
    stats
        .into_iter()
        .map(|s| {
            let errors = s.errors.into_iter().collect();
            (s.service, s.events_in, s.events_out, errors)
        })
        .collect()
}

/// Splits a trail's files round-robin into `n` trees (hard links), as
/// shippers that share the work would.
fn split(trail: &Path, into: &Path, n: usize) -> Vec<PathBuf> {
    let files = crate::harness::files_under(trail);
    assert!(!files.is_empty(), "no trail under {}", trail.display());
    let dirs: Vec<PathBuf> = (0..n).map(|i| into.join(format!("part{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        let dst = dirs[i % n].join(f.strip_prefix(trail).expect("under trail"));
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::hard_link(f, &dst).expect("link");
    }
    dirs
}

async fn every_path_agrees(file_minutes: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let org = dir.path().join("org");
    generate(&org, file_minutes);
    let replayed = replay(&org);
    assert!(!replayed.is_empty(), "the trail has incidents to find");

    // trailhound up, one shipper.
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let port_args: Vec<String> = ["ingest", "enrich", "detect", "insights", "notify", "health"]
        .iter()
        .zip(&ports)
        .flat_map(|(s, p)| [format!("--{s}-port"), p.to_string()])
        .collect();
    let mut args: Vec<&str> = vec!["up", "--org"];
    let org_json = org.join("org.json").display().to_string();
    args.push(&org_json);
    args.extend(port_args.iter().map(String::as_str));
    let mut up = Service::start("up", &dir.path().join("up"), &args);
    wait_ready(&mut up, ports[2]).await;
    wait_ready(&mut up, ports[0]).await;
    push_all(ports[0], &[org.join("trail")]);
    let through_up = found(ports[2]).await;
    let up_flow = flow(ports[0], ports[1], ports[2]).await;
    up.stop();
    assert_eq!(through_up, replayed, "trailhound up:\n{}", up.logs());
    let forwarded = up_flow[1].2;
    assert!(
        forwarded > 0,
        "enrich counts what it forwards under up: {up_flow:?}"
    );

    // Separate processes, four shippers at once.
    let p = Pipeline::start(&dir.path().join("services"), &org.join("org.json")).await;
    let parts = split(&org.join("trail"), &dir.path().join("split"), 4);
    push_all(p.ingest_port, &parts);
    let through_services = found(p.detect_port).await;
    assert_eq!(through_services, replayed, "{}", p.logs());
    let services_flow = flow(p.ingest_port, p.enrich_port, p.detect_port).await;
    assert_eq!(
        up_flow, services_flow,
        "Stats of up (left) and of the services (right)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_up_and_four_concurrent_shippers_find_the_same_anomalies() {
    every_path_agrees(60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_many_small_files_every_path_agrees_too() {
    every_path_agrees(5).await;
}
