//! The DynamoDB metadata cache: the persistent layer shared by every enrich
//! instance of a deployment, so a restart or a new replica does not ask
//! Organizations again for accounts already known.
//!
//! # Table schema
//!
//! | attribute        | type | what |
//! |------------------|------|------|
//! | `accountId`      | S    | partition key (no sort key) |
//! | `accountName`    | S    | account name |
//! | `environment`    | S    | production, staging, development, testing, sandbox or unknown |
//! | `ou`             | S    | OU path joined with `/`: `Root/Workloads/Production` |
//! | `team`           | S    | from the team tags |
//! | `costCenter`     | S    | from the cost-center tags |
//! | `organizationId` | S    | `o-…` |
//! | `known`          | BOOL | false for accounts outside the organization |
//! | `metadata`       | S    | the whole `AccountMetadata` as JSON: what lookups read |
//! | `fetchedAt`      | N    | when the source was asked, ms since the epoch |
//! | `expiresAt`      | N    | the TTL attribute, epoch **seconds**: DynamoDB deletes the item after it |
//!
//! Global secondary indexes, each projecting all attributes, with
//! `accountId` as sort key: `environment-index` (`environment`), `ou-index`
//! (`ou`), `team-index` (`team`). The indexed attributes are top-level
//! attributes, not fields of a nested map, because DynamoDB indexes only
//! top-level attributes (the reference implementation nests them and its
//! indexes stay empty). DynamoDB rejects an empty string as an index key,
//! so `ou`, `team`, `accountName` and `costCenter` are left out when empty:
//! the indexes are sparse (external accounts have no `ou` or `team`).
//!
//! Freshness is the enricher's business (`store_ttl`, `store_max_age`);
//! `expiresAt` is `fetchedAt` plus the configured expiry (the enricher's
//! `store_max_age`), after which DynamoDB's TTL deletes the item. TTL
//! deletion lags (up to days), so [`MetadataStore::get`] treats an item
//! past `expiresAt` as absent.
//!
//! With `create_if_missing` the table is created on start-up (on-demand
//! billing, the indexes above), waited for until ACTIVE, and TTL is enabled
//! on `expiresAt`. An existing table is checked with DescribeTable: a
//! different key schema is an error naming the table and the difference,
//! because writing to it would fail on every put; missing indexes or TTL
//! only warn, since lookups work without them.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use trailhound_aws::Aws;
use trailhound_core::AccountMetadata;

use crate::store::{CachedEntry, MetadataStore, StoreError};

/// The partition key.
pub const KEY: &str = "accountId";
/// The TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expiresAt";
/// The secondary indexes: (index name, partition key attribute).
pub const INDEXES: [(&str, &str); 3] = [
    ("environment-index", "environment"),
    ("ou-index", "ou"),
    ("team-index", "team"),
];

/// How long creating a table may take before start-up gives up.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and how the cache lives.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamoOptions {
    pub table: String,
    /// Create the table (with indexes and TTL) when it does not exist.
    pub create_if_missing: bool,
    /// `expiresAt` = `fetchedAt` + this.
    pub expire_after: Duration,
}

/// The DynamoDB implementation of [`MetadataStore`].
pub struct DynamoStore {
    client: Client,
    limiter: std::sync::Arc<Semaphore>,
    table: String,
    expire_after: Duration,
    /// `[aws] max_attempts`, for messages.
    attempts: u32,
}

trailhound_core::debug_fields!(DynamoStore { table, .. });

fn aws_error<E, R>(e: &SdkError<E, R>, attempts: u32, action: &str, table: &str) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    let mut message =
        trailhound_aws::explain(e, &format!("dynamodb:{action}"), &format!("table {table}"));
    if trailhound_aws::is_retryable(e) && attempts > 1 {
        message.push_str(&format!(
            " (gave up after {attempts} attempts, [aws] max_attempts)"
        ));
    }
    StoreError::Aws(message)
}

