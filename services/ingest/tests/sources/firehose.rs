//! The Firehose HTTP endpoint over real HTTP, in the documented request
//! and response format, with CloudWatch Logs subscription payloads.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use base64::Engine;
use trailhound_ingest::IngestConfig;

use crate::common::*;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A CloudWatch Logs subscription payload as CloudWatch Logs hands it to
/// Firehose: gzip JSON.
fn cwl_payload(ids: &[u32]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = ids
        .iter()
        .map(|i| {
            serde_json::json!({
                "id": format!("3195310660696698337880902507980421114328961542429822{i:04}"),
                "timestamp": 1_772_359_200_000i64,
                "message": record(*i, "2026-03-01T10:00:00Z"),
            })
        })
        .collect();
    let body = serde_json::json!({
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": "aws-cloudtrail-logs-111122223333",
        "logStream": "111122223333_CloudTrail_us-east-1",
        "subscriptionFilters": ["to-firehose"],
        "logEvents": events,
    });
    gzip(body.to_string().as_bytes())
}

fn control_message() -> Vec<u8> {
    gzip(
        serde_json::json!({
            "messageType": "CONTROL_MESSAGE",
            "owner": "CloudwatchLogs",
            "logGroup": "",
            "logStream": "",
            "subscriptionFilters": [],
            "logEvents": [{"id": "", "timestamp": 1_772_359_200_000i64,
                "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}],
        })
        .to_string()
        .as_bytes(),
    )
}

fn request_body(request_id: &str, records: &[String]) -> String {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|d| serde_json::json!({ "data": d }))
        .collect();
    serde_json::json!({
        "requestId": request_id,
        "timestamp": 1_772_359_260_000i64,
        "records": records,
    })
    .to_string()
}

struct Endpoint {
    url: String,
    sources: Running,
}

async fn endpoint(ingest: std::sync::Arc<trailhound_ingest::Ingest>, max_body: usize) -> Endpoint {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("firehose.key");
    std::fs::write(&key_file, "s3cr3t-key\n").unwrap();
    let config = IngestConfig {
        firehose_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        firehose_access_key_file: Some(key_file),
        firehose_max_body_bytes: max_body,
        ..IngestConfig::default()
    };
    let sources = Running::start(&config, None, dir, ingest).await;
    assert_eq!(sources.started.names, vec!["firehose"]);
    let addr = sources.started.firehose_addr.unwrap();
    Endpoint {
        url: format!("http://{addr}/cloudtrail"),
        sources,
    }
}

async fn post(
    url: &str,
    key: Option<&str>,
    request_id: &str,
    body: Vec<u8>,
    gzip_encoded: bool,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-amz-firehose-protocol-version", "1.0")
        .header("x-amz-firehose-request-id", request_id)
        .header(
            "x-amz-firehose-source-arn",
            "arn:aws:firehose:us-east-1:111122223333:deliverystream/trail",
        );
    if let Some(k) = key {
        req = req.header("x-amz-firehose-access-key", k);
    }
    if gzip_encoded {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_deliveries_are_accepted_and_acknowledged() {
    let (ingest, sink, dl) = pipeline();
    let ep = endpoint(ingest.clone(), 1 << 20).await;
    let rid = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f";
    let records = vec![
        b64(&cwl_payload(&[1, 2])),
        b64(&control_message()),
        "this is not base64!".to_string(),
        b64(&cwl_payload(&[3])),
    ];
    let (status, body) = post(
        &ep.url,
        Some("s3cr3t-key"),
        rid,
        request_body(rid, &records).into_bytes(),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requestId"], rid);
    assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(body.get("errorMessage").is_none(), "{body}");
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(ids, [1, 2, 3].map(event_id).to_vec());
    let letters = dead_letters(&dl);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, format!("firehose:{rid}#2"));
    assert!(letters[0].1.contains("base64"), "{letters:?}");

    // Body compression (Content-Encoding: gzip), and a retried request:
    // the same events are not forwarded twice.
    let rid2 = "9c0f3c0e-7e3e-4c1a-9d0e-000000000002";
    let body2 = request_body(rid2, &[b64(&cwl_payload(&[3, 4]))]);
    let (status, body) = post(
        &ep.url,
        Some("s3cr3t-key"),
        rid2,
        gzip(body2.as_bytes()),
        true,
    )
    .await;
    assert_eq!(
        (status, &body["requestId"]),
        (200, &serde_json::json!(rid2))
    );
    assert_eq!(sink.len(), 4);
    sink.assert_no_duplicates();

    ep.sources.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_refuses_what_it_cannot_take_with_reasons() {
    let (ingest, sink, _dl) = pipeline();
    let ep = endpoint(ingest.clone(), 64 << 10).await;
    let rid = "11111111-2222-3333-4444-555555555555";
    let good = request_body(rid, &[b64(&cwl_payload(&[7]))]).into_bytes();

    for key in [None, Some("wrong-key")] {
        let (status, body) = post(&ep.url, key, rid, good.clone(), false).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["requestId"], rid);
        let msg = body["errorMessage"].as_str().unwrap();
        assert!(msg.contains("X-Amz-Firehose-Access-Key"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "the key never appears: {msg}");
    }

    let (status, body) = post(
        &ep.url,
        Some("s3cr3t-key"),
        rid,
        b"{\"records\": nope".to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["requestId"], rid,
        "the header's id when the body has none"
    );
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("not a Firehose delivery request"),
        "{body}"
    );

    let big: Vec<String> = (0..40).map(|_| "A".repeat(4096)).collect();
    let (status, body) = post(
        &ep.url,
        Some("s3cr3t-key"),
        rid,
        request_body(rid, &big).into_bytes(),
        false,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("byte limit"),
        "{body}"
    );
    assert_eq!(sink.len(), 0);

    // Downstream unavailable: 503, so Firehose retries; then the retry is
    // accepted.
    sink.failing.store(true, Ordering::SeqCst);
    let (status, body) = post(&ep.url, Some("s3cr3t-key"), rid, good.clone(), false).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["errorMessage"].as_str().unwrap().contains("retry"),
        "{body}"
    );
    sink.failing.store(false, Ordering::SeqCst);
    let (status, _) = post(&ep.url, Some("s3cr3t-key"), rid, good, false).await;
    assert_eq!(status, 200);
    assert_eq!(sink.ids(), vec![event_id(7)]);
    ep.sources.cancel();
}
