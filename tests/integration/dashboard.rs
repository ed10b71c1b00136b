//! The health dashboard in a real headless browser (Debian's chromium,
//! installed by scripts/test-tools.sh): `trailhound up` runs all six
//! services, a generated trail with a cryptomining burst goes through
//! ingest, and the page chromium renders shows every service, the burst
//! as a recent anomaly, and the entity's usage chart as SVG with the
//! series path and the anomaly marked. Skips (with a message) when
//! chromium is not installed.

use std::process::Command;
use std::time::{Duration, Instant};

use trailhound_proto::detect::v1::FlushRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use trailhound_proto::insights::v1::ListInsightsRequest;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;

use crate::harness::{Service, free_port, generated_org, trail_records, wait_ready};

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

/// The DOM after chromium loaded and rendered `url`.
fn dump_dom(browser: &str, url: &str, profile: &std::path::Path) -> String {
    let out = crate::harness::run_ok(
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(url),
        "chromium",
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_services_anomalies_and_the_chart_in_a_browser() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: chromium is not installed (scripts/test-tools.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let org_dir = dir.path().join("org");
    let labels = generated_org(&org_dir, 5, 4, 11, 10);
    let burst = crate::harness::cryptomining(&labels);

    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let p = |i: usize| ports[i].to_string();
    let mut up = Service::start(
        "up",
        &dir.path().join("up"),
        &[
            "up",
            "--ingest-port",
            &p(0),
            "--enrich-port",
            &p(1),
            "--detect-port",
            &p(2),
            "--insights-port",
            &p(3),
            "--notify-port",
            &p(4),
            "--health-port",
            &p(5),
            "--org",
            &org_dir.join("org.json").display().to_string(),
        ],
    );
    wait_ready(&mut up, ports[5]).await;

    let records = trail_records(&org_dir.join("trail"));
    let mut ingest = IngestServiceClient::connect(format!("http://127.0.0.1:{}", ports[0]))
        .await
        .expect("connect ingest");
    ingest
        .push_events(tokio_stream::iter(records.into_iter().map(|json| {
            PushEventsRequest {
                json,
                source: String::new(),
            }
        })))
        .await
        .unwrap_or_else(|e| panic!("push: {e}\n{}", up.logs()));
    DetectServiceClient::connect(format!("http://127.0.0.1:{}", ports[2]))
        .await
        .expect("connect detect")
        .flush(FlushRequest {})
        .await
        .expect("flush");

    // The burst has been explained by insights.
    let mut insights = InsightsServiceClient::connect(format!("http://127.0.0.1:{}", ports[3]))
        .await
        .expect("connect insights");
    let deadline = Instant::now() + Duration::from_secs(30);
    let anomaly = loop {
        let list = insights
            .list_insights(ListInsightsRequest {
                account_id: burst.account_id.clone(),
                detector: "ec2-run-instances".into(),
                page_size: 50,
                ..Default::default()
            })
            .await
            .expect("list insights")
            .into_inner()
            .insights;
        if let Some(a) = list
            .iter()
            .filter_map(|i| i.anomaly.clone())
            .find(|a| a.region == burst.region)
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no insight for the burst\n{}",
            up.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // health has finished a round (the first runs at start-up).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = reqwest::get(format!("http://127.0.0.1:{}/health.json", ports[5]))
            .await
            .expect("GET /health.json")
            .text()
            .await
            .expect("body");
        if body.contains("\"name\":\"notify\"") {
            break;
        }
        assert!(Instant::now() < deadline, "health never checked: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let url = format!(
        "http://127.0.0.1:{}/?account={}&region={}&detector=ec2-run-instances",
        ports[5], burst.account_id, burst.region
    );
    let profile = dir.path().join("chromium-profile");
    let dom = dump_dom(&browser, &url, &profile);
    for svc in ["ingest", "enrich", "detect", "insights", "notify"] {
        assert!(
            dom.contains(&format!("data-service=\"{svc}\"")),
            "{svc} missing from the page:\n{dom}"
        );
    }
    assert!(dom.contains("id=\"system-status\""), "{dom}");
    // One row per incident: the burst's row lists its windows.
    let listed = dom.split("data-anomalies=\"").skip(1).any(|rest| {
        rest.split('"')
            .next()
            .is_some_and(|ids| ids.split(' ').any(|id| id == anomaly.id))
    });
    assert!(listed, "the burst {} is not listed:\n{dom}", anomaly.id);
    assert!(dom.contains(&burst.account_id));
    let svg = dom
        .find("<svg id=\"usage-chart\"")
        .map(|i| &dom[i..])
        .unwrap_or_else(|| panic!("no chart:\n{dom}"));
    let path = svg
        .find("id=\"series-actual\"")
        .map(|i| &svg[i..])
        .expect("the series path is in the chart");
    assert!(path.contains("d=\"M"), "the series path has points");
    assert!(
        svg.contains("class=\"anomaly\""),
        "the anomalous window is marked"
    );

    // The same port serves Prometheus text for every service.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports[5]))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(metrics.contains("trailhound_health_status{service=\"detect\"}"));
    assert!(metrics.contains("trailhound_events_in_total{service=\"ingest\"}"));
    // And each service serves its own on its gRPC port.
    let own = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports[2]))
        .await
        .expect("GET detect /metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        own.contains("trailhound_events_in_total{service=\"detect\"}"),
        "{own}"
    );
    up.stop();
}
