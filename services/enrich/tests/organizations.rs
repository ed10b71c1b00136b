//! The Organizations source against a real emulator: an organization built
//! with real SDK calls, read back through enrich.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestOrg, aws, build_org};
use trailhound_core::{AccountMetadata, Environment};
use trailhound_enrich::{AccountSource, AwsConfig, Enricher, OrganizationsSource, SnapshotSource};
use trailhound_testkit::Emulator;

async fn enricher(config: &AwsConfig) -> anyhow::Result<Enricher> {
    let source = OrganizationsSource::connect(&aws(config).await?).await?;
    Ok(common::enricher(
        Arc::new(source),
        None,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ))
}

fn check_org(org: &TestOrg, m: &dyn Fn(&str) -> Arc<AccountMetadata>) {
    let p = m(&org.payments_prod);
    assert!(p.known);
    assert_eq!(p.name, "payments-prod");
    assert_eq!(p.email, "aws+payments-prod@example.com");
    assert_eq!(p.status, "ACTIVE");
    assert_eq!(p.organization_id, org.organization_id);
    assert_eq!(p.ou_path, ["Root", "Workloads", "Production"]);
    assert_eq!(p.environment, Environment::Production);
    assert_eq!(p.environment_reason, "tag Environment=production");
    assert_eq!(p.team, "payments");
    assert_eq!(p.cost_center, "CC-1042");

    let a = m(&org.analytics);
    assert_eq!(a.ou_path, ["Root", "Workloads", "Staging"]);
    assert_eq!(a.environment, Environment::Staging);
    assert_eq!(a.environment_reason, "OU \"Staging\"");
    assert_eq!(a.team, "");

    let r = m(&org.research);
    assert_eq!(r.ou_path, ["Root", "Sandbox"]);
    assert_eq!(r.environment, Environment::Sandbox);
    assert_eq!(r.team, "ml-research", "team from the Owner tag");

    let l = m(&org.ledger_dev);
    assert_eq!(l.ou_path, ["Root", "Workloads"]);
    assert_eq!(l.environment, Environment::Development);
    assert_eq!(l.environment_reason, "account name \"ledger-dev\"");
    assert_eq!(l.team, "ledger");

    let mgmt = m(&org.management);
    assert!(mgmt.known);
    assert_eq!(mgmt.ou_path, ["Root"]);
}

#[tokio::test]
async fn organization_accounts_get_names_ou_paths_environments_and_teams() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let org = build_org(&emu.aws_config()).await?;
    let e = enricher(&emu.aws_config()).await?;
    let mut seen = std::collections::HashMap::new();
    for id in org.members().into_iter().chain([org.management.as_str()]) {
        seen.insert(id.to_string(), e.account(id).await);
    }
    check_org(&org, &|id| seen[id].clone());

    // Not in the organization: external, not an error.
    let ext = e.account("999988887777").await;
    assert!(!ext.known);
    assert_eq!(ext.environment, Environment::Unknown);
    assert_eq!(ext.status, "UNKNOWN");
    let stats = e.stats();
    assert_eq!(
        stats
            .unknown_accounts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        stats
            .backend_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    Ok(())
}

#[tokio::test]
async fn ou_names_are_asked_once() -> anyhow::Result<()> {
    let (_emu, org, proxy, config) = common::org_behind_proxy(vec![]).await?;
    let source = OrganizationsSource::connect(&aws(&config).await?).await?;
    for id in [
        &org.payments_prod,
        &org.analytics,
        &org.ledger_dev,
        &org.payments_prod,
    ] {
        assert!(source.account(id).await?.is_some());
    }
    // Production, Workloads, Staging: each described once, the root listed
    // once, whatever the number of lookups.
    assert_eq!(proxy.requests("DescribeOrganizationalUnit"), 3);
    assert_eq!(proxy.requests("ListRoots"), 1);
    assert_eq!(proxy.requests("DescribeOrganization"), 1);
    assert_eq!(proxy.requests("DescribeAccount"), 4);
    Ok(())
}

#[tokio::test]
async fn snapshot_pages_through_everything_and_matches_single_lookups() -> anyhow::Result<()> {
    let (_emu, org, proxy, config) = common::org_behind_proxy(vec![]).await?;
    let source = OrganizationsSource::connect(&aws(&config).await?)
        .await?
        .with_page_size(2);
    let snap = source.snapshot().await?;
    assert_eq!(snap.organization_id, org.organization_id);
    assert_eq!(
        snap.accounts.len(),
        5,
        "four members and the management account"
    );
    // Five accounts two per page.
    assert_eq!(proxy.requests("ListAccounts"), 3);
    // The tree is walked, not asked per account.
    assert_eq!(proxy.requests("ListParents"), 0);
    let ids: Vec<&str> = snap.accounts.iter().map(|a| a.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sorted by id");

    // A single lookup tells the same story as the walk.
    let fresh = OrganizationsSource::connect(&aws(&config).await?).await?;
    for a in &snap.accounts {
        assert_eq!(fresh.account(&a.id).await?.as_ref(), Some(a));
    }
    Ok(())
}

#[tokio::test]
async fn the_snapshot_file_loads_back_with_the_same_metadata() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let org = build_org(&emu.aws_config()).await?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("nested/org.json");
    let written = trailhound_enrich::aws_org::write_snapshot(&emu.aws_config(), &out).await?;
    assert!(!dir.path().join("nested/org.json.tmp").exists());

    let file = SnapshotSource::load(&out)?;
    assert_eq!(file.organization_id(), org.organization_id);
    assert_eq!(file.accounts().await?, written.accounts);

    let live = enricher(&emu.aws_config()).await?;
    let from_file = common::enricher(
        Arc::new(file),
        None,
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let mut seen = std::collections::HashMap::new();
    for id in org
        .members()
        .into_iter()
        .chain([org.management.as_str(), "999988887777"])
    {
        let a = live.account(id).await;
        let b = from_file.account(id).await;
        assert_eq!(a, b, "account {id}");
        seen.insert(id.to_string(), b);
    }
    check_org(&org, &|id| seen[id].clone());
    // The Enricher's account listing agrees too.
    assert_eq!(live.accounts().await?, from_file.accounts().await?);
    Ok(())
}
