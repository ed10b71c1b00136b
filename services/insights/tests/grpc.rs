//! insights over loopback gRPC: bad requests name the field, anomalies
//! analyzed over the wire come back explained, and a watcher that
//! reconnects with `since` gets what it missed.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use chrono::{Duration, TimeZone, Utc};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use trailhound_core::anomaly::testing::spike;
use trailhound_core::convert::{anomaly_to_pb, timestamp};
use trailhound_core::{AccountMetadata, Anomaly, Contributor, Environment, FeatureValue};
use trailhound_proto::insights::v1 as pb;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;

fn anomaly(n: i64) -> Anomaly {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).single().unwrap() + Duration::hours(n);
    let mut meta = AccountMetadata::external("111122223333");
    meta.name = "payments-prod".into();
    meta.environment = Environment::Production;
    meta.known = true;
    Anomaly {
        ou_path: vec!["Root".into()],
        actual: 5000.0,
        expected: 100.0,
        features: vec![FeatureValue {
            name: "invocations".into(),
            actual: 5000.0,
            expected: 100.0,
        }],
        grade: 0.95,
        score: 4.0,
        event_count: 5000,
        top_contributors: vec![Contributor {
            dimension: "function".into(),
            value: "arn:aws:lambda:us-east-1:111122223333:function:loop".into(),
            count: 5000,
            share: 1.0,
            baseline_count: 10,
            is_new: false,
        }],
        ..spike("lambda-invoke", "lambda", meta, n, start)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let insights =
        trailhound_insights::build(&trailhound_insights::InsightsConfig::default(), dir.path())
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(trailhound_insights::serve(listener, insights, stop.clone()));
    let mut c = loop {
        if let Ok(c) = InsightsServiceClient::connect(format!("http://{addr}")).await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    // Bad input.
    let s = c
        .analyze(pb::AnalyzeRequest { anomaly: None })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("anomaly"), "{s:?}");
    let mut bad = anomaly_to_pb(&anomaly(0));
    bad.account_id = "12".into();
    let s = c
        .analyze_batch(pb::AnalyzeBatchRequest {
            anomalies: vec![bad],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("anomalies[0]"), "{s:?}");
    let s = c
        .ask(pb::AskRequest {
            question: "why ".repeat(25_000),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("question"), "{s:?}");
    let s = c
        .list_insights(pb::ListInsightsRequest {
            environment: "prodd".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(s.message().contains("environment"), "{s:?}");
    let s = c
        .get_insight(pb::GetInsightRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);

    // A watcher sees what is analyzed; one that reconnects with `since`
    // gets what it missed.
    let before = Utc::now() - Duration::seconds(1);
    let mut watch = c
        .watch_insights(pb::WatchInsightsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = c
        .analyze(pb::AnalyzeRequest {
            anomaly: Some(anomaly_to_pb(&anomaly(0))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.severity,
        pb::Severity::High as i32,
        "{:?}",
        first.severity_reasons
    );
    assert!(
        first
            .recommendations
            .iter()
            .any(|r| r.rule == "invoke-storm")
    );
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.id, first.id);
    drop(watch);
    c.analyze_batch(pb::AnalyzeBatchRequest {
        anomalies: vec![anomaly_to_pb(&anomaly(5))],
    })
    .await
    .unwrap();
    let mut again = c
        .watch_insights(pb::WatchInsightsRequest {
            since: Some(timestamp(before)),
            include_suppressed: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let i = tokio::time::timeout(std::time::Duration::from_secs(10), again.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        ids.push(i.id);
    }
    assert_eq!(ids, [anomaly(0).id, anomaly(5).id]);

    let listed = c
        .list_insights(pb::ListInsightsRequest {
            account_id: "111122223333".into(),
            min_severity: pb::Severity::High as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .insights;
    assert_eq!(listed.len(), 2);
    // Separate incidents: five hours apart.
    assert_ne!(listed[0].incident_id, listed[1].incident_id);
    let answer = c
        .ask(pb::AskRequest {
            question: "how many lambda anomalies in production?".into(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.answer.starts_with("2 incidents"),
        "{}",
        answer.answer
    );
    assert_eq!(answer.backend, "builtin");
    stop.cancel();
}
