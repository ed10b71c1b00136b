//! `trailhound org snapshot`: writes the live organization as an org
//! snapshot file.
//!
//! The snapshot is the embedded account source (`--org org.json`): it lets
//! enrich, replays and the demo run without AWS access. Taking it from the
//! organization itself (ListAccounts, the OU tree, every account's tags)
//! gives a file that classifies accounts exactly as the Organizations
//! source would, and that can be refreshed on a schedule where enrich
//! itself has no Organizations permissions. AWS is reached as the `[aws]`
//! section of the config file says; `--region` and `--profile` override it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

/// Commands about the AWS Organization.
#[derive(Clone, Debug, clap::Args)]
pub struct OrgArgs {
    #[command(subcommand)]
    pub command: OrgCommand,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum OrgCommand {
    /// Writes every account of the organization (name, email, status, OU
    /// path, tags) as an org snapshot file for `--org`. Needs read access
    /// to AWS Organizations in the management account or a delegated
    /// administrator.
    Snapshot {
        /// Where to write the snapshot (replaced only once complete).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// AWS region, over [aws] region.
        #[arg(long)]
        region: Option<String>,
        /// AWS profile, over [aws] profile.
        #[arg(long)]
        profile: Option<String>,
    },
}

/// Runs an `org` command.
pub async fn run(common: &trailhound_runtime::CommonArgs, args: &OrgArgs) -> anyhow::Result<()> {
    let mut aws: crate::AwsConfig =
        trailhound_runtime::load_section(common.config.as_deref(), "aws")?;
    match &args.command {
        OrgCommand::Snapshot {
            out,
            region,
            profile,
        } => {
            if let Some(r) = region {
                aws.region = Some(r.clone());
            }
            if let Some(p) = profile {
                aws.profile = Some(p.clone());
            }
            let started = Instant::now();
            let snapshot = crate::aws_org::write_snapshot(&aws, out)
                .await
                .context("failed to snapshot the organization")?;
            let ous: std::collections::BTreeSet<&[String]> = snapshot
                .accounts
                .iter()
                .map(|a| a.ou_path.as_slice())
                .collect();
            eprintln!(
                "wrote {} accounts of {} across {} OUs to {} in {:.1}s",
                snapshot.accounts.len(),
                snapshot.organization_id,
                ous.len(),
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}
