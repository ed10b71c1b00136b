//! `trailhound org snapshot` as the command line runs it: flags parsed by
//! clap, `[aws]` read from a config file, the file written and loaded back.
//!
//! The command is enrich's (`trailhound_enrich::org_command`); the
//! binary only mounts it, as it mounts every service's flags.

use crate::common;

use trailhound_enrich::org_command as org;

use clap::Parser;
use trailhound_enrich::{AccountSource, SnapshotSource};
use trailhound_testkit::Emulator;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Org(org::OrgArgs),
}

#[tokio::test]
async fn org_snapshot_writes_the_live_organization() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let built = common::build_org(&emu.aws_config()).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("trailhound.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nendpoint_url = \"{}\"\nemulator = true\nmax_attempts = 2\n",
            emu.endpoint()
        ),
    )?;
    let out = dir.path().join("org.json");
    let cli = Cli::try_parse_from([
        "trailhound".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "org".as_ref(),
        "snapshot".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        // The flag supplies what the [aws] section leaves out.
        "--region".as_ref(),
        "us-east-1".as_ref(),
    ])?;
    let Command::Org(args) = &cli.command;
    org::run(&cli.common, args).await?;

    let snap = SnapshotSource::load(&out)?;
    assert_eq!(snap.organization_id(), built.organization_id);
    let accounts = snap.accounts().await?;
    assert_eq!(accounts.len(), 5);
    let payments = accounts
        .iter()
        .find(|a| a.id == built.payments_prod)
        .ok_or_else(|| anyhow::anyhow!("payments-prod missing"))?;
    assert_eq!(payments.ou_path, ["Root", "Workloads", "Production"]);
    assert_eq!(
        payments.tags.get("Team").map(String::as_str),
        Some("payments")
    );
    Ok(())
}

#[tokio::test]
async fn org_snapshot_without_an_organization_says_so() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("trailhound.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nemulator = true\n",
            emu.endpoint()
        ),
    )?;
    let out = dir.path().join("org.json");
    let cli = Cli::try_parse_from([
        "trailhound".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "org".as_ref(),
        "snapshot".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ])?;
    let Command::Org(args) = &cli.command;
    let err = org::run(&cli.common, args)
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("AWSOrganizationsNotInUseException"), "{err}");
    assert!(err.contains("not in an organization"), "{err}");
    assert!(!out.exists(), "nothing written on failure");
    Ok(())
}
