//! Whether a fixture runs as a container or a process, and from which
//! image.
//!
//! `TRAILHOUND_TEST_CONTAINERS=1` insists on containers (a missing engine
//! fails the test), `=0` on processes. Unset, containers are used where a
//! Docker engine answers and the image is there: one named by its variable
//! (`TRAILHOUND_MOTO_IMAGE`, `TRAILHOUND_OPENSEARCH_IMAGE`; a registry
//! image is pulled), or the default local image `scripts/test` builds
//! offline (`scripts/moto-image.sh`, `scripts/osmem-image.sh`). Otherwise
//! the process path runs, and says why once per test binary, so a machine
//! without Docker still runs every suite.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The moto image `scripts/moto-image.sh` builds.
pub const MOTO_IMAGE: &str = "trailhound/moto:local";
/// The osmem-server image `scripts/osmem-image.sh` builds.
pub const OSMEM_IMAGE: &str = "trailhound/osmem:local";

/// How one fixture runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    Container(String),
    Process,
}

/// Whether `docker info` succeeds, asked once per process.
pub fn docker_answers() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    *ANSWERS.get_or_init(|| {
        Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn forced() -> Option<bool> {
    match std::env::var("TRAILHOUND_TEST_CONTAINERS").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

/// Chooses the path for a fixture whose image is named by `var`, else
/// `default_image`; `what` names it in the one line saying why.
pub fn choose(var: &str, default_image: &str, what: &str) -> Path {
    let named = std::env::var(var).ok().filter(|v| !v.is_empty());
    let image = named.clone().unwrap_or_else(|| default_image.to_string());
    match forced() {
        Some(true) => Path::Container(image),
        Some(false) => Path::Process,
        None if !docker_answers() => {
            say_once(
                what,
                "no Docker engine answers: running it as a local process",
            );
            Path::Process
        }
        None if named.is_some() || image_present(&image) => Path::Container(image),
        None => {
            say_once(
                what,
                &format!(
                    "no image {image} (scripts/test builds it): running it as a local process"
                ),
            );
            Path::Process
        }
    }
}

/// The LocalStack image, when one is named and containers may run.
pub fn localstack_image() -> Option<String> {
    let image = std::env::var("TRAILHOUND_LOCALSTACK_IMAGE")
        .ok()
        .filter(|v| !v.is_empty())?;
    match forced() {
        Some(false) => None,
        Some(true) => Some(image),
        None => docker_answers().then_some(image),
    }
}

fn say_once(what: &str, why: &str) {
    static SAID: OnceLock<std::sync::Mutex<std::collections::BTreeSet<String>>> = OnceLock::new();
    let said = SAID.get_or_init(Default::default);
    if let Ok(mut said) = said.lock()
        && said.insert(what.to_string())
    {
        eprintln!("{what}: {why}");
    }
}

/// `name:tag` → (name, tag); `latest` when there is no tag. A registry
/// port (`host:5000/name`) is not mistaken for a tag.
pub fn split(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Polls `url` until it answers 200, for up to `limit`.
pub async fn wait_http(url: &str, what: &str, limit: Duration) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(5)).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not answer {url} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_name_and_tag() {
        assert_eq!(split("trailhound/moto:local"), ("trailhound/moto", "local"));
        assert_eq!(
            split("localstack/localstack"),
            ("localstack/localstack", "latest")
        );
        assert_eq!(
            split("registry:5000/opensearchproject/opensearch"),
            ("registry:5000/opensearchproject/opensearch", "latest")
        );
        assert_eq!(
            split("registry:5000/opensearch:2.19.1"),
            ("registry:5000/opensearch", "2.19.1")
        );
    }
}
