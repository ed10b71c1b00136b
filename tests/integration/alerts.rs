//! Five services as separate processes — ingest, enrich, detect, insights,
//! notify — wired over loopback gRPC; a trail with a cryptomining burst is
//! pushed to ingest, and a real HTTP listener standing in for Slack
//! receives exactly one Block Kit message for the incident, naming the
//! account, the cost and the principal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use trailhound_proto::detect::v1::FlushRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::harness::{Service, free_port, generated_org, trail_records, wait_ready};

type Inbox = Arc<Mutex<Vec<Value>>>;

async fn slack(State(inbox): State<Inbox>, Json(body): Json<Value>) -> &'static str {
    inbox.lock().unwrap().push(body);
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_slack_once_through_five_processes() {
    let dir = tempfile::tempdir().unwrap();
    let org_dir = dir.path().join("org");
    let labels = generated_org(&org_dir, 5, 4, 11, 10);
    let burst = crate::harness::cryptomining(&labels);

    // Slack's incoming webhook, played by a real HTTP listener.
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route("/services/T000/B000/xyz", post(slack))
        .with_state(inbox.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/services/T000/B000/xyz", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });

    let config = dir.path().join("trailhound.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[notify]
[[notify.channels]]
name = "security-slack"
kind = "slack"
url = "{hook}"

[[notify.routes]]
name = "burst-account"
accounts = ["{account}"]
detectors = ["ec2-run-instances"]
channels = ["security-slack"]
"#,
            account = burst.account_id
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let (ip, ep, dp, sp, np) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let mut insights = Service::start(
        "insights",
        &dir.path().join("insights"),
        &[
            "--config",
            &cfg,
            "insights",
            "--insights-listen",
            &listen(sp),
        ],
    );
    let mut notify = Service::start(
        "notify",
        &dir.path().join("notify"),
        &[
            "--config",
            &cfg,
            "notify",
            "--notify-listen",
            &listen(np),
            "--insights-endpoint",
            &url(sp),
        ],
    );
    let mut detect = Service::start(
        "detect",
        &dir.path().join("detect"),
        &[
            "detect",
            "--detect-listen",
            &listen(dp),
            "--insights-endpoint",
            &url(sp),
        ],
    );
    let org = org_dir.join("org.json").display().to_string();
    let mut enrich = Service::start(
        "enrich",
        &dir.path().join("enrich"),
        &[
            "enrich",
            "--enrich-listen",
            &listen(ep),
            "--detect-endpoint",
            &url(dp),
            "--org",
            &org,
        ],
    );
    let mut ingest = Service::start(
        "ingest",
        &dir.path().join("ingest"),
        &[
            "ingest",
            "--ingest-listen",
            &listen(ip),
            "--enrich-endpoint",
            &url(ep),
        ],
    );
    for (s, p) in [
        (&mut insights, sp),
        (&mut notify, np),
        (&mut detect, dp),
        (&mut enrich, ep),
        (&mut ingest, ip),
    ] {
        wait_ready(s, p).await;
    }
    let logs = || {
        [&insights, &notify, &detect]
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.name, s.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let records = trail_records(&org_dir.join("trail"));
    let mut client = IngestServiceClient::connect(url(ip)).await.unwrap();
    let pushed = client
        .push_events(tokio_stream::iter(records.into_iter().map(|json| {
            PushEventsRequest {
                json,
                source: String::new(),
            }
        })))
        .await
        .unwrap_or_else(|e| panic!("push failed: {e}\n{}", logs()))
        .into_inner();
    assert!(pushed.accepted > 0);
    DetectServiceClient::connect(url(dp))
        .await
        .unwrap()
        .flush(FlushRequest {})
        .await
        .unwrap();

    // The first message, then a grace period in which a duplicate would
    // have arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while inbox.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no Slack message after 30s\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one message per incident: {got:#?}");
    let m = &got[0];
    let blocks = m["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    let text = m.to_string();
    assert!(text.contains(&burst.account_id), "{text}");
    let principal = burst.principal_arn.clone().unwrap();
    let user = principal.rsplit('/').next().unwrap();
    assert!(text.contains(user), "principal {user} missing: {text}");
    assert!(
        text.contains('$') && text.contains("/h"),
        "cost missing: {text}"
    );
    assert!(
        text.contains(&burst.instance_type.clone().unwrap()),
        "{text}"
    );
    for s in [
        &mut ingest,
        &mut enrich,
        &mut detect,
        &mut notify,
        &mut insights,
    ] {
        s.stop();
    }
}
