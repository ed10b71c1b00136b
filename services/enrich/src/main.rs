//! `trailhound-enrich`: the enrich service alone.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "trailhound-enrich",
    version,
    about = "trailhound's enrich service"
)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(flatten)]
    args: trailhound_enrich::EnrichArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        trailhound_runtime::telemetry::init(&cli.common.telemetry("trailhound-enrich"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    trailhound_runtime::shutdown_on_signal(shutdown.clone());
    trailhound_enrich::run(&cli.common, &cli.args, shutdown).await
}
