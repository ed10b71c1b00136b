//! The DynamoDB metadata cache against a real emulator: schema, items,
//! freshness, restarts, and tables that are not what they should be.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveStatus,
};
use common::{Counting, TestOrg, aws, build_org, eventually, retag};
use trailhound_core::Environment;
use trailhound_enrich::dynamo::{INDEXES, KEY, TTL_ATTRIBUTE};
use trailhound_enrich::{
    AwsConfig, CachedEntry, DynamoOptions, DynamoStore, MetadataStore, OrganizationsSource,
};
use trailhound_testkit::Emulator;

const TABLE: &str = "trailhound-test-accounts";

fn options(create: bool) -> DynamoOptions {
    DynamoOptions {
        table: TABLE.into(),
        create_if_missing: create,
        expire_after: Duration::from_secs(7 * 24 * 3600),
    }
}

async fn dynamodb(config: &AwsConfig) -> anyhow::Result<aws_sdk_dynamodb::Client> {
    Ok(aws_sdk_dynamodb::Client::new(
        &aws(config).await?.sdk_config("dynamodb"),
    ))
}

async fn raw_item(
    config: &AwsConfig,
    account: &str,
) -> anyhow::Result<HashMap<String, AttributeValue>> {
    let out = dynamodb(config)
        .await?
        .get_item()
        .table_name(TABLE)
        .key(KEY, AttributeValue::S(account.into()))
        .send()
        .await?;
    out.item()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no item for {account}"))
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, k: &str) -> Option<&'a str> {
    item.get(k)?.as_s().ok().map(String::as_str)
}

fn n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)?.as_n().ok()?.parse().ok()
}

#[tokio::test]
async fn create_if_missing_makes_the_documented_table() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let config = emu.aws_config();
    DynamoStore::open(&aws(&config).await?, &options(true)).await?;
    let db = dynamodb(&config).await?;
    let t = db.describe_table().table_name(TABLE).send().await?;
    let t = t.table().ok_or_else(|| anyhow::anyhow!("no table"))?;
    let keys: Vec<_> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().clone()))
        .collect();
    assert_eq!(keys, [(KEY, KeyType::Hash)]);
    let ty = |name: &str| {
        t.attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == name)
            .map(|d| d.attribute_type().clone())
    };
    assert_eq!(ty(KEY), Some(ScalarAttributeType::S));
    let mut indexes: Vec<(String, Vec<String>)> = t
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            (
                i.index_name().unwrap_or_default().to_string(),
                i.key_schema()
                    .iter()
                    .map(|k| format!("{} {}", k.key_type().as_str(), k.attribute_name()))
                    .collect(),
            )
        })
        .collect();
    indexes.sort();
    let mut expected: Vec<(String, Vec<String>)> = INDEXES
        .iter()
        .map(|(i, a)| {
            (
                i.to_string(),
                vec![format!("HASH {a}"), format!("RANGE {KEY}")],
            )
        })
        .collect();
    expected.sort();
    assert_eq!(indexes, expected);
    let ttl = db.describe_time_to_live().table_name(TABLE).send().await?;
    let ttl = ttl
        .time_to_live_description()
        .ok_or_else(|| anyhow::anyhow!("no TTL description"))?;
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));

    // Opening again (a second instance) accepts the table as it is.
    DynamoStore::open(&aws(&config).await?, &options(true)).await?;
    DynamoStore::open(&aws(&config).await?, &options(false)).await?;
    Ok(())
}

