//! What AWS failures do to enrich: throttling and 5xx are retried, what
//! still fails is explained (action, resource, fix), nothing panics, and
//! enrichment goes on with what it has.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{aws, build_org, via};
use trailhound_core::Event;
use trailhound_enrich::{
    AccountSource, AwsConfig, DynamoOptions, DynamoStore, MetadataStore, OrganizationsSource,
};
use trailhound_testkit::{Emulator, FaultProxy, FaultRule};

fn event(account: &str, n: usize) -> Event {
    Event {
        event_id: format!("e-{account}-{n}"),
        event_time_ms: 1_767_225_600_000,
        recipient_account_id: account.into(),
        source_ip_address: "203.0.113.7".into(),
        user_agent: "test".into(),
        event_version: "1.08".into(),
        ..trailhound_core::event::testing::run_instances()
    }
}

#[tokio::test]
async fn throttled_calls_are_retried_and_succeed() -> anyhow::Result<()> {
    // max_attempts = 3
    let (_emu, org, proxy, config) = common::org_behind_proxy(vec![
        FaultRule::throttle("DescribeAccount").times(2),
        FaultRule::throttle("ListAccounts").times(2),
        FaultRule::internal_error("ListTagsForResource").times(1),
    ])
    .await?;
    let source = OrganizationsSource::connect(&aws(&config).await?).await?;
    let a = source.account(&org.payments_prod).await?;
    assert_eq!(a.map(|a| a.name).as_deref(), Some("payments-prod"));
    assert_eq!(proxy.faults("DescribeAccount"), 2);
    assert_eq!(
        proxy.requests("DescribeAccount"),
        3,
        "two throttled, the third answered"
    );
    assert_eq!(
        proxy.requests("ListTagsForResource"),
        2,
        "a 500, then the answer"
    );

    let snap = source.snapshot().await?;
    assert_eq!(snap.accounts.len(), 5);
    assert_eq!(proxy.faults("ListAccounts"), 2);
    Ok(())
}

#[tokio::test]
async fn persistent_5xx_is_explained_and_enrich_goes_on() -> anyhow::Result<()> {
    let (_emu, org, proxy, config) = common::org_behind_proxy(vec![]).await?;
    let source = Arc::new(OrganizationsSource::connect(&aws(&config).await?).await?);
    let e = common::enricher(
        source.clone(),
        None,
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    assert!(e.account(&org.payments_prod).await.known);

    // Organizations breaks for good.
    proxy.push_rule(FaultRule::internal_error("DescribeAccount"));
    let before = proxy.requests("DescribeAccount");
    let err = source
        .account(&org.analytics)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a 500 on every attempt must fail"))?;
    assert_eq!(
        proxy.requests("DescribeAccount") - before,
        3,
        "max_attempts"
    );
    assert!(err.retryable);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("organizations:DescribeAccount"), "{msg}");
    assert!(msg.contains(&format!("account {}", org.analytics)), "{msg}");
    assert!(msg.contains("InternalFailure"), "{msg}");

    // A batch with a known and an unreachable account: both go through.
    let batch = vec![
        event(&org.payments_prod, 1),
        event(&org.analytics, 2),
        event(&org.payments_prod, 3),
    ];
    let out = e.enrich(batch).await;
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].account.name, "payments-prod");
    assert_eq!(out[2].account.name, "payments-prod");
    let failed = &out[1].account;
    assert_eq!(failed.status, "LOOKUP_FAILED");
    assert!(!failed.known);
    assert!(
        failed
            .environment_reason
            .contains("organizations:DescribeAccount"),
        "{}",
        failed.environment_reason
    );
    assert_eq!(e.stats().backend_errors.load(Ordering::Relaxed), 1);

    // The failure is remembered briefly, not retried for every event.
    let calls = proxy.requests("DescribeAccount");
    e.enrich(vec![event(&org.analytics, 4), event(&org.analytics, 5)])
        .await;
    assert_eq!(proxy.requests("DescribeAccount"), calls);

    // Once Organizations recovers, the account is looked up again.
    proxy.clear_rules();
    let fresh = common::enricher(
        source,
        None,
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    assert!(fresh.account(&org.analytics).await.known);
    Ok(())
}

