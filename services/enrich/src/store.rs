//! The persistent layer of the metadata cache, and its embedded
//! implementation (redb). The DynamoDB one is in [`crate::dynamo`].

use std::path::Path;

use async_trait::async_trait;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use trailhound_core::AccountMetadata;
use trailhound_runtime::store::{Db, Failure};

/// A cached lookup and when it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedEntry {
    pub metadata: AccountMetadata,
    /// Milliseconds since the Unix epoch.
    pub fetched_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded file failed.
    #[error("metadata store {path}: {message}")]
    Backend { path: String, message: String },
    /// An AWS call failed; the message names the action, the table and
    /// the fix.
    #[error("metadata store: {0}")]
    Aws(String),
    /// The DynamoDB table is missing or not shaped as the cache needs.
    #[error("metadata store: DynamoDB table {table} {message}")]
    Table { table: String, message: String },
}

/// Somewhere lookups survive a restart.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    async fn get(&self, account_id: &str) -> Result<Option<CachedEntry>, StoreError>;
    async fn put(&self, entry: &CachedEntry) -> Result<(), StoreError>;
}

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");

/// The embedded store: one redb file, values as JSON.
#[derive(Clone, Debug)]
pub struct RedbStore {
    db: Db,
}

impl From<Failure> for StoreError {
    fn from(Failure { path, message }: Failure) -> Self {
        StoreError::Backend { path, message }
    }
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, |w| w.open_table(ACCOUNTS).map(|_| ()))?;
        Ok(Self { db })
    }
}

#[async_trait]
impl MetadataStore for RedbStore {
    async fn get(&self, account_id: &str) -> Result<Option<CachedEntry>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.db.fail(e))?;
        let t = r.open_table(ACCOUNTS).map_err(|e| self.db.fail(e))?;
        match t.get(account_id).map_err(|e| self.db.fail(e))? {
            None => Ok(None),
            // A corrupt or old-format entry is a miss, not a failure.
            Some(v) => Ok(serde_json::from_slice(v.value()).ok()),
        }
    }

    async fn put(&self, entry: &CachedEntry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| self.db.fail(e))?;
        let mut w = self.db.begin_write().map_err(|e| self.db.fail(e))?;
        w.set_durability(redb::Durability::Eventual);
        {
            let mut t = w.open_table(ACCOUNTS).map_err(|e| self.db.fail(e))?;
            t.insert(entry.metadata.account_id.as_str(), bytes.as_slice())
                .map_err(|e| self.db.fail(e))?;
        }
        w.commit().map_err(|e| self.db.fail(e).into())
    }
}
