//! `[detect] backend = "opensearch"`: detect hands enriched events to the
//! OpenSearch backend instead of the embedded engine, and answers series
//! and anomaly listings from the cluster (a real osmem-server here). An
//! unreachable cluster is a retryable error, so ingest keeps the events.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::sync::Arc;

use trailhound_core::account::{AccountMetadata, Environment};
use trailhound_core::{EnrichedEvent, Event, UserIdentity};
use trailhound_detect::config::DetectBackend;
use trailhound_detect::store::AnomalyFilter;
use trailhound_detect::{DetectConfig, DetectError};
use trailhound_opensearch::OpenSearchConfig;

const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
const MIN: i64 = 60_000;

fn invoke(id: u64, t: i64) -> EnrichedEvent {
    let mut account = AccountMetadata::external("111122223333");
    account.known = true;
    account.name = "sandbox-1".into();
    account.environment = Environment::Sandbox;
    EnrichedEvent {
        event: Event {
            event_id: format!("e-{id}"),
            event_time_ms: t,
            event_source: "lambda.amazonaws.com".into(),
            event_name: "Invoke".into(),
            aws_region: "us-east-1".into(),
            recipient_account_id: "111122223333".into(),
            user_identity: UserIdentity {
                kind: "AssumedRole".into(),
                arn: "arn:aws:sts::111122223333:assumed-role/app/x".into(),
                ..Default::default()
            },
            source_ip_address: "lambda.amazonaws.com".into(),
            user_agent: "aws-sdk-go".into(),
            error_code: String::new(),
            error_message: String::new(),
            read_only: Some(false),
            management_event: Some(false),
            event_category: "Data".into(),
            event_type: "AwsApiCall".into(),
            event_version: "1.08".into(),
            request_parameters: r#"{"functionName":"f"}"#.into(),
            response_elements: String::new(),
            raw: String::new(),
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
