//! ingest, enrich and detect as separate processes: a generated trail with
//! a cryptomining burst is pushed to ingest over gRPC and the anomaly is
//! found through ListAnomalies and WatchAnomalies.

use std::time::Duration;

use tokio_stream::StreamExt;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{
    FlushRequest, GetUsageSeriesRequest, ListAnomaliesRequest, WatchAnomaliesRequest,
};
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::harness::{Pipeline, generated_org, trail_records};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_pushed_to_ingest_is_found_by_detect_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let org_dir = dir.path().join("org");
    let labels = generated_org(&org_dir, 5, 4, 11, 10);
    let burst = crate::harness::cryptomining(&labels);

    let p = Pipeline::start(dir.path(), &org_dir.join("org.json")).await;
    let mut detect = DetectServiceClient::connect(format!("http://127.0.0.1:{}", p.detect_port))
        .await
        .expect("connect detect");
    let mut watch = detect
        .watch_anomalies(WatchAnomaliesRequest {
            account_id: burst.account_id.clone(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();

    let mut records = trail_records(&org_dir.join("trail"));
    let total = records.len() as u64;
    // Bad input in the middle of the stream costs nothing but itself.
    records.insert(records.len() / 2, "{\"eventID\": truncated".to_string());
    records.insert(records.len() / 3, records[0].clone());
    let mut ingest = IngestServiceClient::connect(format!("http://127.0.0.1:{}", p.ingest_port))
        .await
        .expect("connect ingest");
    let stream = tokio_stream::iter(records.into_iter().map(|json| PushEventsRequest {
        json,
        source: String::new(),
    }));
    let pushed = ingest
        .push_events(stream)
        .await
        .unwrap_or_else(|e| panic!("push failed: {e}\n{}", p.logs()))
        .into_inner();
    assert_eq!(pushed.accepted, total, "{}", p.logs());
    assert_eq!(pushed.rejected, 1);
    assert_eq!(pushed.duplicates, 1);
    assert!(
        pushed.rejections[0].reason.contains("malformed"),
        "{:?}",
        pushed.rejections
    );
    detect.flush(FlushRequest {}).await.expect("flush");

    // ListAnomalies finds the burst in the labelled account and region,
    // with the attacker as the top principal and the GPU type listed.
    let listed = detect
        .list_anomalies(ListAnomaliesRequest {
            account_id: burst.account_id.clone(),
            detector: "ec2-run-instances".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .anomalies;
    let found = listed
        .iter()
        .find(|a| a.region == burst.region)
        .unwrap_or_else(|| panic!("no anomaly for {:?}; got {listed:#?}\n{}", burst, p.logs()));
    let start_ms = burst.start.timestamp_millis();
    let ws = trailhound_proto::time::to_millis(found.window_start.as_ref().expect("window start"));
    assert!(
        ws >= start_ms - 600_000 && ws <= start_ms + 1_200_000,
        "found at {ws}, incident at {start_ms}"
    );
    let contributor = |dimension: &str| {
        found
            .top_contributors
            .iter()
            .find(|c| c.dimension == dimension)
            .unwrap_or_else(|| panic!("no {dimension} contributor"))
    };
    let principal = contributor("principal");
    assert_eq!(Some(&principal.value), burst.principal_arn.as_ref());
    assert!(
        principal.is_new,
        "the attacker's principal is new to the account"
    );
    let itype = contributor("instance_type");
    assert_eq!(Some(&itype.value), burst.instance_type.as_ref());
    let account = found.account.as_ref().expect("account metadata");
    assert!(account.known && !account.name.is_empty());

    // WatchAnomalies delivered it live too.
    let watched = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(a) = watch.next().await {
            let a = a.expect("watch item");
            if a.id == found.id {
                return Some(a);
            }
        }
        None
    })
    .await
    .expect("watch delivered within 10s");
    assert!(watched.is_some());

    // The entity's series covers the window with an expected band.
    let series = detect
        .get_usage_series(GetUsageSeriesRequest {
            detector: "ec2-run-instances".into(),
            account_id: burst.account_id.clone(),
            region: burst.region.clone(),
            ..Default::default()
        })
        .await
        .expect("series")
        .into_inner();
    let point = series
        .points
        .iter()
        .find(|pt| trailhound_proto::time::to_millis(pt.window_start.as_ref().expect("ts")) == ws)
        .expect("series has the anomalous window");
    assert!(point.actual > point.upper && point.grade > 0.0, "{point:?}");
}
