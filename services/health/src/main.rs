//! `trailhound-health`: the health service alone.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "trailhound-health",
    version,
    about = "trailhound's health service"
)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(flatten)]
    args: trailhound_health::HealthArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        trailhound_runtime::telemetry::init(&cli.common.telemetry("trailhound-health"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    trailhound_runtime::shutdown_on_signal(shutdown.clone());
    trailhound_health::run(&cli.common, &cli.args, shutdown).await
}
