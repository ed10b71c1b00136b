//! detect's gRPC face over loopback: bad requests get INVALID_ARGUMENT
//! naming the field, missing things NOT_FOUND, and detector management
//! survives a restart.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use trailhound_proto::common::v1 as common;
use trailhound_proto::detect::v1 as pb;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;

struct Server {
    client: DetectServiceClient<tonic::transport::Channel>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(dir: &std::path::Path) -> Server {
    let cfg = trailhound_detect::DetectConfig::default();
    let detect = trailhound_detect::build(&cfg, dir, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task =
        tokio::spawn(async move { trailhound_detect::serve(listener, detect, &cfg, s).await });
    let client = loop {
        if let Ok(c) = DetectServiceClient::connect(format!("http://{addr}")).await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    Server { client, stop, task }
}

impl Server {
    async fn shut(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn assert_invalid(r: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let s = r.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains(field), "{field} not named: {s:?}");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let mut c = srv.client.clone();
    let list = |f: fn(&mut pb::ListAnomaliesRequest)| {
        let mut r = pb::ListAnomaliesRequest::default();
        f(&mut r);
        r
    };
    assert_invalid(
        c.list_anomalies(list(|r| r.account_id = "12ab".into()))
            .await,
        "account_id",
    );
    assert_invalid(
        c.list_anomalies(list(|r| r.environment = "prodd".into()))
            .await,
        "environment",
    );
    assert_invalid(
        c.list_anomalies(list(|r| r.min_grade = 1.5)).await,
        "min_grade",
    );
    assert_invalid(
        c.list_anomalies(list(|r| r.page_token = "not-a-token".into()))
            .await,
        "page_token",
    );
    assert_invalid(
        c.get_anomaly(pb::GetAnomalyRequest { id: String::new() })
            .await,
        "id",
    );
    assert_invalid(
        c.get_usage_series(pb::GetUsageSeriesRequest {
            detector: "ec2-run-instances".into(),
            account_id: "111122223333".into(),
            ..Default::default()
        })
        .await,
        "region",
    );
    let missing = c
        .get_anomaly(pb::GetAnomalyRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A detector naming a field that does not exist, or too many features.
    let bad_path = common::Detector {
        name: "typo".into(),
        service: "iam".into(),
        features: vec![common::Feature {
            name: "gib".into(),
            aggregation: common::Aggregation::Sum as i32,
            fields: vec!["requestParameters..size".into()],
        }],
        ..Default::default()
    };
    assert_invalid(c.create_detector(bad_path).await, "features[0].fields");
    let too_many = common::Detector {
        name: "wide".into(),
        service: "ec2".into(),
        features: (0..6)
            .map(|i| common::Feature {
                name: format!("f{i}"),
                aggregation: common::Aggregation::Count as i32,
                fields: vec![],
            })
            .collect(),
        ..Default::default()
    };
    assert_invalid(c.create_detector(too_many).await, "features");
    srv.shut().await;
}

#[tokio::test]
async fn detectors_managed_over_grpc_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let mut c = srv.client.clone();
    let d = common::Detector {
        name: "access-denied".into(),
        service: "iam".into(),
        errors: common::ErrorFilter::Only as i32,
        features: vec![common::Feature {
            name: "failed_calls".into(),
            aggregation: common::Aggregation::Count as i32,
            fields: vec![],
        }],
        interval_seconds: 300,
        enabled: true,
        ..Default::default()
    };
    let created = c.create_detector(d.clone()).await.unwrap().into_inner();
    assert_eq!(created.interval_seconds, 300);
    let dup = c.create_detector(d).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let stopped = c
        .stop_detector(pb::DetectorRef {
            name: "access-denied".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stopped.enabled);
    c.delete_detector(pb::DetectorRef {
        name: "lambda-invoke".into(),
    })
    .await
    .unwrap();
    srv.shut().await;

    let srv = start(dir.path()).await;
    let mut c = srv.client.clone();
    let names: Vec<(String, bool)> = c
        .list_detectors(pb::ListDetectorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .detectors
        .into_iter()
        .map(|d| (d.name, d.enabled))
        .collect();
    assert!(
        names.contains(&("access-denied".into(), false)),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|(n, _)| n == "lambda-invoke"),
        "{names:?}"
    );
    let gone = c
        .get_detector(pb::DetectorRef {
            name: "lambda-invoke".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    srv.shut().await;
}
