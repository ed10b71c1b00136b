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

/// Runs `trailhound org snapshot --out <dir>/org.json <flags>` with `aws`
/// as the config file's `[aws]` section; the snapshot's path.
async fn snapshot(
    dir: &std::path::Path,
    aws: &str,
    flags: &[&str],
) -> anyhow::Result<std::path::PathBuf> {
    let config = dir.join("trailhound.toml");
    std::fs::write(&config, format!("[aws]\n{aws}"))?;
    let out = dir.join("org.json");
    let mut argv: Vec<std::ffi::OsString> = vec![
        "trailhound".into(),
        "--config".into(),
        config.into(),
        "org".into(),
        "snapshot".into(),
        "--out".into(),
        out.clone().into(),
    ];
    argv.extend(flags.iter().map(Into::into));
    let cli = Cli::try_parse_from(argv)?;
    let Command::Org(args) = &cli.command;
    org::run(&cli.common, args).await?;
    Ok(out)
}

#[tokio::test]
async fn org_snapshot_writes_the_live_organization() -> anyhow::Result<()> {
    let emu = Emulator::start().await;
    let built = common::build_org(&emu.aws_config()).await?;
    let dir = tempfile::tempdir()?;
    let aws = format!(
        "endpoint_url = \"{}\"\nemulator = true\nmax_attempts = 2\n",
        emu.endpoint()
    );
    // The flag supplies what the [aws] section leaves out.
    let out = snapshot(dir.path(), &aws, &["--region", "us-east-1"]).await?;

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
    let aws = format!(
        "region = \"us-east-1\"\nendpoint_url = \"{}\"\nemulator = true\n",
        emu.endpoint()
    );
    let err = snapshot(dir.path(), &aws, &[])
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("AWSOrganizationsNotInUseException"), "{err}");
    assert!(err.contains("not in an organization"), "{err}");
    assert!(
        !dir.path().join("org.json").exists(),
        "nothing written on failure"
    );
    Ok(())
}
