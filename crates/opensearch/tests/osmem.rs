//! The core-API half of the backend against a real, independent server:
//! osmem-server from PyPI (started per test on a free loopback port).
//! A generated trail is indexed and read back through aggregations —
//! counts per account, idempotent re-indexing, per-item bulk errors,
//! mapping conflicts, throttling and the usage series.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is its failure report

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opensearch::http::Method;
use serde_json::{Value, json};
use trailhound_core::detector::default_detectors;
use trailhound_core::pipeline::EnrichedSink;
use trailhound_opensearch::indexer::DeadLetter;
use trailhound_opensearch::{Client, Indexer, OpenSearchConfig, OsError, Search};
use trailhound_testkit::Osmem;

fn config(url: &str) -> OpenSearchConfig {
    OpenSearchConfig {
        urls: vec![url.to_string()],
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(20),
        replicas: 0,
        bulk_max_bytes: 256 << 10,
        ..Default::default()
    }
}

fn indexer(cfg: &OpenSearchConfig, dir: &std::path::Path) -> Indexer {
    let client = Client::new(cfg, None).unwrap();
    Indexer::new(
        client,
        cfg.clone(),
        default_detectors(),
        dir.join("dead.jsonl"),
    )
}

async fn search(client: &Client, body: Value) -> Value {
    client
        .json(
            Method::Post,
            "cwl-multiaccounts-*/_search",
            Some(&body),
            "test search",
        )
        .await
        .unwrap()
        .body
}