impl DynamoStore {
    /// Opens the cache table, creating it when asked to and it is missing,
    /// and checks its key schema.
    pub async fn open(aws: &Aws, options: &DynamoOptions) -> Result<Self, StoreError> {
        let store = Self {
            client: Client::new(&aws.sdk_config("dynamodb")),
            limiter: aws.limiter(),
            table: options.table.clone(),
            expire_after: options.expire_after,
            attempts: aws.config().max_attempts,
        };
        if store.table.is_empty() {
            return Err(store.table_error("no table name: set [enrich] dynamodb_table".into()));
        }
        match store.describe().await? {
            Some(table) => store.check(&table, &aws.region())?,
            None if options.create_if_missing => store.create().await?,
            None => {
                return Err(store.table_error(format!(
                    "does not exist in region {}: check [aws] region, create it (partition key {KEY} of type S, see the schema in the enrich docs) or set [enrich] create_table = true",
                    aws.region()
                )));
            }
        }
        store.wait_active().await?;
        store.check_ttl().await;
        Ok(store)
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn error<E, R>(&self, e: &SdkError<E, R>, action: &str) -> StoreError
    where
        E: ProvideErrorMetadata + StdError + 'static,
        R: std::fmt::Debug + 'static,
    {
        aws_error(e, self.attempts, action, &self.table)
    }

    fn table_error(&self, message: String) -> StoreError {
        StoreError::Table {
            table: self.table.clone(),
            message,
        }
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        self.limiter
            .acquire()
            .await
            .map_err(|_| StoreError::Aws("the concurrency limiter was closed".into()))
    }

    async fn describe(
        &self,
    ) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, StoreError> {
        let _p = self.permit().await?;
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table().cloned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(&e, "DescribeTable")),
        }
    }

    /// The key schema must be exactly `accountId` (S) as partition key.
    fn check(
        &self,
        table: &aws_sdk_dynamodb::types::TableDescription,
        region: &str,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = table
            .key_schema()
            .iter()
            .map(|k| {
                let ty = table
                    .attribute_definitions()
                    .iter()
                    .find(|d| d.attribute_name() == k.attribute_name())
                    .map(|d| d.attribute_type().as_str())
                    .unwrap_or("?");
                format!("{} {} ({ty})", k.key_type().as_str(), k.attribute_name())
            })
            .collect();
        let expected = format!("HASH {KEY} (S)");
        if keys != [expected.as_str()] {
            return Err(self.table_error(format!(
                "has key schema [{}] in region {region}, but trailhound's metadata cache needs partition key {KEY} of type S and no sort key: point [enrich] dynamodb_table at another table (create_table = true creates it) or recreate this one",
                keys.join(", ")
            )));
        }
        let present: Vec<&str> = table
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| i.index_name())
            .collect();
        let missing: Vec<&str> = INDEXES
            .iter()
            .map(|(name, _)| *name)
            .filter(|n| !present.contains(n))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                table = %self.table,
                missing = ?missing,
                "the metadata cache table lacks secondary indexes: lookups work, queries by environment, OU or team do not"
            );
        }
        Ok(())
    }

    async fn create(&self) -> Result<(), StoreError> {
        let built = |e: aws_sdk_dynamodb::error::BuildError| {
            self.table_error(format!("failed to build the CreateTable request: {e}"))
        };
        let key = |name: &str, ty: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(ty)
                .build()
                .map_err(built)
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(built)
        };
        let mut request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(KEY, KeyType::Hash)?)
            .attribute_definitions(attribute(KEY)?);
        for (index, attr) in INDEXES {
            request = request
                .attribute_definitions(attribute(attr)?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index)
                        .key_schema(key(attr, KeyType::Hash)?)
                        .key_schema(key(KEY, KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::All)
                                .build(),
                        )
                        .build()
                        .map_err(built)?,
                );
        }
        let created = {
            let _p = self.permit().await?;
            request.send().await
        };
        match created {
            Ok(_) => tracing::info!(table = %self.table, "created the metadata cache table"),
            // Another instance created it first.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => return Err(self.error(&e, "CreateTable")),
        }
        self.wait_active().await?;
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(built)?;
        let _p = self.permit().await?;
        match self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already enabled (by the instance that created the table).
            Err(e) if e.code() == Some("ValidationException") => {
                tracing::debug!(error = %self.error(&e, "UpdateTimeToLive"), "TTL not changed");
                Ok(())
            }
            Err(e) => Err(self.error(&e, "UpdateTimeToLive")),
        }
    }

    async fn wait_active(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut delay = trailhound_runtime::retry::Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        loop {
            let status = self
                .describe()
                .await?
                .and_then(|t| t.table_status().cloned());
            match status {
                Some(TableStatus::Active) => return Ok(()),
                Some(TableStatus::Creating | TableStatus::Updating) | None => {}
                Some(other) => {
                    return Err(self.table_error(format!("is {}, not ACTIVE", other.as_str())));
                }
            }
            if started.elapsed() > ACTIVE_TIMEOUT {
                return Err(self.table_error(format!(
                    "did not become ACTIVE within {}s",
                    ACTIVE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(delay.fail()).await;
        }
    }

    /// Warns when DynamoDB will not delete expired entries.
    async fn check_ttl(&self) {
        let described = {
            let Ok(_p) = self.permit().await else { return };
            self.client
                .describe_time_to_live()
                .table_name(&self.table)
                .send()
                .await
        };
        match described {
            Ok(out) => {
                let ttl = out.time_to_live_description();
                let on = ttl.and_then(|t| t.time_to_live_status()).is_some_and(|s| {
                    matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                });
                let attr = ttl.and_then(|t| t.attribute_name());
                if !on || attr != Some(TTL_ATTRIBUTE) {
                    tracing::warn!(
                        table = %self.table,
                        ttl_attribute = ?attr,
                        "TTL is not enabled on {TTL_ATTRIBUTE}: expired cache entries stay in the table (they are ignored when read)"
                    );
                }
            }
            Err(e) => tracing::warn!(
                error = %self.error(&e, "DescribeTimeToLive"),
                "could not check the table's TTL"
            ),
        }
    }

    fn item(&self, entry: &CachedEntry) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let m = &entry.metadata;
        let json = serde_json::to_string(m)
            .map_err(|e| StoreError::Aws(format!("failed to encode metadata: {e}")))?;
        let expires_at = entry
            .fetched_at_ms
            .div_euclid(1000)
            .saturating_add(self.expire_after.as_secs() as i64);
        let mut item = HashMap::from([
            (KEY.to_string(), AttributeValue::S(m.account_id.clone())),
            (
                "environment".to_string(),
                AttributeValue::S(m.environment.as_str().to_string()),
            ),
            ("known".to_string(), AttributeValue::Bool(m.known)),
            ("metadata".to_string(), AttributeValue::S(json)),
            (
                "fetchedAt".to_string(),
                AttributeValue::N(entry.fetched_at_ms.to_string()),
            ),
            (
                TTL_ATTRIBUTE.to_string(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ]);
        let optional = [
            ("accountName", m.name.clone()),
            ("ou", m.ou_path.join("/")),
            ("team", m.team.clone()),
            ("costCenter", m.cost_center.clone()),
            ("organizationId", m.organization_id.clone()),
        ];
        for (k, v) in optional {
            // Index keys may not be empty strings: leave them out (sparse).
            if !v.is_empty() {
                item.insert(k.to_string(), AttributeValue::S(v));
            }
        }
        Ok(item)
    }
}

/// A stored item back as an entry; None when it is unreadable or past its
/// expiry.
fn entry_of(item: &HashMap<String, AttributeValue>, now_secs: i64) -> Option<CachedEntry> {
    let number = |k: &str| item.get(k)?.as_n().ok()?.parse::<i64>().ok();
    if number(TTL_ATTRIBUTE).is_some_and(|e| e <= now_secs) {
        return None;
    }
    let metadata: AccountMetadata =
        serde_json::from_str(item.get("metadata")?.as_s().ok()?).ok()?;
    Some(CachedEntry {
        metadata,
        fetched_at_ms: number("fetchedAt")?,
    })
}

#[async_trait]
impl MetadataStore for DynamoStore {
    async fn get(&self, account_id: &str) -> Result<Option<CachedEntry>, StoreError> {
        let out = {
            let _p = self.permit().await?;
            self.client
                .get_item()
                .table_name(&self.table)
                .key(KEY, AttributeValue::S(account_id.to_string()))
                .send()
                .await
                .map_err(|e| self.error(&e, "GetItem"))?
        };
        let now = chrono::Utc::now().timestamp();
        // An unreadable or expired item is a miss, not a failure.
        Ok(out.item().and_then(|i| entry_of(i, now)))
    }

    async fn put(&self, entry: &CachedEntry) -> Result<(), StoreError> {
        let item = self.item(entry)?;
        let _p = self.permit().await?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.error(&e, "PutItem"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn expired_or_unreadable_items_are_misses() {
        let meta = AccountMetadata::external("111122223333");
        let json = serde_json::to_string(&meta).unwrap_or_default();
        let good = item(&[
            ("metadata", AttributeValue::S(json.clone())),
            ("fetchedAt", AttributeValue::N("1000".into())),
            ("expiresAt", AttributeValue::N("100".into())),
        ]);
        assert_eq!(entry_of(&good, 99).map(|e| e.fetched_at_ms), Some(1000));
        assert!(entry_of(&good, 100).is_none(), "past expiresAt");
        let bad = item(&[
            ("metadata", AttributeValue::S("{not json".into())),
            ("fetchedAt", AttributeValue::N("1000".into())),
        ]);
        assert!(entry_of(&bad, 0).is_none());
        let no_time = item(&[("metadata", AttributeValue::S(json))]);
        assert!(entry_of(&no_time, 0).is_none());
    }
}
