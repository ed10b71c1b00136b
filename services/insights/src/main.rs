//! `trailhound-insights`: the insights service alone.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "trailhound-insights",
    version,
    about = "trailhound's insights service"
)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(flatten)]
    args: trailhound_insights::InsightsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        trailhound_runtime::telemetry::init(&cli.common.telemetry("trailhound-insights"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    trailhound_runtime::shutdown_on_signal(shutdown.clone());
    trailhound_insights::run(&cli.common, &cli.args, shutdown).await
}