#[tokio::test]
async fn access_denied_names_the_action_and_the_fix_without_retrying() -> anyhow::Result<()> {
    let (_emu, org, proxy, config) = common::org_behind_proxy(vec![
        FaultRule::access_denied("DescribeOrganization").times(1),
    ])
    .await?;
    let err = OrganizationsSource::connect(&aws(&config).await?)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    eprintln!("{err}");
    assert!(err.contains("organizations:DescribeOrganization"), "{err}");
    assert!(err.contains("AccessDeniedException"), "{err}");
    assert!(err.contains("grant it"), "{err}");
    assert!(
        err.contains("management account or a delegated administrator"),
        "{err}"
    );
    assert_eq!(proxy.requests("DescribeOrganization"), 1, "not retried");

    let source = Arc::new(OrganizationsSource::connect(&aws(&config).await?).await?);
    proxy.push_rule(FaultRule::access_denied("ListParents"));
    let err = source
        .account(&org.research)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("access denied must fail"))?;
    assert!(!err.retryable);
    assert!(
        err.to_string().contains("organizations:ListParents"),
        "{err}"
    );
    assert_eq!(proxy.requests("ListParents"), 1);

    // enrich falls back to stale metadata, else LOOKUP_FAILED.
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn MetadataStore> = Arc::new(trailhound_enrich::RedbStore::open(
        &dir.path().join("c.redb"),
    )?);
    proxy.clear_rules();
    let e = common::enricher(
        source.clone(),
        Some(store),
        Duration::from_millis(1),
        Duration::from_millis(1),
    );
    assert!(e.account(&org.payments_prod).await.known);
    proxy.push_rule(FaultRule::access_denied("DescribeAccount"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stale = e.account(&org.payments_prod).await;
    assert!(stale.known, "stale metadata beats none");
    assert_eq!(stale.team, "payments");
    let unknown = e.account(&org.ledger_dev).await;
    assert_eq!(unknown.status, "LOOKUP_FAILED");
    assert!(unknown.environment_reason.contains("AccessDeniedException"));
    Ok(())
}

#[tokio::test]
async fn a_transient_failure_at_start_up_does_not_stop_enrich() -> anyhow::Result<()> {
    let (_emu, org, _proxy, config) = common::org_behind_proxy(vec![
        FaultRule::internal_error("DescribeOrganization").times(3),
    ])
    .await?;
    let source = OrganizationsSource::connect(&aws(&config).await?).await?;
    assert_eq!(source.organization_id(), "", "not known yet");
    let a = source.account(&org.payments_prod).await?;
    assert!(a.is_some());
    assert_eq!(source.organization_id(), org.organization_id);
    Ok(())
}

fn dynamo_options() -> DynamoOptions {
    DynamoOptions {
        table: "faulty-accounts".into(),
        create_if_missing: true,
        expire_after: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn dynamodb_throttling_is_retried_and_failures_never_stop_enrich() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let org = build_org(&emu.aws_config()).await?;
    let json10 = "application/x-amz-json-1.0";
    let proxy = FaultProxy::start(
        emu.endpoint(),
        vec![
            FaultRule::json(
                "GetItem",
                400,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            )
            .content_type(json10)
            .times(2),
        ],
    )
    .await;
    let a = aws(&via(&proxy, &emu)).await?;
    let store = Arc::new(DynamoStore::open(&a, &dynamo_options()).await?);
    assert_eq!(store.get(&org.payments_prod).await?, None);
    assert_eq!(
        proxy.requests("GetItem"),
        3,
        "two throttled, the third answered"
    );

    // Writes and reads fail for good: enrich still answers from the source.
    proxy.push_rule(FaultRule::internal_error("PutItem").content_type(json10));
    proxy.push_rule(FaultRule::internal_error("GetItem").content_type(json10));
    let source = Arc::new(OrganizationsSource::connect(&a).await?);
    let e = common::enricher(
        source,
        Some(store.clone()),
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let out = e
        .enrich(vec![event(&org.payments_prod, 1), event(&org.research, 2)])
        .await;
    assert_eq!(out[0].account.team, "payments");
    assert_eq!(out[1].account.team, "ml-research");
    let err = store
        .get(&org.payments_prod)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("dynamodb:GetItem") && err.contains("table faulty-accounts"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn dynamodb_access_denied_at_start_up_is_explained() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let proxy = FaultProxy::start(
        emu.endpoint(),
        vec![FaultRule::access_denied("DescribeTable").content_type("application/x-amz-json-1.0")],
    )
    .await;
    let err = DynamoStore::open(&aws(&via(&proxy, &emu)).await?, &dynamo_options())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("dynamodb:DescribeTable"), "{err}");
    assert!(err.contains("table faulty-accounts"), "{err}");
    assert!(err.contains("lack permission"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_endpoint_is_explained() -> anyhow::Result<()> {
    // Nothing listens on this port: no emulator, no network.
    let port = trailhound_testkit::free_port();
    let config = AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        emulator: true,
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        operation_timeout: Duration::from_secs(5),
        ..AwsConfig::default()
    };
    let err = OrganizationsSource::connect(&aws(&config).await?)
        .await
        .map(|_| ())
        .err();
    // Unreachable is transient: connect waits for the first lookup ...
    assert!(err.is_none());
    let source = OrganizationsSource::connect(&aws(&config).await?).await?;
    let err = source
        .account("111122223333")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("nothing listens"))?;
    // ... which explains it.
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(err.retryable);
    assert!(msg.contains("organizations:DescribeOrganization"), "{msg}");
    assert!(msg.contains("could not send the request"), "{msg}");
    assert!(
        msg.contains("Check the endpoint, the region and network access"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_credentials_are_explained() -> anyhow::Result<()> {
    // An SDK configuration with no credentials provider at all, as when
    // the chain finds nothing.
    let conf = aws_sdk_organizations::Config::builder()
        .behavior_version(aws_sdk_organizations::config::BehaviorVersion::latest())
        .region(aws_sdk_organizations::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let client = aws_sdk_organizations::Client::from_conf(conf);
    let err = client
        .describe_organization()
        .send()
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("no credentials must fail"))?;
    let msg = trailhound_aws::explain(
        &err,
        "organizations:DescribeOrganization",
        "the organization",
    );
    eprintln!("{msg}");
    assert!(msg.contains("organizations:DescribeOrganization"), "{msg}");
    assert!(msg.contains("No AWS credentials were found"), "{msg}");
    Ok(())
}
