//! enrich's configuration: the `[enrich]` section of the config file, plus
//! the shared `[aws]` section when a backend is on AWS.
//!
//! Which source and which cache run is configuration, not code: `source`
//! picks the org snapshot file or the Organizations API, `cache` the
//! embedded redb file or a DynamoDB table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trailhound_aws::AwsConfig;
use trailhound_core::EnvironmentRules;

/// Where account metadata comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The org snapshot file (`org_snapshot`, `--org`).
    #[default]
    Snapshot,
    /// The AWS Organizations API, through the `[aws]` section.
    Organizations,
}

/// Where lookups persist between restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// An embedded redb file (`cache_path`).
    #[default]
    Redb,
    /// A DynamoDB table (`dynamodb_table`), through the `[aws]` section.
    Dynamodb,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// detect's gRPC endpoint, where enriched events go. Several,
    /// comma-separated, are detect replicas started with `--shard I/N`,
    /// listed in shard order (0 first): each gets its accounts' events.
    pub detect_endpoint: String,
    /// With several detect replicas: how long one that does not answer is
    /// retried before its share is spooled under the data dir (the others
    /// go on meanwhile; the spool is sent on when it is back).
    #[serde(with = "humantime_serde")]
    pub replica_patience: Duration,
    /// Where account metadata comes from: "snapshot" or "organizations".
    pub source: SourceKind,
    /// The org snapshot JSON file (the embedded account source). Without
    /// one, every account is external.
    pub org_snapshot: Option<PathBuf>,
    /// The persistent cache: "redb" or "dynamodb".
    pub cache: CacheKind,
    /// The embedded persistent cache file; default `<data-dir>/enrich-cache.redb`.
    pub cache_path: Option<PathBuf>,
    /// The DynamoDB table of the cache (`cache = "dynamodb"`).
    pub dynamodb_table: String,
    /// Create the DynamoDB table, its indexes and TTL when it is missing.
    pub create_table: bool,
    /// How long a lookup is served from memory.
    #[serde(with = "humantime_serde")]
    pub memory_ttl: Duration,
    /// Accounts the memory layer holds at most (expired entries, then the
    /// soonest to expire, make room).
    pub memory_max_entries: usize,
    /// How long a persisted lookup is trusted before the source is asked again.
    #[serde(with = "humantime_serde")]
    pub store_ttl: Duration,
    /// How long a persisted lookup past `store_ttl` is still served while it
    /// is refreshed in the background; DynamoDB's TTL deletes it after this.
    #[serde(with = "humantime_serde")]
    pub store_max_age: Duration,
    /// How environments, teams and cost centers are derived.
    pub rules: EnvironmentRules,
    /// The `[aws]` section, read beside `[enrich]` by `EnrichArgs::config`.
    #[serde(skip)]
    pub aws: AwsConfig,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            detect_endpoint: "http://127.0.0.1:50053".into(),
            replica_patience: Duration::from_secs(10),
            source: SourceKind::default(),
            org_snapshot: None,
            cache: CacheKind::default(),
            cache_path: None,
            dynamodb_table: "trailhound-account-metadata".into(),
            create_table: false,
            memory_ttl: Duration::from_secs(3600),
            memory_max_entries: crate::enricher::DEFAULT_MEMORY_MAX_ENTRIES,
            store_ttl: Duration::from_secs(24 * 3600),
            store_max_age: Duration::from_secs(7 * 24 * 3600),
            rules: EnvironmentRules::default(),
            aws: AwsConfig::default(),
        }
    }
}

impl EnrichConfig {
    /// The detect replicas, in shard order.
    pub fn detect_endpoints(&self) -> Vec<String> {
        self.detect_endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect()
    }
    pub fn cache_path(&self, data_dir: &Path) -> PathBuf {
        self.cache_path
            .clone()
            .unwrap_or_else(|| data_dir.join("enrich-cache.redb"))
    }

    /// Whether any backend needs AWS.
    pub fn uses_aws(&self) -> bool {
        self.source == SourceKind::Organizations || self.cache == CacheKind::Dynamodb
    }

    /// Rejects combinations that cannot be what was meant.
    pub fn validate(&self) -> Result<(), String> {
        if self.detect_endpoints().is_empty() {
            return Err("[enrich] detect_endpoint is empty: name detect's endpoint (or its replicas', comma-separated)".into());
        }
        if self.source == SourceKind::Organizations
            && let Some(p) = &self.org_snapshot
        {
            return Err(format!(
                "[enrich] source = \"organizations\" but an org snapshot is set too ({}): drop org_snapshot / --org, or use source = \"snapshot\"",
                p.display()
            ));
        }
        if self.cache == CacheKind::Dynamodb && self.dynamodb_table.trim().is_empty() {
            return Err("[enrich] cache = \"dynamodb\" needs dynamodb_table".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_configuration() -> anyhow::Result<()> {
        let c: EnrichConfig = toml::from_str(
            r#"
            source = "organizations"
            cache = "dynamodb"
            dynamodb_table = "accounts"
            create_table = true
            store_ttl = "12h"
            store_max_age = "3d"
            "#,
        )?;
        assert_eq!(c.source, SourceKind::Organizations);
        assert_eq!(c.cache, CacheKind::Dynamodb);
        assert_eq!(c.dynamodb_table, "accounts");
        assert!(c.create_table && c.uses_aws());
        assert_eq!(c.store_max_age, Duration::from_secs(3 * 24 * 3600));
        c.validate().map_err(anyhow::Error::msg)?;
        assert!(!EnrichConfig::default().uses_aws());
        Ok(())
    }

    #[test]
    fn nonsense_is_rejected() {
        assert!(toml::from_str::<EnrichConfig>(r#"source = "ldap""#).is_err());
        assert!(toml::from_str::<EnrichConfig>(r#"cache = "memcached""#).is_err());
        // [aws] is its own section, never a key of [enrich].
        assert!(toml::from_str::<EnrichConfig>("aws = {}").is_err());
        let both = EnrichConfig {
            source: SourceKind::Organizations,
            org_snapshot: Some("org.json".into()),
            ..Default::default()
        };
        let e = both.validate().err().unwrap_or_default();
        assert!(e.contains("org.json") && e.contains("organizations"), "{e}");
    }
}
