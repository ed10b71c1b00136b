//! The `[opensearch]` section of the config file.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How requests are authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", deny_unknown_fields)]
pub enum Auth {
    /// No credentials (a local cluster, or one behind a proxy that adds them).
    #[default]
    None,
    /// HTTP basic authentication (the security plugin's internal users).
    Basic { username: String, password: String },
    /// AWS SigV4 with the credentials of the `[aws]` section's chain:
    /// service `es` for Amazon OpenSearch Service domains, `aoss` for
    /// OpenSearch Serverless collections.
    Sigv4 {
        #[serde(default = "default_sigv4_service")]
        service: String,
        /// Region of the domain; default the `[aws]` region.
        #[serde(default)]
        region: Option<String>,
    },
}

fn default_sigv4_service() -> String {
    "es".into()
}

/// Daily indices (`cwl-multiaccounts-2026.01.05`) or one write alias that
/// an ISM policy rolls over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexMode {
    #[default]
    Daily,
    Rollover,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenSearchConfig {
    /// Cluster nodes, tried in turn (`https://search-x.us-east-1.es.amazonaws.com`).
    pub urls: Vec<String>,
    pub auth: Auth,
    /// PEM file of the CA that signed the cluster's certificate, for
    /// clusters with a private CA.
    pub ca_cert: Option<PathBuf>,
    /// Longest one HTTP request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts per request on 429, 502, 503, 504 and connection errors,
    /// the first included, with exponential backoff.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Index name prefix; indices are `<prefix>-YYYY.MM.DD` (daily) or the
    /// alias `<prefix>-write` (rollover). The template covers `<prefix>-*`.
    pub index_prefix: String,
    pub index_mode: IndexMode,
    /// Rollover mode: the ISM policy rolls the write index over once it is
    /// this old (ISM time units: `1d`, `12h`) …
    pub rollover_min_index_age: String,
    /// … or its primary shards are this large (`30gb`), whichever first.
    pub rollover_min_primary_shard_size: String,
    pub shards: u32,
    pub replicas: u32,
    /// Largest `_bulk` body; batches are split to stay under it.
    pub bulk_max_bytes: usize,
    /// `_bulk` requests in flight at once; further batches wait, which
    /// slows ingest down instead of dropping events.
    pub bulk_concurrency: usize,
    /// Where items the cluster refused for good are written, one JSON line
    /// each with the reason; default `<data-dir>/opensearch-dead-letters.jsonl`.
    pub dead_letter_path: Option<PathBuf>,
    /// Index the emitted anomalies go to, for ListAnomalies and dashboards.
    pub anomaly_index: String,
    /// A custom result index for the AD plugin (must start with
    /// `opensearch-ad-plugin-result-`); default the plugin's own.
    pub result_index: Option<String>,
    /// How often anomaly results are polled.
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
    /// Shingle size of the detectors (the plugin's default is 8).
    pub shingle_size: u32,
    /// High-cardinality detectors the cluster allows
    /// (`plugins.anomaly_detection.max_multi_entity_anomaly_detectors`).
    pub max_hc_detectors: usize,
    /// The emitted-results checkpoint; default `<data-dir>/opensearch.redb`.
    pub checkpoint_path: Option<PathBuf>,
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:9200".into()],
            auth: Auth::None,
            ca_cert: None,
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            index_prefix: "cwl-multiaccounts".into(),
            index_mode: IndexMode::Daily,
            rollover_min_index_age: "1d".into(),
            rollover_min_primary_shard_size: "30gb".into(),
            shards: 1,
            replicas: 1,
            bulk_max_bytes: 5 << 20,
            bulk_concurrency: 2,
            dead_letter_path: None,
            anomaly_index: "trailhound-anomalies".into(),
            result_index: None,
            poll_every: Duration::from_secs(30),
            shingle_size: 8,
            max_hc_detectors: 10,
            checkpoint_path: None,
        }
    }
}

impl OpenSearchConfig {
    /// Checks what serde cannot, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("urls: name at least one node".into());
        }
        for u in &self.urls {
            match opensearch::http::Url::parse(u) {
                Ok(url) if url.scheme() == "http" || url.scheme() == "https" => {}
                _ => return Err(format!("urls: {u:?} is not an http(s) URL")),
            }
        }
        if let Auth::Sigv4 { service, .. } = &self.auth
            && service != "es"
            && service != "aoss"
        {
            return Err(format!(
                "auth.service: {service:?} must be \"es\" (OpenSearch Service) or \"aoss\" (Serverless)"
            ));
        }
        if self.max_attempts == 0 || self.bulk_concurrency == 0 {
            return Err("max_attempts and bulk_concurrency must be at least 1".into());
        }
        if self.bulk_max_bytes < 1024 {
            return Err("bulk_max_bytes must be at least 1024".into());
        }
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !valid_name(&self.index_prefix) {
            return Err(format!(
                "index_prefix: {:?} must be lowercase a-z, 0-9, - or _",
                self.index_prefix
            ));
        }
        if !valid_name(&self.anomaly_index) {
            return Err(format!(
                "anomaly_index: {:?} must be lowercase a-z, 0-9, - or _",
                self.anomaly_index
            ));
        }
        if let Some(r) = &self.result_index
            && !r.starts_with("opensearch-ad-plugin-result-")
        {
            return Err(format!(
                "result_index: {r:?} must start with opensearch-ad-plugin-result- (the plugin's rule)"
            ));
        }
        if !(1..=60).contains(&self.shingle_size) {
            return Err("shingle_size must be within 1..=60".into());
        }
        Ok(())
    }

    /// The pattern the index template and the detectors cover.
    pub fn index_pattern(&self) -> String {
        format!("{}-*", self.index_prefix)
    }

    pub fn dead_letter_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.dead_letter_path
            .clone()
            .unwrap_or_else(|| data_dir.join("opensearch-dead-letters.jsonl"))
    }

    pub fn checkpoint_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.checkpoint_path
            .clone()
            .unwrap_or_else(|| data_dir.join("opensearch.redb"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_shapes_and_validation() {
        let c: OpenSearchConfig = toml::from_str(
            r#"
            urls = ["https://search-a.us-east-1.es.amazonaws.com"]
            auth = { kind = "sigv4", service = "aoss" }
            request_timeout = "10s"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.auth,
            Auth::Sigv4 {
                service: "aoss".into(),
                region: None
            }
        );
        let bad = OpenSearchConfig {
            auth: Auth::Sigv4 {
                service: "s3".into(),
                region: None,
            },
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("auth.service"));
        let bad = OpenSearchConfig {
            urls: vec!["ftp://x".into()],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("urls"));
        assert!(toml::from_str::<OpenSearchConfig>("urlz = []").is_err());
    }
}