async fn refresh(client: &Client) {
    client
        .json(
            Method::Post,
            "cwl-multiaccounts-*/_refresh",
            None,
            "refresh",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_trail_is_indexed_counted_per_account_and_served_as_series() {
    let server = Osmem::start().await;
    let dir = tempfile::tempdir().unwrap();
    let events = common::generated_trail(&dir.path().join("org"));
    assert!(events.len() > 1000, "{}", events.len());
    let cfg = config(server.url());
    let ix = indexer(&cfg, dir.path());
    for batch in events.chunks(2000) {
        let out = ix.index(batch).await.unwrap();
        assert!(out.dead_lettered.is_empty(), "{:?}", out.dead_lettered);
    }
    let client = ix.client().clone();
    refresh(&client).await;

    // The template put the account-aware mapping on every daily index.
    let m = client
        .json(Method::Get, "cwl-multiaccounts-*/_mapping", None, "m")
        .await
        .unwrap()
        .body;
    let indices: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert!(indices.len() >= 2, "{indices:?}");
    for (_, v) in m.as_object().unwrap() {
        let p = &v["mappings"]["properties"];
        assert_eq!(p["sourceIP"]["type"], "ip");
        assert_eq!(p["sourceIPAddress"]["type"], "keyword");
        assert_eq!(p["recipientAccountId"]["type"], "keyword");
        assert_eq!(p["@timestamp"]["type"], "date");
    }

    // Counts per account through a terms aggregation match the trail.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *want
            .entry(e.event.recipient_account_id.clone())
            .or_default() += 1;
    }
    let body = json!({"size": 0, "track_total_hits": true,
        "aggs": {"acct": {"terms": {"field": "recipientAccountId", "size": 100}}}});
    let r = search(&client, body.clone()).await;
    let got: BTreeMap<String, u64> = r["aggregations"]["acct"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["key"].as_str().unwrap().to_string(),
                b["doc_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let total = r["hits"]["total"]["value"].as_u64().unwrap();
    assert_eq!(total, events.len() as u64);

    // Service names in sourceIPAddress stay searchable as keywords, and
    // only real addresses land in the ip field.
    let services = search(
        &client,
        json!({"size": 0, "track_total_hits": true, "query": {"term": {"sourceIPAddress": "lambda.amazonaws.com"}}}),
    )
    .await;
    let n_services = events
        .iter()
        .filter(|e| e.event.source_ip_address == "lambda.amazonaws.com")
        .count() as u64;
    assert_eq!(services["hits"]["total"]["value"], n_services);
    let with_ip = search(
        &client,
        json!({"size": 0, "track_total_hits": true, "query": {"exists": {"field": "sourceIP"}}}),
    )
    .await;
    let n_ips = events
        .iter()
        .filter(|e| {
            e.event
                .source_ip_address
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .count() as u64;
    assert_eq!(with_ip["hits"]["total"]["value"], n_ips);
    assert!(n_ips > 0 && n_ips < events.len() as u64);

    // Re-indexing the same events keeps one document per eventID.
    ix.index(&events[..3000.min(events.len())]).await.unwrap();
    refresh(&client).await;
    let r = search(&client, body).await;
    assert_eq!(r["hits"]["total"]["value"], events.len() as u64);

    // The usage series of the busiest Lambda entity equals the trail's
    // own count per 10-minute window.
    let spec = default_detectors()
        .into_iter()
        .find(|d| d.name == "lambda-invoke")
        .unwrap();
    let mut per_entity: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
    let iv = spec.interval_ms();
    for e in events.iter().filter(|e| spec.matches(&e.event)) {
        let w = e.event.event_time_ms.div_euclid(iv) * iv;
        *per_entity
            .entry((
                e.event.recipient_account_id.clone(),
                e.event.aws_region.clone(),
            ))
            .or_default()
            .entry(w)
            .or_default() += 1.0;
    }
    let ((acct, region), windows) = per_entity
        .iter()
        .max_by_key(|(_, w)| w.values().sum::<f64>() as u64)
        .unwrap();
    let entity = vec![
        ("recipientAccountId".to_string(), acct.clone()),
        ("awsRegion".to_string(), region.clone()),
    ];
    let start = *windows.keys().next().unwrap();
    let end = *windows.keys().last().unwrap() + iv;
    let s = Search::new(client.clone(), cfg.clone());
    let points = s.series(&spec, &entity, start, end).await.unwrap();
    assert_eq!(points.len() as i64, (end - start) / iv);
    for p in &points {
        let want = windows.get(&p.window_start_ms).copied().unwrap_or(0.0);
        assert_eq!(p.actual, want, "window {}", p.window_start_ms);
    }
    assert_eq!(
        s.series_latest(&spec, &entity).await.unwrap(),
        Some(end - iv)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_items_are_dead_lettered_and_the_rest_indexed() {
    let server = Osmem::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut events = common::generated_trail(&dir.path().join("org"));
    events.truncate(200);
    let cfg = config(server.url());
    let ix = indexer(&cfg, dir.path());
    ix.ensure_ready().await.unwrap();
    // Someone created one day's index by hand with eventName as a number:
    // every event of that day is refused, with the reason.
    let client = ix.client().clone();
    client
        .json(
            Method::Put,
            "cwl-multiaccounts-2020.01.01",
            Some(&json!({"mappings": {"properties": {"eventName": {"type": "long"}}}})),
            "test index",
        )
        .await
        .unwrap();
    for e in events.iter_mut().take(5) {
        e.event.event_time_ms = 1_577_836_800_000 + 1000; // 2020-01-01
    }
    let sink = trailhound_opensearch::IndexSink(Arc::new(ix));
    let accepted = sink.send(events.clone()).await.unwrap();
    assert_eq!(accepted, events.len() as u64);
    let dead: Vec<DeadLetter> = std::fs::read_to_string(dir.path().join("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 5, "{dead:?}");
    for d in &dead {
        assert_eq!(d.index, "cwl-multiaccounts-2020.01.01");
        assert_eq!(d.status, 400);
        assert!(d.reason.contains("eventName"), "{}", d.reason);
        assert!(d.document["eventID"].is_string());
    }
    assert_eq!(sink.0.stats.dead_lettered.load(Ordering::Relaxed), 5);
    refresh(&client).await;
    let r = search(&client, json!({"size": 0, "track_total_hits": true})).await;
    assert_eq!(r["hits"]["total"]["value"], (events.len() - 5) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_conflict_names_the_index_and_the_fix() {
    let server = Osmem::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(server.url());
    let ix = indexer(&cfg, dir.path());
    ix.client()
        .json(
            Method::Put,
            "cwl-multiaccounts-2020.01.02",
            Some(&json!({"mappings": {"properties": {"sourceIP": {"type": "keyword"}}}})),
            "test index",
        )
        .await
        .unwrap();
    let e = ix.ensure_ready().await.unwrap_err();
    assert!(matches!(e, OsError::MappingConflict { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("cwl-multiaccounts-2020.01.02") && msg.contains("index_prefix"),
        "{msg}"
    );
    // Ingest sees a retryable error: the events wait instead of vanishing.
    let sink = trailhound_opensearch::IndexSink(Arc::new(ix));
    let mut events = common::generated_trail(&dir.path().join("org"));
    events.truncate(10);
    let err = sink.send(events).await.unwrap_err();
    assert!(
        err.retryable && err.message.contains("mapping conflict"),
        "{err}"
    );
}

/// A proxy in front of osmem that throttles: the first `_bulk` gets a
/// 429, the second has its first item marked 429 (after osmem indexed it,
/// so the retry must be idempotent).
async fn throttling_proxy(upstream: String) -> (String, Arc<AtomicUsize>) {
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;
    let bulks = Arc::new(AtomicUsize::new(0));
    let state = (upstream, bulks.clone(), reqwest::Client::new());
    let app = axum::Router::new().fallback(
        |State((up, bulks, http)): State<(String, Arc<AtomicUsize>, reqwest::Client)>,
         req: Request| async move {
            let method = req.method().clone();
            let uri = req.uri().to_string();
            let ct = req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let is_bulk = uri.starts_with("/_bulk");
            let n = if is_bulk {
                bulks.fetch_add(1, Ordering::SeqCst)
            } else {
                99
            };
            if n == 0 {
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    r#"{"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"},"status":429}"#,
                )
                    .into_response();
            }
            let r = http
                .request(method, format!("{up}{uri}"))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let mut v: Value = r.json().await.unwrap_or(Value::Null);
            if n == 1 {
                v["errors"] = json!(true);
                v["items"][0]["index"]["status"] = json!(429);
                v["items"][0]["index"]["error"] =
                    json!({"type": "es_rejected_execution_exception", "reason": "queue full"});
            }
            (
                axum::http::StatusCode::from_u16(status.as_u16()).unwrap(),
                axum::Json(v),
            )
                .into_response()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app.with_state(state)).await });
    (format!("http://{addr}"), bulks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_per_request_and_per_item() {
    let server = Osmem::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, bulks) = throttling_proxy(server.url().to_string()).await;
    let mut events = common::generated_trail(&dir.path().join("org"));
    events.truncate(50);
    let cfg = config(&proxy);
    let ix = indexer(&cfg, dir.path());
    let out = ix.index(&events).await.unwrap();
    assert_eq!(out.indexed, 50);
    assert!(out.dead_lettered.is_empty());
    assert_eq!(
        bulks.load(Ordering::SeqCst),
        3,
        "429, partial, the retried item"
    );
    assert_eq!(ix.stats.retried_items.load(Ordering::Relaxed), 1);
    refresh(ix.client()).await;
    let r = search(ix.client(), json!({"size": 0, "track_total_hits": true})).await;
    assert_eq!(r["hits"]["total"]["value"], 50);
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_retryable_error_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let port = trailhound_testkit::free_port();
    let cfg = config(&format!("http://127.0.0.1:{port}"));
    let ix = indexer(&cfg, dir.path());
    let sink = trailhound_opensearch::IndexSink(Arc::new(ix));
    let mut events = common::generated_trail(&dir.path().join("org"));
    events.truncate(3);
    let err = sink.send(events).await.unwrap_err();
    assert!(err.retryable);
    assert!(
        err.message.contains("unreachable") && err.message.contains("urls"),
        "{err}"
    );
    let health = sink.0.client().health().await;
    assert_eq!(health.status, "unreachable");
}

#[tokio::test]
async fn cluster_health_is_reported() {
    let server = Osmem::start().await;
    let cfg = config(server.url());
    let c = Client::new(&cfg, None).unwrap();
    let h = c.health().await;
    assert!(["green", "yellow"].contains(&h.status.as_str()), "{h:?}");
    assert_eq!(h.nodes, 1);
}
