//! `[detect] backend = "opensearch"`: detect hands enriched events to the
//! OpenSearch backend instead of the embedded engine, and answers series
//! and anomaly listings from the cluster (a real osmem-server here). An
//! unreachable cluster is a retryable error, so ingest keeps the events.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::sync::Arc;

use trailhound_core::account::{AccountMetadata, Environment};
use trailhound_core::{EnrichedEvent, Event};
use trailhound_detect::config::DetectBackend;
use trailhound_detect::store::AnomalyFilter;
use trailhound_detect::{DetectConfig, DetectError};
use trailhound_opensearch::OpenSearchConfig;

use crate::fixtures::{MIN, T0, invoke_event};

fn invoke(id: u64, t: i64) -> EnrichedEvent {
    let mut account = AccountMetadata::external("111122223333");
    account.known = true;
    account.name = "sandbox-1".into();
    account.environment = Environment::Sandbox;
    let principal = "arn:aws:sts::111122223333:assumed-role/app/x";
    EnrichedEvent {
        event: Event {
            event_version: "1.08".into(),
            ..invoke_event(id, t, "111122223333", "us-east-1", principal)
        },
        account: Arc::new(account),
    }
}

fn config(url: &str) -> DetectConfig {
    DetectConfig {
        backend: DetectBackend::Opensearch,
        opensearch: Some(OpenSearchConfig {
            urls: vec![url.to_string()],
            replicas: 0,
            max_attempts: 2,
            initial_backoff: std::time::Duration::from_millis(10),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_opensearch_and_series_come_back_from_it() {
    let server = trailhound_testkit::Osmem::start().await;
    let dir = tempfile::tempdir().unwrap();
    let detect = trailhound_detect::build(&config(server.url()), dir.path(), None).unwrap();
    assert!(detect.opensearch().is_some());
    // 3 invocations in the first window, 5 in the third.
    let events: Vec<EnrichedEvent> = (0..3)
        .map(|i| invoke(i, T0 + i as i64 * MIN))
        .chain((3..8).map(|i| invoke(i, T0 + 20 * MIN + i as i64 * MIN)))
        .collect();
    let out = detect.accept(events).await.unwrap();
    assert_eq!(out.accepted, 8);
    // The embedded engine saw nothing; the Stats RPC shows the backend.
    assert_eq!(detect.stats().1, 0);
    let stats = detect.service_stats();
    assert_eq!(stats.gauges["opensearch_indexed"], 8.0);
    assert_eq!(stats.errors["opensearch_dead_letters"], 0);
    reqwest_refresh(server.url()).await;

    let points = detect
        .series_any("lambda-invoke", "111122223333/us-east-1", T0, T0 + 30 * MIN)
        .await
        .unwrap();
    let actual: Vec<f64> = points.iter().map(|p| p.actual).collect();
    assert_eq!(actual, vec![3.0, 0.0, 5.0]);
    assert_eq!(
        detect
            .series_latest_any("lambda-invoke", "111122223333/us-east-1")
            .await
            .unwrap(),
        Some(T0 + 20 * MIN)
    );
    let (anomalies, next) = detect
        .list_any(&AnomalyFilter::default(), 10, None)
        .await
        .unwrap();
    assert!(anomalies.is_empty() && next.is_none());
}

async fn reqwest_refresh(url: &str) {
    let client = trailhound_opensearch::Client::new(
        &OpenSearchConfig {
            urls: vec![url.to_string()],
            ..Default::default()
        },
        None,
    )
    .unwrap();
    client
        .json(
            opensearch_method_post(),
            "cwl-multiaccounts-*/_refresh",
            None,
            "refresh",
        )
        .await
        .unwrap();
}

fn opensearch_method_post() -> trailhound_opensearch::client::Method {
    trailhound_opensearch::client::Method::Post
}

#[tokio::test]
async fn an_unreachable_cluster_is_retryable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = trailhound_testkit::free_port();
    let detect = trailhound_detect::build(
        &config(&format!("http://127.0.0.1:{port}")),
        dir.path(),
        None,
    )
    .unwrap();
    match detect.accept(vec![invoke(1, T0)]).await {
        Err(DetectError::Backend { message, retryable }) => {
            assert!(retryable);
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

fn stored_anomaly(n: i64, account: &str, ou: &str) -> trailhound_core::Anomaly {
    let start = chrono::DateTime::from_timestamp_millis(T0 + n * 10 * MIN).unwrap();
    let mut meta = AccountMetadata::external(account);
    meta.known = true;
    meta.ou_path = vec!["Root".into(), ou.into()];
    trailhound_core::Anomaly {
        account_name: format!("acct-{account}"),
        environment: Environment::Sandbox,
        actual: 50.0,
        expected: 2.0,
        event_count: 50,
        ..trailhound_core::anomaly::testing::spike("lambda-invoke", "lambda", meta, n, start)
    }
}

/// ListAnomalies from OpenSearch for a scoped caller: the cluster's query
/// knows no scopes, so out-of-scope anomalies are dropped after reading —
/// and further pages read until the caller's page is full. Paging through
/// gives exactly the in-scope anomalies, newest first, each once, and
/// never one of another OU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_listing_from_opensearch_keeps_reading_until_its_page_is_full() {
    let server = trailhound_testkit::Osmem::start().await;
    let dir = tempfile::tempdir().unwrap();
    let detect = trailhound_detect::build(&config(server.url()), dir.path(), None).unwrap();
    // The first events create the indices.
    detect.accept(vec![invoke(1, T0)]).await.unwrap();
    // Newest first: 3 sandbox anomalies, then 7 of another OU, then 3
    // more sandbox ones: a page of 3 from the cluster holds none of the
    // sandbox's for two reads in a row.
    let mut all = Vec::new();
    for n in 0..13 {
        let (account, ou) = if (3..10).contains(&n) {
            ("999988887777", "Workloads")
        } else {
            ("111122223333", "Sandbox")
        };
        all.push(stored_anomaly(100 - n, account, ou));
    }
    let mut body = String::new();
    for a in &all {
        let mut doc = serde_json::to_value(a).unwrap();
        doc["window_start_ms"] = serde_json::json!(a.window_start.timestamp_millis());
        body.push_str(
            &serde_json::json!({"index": {"_index": "trailhound-anomalies", "_id": a.id}})
                .to_string(),
        );
        body.push('\n');
        body.push_str(&doc.to_string());
        body.push('\n');
    }
    let client = trailhound_opensearch::Client::new(
        &OpenSearchConfig {
            urls: vec![server.url().to_string()],
            ..Default::default()
        },
        None,
    )
    .unwrap();
    client
        .send(
            opensearch_method_post(),
            "_bulk?refresh=wait_for",
            Some(body.into_bytes()),
            true,
            "bulk",
        )
        .await
        .unwrap();
    reqwest_refresh(server.url()).await;
    let (everything, _) = detect
        .list_any(&AnomalyFilter::default(), 100, None)
        .await
        .unwrap();
    assert_eq!(everything.len(), 13);

    let filter = AnomalyFilter {
        scope: trailhound_core::Scope::union([trailhound_core::ScopeRule {
            ous: vec!["Root/Sandbox".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let (page, next) = detect.list_any(&filter, 3, token.as_deref()).await.unwrap();
        pages.push(page.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
        match next {
            Some(n) => token = Some(n),
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    let want: Vec<String> = all
        .iter()
        .filter(|a| a.account_id == "111122223333")
        .map(|a| a.id.clone())
        .collect();
    // Full pages, though a whole read of the cluster held none in scope.
    assert_eq!(pages[0].len(), 3, "{pages:?}");
    assert_eq!(pages[1].len(), 3, "{pages:?}");
    assert_eq!(pages.concat(), want, "{pages:?}");
}
