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
    type Spoil = fn(&mut pb::ListAnomaliesRequest);
    let bad_listings: [(Spoil, &str); 4] = [
        (|r| r.account_id = "12ab".into(), "account_id"),
        (|r| r.environment = "prodd".into(), "environment"),
        (|r| r.min_grade = 1.5, "min_grade"),
        (|r| r.page_token = "not-a-token".into(), "page_token"),
    ];
    for (f, field) in bad_listings {
        assert_invalid(c.list_anomalies(list(f)).await, field);
    }
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

/// An invocation of function `f` in `account`, enriched as a sandbox
/// account under Root/Sandbox.
fn invocation(id: u64, account: &str, t: i64) -> trailhound_core::EnrichedEvent {
    use trailhound_core::account::{AccountMetadata, Environment};
    let mut meta = AccountMetadata::external(account);
    meta.known = true;
    meta.environment = Environment::Sandbox;
    meta.ou_path = vec!["Root".into(), "Sandbox".into()];
    trailhound_core::EnrichedEvent {
        event: trailhound_core::Event {
            event_id: format!("e-{id}"),
            event_time_ms: t,
            event_source: "lambda.amazonaws.com".into(),
            event_name: "Invoke".into(),
            aws_region: "us-east-1".into(),
            recipient_account_id: account.into(),
            user_identity: trailhound_core::UserIdentity {
                kind: "AssumedRole".into(),
                arn: format!("arn:aws:sts::{account}:assumed-role/app/x"),
                ..Default::default()
            },
            source_ip_address: "lambda.amazonaws.com".into(),
            user_agent: "aws-sdk-go".into(),
            event_category: "Data".into(),
            event_type: "AwsApiCall".into(),
            event_version: "1.08".into(),
            error_code: String::new(),
            error_message: String::new(),
            read_only: Some(false),
            management_event: Some(false),
            request_parameters: r#"{"functionName":"f"}"#.into(),
            response_elements: String::new(),
            raw: String::new(),
        },
        account: std::sync::Arc::new(meta),
    }
}

/// GetUsageSeries for a scoped caller: an account's series only when the
/// scope allows the account (by id or by OU, even with no anomaly), and a series summed over every account (a
/// detector keyed by region alone) never — it reads like an entity
/// without data, as for an account outside the scope.
#[tokio::test]
async fn usage_series_are_read_within_the_callers_scope() {
    use trailhound_proto::detect::v1::detect_service_server::DetectService;
    use trailhound_runtime::auth::{Principal, PrincipalKind, Role};
    let dir = tempfile::tempdir().unwrap();
    let detect = trailhound_detect::build(
        &trailhound_detect::DetectConfig::default(),
        dir.path(),
        None,
    )
    .unwrap();
    let mut by_region = detect.detector("lambda-invoke").unwrap();
    by_region.name = "lambda-invoke-by-region".into();
    by_region.category_fields = vec!["awsRegion".parse().unwrap()];
    detect.create_detector(by_region).unwrap();
    const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
    let events = (0..6)
        .map(|i| {
            let account = if i % 2 == 0 {
                "111122223333"
            } else {
                "444455556666"
            };
            invocation(i, account, T0 + i as i64 * 60_000)
        })
        .collect();
    detect.accept(events).await.unwrap();
    detect.flush().unwrap();
    let grpc = trailhound_detect::grpc::DetectGrpc::new(detect);
    let points = async |scope: trailhound_core::Scope, detector: &str| {
        let mut req = tonic::Request::new(pb::GetUsageSeriesRequest {
            detector: detector.into(),
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            end_time: Some(trailhound_proto::prost_types::Timestamp {
                seconds: T0 / 1000 + 3600,
                nanos: 0,
            }),
            ..Default::default()
        });
        req.extensions_mut().insert(Principal {
            subject: "u".into(),
            name: None,
            kind: PrincipalKind::User,
            role: Some(Role::Viewer),
            scope,
        });
        let r = grpc.get_usage_series(req).await.unwrap().into_inner();
        r.points.iter().map(|p| p.actual).sum::<f64>()
    };
    let accounts = |a: &str| {
        trailhound_core::Scope::union([trailhound_core::ScopeRule {
            accounts: vec![a.to_string()],
            ..Default::default()
        }])
    };
    let all = trailhound_core::Scope::all();
    assert_eq!(points(all.clone(), "lambda-invoke").await, 3.0);
    assert_eq!(points(all, "lambda-invoke-by-region").await, 6.0);
    let own = accounts("111122223333");
    assert_eq!(points(own.clone(), "lambda-invoke").await, 3.0);
    // Every account's invocations summed: not for a scoped caller.
    assert_eq!(points(own, "lambda-invoke-by-region").await, 0.0);
    assert_eq!(points(accounts("444455556666"), "lambda-invoke").await, 0.0);
    // By OU: the account has no anomaly to tell its OU, so it comes from
    // the events detect holds; inside the scope it charts, outside not.
    let ou = |o: &str| {
        trailhound_core::Scope::union([trailhound_core::ScopeRule {
            ous: vec![o.to_string()],
            ..Default::default()
        }])
    };
    assert_eq!(points(ou("Root/Sandbox"), "lambda-invoke").await, 3.0);
    assert_eq!(points(ou("Root/Workloads"), "lambda-invoke").await, 0.0);
}
