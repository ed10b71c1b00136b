//! Where account metadata comes from.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use trailhound_core::account::{OrgAccount, OrgSnapshot, SnapshotError};

/// A failed lookup. `retryable` separates throttling and outages from
/// access denied and misconfiguration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("account source {source_name}: {message}")]
pub struct SourceError {
    pub source_name: String,
    pub message: String,
    pub retryable: bool,
}

/// Throttling and outages are UNAVAILABLE (worth a retry); access denied
/// and misconfiguration are not.
impl trailhound_runtime::status::ServiceError for SourceError {
    fn error_code(&self) -> trailhound_runtime::status::ErrorCode {
        if self.retryable {
            trailhound_runtime::status::ErrorCode::Unavailable
        } else {
            trailhound_runtime::status::ErrorCode::Internal
        }
    }
}

/// The organization's account directory.
#[async_trait]
pub trait AccountSource: Send + Sync {
    /// A short name for logs: "snapshot", "organizations".
    fn name(&self) -> &str;
    /// The organization id, e.g. "o-a1b2c3d4e5".
    fn organization_id(&self) -> &str;
    /// One account, or None when it is not in the organization.
    async fn account(&self, account_id: &str) -> Result<Option<OrgAccount>, SourceError>;
    /// Every account.
    async fn accounts(&self) -> Result<Vec<OrgAccount>, SourceError>;
}

/// The embedded source: an org snapshot JSON file, read once.
#[derive(Debug)]
pub struct SnapshotSource {
    organization_id: String,
    accounts: HashMap<String, OrgAccount>,
}

impl SnapshotSource {
    pub fn load(path: &Path) -> Result<Self, SnapshotError> {
        Ok(Self::from_snapshot(OrgSnapshot::load(path)?))
    }

    pub fn from_snapshot(snapshot: OrgSnapshot) -> Self {
        Self {
            organization_id: snapshot.organization_id,
            accounts: snapshot
                .accounts
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
        }
    }

    /// An organization with no accounts: every account is external.
    pub fn empty() -> Self {
        Self {
            organization_id: String::new(),
            accounts: HashMap::new(),
        }
    }
}

#[async_trait]
impl AccountSource for SnapshotSource {
    fn name(&self) -> &str {
        "snapshot"
    }
    fn organization_id(&self) -> &str {
        &self.organization_id
    }
    async fn account(&self, account_id: &str) -> Result<Option<OrgAccount>, SourceError> {
        Ok(self.accounts.get(account_id).cloned())
    }
    async fn accounts(&self) -> Result<Vec<OrgAccount>, SourceError> {
        let mut v: Vec<_> = self.accounts.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
}
