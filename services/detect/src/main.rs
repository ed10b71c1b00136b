//! `trailhound-detect`: the detect service alone.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "trailhound-detect",
    version,
    about = "trailhound's detect service"
)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(flatten)]
    args: trailhound_detect::DetectArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        trailhound_runtime::telemetry::init(&cli.common.telemetry("trailhound-detect"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    trailhound_runtime::shutdown_on_signal(shutdown.clone());
    trailhound_detect::run(&cli.common, &cli.args, shutdown).await
}
