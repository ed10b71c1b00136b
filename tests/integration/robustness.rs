//! Hostile input against ingest, enrich and detect as real processes:
//! event times meant to blind detection or wedge a service, a flood of
//! made-up accounts and regions, and gzip bombs. Memory is each process's
//! own peak resident set (VmHWM in /proc), read while it runs.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use trailhound_proto::common::v1 as common;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{FlushRequest, ListAnomaliesRequest, ObserveRequest};
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use trailhound_proto::ingest::v1::{PushCloudWatchLogsRequest, PushEventsRequest};

use crate::harness::{Pipeline, free_port, trailhound_bin, wait_ready};

/// A process's peak resident memory so far, in MiB.
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// A successful RunInstances of one t3.micro.
fn run_instances(id: u64, account: &str, region: &str, time: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.09","eventID":"{id:08x}-0000-4000-8000-000000000000","eventTime":"{time}","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"{region}","recipientAccountId":"{account}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{account}:user/u","accountId":"{account}"}},"sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2","responseElements":{{"instancesSet":{{"items":[{{"instanceType":"t3.micro"}}]}}}}}}"#
    )
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn push_records(
    ingest: &mut IngestServiceClient<tonic::transport::Channel>,
    records: Vec<String>,
) -> trailhound_proto::ingest::v1::PushEventsResponse {
    // A thousand records per message, as JSON arrays.
    let messages: Vec<PushEventsRequest> = records
        .chunks(1000)
        .map(|c| PushEventsRequest {
            json: format!("[{}]", c.join(",")),
            source: String::new(),
        })
        .collect();
    ingest
        .push_events(tokio_stream::iter(messages))
        .await
        .expect("push")
        .into_inner()
}

async fn clients(
    p: &Pipeline,
) -> (
    IngestServiceClient<tonic::transport::Channel>,
    DetectServiceClient<tonic::transport::Channel>,
) {
    let ingest = IngestServiceClient::connect(format!("http://127.0.0.1:{}", p.ingest_port))
        .await
        .expect("connect ingest")
        .max_encoding_message_size(64 << 20);
    let detect = DetectServiceClient::connect(format!("http://127.0.0.1:{}", p.detect_port))
        .await
        .expect("connect detect")
        .max_decoding_message_size(64 << 20);
    (ingest, detect)
}

