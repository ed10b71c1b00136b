//! Fixtures for trailhound's tests.
//!
//! [`Emulator`] is a local AWS emulator that tests point real AWS SDK
//! clients at, and [`Osmem`] a server of the OpenSearch API. Where a
//! Docker engine answers, both run as containers through testcontainers
//! (see [`containers`] for how the path is chosen and the images named);
//! elsewhere as local processes from the virtualenv `scripts/test-tools.sh`
//! installs. Both paths give the same fixture: an endpoint and, for AWS,
//! the matching [`AwsConfig`]. Each test gets its own emulator on a free
//! loopback port, so tests never share state.
//!
//! [`Emulator::start`] is moto (Organizations, DynamoDB and the rest);
//! [`Emulator::start_messaging`] serves the S3, SQS, SNS and CloudWatch
//! Logs suites, from LocalStack when `TRAILHOUND_LOCALSTACK_IMAGE` names
//! one, else moto as well. Organizations and DynamoDB stay on moto:
//! LocalStack's free edition has no Organizations, and its DynamoDB
//! downloads a jar at run time.
//!
//! [`FaultProxy`] goes between a client and the emulator to inject the
//! failures moto never produces: throttling, 5xx, access denied.

#![allow(clippy::expect_used)] // fixtures fail a test loudly, by design

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};
use trailhound_aws::AwsConfig;

pub mod containers;
pub mod fault;
pub mod osmem;
pub use fault::{FaultProxy, FaultRule};
pub use osmem::Osmem;

/// The region every emulator test uses.
pub const REGION: &str = "us-east-1";

/// A free port on 127.0.0.1 (bound and released; the race with another
/// process taking it is accepted in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The repository root (this crate is crates/testkit).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

enum Running {
    Process(Child),
    /// Held so the container lives as long as the fixture; its drop
    /// removes it.
    Container(#[allow(dead_code)] Box<ContainerAsync<GenericImage>>),
}

/// Which emulator answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Moto,
    LocalStack,
}

/// A running AWS emulator; stopped on drop.
pub struct Emulator {
    endpoint: String,
    kind: Kind,
    running: Running,
}

trailhound_core::debug_fields!(Emulator { endpoint, .. });

fn moto_server() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILHOUND_MOTO") {
        return PathBuf::from(p);
    }
    let local = repo_root().join(".cache/venv/bin/moto_server");
    if local.exists() {
        return local;
    }
    panic!(
        "moto_server not found: run scripts/test-tools.sh (it installs moto[server] into .cache/venv), or set TRAILHOUND_MOTO"
    );
}

async fn wait_for(endpoint: &str, what: &str) {
    let addr = endpoint.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {addr} after 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Emulator {
    /// Starts moto: a container where a Docker engine answers (image
    /// `TRAILHOUND_MOTO_IMAGE`, default `trailhound/moto:local`, which
    /// `scripts/moto-image.sh` builds offline; any moto image taking `-H
    /// HOST -p PORT` works), else a local moto_server process.
    pub async fn start() -> Emulator {
        match containers::choose("TRAILHOUND_MOTO_IMAGE", containers::MOTO_IMAGE, "moto") {
            containers::Path::Container(image) => Self::start_container(&image).await,
            containers::Path::Process => Self::start_process(),
        }
    }

    /// The emulator of the S3, SQS, SNS and CloudWatch Logs suites:
    /// LocalStack when `TRAILHOUND_LOCALSTACK_IMAGE` names an image (and
    /// containers are used), else [`Emulator::start`].
    pub async fn start_messaging() -> Emulator {
        if let Some(image) = containers::localstack_image() {
            return Self::start_localstack(&image).await;
        }
        Self::start().await
    }

    /// Which emulator this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The account the emulator puts in ARNs and queue URLs.
    pub fn account_id(&self) -> &'static str {
        match self.kind {
            Kind::Moto => "123456789012",
            Kind::LocalStack => "000000000000",
        }
    }

    fn start_process() -> Emulator {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for_blocking(&endpoint, "moto_server");
        Emulator {
            endpoint,
            kind: Kind::Moto,
            running: Running::Process(child),
        }
    }

    /// The container shares the host's network and listens on a free
    /// loopback port, exactly like the process: SNS's HTTP deliveries to
    /// a test's listener on 127.0.0.1 reach it, and endpoints look alike.
    async fn start_container(image: &str) -> Emulator {
        use testcontainers::ImageExt;
        let (name, tag) = containers::split(image);
        let port = free_port();
        let container = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::seconds(1))
            .with_network("host")
            .with_cmd(["-H", "127.0.0.1", "-p", &port.to_string()])
            .start()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "failed to start emulator container {image}: {e} (build it with scripts/moto-image.sh, or set TRAILHOUND_MOTO_IMAGE)"
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for(&endpoint, "emulator container").await;
        Emulator {
            endpoint,
            kind: Kind::Moto,
            running: Running::Container(Box::new(container)),
        }
    }

    /// LocalStack on the host's network, on a free loopback port, with
    /// only the services these suites use; queue URLs in path style on
    /// the same address, so nothing depends on its public DNS name.
    async fn start_localstack(image: &str) -> Emulator {
        use testcontainers::ImageExt;
        let (name, tag) = containers::split(image);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let container = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::seconds(1))
            .with_network("host")
            .with_env_var("GATEWAY_LISTEN", addr.clone())
            .with_env_var("LOCALSTACK_HOST", addr.clone())
            .with_env_var("SERVICES", "s3,sqs,sns,logs")
            .with_env_var("SQS_ENDPOINT_STRATEGY", "path")
            .with_startup_timeout(Duration::from_secs(180))
            .start()
            .await
            .unwrap_or_else(|e| panic!("failed to start LocalStack container {image}: {e}"));
        let endpoint = format!("http://{addr}");
        containers::wait_http(
            &format!("{endpoint}/_localstack/health"),
            "LocalStack",
            Duration::from_secs(180),
        )
        .await;
        Emulator {
            endpoint,
            kind: Kind::LocalStack,
            running: Running::Container(Box::new(container)),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `[aws]` configuration that points every client at this
    /// emulator, with emulator credentials and quick retries.
    pub fn aws_config(&self) -> AwsConfig {
        AwsConfig {
            region: Some(REGION.into()),
            endpoint_url: Some(self.endpoint.clone()),
            emulator: true,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            operation_timeout: Duration::from_secs(20),
            ..AwsConfig::default()
        }
    }

    /// Environment for a child process (the real `trailhound` binary)
    /// that should reach this emulator through its `[aws]` settings.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }
}

/// [`wait_for`] for the process path, which needs no runtime.
fn wait_for_blocking(endpoint: &str, what: &str) {
    let addr = endpoint.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {addr} after 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Running::Process(child) = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A container is removed by its own drop.
    }
}
