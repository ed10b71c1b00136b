//! `trailhound-notify`: the notify service alone.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "trailhound-notify",
    version,
    about = "trailhound's notify service"
)]
struct Cli {
    #[command(flatten)]
    common: trailhound_runtime::CommonArgs,
    #[command(flatten)]
    args: trailhound_notify::NotifyArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        trailhound_runtime::telemetry::init(&cli.common.telemetry("trailhound-notify"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    trailhound_runtime::shutdown_on_signal(shutdown.clone());
    trailhound_notify::run(&cli.common, &cli.args, shutdown).await
}
