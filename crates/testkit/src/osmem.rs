//! A real, independent server of the core OpenSearch API for the
//! OpenSearch backend's tests: `osmem-server` from PyPI (in-memory index,
//! mappings, `_bulk`, `_search` with aggregations, `_index_template`),
//! installed into `.cache/venv` by `scripts/test-tools.sh`. Each fixture is
//! its own process on a free loopback port, so tests never share indices.
//! The server exits when its stdin closes, so even a test that panics
//! before the drop leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::repo_root;

/// A running osmem-server; stopped on drop.
pub struct Osmem {
    url: String,
    child: Child,
}

impl std::fmt::Debug for Osmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Osmem").field("url", &self.url).finish()
    }
}

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
    /// Starts a server and waits until it reports its address.
    pub fn start() -> Osmem {
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
        Osmem { url, child }
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
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
