//! deploy/compose.yaml, for real: the images built from this test build's
//! binary, the six services as containers wired as the file says, a
//! generated trail pushed to ingest's published port, the burst followed
//! to detect, insights and notify, health watching all five; then detect
//! killed with SIGKILL and restarted while more is pushed, and not one
//! acknowledged event lost. Every hop is mTLS, certificates from the
//! stack's one-shot `certs` service; the test reaches the published ports
//! with the `client` certificate, and plaintext is refused.
//!
//! Needs a Docker engine and docker-compose (or `docker compose`), so it
//! is ignored by a plain `cargo test`; scripts/test runs it where an
//! engine answers: `cargo test --test integration compose -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use trailhound_proto::common::v1::{ServiceStats, StatsRequest};
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{FlushRequest, ListAnomaliesRequest};
use trailhound_proto::health::v1 as hpb;
use trailhound_proto::health::v1::health_service_client::HealthServiceClient;
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use trailhound_proto::insights::v1::ListInsightsRequest;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;
use trailhound_proto::notify::v1::notify_service_client::NotifyServiceClient;
use trailhound_proto::notify::v1::{DeliveryStatus, ListDeliveriesRequest};

use trailhound_runtime::{ClientSecurity, TracedChannel};

use crate::harness::{generated_org, trail_records, trailhound_bin};

const SERVICES: [&str; 6] = ["ingest", "enrich", "detect", "insights", "notify", "health"];
const TAG: &str = "compose-test";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"))
}

/// The compose command: docker-compose, else the `docker compose` plugin.
fn compose_program() -> Option<Vec<String>> {
    let works = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&["docker-compose", "version"]) {
        Some(vec!["docker-compose".into()])
    } else if works(&["docker", "compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else {
        None
    }
}

