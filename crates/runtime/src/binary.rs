//! The `main` of every service binary (`trailhound-ingest` …): the same
//! flags, telemetry and signal handling for each, so a service differs from
//! another only in the `run` it hands in.

use std::future::Future;

use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;

use crate::CommonArgs;

/// The shared flags and one service's own.
#[derive(clap::Parser)]
#[command(version)]
struct Cli<A: clap::Args> {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    args: A,
}

/// Runs the binary `trailhound-<service>`: parses [`CommonArgs`] and the
/// service's flags `A` (exiting with clap's message on bad flags or
/// `--help`), starts telemetry as `trailhound-<service>`, cancels the token
/// on SIGINT/SIGTERM and runs `run` to its end on a multi-threaded runtime.
pub fn main<A, F, Fut>(binary: &'static str, run: F) -> anyhow::Result<()>
where
    A: clap::Args,
    F: FnOnce(CommonArgs, A, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let service = binary.trim_start_matches("trailhound-");
    let mut command = Cli::<A>::command()
        .name(binary)
        .about(format!("trailhound's {service} service"));
    let mut matches = command.clone().get_matches();
    let cli = Cli::<A>::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|e| e.format(&mut command).exit());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let _telemetry = crate::telemetry::init(&cli.common.telemetry(binary))?;
            let shutdown = CancellationToken::new();
            crate::shutdown_on_signal(shutdown.clone());
            run(cli.common, cli.args, shutdown).await
        })
}
