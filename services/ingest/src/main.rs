//! `trailhound-ingest`: the ingest service alone.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "trailhound-ingest",
    version,
    about = "trailhound's ingest service"
)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(flatten)]
    args: trailhound_ingest::IngestArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        trailhound_runtime::telemetry::init(&cli.common.telemetry("trailhound-ingest"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    trailhound_runtime::shutdown_on_signal(shutdown.clone());
    trailhound_ingest::run(&cli.common, &cli.args, shutdown).await
}
