//! Starting services as child processes on free loopback ports, waiting
//! until they are ready, and stopping them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub use trailhound_testkit::free_port;

/// Runs `command` to its end; a test failure, with its stderr, unless it
/// succeeded (`what` names it in either message).
pub fn run_ok(command: &mut Command, what: &str) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn trailhound_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trailhound"))
}

/// A child process killed on drop, with its stderr kept in a file so a
/// failing test can show it.
pub struct Service {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Service {
    /// Starts `trailhound <args>` with its data in `data_dir`.
    pub fn start(name: &str, data_dir: &Path, args: &[&str]) -> Service {
        Self::start_with(name, data_dir, args, |_| {})
    }

    /// [`Service::start`], with `configure` adding to the command (its
    /// environment, above all) before it is spawned.
    pub fn start_with(
        name: &str,
        data_dir: &Path,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Service {
        std::fs::create_dir_all(data_dir).expect("create service data dir");
        let log = data_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let mut command = Command::new(trailhound_bin());
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("TRAILHOUND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        configure(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start trailhound {name}: {e}"));
        Service {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process hard (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.child
            .kill()
            .unwrap_or_else(|e| panic!("kill {}: {e}", self.name));
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM (graceful) and waits for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until the gRPC health service at `port` reports SERVING.
pub async fn wait_ready(service: &mut Service, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let endpoint = format!("http://127.0.0.1:{port}");
    loop {
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!(
                "{} exited with {status} before it was ready:\n{}",
                service.name,
                service.logs()
            );
        }
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
        {
            let ok = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status == 1)
                .unwrap_or(false);
            if ok {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!("{} not ready after 30s:\n{}", service.name, service.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ingest, enrich and detect as three processes, wired to each other.
pub struct Pipeline {
    pub ingest: Service,
    pub enrich: Service,
    pub detect: Service,
    pub ingest_port: u16,
    pub enrich_port: u16,
    pub detect_port: u16,
    /// enrich's command line, to start it again after a kill.
    pub enrich_args: Vec<String>,
    /// detect's command line, likewise.
    pub detect_args: Vec<String>,
}

impl Pipeline {
    pub async fn start(data_dir: &Path, org: &Path) -> Pipeline {
        Self::start_with(data_dir, org, &[]).await
    }

    /// Like [`Pipeline::start`], with more flags for ingest.
    pub async fn start_with(data_dir: &Path, org: &Path, ingest_flags: &[&str]) -> Pipeline {
        let (ip, ep, dp) = (free_port(), free_port(), free_port());
        let detect_args: Vec<String> = vec![
            "detect".into(),
            "--detect-listen".into(),
            format!("127.0.0.1:{dp}"),
        ];
        let args: Vec<&str> = detect_args.iter().map(String::as_str).collect();
        let mut detect = Service::start("detect", &data_dir.join("detect"), &args);
        let enrich_args: Vec<String> = vec![
            "enrich".into(),
            "--enrich-listen".into(),
            format!("127.0.0.1:{ep}"),
            "--detect-endpoint".into(),
            format!("http://127.0.0.1:{dp}"),
            "--org".into(),
            org.display().to_string(),
        ];
        let args: Vec<&str> = enrich_args.iter().map(String::as_str).collect();
        let mut enrich = Service::start("enrich", &data_dir.join("enrich"), &args);
        let ingest_listen = format!("127.0.0.1:{ip}");
        let enrich_endpoint = format!("http://127.0.0.1:{ep}");
        let mut ingest_args = vec![
            "ingest",
            "--ingest-listen",
            &ingest_listen,
            "--enrich-endpoint",
            &enrich_endpoint,
        ];
        ingest_args.extend_from_slice(ingest_flags);
        let mut ingest = Service::start("ingest", &data_dir.join("ingest"), &ingest_args);
        wait_ready(&mut detect, dp).await;
        wait_ready(&mut enrich, ep).await;
        wait_ready(&mut ingest, ip).await;
        Pipeline {
            ingest,
            enrich,
            detect,
            ingest_port: ip,
            enrich_port: ep,
            detect_port: dp,
            enrich_args,
            detect_args,
        }
    }

    /// Starts `service` (enrich or detect) again as `name`, with its data
    /// in `data_dir/<service>` and its command line and port as before, and
    /// waits until it is ready.
    pub async fn start_again(&self, service: &str, data_dir: &Path, name: &str) -> Service {
        let (args, port) = match service {
            "enrich" => (&self.enrich_args, self.enrich_port),
            "detect" => (&self.detect_args, self.detect_port),
            other => panic!("{other} is not restartable"),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut s = Service::start(name, &data_dir.join(service), &args);
        wait_ready(&mut s, port).await;
        s
    }

    pub fn logs(&self) -> String {
        format!(
            "--- ingest ---\n{}\n--- enrich ---\n{}\n--- detect ---\n{}",
            self.ingest.logs(),
            self.enrich.logs(),
            self.detect.logs()
        )
    }
}

/// Every file under `dir`, at any depth, by path; none when `dir` does
/// not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `trailhound detect --input` over a generated organization's trail (`org`
/// holds org.json and trail/): its anomalies, in the order printed.
/// Asserts no event was late.
pub fn replay(org: &Path) -> Vec<trailhound_core::Anomaly> {
    let out = run_ok(
        Command::new(trailhound_bin())
            .args(["--log", "warn", "detect", "--org"])
            .arg(org.join("org.json"))
            .arg("--input")
            .arg(org.join("trail")),
        "the replay",
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(" 0 late"), "{summary}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("anomaly json"))
        .collect()
}

/// Each delivery group's records in time order, as raw JSON: how a client
/// replays a trail through PushEvents.
pub fn trail_records(trail: &Path) -> Vec<String> {
    let limits = trailhound_core::ParseLimits::default();
    let mut out = Vec::new();
    for g in trailhound_trail::files::delivery_groups(trail).expect("read trail") {
        let parsed = trailhound_trail::read::parse_group(&g.files, &limits);
        assert!(
            parsed.rejections.is_empty(),
            "generated trail has bad records: {:?}",
            parsed.rejections.first()
        );
        out.extend(parsed.events.into_iter().map(|e| e.raw));
    }
    out
}

/// The cryptomining burst the generator injects into every org: the
/// incident most of these tests push and look for.
pub fn cryptomining(labels: &trailhound_generate::Labels) -> trailhound_generate::Incident {
    labels
        .incidents
        .iter()
        .find(|i| i.kind == trailhound_generate::IncidentKind::Cryptomining)
        .expect("the generator injects a cryptomining burst")
        .clone()
}

/// A generated organization in a temp dir.
pub fn generated_org(
    dir: &Path,
    days: u32,
    accounts: u32,
    seed: u64,
    noise_per_account_hour: u32,
) -> trailhound_generate::Labels {
    let cfg = trailhound_generate::GenerateConfig {
        days,
        accounts,
        seed,
        noise_per_account_hour,
        ..Default::default()
    };
    trailhound_generate::generate(&cfg, dir).expect("generate");
    trailhound_generate::read_labels(&dir.join("labels.json")).expect("labels")
}