#[tokio::test]
async fn entries_are_top_level_attributes_that_fill_the_indexes() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let config = emu.aws_config();
    let org = build_org(&config).await?;
    let a = aws(&config).await?;
    let store = Arc::new(DynamoStore::open(&a, &options(true)).await?);
    let source = Arc::new(OrganizationsSource::connect(&a).await?);
    let e = common::enricher(
        source,
        Some(store.clone()),
        Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    let before = chrono::Utc::now().timestamp_millis();
    for id in org.members() {
        e.account(id).await;
    }
    let ext = e.account("999988887777").await;
    assert!(!ext.known);

    let item = raw_item(&config, &org.payments_prod).await?;
    assert_eq!(s(&item, "accountName"), Some("payments-prod"));
    assert_eq!(s(&item, "environment"), Some("production"));
    assert_eq!(s(&item, "ou"), Some("Root/Workloads/Production"));
    assert_eq!(s(&item, "team"), Some("payments"));
    assert_eq!(s(&item, "costCenter"), Some("CC-1042"));
    assert_eq!(
        s(&item, "organizationId"),
        Some(org.organization_id.as_str())
    );
    assert_eq!(
        item.get("known").and_then(|v| v.as_bool().ok()),
        Some(&true)
    );
    let fetched = n(&item, "fetchedAt").unwrap_or_default();
    assert!(fetched >= before, "fetchedAt in ms");
    let expires = n(&item, TTL_ATTRIBUTE).unwrap_or_default();
    assert_eq!(
        expires,
        fetched / 1000 + 7 * 24 * 3600,
        "expiresAt in seconds"
    );
    let json: trailhound_core::AccountMetadata =
        serde_json::from_str(s(&item, "metadata").unwrap_or_default())?;
    assert_eq!(json, *e.account(&org.payments_prod).await);

    // Accounts outside the organization are not written at all: a flood
    // of made-up ids must not become a flood of writes.
    assert!(raw_item(&config, "999988887777").await.is_err());

    // The indexes fill: query by environment, OU and team.
    let db = dynamodb(&config).await?;
    let query = |index: &'static str, attr: &'static str, value: &'static str| {
        let db = db.clone();
        async move {
            let out = db
                .query()
                .table_name(TABLE)
                .index_name(index)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", attr)
                .expression_attribute_values(":v", AttributeValue::S(value.into()))
                .send()
                .await?;
            let mut ids: Vec<String> = out
                .items()
                .iter()
                .filter_map(|i| s(i, KEY).map(str::to_string))
                .collect();
            ids.sort();
            anyhow::Ok(ids)
        }
    };
    assert_eq!(
        query("environment-index", "environment", "production").await?,
        [org.payments_prod.as_str()]
    );
    assert_eq!(
        query("environment-index", "environment", "staging").await?,
        [org.analytics.as_str()]
    );
    assert_eq!(
        query("team-index", "team", "ledger").await?,
        [org.ledger_dev.as_str()]
    );
    assert_eq!(
        query("ou-index", "ou", "Root/Workloads").await?,
        [org.ledger_dev.as_str()]
    );
    assert_eq!(
        query("ou-index", "ou", "Root/Sandbox").await?,
        [org.research.as_str()]
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_enricher_asks_organizations_nothing_it_knows() -> anyhow::Result<()> {
    let (_emu, org, proxy, config) = common::org_behind_proxy(vec![]).await?;
    let start = || async {
        let a = aws(&config).await?;
        let store: Arc<dyn MetadataStore> = Arc::new(DynamoStore::open(&a, &options(true)).await?);
        let source = Counting::new(Arc::new(OrganizationsSource::connect(&a).await?));
        let e = common::enricher(
            source.clone(),
            Some(store),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        anyhow::Ok((e, source))
    };
    let (first, src) = start().await?;
    for id in org.members() {
        first.account(id).await;
        first.account(id).await;
    }
    assert_eq!(src.calls(), 4, "one source lookup per account");
    assert_eq!(proxy.requests("DescribeAccount"), 4);
    assert_eq!(proxy.requests("PutItem"), 4);
    drop(first);

    // A new process over the same table.
    proxy.reset_counts();
    let (second, src) = start().await?;
    for id in org.members() {
        let m = second.account(id).await;
        assert!(m.known && m.environment != Environment::Unknown);
    }
    assert_eq!(src.calls(), 0);
    assert_eq!(proxy.requests("DescribeAccount"), 0);
    assert_eq!(proxy.requests("ListTagsForResource"), 0);
    assert_eq!(proxy.requests("GetItem"), 4);
    assert_eq!(second.stats().store_hits.load(Ordering::Relaxed), 4);
    Ok(())
}

/// The test organization in a fresh emulator (keep it), its `[aws]`
/// configuration, the cache table created there, and an Organizations
/// source that counts its lookups.
async fn cached_org() -> anyhow::Result<(
    Emulator,
    AwsConfig,
    TestOrg,
    Arc<DynamoStore>,
    Arc<Counting>,
)> {
    let emu = Emulator::start().await;
    let config = emu.aws_config();
    let org = build_org(&config).await?;
    let a = aws(&config).await?;
    let store = Arc::new(DynamoStore::open(&a, &options(true)).await?);
    let source = Counting::new(Arc::new(OrganizationsSource::connect(&a).await?));
    Ok((emu, config, org, store, source))
}

#[tokio::test]
async fn stale_entries_are_served_at_once_and_refreshed_in_the_background() -> anyhow::Result<()> {
    let (_emu, config, org, store, source) = cached_org().await?;
    let e = common::enricher(
        source.clone(),
        Some(store.clone()),
        Duration::from_millis(50),
        Duration::from_secs(1),
    )
    .with_store_max_age(Duration::from_secs(3600));
    let id = &org.payments_prod;
    assert_eq!(e.account(id).await.team, "payments");
    let first_fetch = store
        .get(id)
        .await?
        .map(|c| c.fetched_at_ms)
        .unwrap_or_default();

    // The organization changes; the entry ages past store_ttl.
    retag(&config, id, "billing").await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let served = e.account(id).await;
    assert_eq!(
        served.team, "payments",
        "the stale entry is served without waiting"
    );
    assert_eq!(e.stats().stale_hits.load(Ordering::Relaxed), 1);
    assert_eq!(e.stats().refreshes.load(Ordering::Relaxed), 1);
    // ... and refreshed behind it: store and memory get the new team.
    let refreshed = eventually(|| source.calls() == 2).await;
    assert!(refreshed, "a background refresh asked the source");
    let mut entry = None;
    for _ in 0..100 {
        entry = store.get(id).await?;
        if entry.as_ref().is_some_and(|c| c.metadata.team == "billing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry: CachedEntry = entry.ok_or_else(|| anyhow::anyhow!("entry gone"))?;
    assert_eq!(entry.metadata.team, "billing");
    assert!(entry.fetched_at_ms > first_fetch);
    assert_eq!(e.account(id).await.team, "billing");
    assert_eq!(source.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn entries_past_the_max_age_are_refetched_before_answering() -> anyhow::Result<()> {
    let (_emu, config, org, store, source) = cached_org().await?;
    let e = common::enricher(
        source.clone(),
        Some(store),
        Duration::from_millis(20),
        Duration::from_millis(100),
    )
    .with_store_max_age(Duration::from_millis(200));
    let id = &org.research;
    assert_eq!(e.account(id).await.team, "ml-research");
    retag(&config, id, "vision").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = e.account(id).await;
    assert_eq!(m.team, "vision", "too old to serve: refetched in line");
    assert_eq!(source.calls(), 2);
    assert_eq!(e.stats().stale_hits.load(Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn items_past_expires_at_are_misses() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let a = aws(&emu.aws_config()).await?;
    let store = DynamoStore::open(
        &a,
        &DynamoOptions {
            expire_after: Duration::ZERO,
            ..options(true)
        },
    )
    .await?;
    let entry = CachedEntry {
        metadata: trailhound_core::AccountMetadata::external("111122223333"),
        fetched_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    store.put(&entry).await?;
    // DynamoDB deletes expired items late (moto never does): reads skip them.
    assert!(raw_item(&emu.aws_config(), "111122223333").await.is_ok());
    assert_eq!(store.get("111122223333").await?, None);
    Ok(())
}

async fn create_table(config: &AwsConfig, keys: &[(&str, KeyType)]) -> anyhow::Result<()> {
    let db = dynamodb(config).await?;
    let mut req = db
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, ty) in keys {
        req = req
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*name)
                    .key_type(ty.clone())
                    .build()?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            );
    }
    req.send().await?;
    Ok(())
}

#[tokio::test]
async fn a_table_with_another_key_is_refused_at_start_up() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let config = emu.aws_config();
    create_table(&config, &[("id", KeyType::Hash)]).await?;
    let err = DynamoStore::open(&aws(&config).await?, &options(true))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    eprintln!("{err}");
    assert!(err.contains(TABLE), "{err}");
    assert!(err.contains("HASH id (S)"), "{err}");
    assert!(err.contains("partition key accountId"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_table_with_a_sort_key_is_refused_too() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let config = emu.aws_config();
    create_table(
        &config,
        &[(KEY, KeyType::Hash), ("fetchedAt", KeyType::Range)],
    )
    .await?;
    let err = DynamoStore::open(&aws(&config).await?, &options(false))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("RANGE fetchedAt"), "{err}");
    assert!(err.contains("no sort key"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_missing_table_or_a_wrong_region_is_named() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let config = emu.aws_config();
    let err = DynamoStore::open(&aws(&config).await?, &options(false))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(TABLE) && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("create_table = true"), "{err}");

    // The table exists, in another region than the one configured.
    DynamoStore::open(&aws(&config).await?, &options(true)).await?;
    let elsewhere = AwsConfig {
        region: Some("eu-west-3".into()),
        ..config
    };
    let err = DynamoStore::open(&aws(&elsewhere).await?, &options(false))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    eprintln!("{err}");
    assert!(err.contains("region eu-west-3"), "{err}");
    assert!(err.contains("check [aws] region"), "{err}");
    Ok(())
}
