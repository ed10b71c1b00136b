//! Against a real OpenSearch cluster, for users who have one: set
//! `TRAILHOUND_OPENSEARCH_URL` (and `TRAILHOUND_OPENSEARCH_USER` /
//! `TRAILHOUND_OPENSEARCH_PASSWORD` for basic auth), or name an
//! OpenSearch image in `TRAILHOUND_OPENSEARCH_IMAGE` (e.g.
//! `opensearchproject/opensearch:2.19.1`, which bundles the Anomaly
//! Detection plugin) to have each test start one as a container, and run
//! `cargo test -p trailhound-opensearch --test opensearch real_cluster -- --ignored`.
//! The tests are `#[ignore]`d so that, without a cluster, cargo counts
//! them as ignored rather than passed. They use a prefix of their own
//! (`trailhound-test-<pid>`) and delete what they created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is its failure report

use crate::common;

use opensearch::http::Method;
use serde_json::json;
use trailhound_core::detector::default_detectors;
use trailhound_opensearch::{Auth, Client, Detectors, Indexer, OpenSearchConfig};

/// The cluster's configuration, and the container serving it when the
/// test started one.
async fn config() -> (OpenSearchConfig, Option<trailhound_testkit::Osmem>) {
    let (url, server) = match std::env::var("TRAILHOUND_OPENSEARCH_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = trailhound_testkit::Osmem::start().await;
            assert!(
                server.is_opensearch(),
                "set TRAILHOUND_OPENSEARCH_URL, or TRAILHOUND_OPENSEARCH_IMAGE to an OpenSearch image, to run the real-cluster tests"
            );
            (server.url().to_string(), Some(server))
        }
    };
    let auth = match (
        std::env::var("TRAILHOUND_OPENSEARCH_USER"),
        std::env::var("TRAILHOUND_OPENSEARCH_PASSWORD"),
    ) {
        (Ok(username), Ok(password)) => Auth::Basic { username, password },
        _ => Auth::None,
    };
    let cfg = OpenSearchConfig {
        urls: vec![url],
        auth,
        index_prefix: format!("trailhound-test-{}", std::process::id()),
        replicas: 0,
        ..Default::default()
    };
    (cfg, server)
}

async fn cleanup(client: &Client, cfg: &OpenSearchConfig) {
    let p = &cfg.index_prefix;
    let _ = client
        .json(Method::Delete, &format!("{p}-*"), None, "cleanup")
        .await;
    let _ = client
        .json(
            Method::Delete,
            &format!("_index_template/{p}-template"),
            None,
            "cleanup",
        )
        .await;
}

#[tokio::test]
#[ignore = "needs a real cluster: set TRAILHOUND_OPENSEARCH_URL and run with --ignored"]
async fn real_cluster_indexes_and_counts_a_generated_trail() {
    let (cfg, _server) = config().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(&cfg, None).unwrap();
    let events = common::generated_trail(&dir.path().join("org"));
    let ix = Indexer::new(
        client.clone(),
        cfg.clone(),
        default_detectors(),
        dir.path().join("dead.jsonl"),
    );
    let result = async {
        for b in events.chunks(5000) {
            let out = ix.index(b).await.unwrap();
            assert!(out.dead_lettered.is_empty(), "{:?}", out.dead_lettered);
        }
        client
            .json(
                Method::Post,
                &format!("{}/_refresh", cfg.index_pattern()),
                None,
                "refresh",
            )
            .await
            .unwrap();
        let r = client
            .json(
                Method::Post,
                &format!("{}/_search", cfg.index_pattern()),
                Some(&json!({"size": 0, "track_total_hits": true})),
                "count",
            )
            .await
            .unwrap();
        assert_eq!(r.body["hits"]["total"]["value"], events.len() as u64);
    };
    result.await;
    cleanup(&client, &cfg).await;
}

#[tokio::test]
#[ignore = "needs a real cluster with the Anomaly Detection plugin: set TRAILHOUND_OPENSEARCH_URL and run with --ignored"]
async fn real_cluster_detector_lifecycle() {
    let (cfg, _server) = config().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(&cfg, None).unwrap();
    let ix = Indexer::new(
        client.clone(),
        cfg.clone(),
        default_detectors(),
        dir.path().join("dead.jsonl"),
    );
    ix.ensure_ready().await.unwrap();
    let d = Detectors::new(client.clone(), cfg.clone());
    let mut spec = default_detectors().remove(1);
    spec.name = format!("{}-lambda", cfg.index_prefix);
    let (id, _) = d.sync(&spec).await.unwrap();
    let (again, action) = d.sync(&spec).await.unwrap();
    assert_eq!(id, again);
    assert_eq!(
        action,
        trailhound_opensearch::detectors::SyncAction::Unchanged
    );
    assert!(d.delete(&spec.name).await.unwrap());
    cleanup(&client, &cfg).await;
}