/// A compose project of this test; `down -v` on drop, even after a panic.
struct Stack {
    program: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program[0]);
        c.args(&self.program[1..])
            .args(["-p", &self.project, "-f"])
            .arg(repo().join("deploy/compose.yaml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = output(&mut self.command(args));
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let out = self
            .command(&["logs", "--no-color", "--tail", "40"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-q", service]).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        let id = self.container(service);
        let out = output(Command::new("docker").args(["inspect", "-f", format, &id]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until every named service's container reports healthy.
    async fn wait_healthy(&self, services: &[&str], limit: Duration) {
        let started = Instant::now();
        loop {
            let states: Vec<(String, String)> = services
                .iter()
                .map(|s| (s.to_string(), self.inspect(s, "{{.State.Health.Status}}")))
                .collect();
            if states.iter().all(|(_, h)| h == "healthy") {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "not healthy after {limit:?}: {states:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
    }
}

/// A TLS channel to a published port, with the `client` certificate.
fn channel(security: &ClientSecurity, port: u16) -> TracedChannel {
    trailhound_runtime::client::connect_with(
        &format!("https://127.0.0.1:{port}"),
        Duration::from_secs(60),
        security,
    )
    .expect("a channel")
}

/// The stack's certificates, copied out of a service's read-only mount,
/// as a tool's credentials: the CA and the `client` certificate.
fn client_security(stack: &Stack, dir: &Path) -> ClientSecurity {
    let id = stack.container("ingest");
    let out = output(
        Command::new("docker")
            .args(["cp", &format!("{id}:/etc/trailhound/certs")])
            .arg(dir),
    );
    assert!(
        out.status.success(),
        "docker cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    trailhound_runtime::args::ClientArgs {
        ca: Some(dir.join("ca.pem")),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client-key.pem")),
        token: None,
    }
    .security()
    .expect("the stack's certificates load")
}

async fn push(security: &ClientSecurity, port: u16, records: &[String]) -> u64 {
    let mut client = IngestServiceClient::new(channel(security, port));
    let mut accepted = 0;
    for chunk in records.chunks(2000) {
        let batch: Vec<PushEventsRequest> = chunk
            .iter()
            .map(|json| PushEventsRequest {
                json: json.clone(),
                source: String::new(),
            })
            .collect();
        let r = client
            .push_events(tokio_stream::iter(batch))
            .await
            .expect("push")
            .into_inner();
        assert_eq!(r.rejected, 0, "{:?}", r.rejections.first());
        accepted += r.accepted;
    }
    accepted
}

async fn detect_stats(security: &ClientSecurity, port: u16) -> ServiceStats {
    DetectServiceClient::new(channel(security, port))
        .stats(StatsRequest {})
        .await
        .expect("detect stats")
        .into_inner()
}

async fn ingest_stats(security: &ClientSecurity, port: u16) -> ServiceStats {
    IngestServiceClient::new(channel(security, port))
        .stats(StatsRequest {})
        .await
        .expect("ingest stats")
        .into_inner()
}

/// Polls until health reports every watched service SERVING.
async fn wait_all_serving(
    security: &ClientSecurity,
    port: u16,
    stack: &Stack,
    limit: Duration,
) -> hpb::SystemHealth {
    let mut client = HealthServiceClient::new(channel(security, port));
    let started = Instant::now();
    loop {
        let h = client
            .get_system_health(hpb::GetSystemHealthRequest {})
            .await
            .expect("system health")
            .into_inner();
        let serving = h.services.len() == 5
            && h.services
                .iter()
                .all(|s| s.status() == hpb::Status::Serving);
        if serving {
            return h;
        }
        assert!(
            started.elapsed() < limit,
            "health did not see all five SERVING within {limit:?}: {:?}\n{}",
            h.services
                .iter()
                .map(|s| (s.name.clone(), s.status(), s.reasons.clone()))
                .collect::<Vec<_>>(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The index of the first record at or after `t` (records are in delivery
/// order, each delivery group sorted by time).
fn split_at_time(records: &[String], t: chrono::DateTime<chrono::Utc>) -> usize {
    records
        .iter()
        .position(|r| {
            serde_json::from_str::<serde_json::Value>(r)
                .ok()
                .and_then(|v| v["eventTime"].as_str().map(str::to_string))
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                .is_some_and(|et| et >= t)
        })
        .unwrap_or(records.len())
}

fn build_images() {
    let out = output(
        Command::new(repo().join("deploy/build-images.sh"))
            .args(["--binary"])
            .arg(trailhound_bin())
            .args(["--tag", TAG]),
    );
    assert!(
        out.status.success(),
        "deploy/build-images.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and docker-compose; scripts/test runs it where one answers"]
async fn the_compose_stack_catches_a_burst_and_a_killed_detect_loses_nothing() {
    let docker = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let Some(program) = compose_program().filter(|_| docker) else {
        eprintln!("skipped: no Docker engine or no docker-compose");
        return;
    };
    let started = Instant::now();
    build_images();

    let dir = tempfile::tempdir().unwrap();
    let org_dir = dir.path().join("org");
    let labels = generated_org(&org_dir, 5, 4, 11, 10);
    let burst = crate::harness::cryptomining(&labels);
    let records = trail_records(&org_dir.join("trail"));
    // Up to a few hours past the burst first, so its window closes; the
    // rest after detect was killed.
    let split = split_at_time(&records, burst.end + chrono::Duration::hours(3));
    let (first, rest) = records.split_at(split);
    assert!(
        first.len() > 1000 && rest.len() > 1000,
        "{} then {}",
        first.len(),
        rest.len()
    );
    let org_json = org_dir.join("org.json");

    // Distinct ports: each listener is held until all are chosen (one
    // bound and dropped at a time can hand the same port out twice, and
    // Docker then refuses the second service).
    let held: Vec<std::net::TcpListener> = SERVICES
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    let ports: Vec<(&str, u16)> = SERVICES
        .iter()
        .zip(&held)
        .map(|(s, l)| (*s, l.local_addr().map(|a| a.port()).unwrap_or(0)))
        .collect();
    drop(held);
    let port = |name: &str| {
        ports
            .iter()
            .find(|(s, _)| *s == name)
            .map(|(_, p)| *p)
            .unwrap()
    };
    let mut env: Vec<(String, String)> = ports
        .iter()
        .map(|(s, p)| {
            (
                format!("TRAILHOUND_{}_PORT", s.to_uppercase()),
                p.to_string(),
            )
        })
        .collect();
    env.push(("TRAILHOUND_TAG".into(), TAG.into()));
    env.push(("TRAILHOUND_ORG".into(), path_str(&org_json)));
    let stack = Stack {
        program,
        project: format!("trailhound-test-{}", std::process::id()),
        env,
    };
    stack.run(&["up", "-d"]);
    stack
        .wait_healthy(&SERVICES, Duration::from_secs(120))
        .await;
    let up = started.elapsed();
    let certs = dir.path().join("certs");
    let tls = client_security(&stack, &certs);

    // Plaintext is refused on every published port; over mTLS each
    // answers, and none runs insecurely.
    for s in SERVICES {
        let plain =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", port(s)))
                .unwrap()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(3))
                .connect_lazy();
        let refused = tonic_health::pb::health_client::HealthClient::new(plain)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        assert!(refused.is_err(), "{s} answered plaintext: {refused:?}");
    }
    let d = detect_stats(&tls, port("detect")).await;
    assert!(
        d.insecure.is_empty(),
        "detect runs insecurely: {}",
        d.insecure
    );
    // The FROM scratch images carry the public roots an OIDC issuer's
    // JWKS is verified with over https (SSL_CERT_FILE names the bundle
    // the platform verifier reads).
    let env = stack.inspect("detect", "{{.Config.Env}}");
    assert!(
        env.contains("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env}"
    );
    let bundle = output(Command::new("docker").args([
        "cp",
        &format!(
            "{}:/etc/ssl/certs/ca-certificates.crt",
            stack.container("detect")
        ),
        "-",
    ]));
    let roots = String::from_utf8_lossy(&bundle.stdout)
        .matches("BEGIN CERTIFICATE")
        .count();
    assert!(
        roots > 100,
        "the image's CA bundle holds {roots} certificates"
    );

    // What the file promises about every container.
    for s in SERVICES {
        assert_eq!(
            stack.inspect(s, "{{.HostConfig.ReadonlyRootfs}}"),
            "true",
            "{s}"
        );
        assert_eq!(stack.inspect(s, "{{.Config.User}}"), "65532:65532", "{s}");
        let limit: u64 = stack.inspect(s, "{{.HostConfig.Memory}}").parse().unwrap();
        assert!(limit > 0, "{s} has no memory limit");
    }

    // The trail up to the burst and a little past it.
    let accepted = push(&tls, port("ingest"), first).await;
    assert_eq!(accepted, first.len() as u64, "{}", stack.logs());

    // detect found the burst...
    let mut detect = DetectServiceClient::new(channel(&tls, port("detect")));
    let anomalies = detect
        .list_anomalies(ListAnomaliesRequest {
            account_id: burst.account_id.clone(),
            detector: "ec2-run-instances".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .anomalies;
    let found = anomalies
        .iter()
        .find(|a| a.region == burst.region)
        .unwrap_or_else(|| {
            panic!(
                "no burst in {}/{}: {anomalies:#?}\n{}",
                burst.account_id,
                burst.region,
                stack.logs()
            )
        })
        .clone();

    // ...insights explained it (over detect's insights endpoint)...
    let mut insights = InsightsServiceClient::new(channel(&tls, port("insights")));
    let deadline = Instant::now() + Duration::from_secs(30);
    let insight = loop {
        let listed = insights
            .list_insights(ListInsightsRequest {
                account_id: burst.account_id.clone(),
                detector: "ec2-run-instances".into(),
                include_suppressed: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .insights;
        if let Some(i) = listed.into_iter().find(|i| i.id == found.id) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "insights never got anomaly {}\n{}",
            found.id,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        insight.suppressed_by.is_empty(),
        "{}",
        insight.suppressed_by
    );

    // ...and notify, following insights, delivered it.
    let mut notify = NotifyServiceClient::new(channel(&tls, port("notify")));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deliveries = notify
            .list_deliveries(ListDeliveriesRequest {
                incident_id: insight.incident_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if deliveries
            .iter()
            .any(|d| d.channel == "log" && d.status() == DeliveryStatus::Delivered)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notify never delivered incident {}: {deliveries:#?}\n{}",
            insight.incident_id,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // health watches all five across the network.
    wait_all_serving(&tls, port("health"), &stack, Duration::from_secs(60)).await;

    // detect killed hard: what it acknowledged since its last checkpoint
    // is only in its write-ahead log, on its named volume.
    let before = detect_stats(&tls, port("detect")).await.events_in;
    assert_eq!(before, first.len() as u64, "{}", stack.logs());
    stack.run(&["kill", "-s", "SIGKILL", "detect"]);
    // The rest goes in while detect is down: ingest holds and retries.
    let pusher = {
        let rest = rest.to_vec();
        let p = port("ingest");
        let tls = tls.clone();
        tokio::spawn(async move { push(&tls, p, &rest).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pusher.is_finished(),
        "a push went through with detect down"
    );
    stack.run(&["start", "detect"]);
    stack
        .wait_healthy(&["detect"], Duration::from_secs(60))
        .await;
    let accepted = tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("the push finishes once detect is back")
        .unwrap();
    assert_eq!(accepted, rest.len() as u64, "{}", stack.logs());
    detect.flush(FlushRequest {}).await.unwrap();

    let total = records.len() as u64;
    let i = ingest_stats(&tls, port("ingest")).await;
    assert_eq!(i.events_out, total, "ingest handed on every event");
    let d = detect_stats(&tls, port("detect")).await;
    assert!(
        d.gauges.get("replayed_entries").copied().unwrap_or(0.0) > 0.0,
        "detect's restart replayed its log: {d:#?}"
    );
    assert_eq!(
        d.events_in,
        total,
        "detect counted every acknowledged event exactly once across the kill\n{}",
        stack.logs()
    );
    wait_all_serving(&tls, port("health"), &stack, Duration::from_secs(60)).await;

    // The measured limits held.
    for s in SERVICES {
        assert_eq!(stack.inspect(s, "{{.State.OOMKilled}}"), "false", "{s}");
    }
    eprintln!(
        "compose: images and stack up in {:.0?}, {total} events pushed, whole test {:.0?}",
        up,
        started.elapsed()
    );
    drop(stack);
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}
