//! Shared fixtures: an organization built in the emulator with real SDK
//! calls, and a source wrapper that counts lookups.

#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_organizations::types::{CreateAccountState, OrganizationFeatureSet, Tag};
use trailhound_core::account::OrgAccount;
use trailhound_enrich::{AccountSource, Aws, AwsConfig, Enricher, MetadataStore, SourceError};
use trailhound_testkit::{Emulator, FaultProxy, FaultRule};

/// Accounts of the test organization, by role.
#[derive(Debug, Clone)]
pub struct TestOrg {
    pub organization_id: String,
    pub root: String,
    pub management: String,
    /// Root/Workloads/Production; tags Environment=production,
    /// Team=payments, CostCenter=CC-1042.
    pub payments_prod: String,
    /// Root/Workloads/Staging, no tags: staging from the OU name.
    pub analytics: String,
    /// Root/Sandbox; tag Owner=ml-research: sandbox from the OU, team from
    /// Owner.
    pub research: String,
    /// Root/Workloads, named ledger-dev; tag Team=ledger: development from
    /// the name.
    pub ledger_dev: String,
}

impl TestOrg {
    pub fn members(&self) -> [&str; 4] {
        [
            &self.payments_prod,
            &self.analytics,
            &self.research,
            &self.ledger_dev,
        ]
    }
}

/// An enricher over `source` and `store` with the default environment
/// rules and these TTLs, as the tests build them.
pub fn enricher(
    source: Arc<dyn AccountSource>,
    store: Option<Arc<dyn MetadataStore>>,
    memory_ttl: Duration,
    store_ttl: Duration,
) -> Enricher {
    Enricher::new(
        source,
        store,
        trailhound_core::EnvironmentRules::default(),
        memory_ttl,
        store_ttl,
    )
}

/// The `[aws]` configuration that reaches `emu` through `proxy`.
pub fn via(proxy: &FaultProxy, emu: &Emulator) -> AwsConfig {
    AwsConfig {
        endpoint_url: Some(proxy.endpoint().into()),
        ..emu.aws_config()
    }
}

/// An emulator holding the test organization, a fault proxy in front of
/// it injecting `faults`, and the configuration that goes through the
/// proxy. Keep the emulator and the proxy for as long as the test runs.
pub async fn org_behind_proxy(
    faults: Vec<FaultRule>,
) -> anyhow::Result<(Emulator, TestOrg, FaultProxy, AwsConfig)> {
    let emu = Emulator::start().await;
    let org = build_org(&emu.aws_config()).await?;
    let proxy = FaultProxy::start(emu.endpoint(), faults).await;
    let config = via(&proxy, &emu);
    Ok((emu, org, proxy, config))
}

pub async fn aws(config: &AwsConfig) -> anyhow::Result<Aws> {
    Ok(Aws::load(config).await?)
}

fn tag(k: &str, v: &str) -> anyhow::Result<Tag> {
    Ok(Tag::builder().key(k).value(v).build()?)
}

/// Builds the organization with the calls an administrator would make:
/// CreateOrganization, nested CreateOrganizationalUnit, CreateAccount,
/// MoveAccount, TagResource.
pub async fn build_org(config: &AwsConfig) -> anyhow::Result<TestOrg> {
    let aws = aws(config).await?;
    let c = aws_sdk_organizations::Client::new(&aws.sdk_config("organizations"));
    let org = c
        .create_organization()
        .feature_set(OrganizationFeatureSet::All)
        .send()
        .await
        .context("CreateOrganization")?;
    let org = org.organization().context("no organization")?;
    let organization_id = org.id().context("no id")?.to_string();
    let management = org.master_account_id().context("no master")?.to_string();
    let roots = c.list_roots().send().await?;
    let root = roots
        .roots()
        .first()
        .and_then(|r| r.id())
        .context("no root")?
        .to_string();
    let ou = |parent: String, name: &'static str| {
        let c = c.clone();
        async move {
            let out = c
                .create_organizational_unit()
                .parent_id(parent)
                .name(name)
                .send()
                .await
                .with_context(|| format!("CreateOrganizationalUnit {name}"))?;
            anyhow::Ok(
                out.organizational_unit()
                    .and_then(|o| o.id())
                    .context("no OU id")?
                    .to_string(),
            )
        }
    };
    let workloads = ou(root.clone(), "Workloads").await?;
    let production = ou(workloads.clone(), "Production").await?;
    let staging = ou(workloads.clone(), "Staging").await?;
    let sandbox = ou(root.clone(), "Sandbox").await?;
    let account = |name: &'static str, parent: String, tags: Vec<Tag>| {
        let c = c.clone();
        let root = root.clone();
        async move {
            let out = c
                .create_account()
                .account_name(name)
                .email(format!("aws+{name}@example.com"))
                .send()
                .await
                .with_context(|| format!("CreateAccount {name}"))?;
            let status = out.create_account_status().context("no status")?;
            anyhow::ensure!(status.state() == Some(&CreateAccountState::Succeeded));
            let id = status.account_id().context("no account id")?.to_string();
            if parent != root {
                c.move_account()
                    .account_id(&id)
                    .source_parent_id(&root)
                    .destination_parent_id(parent)
                    .send()
                    .await
                    .context("MoveAccount")?;
            }
            if !tags.is_empty() {
                c.tag_resource()
                    .resource_id(&id)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .context("TagResource")?;
            }
            anyhow::Ok(id)
        }
    };
    let payments_prod = account(
        "payments-prod",
        production,
        vec![
            tag("Environment", "production")?,
            tag("Team", "payments")?,
            tag("CostCenter", "CC-1042")?,
        ],
    )
    .await?;
    let analytics = account("analytics", staging, vec![]).await?;
    let research = account("research", sandbox, vec![tag("Owner", "ml-research")?]).await?;
    let ledger_dev = account("ledger-dev", workloads, vec![tag("Team", "ledger")?]).await?;
    Ok(TestOrg {
        organization_id,
        root,
        management,
        payments_prod,
        analytics,
        research,
        ledger_dev,
    })
}

/// Changes an account's Team tag, as an administrator would.
pub async fn retag(config: &AwsConfig, account: &str, team: &str) -> anyhow::Result<()> {
    let aws = aws(config).await?;
    let c = aws_sdk_organizations::Client::new(&aws.sdk_config("organizations"));
    c.tag_resource()
        .resource_id(account)
        .tags(tag("Team", team)?)
        .send()
        .await?;
    Ok(())
}

/// Counts the lookups that reach the wrapped source.
pub struct Counting {
    pub inner: Arc<dyn AccountSource>,
    pub calls: AtomicU64,
}

impl Counting {
    pub fn new(inner: Arc<dyn AccountSource>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicU64::new(0),
        })
    }
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl AccountSource for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn organization_id(&self) -> &str {
        self.inner.organization_id()
    }
    async fn account(&self, id: &str) -> Result<Option<OrgAccount>, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.account(id).await
    }
    async fn accounts(&self) -> Result<Vec<OrgAccount>, SourceError> {
        self.inner.accounts().await
    }
}

/// Waits until `f` holds, up to 10 s.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
