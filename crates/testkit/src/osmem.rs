//! A real, independent server of the core OpenSearch API for the
//! OpenSearch backend's tests: `osmem-server` from PyPI (in-memory index,
//! mappings, `_bulk`, `_search` with aggregations, `_index_template`),
//! installed into `.cache/venv` by `scripts/test-tools.sh`. Each fixture is
//! its own server on a free loopback port, so tests never share indices.
//!
//! Where a Docker engine answers it runs as a container (see
//! [`crate::containers`]): `TRAILHOUND_OPENSEARCH_IMAGE`, default
//! `trailhound/osmem:local` (`scripts/osmem-image.sh` builds it offline
//! from the wheel's static binary). An image that is not osmem's is taken
//! for OpenSearch itself (`opensearchproject/opensearch:2.x`, which
//! bundles the Anomaly Detection plugin) and started as a single node
//! without the security plugin: the same suites then run against the real
//! thing. Elsewhere the server is a local process, which exits when its
//! stdin closes, so even a test that panics before the drop leaves nothing
//! behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::containers::{self, Path};
use crate::{free_port, repo_root};

enum Running {
    Process(Child),
    /// Held so the container lives as long as the fixture.
    Container(#[allow(dead_code)] Box<ContainerAsync<GenericImage>>),
}

/// A running osmem-server (or OpenSearch); stopped on drop.
pub struct Osmem {
    url: String,
    real: bool,
    running: Running,
}

trailhound_core::debug_fields!(Osmem { url });

/// The server binary: `TRAILHOUND_OSMEM`, else the one the PyPI wheel
/// ships inside the test virtualenv.
pub fn osmem_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILHOUND_OSMEM") {
        return PathBuf::from(p);
    }
    let lib = repo_root().join(".cache/venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/osmem_server/bin/osmem-server");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "osmem-server not found: run scripts/test-tools.sh (it installs osmem-server into .cache/venv), or set TRAILHOUND_OSMEM"
    );
}

impl Osmem {
    /// Starts a server (container or process) and waits until it answers.
    pub async fn start() -> Osmem {
        match containers::choose(
            "TRAILHOUND_OPENSEARCH_IMAGE",
            containers::OSMEM_IMAGE,
            "osmem-server",
        ) {
            Path::Container(image) => Self::start_container(&image).await,
            Path::Process => Self::start_process(),
        }
    }

    /// Whether this is OpenSearch itself rather than osmem-server.
    pub fn is_opensearch(&self) -> bool {
        self.real
    }

    async fn start_container(image: &str) -> Osmem {
        let (name, tag) = containers::split(image);
        let real = !name.rsplit('/').next().unwrap_or(name).contains("osmem");
        let port = free_port();
        let request = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::seconds(1))
            .with_network("host");
        let request = if real {
            request
                .with_env_var("discovery.type", "single-node")
                .with_env_var("network.host", "127.0.0.1")
                .with_env_var("http.port", port.to_string())
                .with_env_var("transport.port", free_port().to_string())
                .with_env_var("DISABLE_SECURITY_PLUGIN", "true")
                .with_env_var("DISABLE_INSTALL_DEMO_CONFIG", "true")
                .with_env_var("OPENSEARCH_INITIAL_ADMIN_PASSWORD", "Trailhound-Test-1!")
                .with_env_var("OPENSEARCH_JAVA_OPTS", "-Xms512m -Xmx512m")
                .with_startup_timeout(Duration::from_secs(240))
        } else {
            request.with_cmd(["--addr", &format!("127.0.0.1:{port}"), "--no-ja"])
        };
        let container = request.start().await.unwrap_or_else(|e| {
            panic!("failed to start {image}: {e} (scripts/osmem-image.sh builds trailhound/osmem:local)")
        });
        let url = format!("http://127.0.0.1:{port}");
        let ready = if real {
            format!("{url}/_cluster/health?wait_for_status=yellow&timeout=5s")
        } else {
            format!("{url}/")
        };
        let limit = Duration::from_secs(if real { 240 } else { 30 });
        containers::wait_http(&ready, image, limit).await;
        Osmem {
            url,
            real,
            running: Running::Container(Box::new(container)),
        }
    }

    fn start_process() -> Osmem {
        let mut child = Command::new(osmem_binary())
            .args(["--addr", "127.0.0.1:0", "--no-ja"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start osmem-server");
        let stdout = child.stdout.take().expect("osmem-server stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                let url = serde_url(&line);
                if let Some(u) = url {
                    let _ = tx.send(u);
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("osmem-server did not report its address within 30 s");
        Osmem {
            url,
            real: false,
            running: Running::Process(child),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The `url` of the server's ready line (`{"url":"http://…",…}`).
fn serde_url(line: &str) -> Option<String> {
    let i = line.find("\"url\"")?;
    let rest = &line[i + 5..];
    let start = rest.find('"')? + 1;
    let end = rest[start..].find('"')? + start;
    Some(rest[start..end].to_string())
}

impl Drop for Osmem {
    fn drop(&mut self) {
        if let Running::Process(child) = &mut self.running {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