async fn all_answer(p: &mut Pipeline) {
    wait_ready(&mut p.ingest, p.ingest_port).await;
    wait_ready(&mut p.enrich, p.enrich_port).await;
    wait_ready(&mut p.detect, p.detect_port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_cannot_blind_detection_or_wedge_a_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let org = dir.path().join("org");
    // A recent organization: its trail ends about now.
    let now = chrono::Utc::now();
    let cfg = trailhound_generate::GenerateConfig {
        days: 4,
        accounts: 4,
        seed: 11,
        noise_per_account_hour: 10,
        start: now - chrono::Duration::days(4) - chrono::Duration::hours(1),
        ..Default::default()
    };
    trailhound_generate::generate(&cfg, &org).expect("generate");
    let labels = trailhound_generate::read_labels(&org.join("labels.json")).expect("labels");
    let burst = crate::harness::cryptomining(&labels);
    let mut p = Pipeline::start(dir.path(), &org.join("org.json")).await;
    let (mut ingest, mut detect) = clients(&p).await;
    let member = &burst.account_id;

    // One event at now + 23h50m, one in year 9999, one from 2010.
    let ahead = now + chrono::Duration::minutes(23 * 60 + 50);
    let out = push_records(
        &mut ingest,
        vec![
            run_instances(1, member, "us-east-1", &rfc3339(ahead)),
            run_instances(2, member, "us-east-1", "9999-01-01T00:00:00Z"),
            run_instances(3, member, "us-east-1", "2010-06-01T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!((out.accepted, out.rejected), (1, 2), "{out:?}");
    assert!(
        out.rejections
            .iter()
            .all(|r| r.reason.contains("ahead of the receiving clock")),
        "{out:?}"
    );
    // Straight into detect, past ingest: quarantined there too.
    let event = trailhound_core::cloudtrail::parse_record(
        &run_instances(4, member, "us-east-1", "9999-01-01T00:00:00Z"),
        &trailhound_core::ParseLimits {
            max_future_skew_ms: i64::MAX / 2,
            ..Default::default()
        },
        0,
    )
    .expect("a record");
    let observed = detect
        .observe(ObserveRequest {
            events: vec![common::EnrichedEvent {
                event: Some(trailhound_core::convert::event_to_pb(&event)),
                account: None,
            }],
            peer_rising: Vec::new(),
            traceparent: String::new(),
        })
        .await
        .expect("observe")
        .into_inner();
    assert_eq!((observed.accepted, observed.quarantined), (0, 1));
    all_answer(&mut p).await;

    // Then the real trail: its burst is found.
    let status = std::process::Command::new(trailhound_bin())
        .args(["push", "--ingest"])
        .arg(format!("http://127.0.0.1:{}", p.ingest_port))
        .arg("--input")
        .arg(org.join("trail"))
        .status()
        .expect("push");
    assert!(status.success());
    detect.flush(FlushRequest {}).await.expect("flush");
    let found = |detect: &mut DetectServiceClient<tonic::transport::Channel>| {
        let mut d = detect.clone();
        let account = burst.account_id.clone();
        async move {
            d.list_anomalies(ListAnomaliesRequest {
                account_id: account,
                detector: "ec2-run-instances".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .anomalies
        }
    };
    let anomalies = found(&mut detect).await;
    assert!(
        anomalies.iter().any(|a| a.region == burst.region),
        "burst in {} not found: {anomalies:#?}\n{}",
        burst.region,
        p.logs()
    );
    // A 16-year gap cost detect nothing worth measuring.
    assert!(peak_mib(p.detect.child.id()) < 1024);
    all_answer(&mut p).await;

    // And after a restart.
    let mut detect = restart_detect(&mut p, dir.path()).await;
    assert!(!found(&mut detect).await.is_empty());
}

/// Stops detect gracefully, starts it again as before, and connects.
async fn restart_detect(
    p: &mut Pipeline,
    dir: &Path,
) -> DetectServiceClient<tonic::transport::Channel> {
    p.detect.stop();
    p.detect = p.start_again("detect", dir, "detect").await;
    DetectServiceClient::connect(format!("http://127.0.0.1:{}", p.detect_port))
        .await
        .expect("reconnect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_accounts_and_regions_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let org = dir.path().join("org");
    crate::harness::generated_org(&org, 1, 2, 3, 5);
    let mut p = Pipeline::start(dir.path(), &org.join("org.json")).await;
    let (mut ingest, mut detect) = clients(&p).await;
    // 100,000 account ids nobody knows and 100,000 regions that do not
    // exist, over a day, in one push.
    let start = chrono::Utc::now() - chrono::Duration::days(2);
    let at = |i: u64| rfc3339(start + chrono::Duration::milliseconds(i as i64 * 432));
    let snapshot: trailhound_core::OrgSnapshot =
        serde_json::from_str(&std::fs::read_to_string(org.join("org.json")).expect("org"))
            .expect("snapshot");
    let known = snapshot.accounts[0].id.clone();
    let mut records = Vec::with_capacity(200_000);
    for i in 0..100_000u64 {
        records.push(run_instances(
            i,
            &format!("{:012}", 500_000_000_000 + i),
            "us-east-1",
            &at(2 * i),
        ));
        records.push(run_instances(
            100_000 + i,
            &known,
            &format!("xx-fake-{i}"),
            &at(2 * i + 1),
        ));
    }
    let pushing = std::time::Instant::now();
    let out = push_records(&mut ingest, records).await;
    eprintln!("pushed 200,000 made-up records in {:?}", pushing.elapsed());
    assert_eq!(out.accepted, 200_000, "{out:?}\n{}", p.logs());
    detect.flush(FlushRequest {}).await.expect("flush");
    let stats = detect
        .stats(common::StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    let g = |k: &str| stats.gauges.get(k).copied().unwrap_or(-1.0);
    assert!(g("entities") < 20.0, "{stats:#?}");
    assert!(g("folded_account_events") >= 100_000.0, "{stats:#?}");
    assert!(g("unlisted_region_events") >= 100_000.0, "{stats:#?}");
    // Windows kept closing: a day of them.
    assert!(g("windows_closed") >= 144.0, "{stats:#?}");
    for (name, pid) in [
        ("ingest", p.ingest.child.id()),
        ("enrich", p.enrich.child.id()),
        ("detect", p.detect.child.id()),
    ] {
        let peak = peak_mib(pid);
        eprintln!("{name} peaked at {peak} MiB");
        assert!(peak < 1024, "{name} peaked at {peak} MiB");
    }
    // A restart loads the checkpoint and serves.
    let mut detect = restart_detect(&mut p, dir.path()).await;
    let again = detect
        .stats(common::StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(again.gauges.get("entities"), stats.gauges.get("entities"));
}

/// `size` bytes of spaces, gzipped: a few hundred KiB on the wire.
fn bomb(size: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..size / chunk.len() {
        gz.write_all(&chunk).expect("gzip");
    }
    gz.finish().expect("gzip")
}

fn firehose_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let key = dir.join("firehose.key");
    std::fs::write(&key, "k3y\n").expect("key");
    let cfg = dir.join("ingest.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ingest]\nfirehose_listen = \"127.0.0.1:{port}\"\nfirehose_access_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .expect("config");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_are_refused_at_the_budget_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let org = dir.path().join("org");
    crate::harness::generated_org(&org, 1, 2, 3, 5);
    let fh_port = free_port();
    let cfg = firehose_config(dir.path(), fh_port);
    let cfg_arg = cfg.display().to_string();
    let p = Pipeline::start_with(dir.path(), &org.join("org.json"), &["--config", &cfg_arg]).await;
    let (mut ingest, _) = clients(&p).await;
    // 1 GiB once inflated: eight times the document limit.
    let bomb = bomb(1 << 30);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bomb);

    // PushCloudWatchLogs.
    let out = ingest
        .push_cloud_watch_logs(PushCloudWatchLogsRequest {
            data: b64.clone(),
            source: "bomb".into(),
        })
        .await
        .expect("push cwl")
        .into_inner();
    assert_eq!((out.accepted, out.rejected), (0, 1));
    assert!(
        out.rejections[0].reason.contains("byte limit"),
        "{:?}",
        out.rejections
    );

    // Firehose: twenty bombs in one delivery.
    let body = serde_json::json!({
        "requestId": "r-1",
        "timestamp": 1_772_359_260_000i64,
        "records": (0..20).map(|_| serde_json::json!({"data": b64})).collect::<Vec<_>>(),
    })
    .to_string();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{fh_port}/cloudtrail"))
        .header("content-type", "application/json")
        .header("x-amz-firehose-protocol-version", "1.0")
        .header("x-amz-firehose-request-id", "r-1")
        .header("x-amz-firehose-access-key", "k3y")
        .body(body)
        .send()
        .await
        .expect("firehose post");
    assert_eq!(resp.status().as_u16(), 200);
    let dead = std::fs::read_to_string(dir.path().join("ingest/dead-letters.jsonl"))
        .expect("dead letters");
    assert!(dead.contains("byte limit"), "{dead}");
    assert!(dead.contains("decompression budget"), "{dead}");

    // A file: push reports it, sends the good one beside it, and its own
    // memory stays bounded.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(files.join("bomb.json.gz"), &bomb).expect("write bomb");
    std::fs::write(
        files.join("good.json"),
        format!(
            "{{\"Records\":[{}]}}",
            run_instances(7, "111111111111", "us-east-1", "2026-01-05T10:00:00Z")
        ),
    )
    .expect("write good");
    let mut child = std::process::Command::new(trailhound_bin())
        .args(["push", "--ingest"])
        .arg(format!("http://127.0.0.1:{}", p.ingest_port))
        .arg("--input")
        .arg(&files)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("push");
    let mut push_peak = 0;
    let status = loop {
        push_peak = push_peak.max(peak_mib(child.id()));
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "a file failed: {stderr}");
    assert!(stderr.contains("1 accepted"), "{stderr}");
    assert!(stderr.contains("bomb.json.gz"), "{stderr}");
    // Bounded by the 128 MiB document limit, not by the bomb: the
    // document, its text and its records at once are about four times
    // the limit (measured 480–519 MiB; 2.7–4.3 GB before the limit).
    assert!(push_peak < 640, "push peaked at {push_peak} MiB");

    let peak = peak_mib(p.ingest.child.id());
    eprintln!("bombs: ingest peaked at {peak} MiB, push at {push_peak} MiB");
    assert!(peak < 768, "ingest peaked at {peak} MiB");
}
