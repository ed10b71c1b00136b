//! Stopping a service the way an orchestrator does (SIGTERM), and the
//! `probe` command container health checks run.
//!
//! A `Watch*` stream must end cleanly rather than hold the drain, the
//! process must exit 0 well inside its deadline, and a request that
//! cannot finish must hold it only until `--shutdown-deadline`.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use trailhound_proto::common::v1::SetServingRequest;
use trailhound_proto::common::v1::control_service_client::ControlServiceClient;
use trailhound_proto::detect::v1::WatchAnomaliesRequest;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

use crate::harness::{Service, free_port, trailhound_bin, wait_ready};

fn sigterm(service: &Service) {
    let sent = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(service.child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits up to `limit` for the process to exit; its status and how long
/// it took.
async fn exit_within(service: &mut Service, limit: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{} still running {limit:?} after SIGTERM:\n{}",
            service.name,
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// detect alone on a free port, ready; and the address it listens on.
async fn ready_detect(dir: &std::path::Path) -> (Service, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut detect = Service::start("detect", dir, &["detect", "--detect-listen", &listen]);
    wait_ready(&mut detect, port).await;
    (detect, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watch_streams_cleanly_and_exits_zero_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut detect, listen) = ready_detect(dir.path()).await;
    let mut client = DetectServiceClient::connect(format!("http://{listen}"))
        .await
        .unwrap();
    let mut watch = client
        .watch_anomalies(WatchAnomaliesRequest::default())
        .await
        .unwrap()
        .into_inner();

    sigterm(&detect);
    // The stream ends with OK, not with a broken connection.
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("WatchAnomalies still open 10s after SIGTERM");
    assert!(
        end.is_none(),
        "expected a clean end of stream, got {end:?}\n{}",
        detect.logs()
    );
    let (status, took) = exit_within(&mut detect, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", detect.logs());
    // The default deadline is 20 s; an open stream must not cost it.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let logs = detect.logs();
    assert!(logs.contains("checkpointed detector state"), "{logs}");
    assert!(!logs.contains("deadline passed"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_finish_holds_the_exit_only_until_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Nothing listens on enrich's port, and ingest is patient: a push is
    // held, retrying, for a minute.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut ingest = Service::start(
        "ingest",
        dir.path(),
        &[
            "--shutdown-deadline",
            "2s",
            "ingest",
            "--ingest-listen",
            &listen,
            "--enrich-endpoint",
            &nowhere,
            "--retry-patience",
            "60s",
        ],
    );
    wait_ready(&mut ingest, port).await;
    let mut client = IngestServiceClient::connect(format!("http://{listen}"))
        .await
        .unwrap();
    let record = r#"{"eventVersion":"1.09","eventID":"0f0e0d0c-0000-4000-8000-000000000001","eventTime":"2026-03-01T10:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","awsRegion":"us-east-1","recipientAccountId":"111122223333"}"#;
    let push = tokio::spawn(async move {
        client
            .push_events(tokio_stream::iter([PushEventsRequest {
                json: record.to_string(),
                source: String::new(),
            }]))
            .await
    });
    // Held until ingest retried at least once.
    let started = Instant::now();
    while !ingest.logs().contains("retrying") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            ingest.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!push.is_finished());

    sigterm(&ingest);
    let (status, took) = exit_within(&mut ingest, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", ingest.logs());
    // Three quarters of 2 s for the drain, then the process ends by 2 s
    // (plus start-up noise on a loaded machine).
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "exited after {took:?}\n{}",
        ingest.logs()
    );
    assert!(ingest.logs().contains("drain deadline passed"));
    // The push was never acknowledged: its client sees a failure and can
    // send it again elsewhere.
    let answered = push.await.unwrap();
    assert!(answered.is_err(), "{answered:?}");
}

/// Runs `trailhound probe ARGS`; its exit code and output.
fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(trailhound_bin())
        .arg("probe")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_zero_only_for_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (_detect, listen) = ready_detect(dir.path()).await;
    let url = format!("http://{listen}");

    let (code, out) = probe(&[&listen]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SERVING"), "{out}");
    let (code, out) = probe(&["--service", "detect", &url]);
    assert_eq!(code, Some(0), "{out}");
    // A service this server does not have.
    let (code, out) = probe(&["--service", "ingest", &listen]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NotFound"), "{out}");
    // Nothing listening.
    let (code, out) = probe(&["--timeout", "1s", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot connect"), "{out}");

    // Told to report NOT_SERVING (what health's recovery does): the probe
    // fails, which is what makes an orchestrator restart it.
    ControlServiceClient::connect(url.clone())
        .await
        .unwrap()
        .set_serving(SetServingRequest {
            serving: false,
            reason: "probe test".into(),
        })
        .await
        .unwrap();
    let (code, out) = probe(&["--service", "detect", &listen]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NOT_SERVING"), "{out}");
}
