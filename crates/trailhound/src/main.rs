//! `trailhound`: runs any one service or all six in one process, replays
//! trails, generates synthetic organizations, scores detection, and demos.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use trailhound_runtime::CommonArgs;

/// Events are parsed on worker threads and freed on the consumer: mimalloc
/// handles that cross-thread churn far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod ask;
mod audit;
mod certs;
mod demo;
mod nab;
mod org;
mod prices;
mod push;
mod replay;
mod up;
mod wiring;

#[derive(Parser)]
#[command(
    name = "trailhound",
    version,
    about = "Catches unusual usage across every account of an AWS Organization"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs all six services in one process (ports 50051-50056).
    Up(up::UpArgs),
    /// Runs the ingest service alone.
    Ingest(trailhound_ingest::IngestArgs),
    /// Runs the enrich service alone.
    Enrich(trailhound_enrich::EnrichArgs),
    /// With --input: replays CloudTrail files through ingest → enrich →
    /// detect and prints anomalies as JSON Lines. Without: runs the detect
    /// service alone.
    Detect {
        #[command(flatten)]
        replay: replay::ReplayArgs,
        #[command(flatten)]
        enrich: trailhound_enrich::EnrichArgs,
        #[command(flatten)]
        detect: trailhound_detect::DetectArgs,
    },
    /// Runs the insights service alone.
    Insights(trailhound_insights::InsightsArgs),
    /// Runs the notify service alone.
    Notify(trailhound_notify::NotifyArgs),
    /// Runs the health service alone.
    Health(trailhound_health::HealthArgs),
    /// Writes a synthetic organization's trail (S3 layout, .json.gz), its
    /// org snapshot and the labels of the incidents injected into it.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 14)]
        days: u32,
        #[arg(long, default_value_t = 12)]
        accounts: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Unrelated events per account per hour.
        #[arg(long, default_value_t = 40)]
        noise: u32,
    },
    /// Scores anomalies (JSON Lines from `trailhound detect`) against a
    /// generated organization's labels: recall within two intervals and
    /// precision per incident.
    Score {
        #[arg(long)]
        labels: PathBuf,
        #[arg(long)]
        anomalies: PathBuf,
    },
    /// Runs the detection engine over the Numenta Anomaly Benchmark and
    /// writes NAB result files.
    Nab(nab::NabArgs),
    /// Sends CloudTrail files to a running ingest service over gRPC.
    Push(push::PushArgs),
    /// Asks a running insights service a question in plain English.
    Ask(ask::AskArgs),
    /// Manages the price table cost estimates use: `prices update`
    /// rewrites it from the AWS Price List bulk offer files.
    Prices(prices::PricesArgs),
    /// Generates an organization, starts the services, replays the trail
    /// through ingest over gRPC and shows what was found.
    Demo(demo::DemoArgs),
    /// Reads the live AWS Organization: `org snapshot --out org.json`
    /// writes it as an org snapshot file.
    Org(org::OrgArgs),
    /// Writes a development CA and a certificate and key for each service
    /// and for tools (`client`), for TLS and mTLS ([tls] section).
    Certs(certs::CertsArgs),
    /// Reads the audit log: `audit --since 1h [--subject …] [--denied]`.
    Audit(audit::AuditArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let service_name = match &cli.command {
        Command::Up(_) | Command::Demo(_) => "trailhound",
        Command::Ingest(_) => "trailhound-ingest",
        Command::Enrich(_) => "trailhound-enrich",
        Command::Detect { .. } => "trailhound-detect",
        Command::Insights(_) => "trailhound-insights",
        Command::Notify(_) => "trailhound-notify",
        Command::Health(_) => "trailhound-health",
        _ => "trailhound",
    };
    let rt = tokio::runtime::Runtime::new()?;
    let _telemetry = rt.block_on(async {
        // The demo prints what it finds readably; the services' info logs
        // and the log channel's copy of each alert would bury it.
        let default_filter = match &cli.command {
            Command::Demo(_) => "warn,trailhound::alert=off",
            _ => "info",
        };
        trailhound_runtime::telemetry::init(&cli.common.telemetry_or(service_name, default_filter))
    })?;
    let shutdown = CancellationToken::new();
    let common = cli.common.clone();
    match cli.command {
        Command::Detect {
            replay,
            enrich,
            detect,
        } => match replay.input {
            Some(input) => {
                drop(rt);
                replay::run(&common, &enrich, &input, replay.workers).map(|_| ())
            }
            None => rt.block_on(async {
                trailhound_runtime::shutdown_on_signal(shutdown.clone());
                install_security(&common, &shutdown)?;
                trailhound_detect::run(&common, &detect, shutdown).await
            }),
        },
        Command::Generate {
            out,
            days,
            accounts,
            seed,
            noise,
        } => {
            let config = trailhound_generate::GenerateConfig {
                days,
                accounts,
                seed,
                noise_per_account_hour: noise,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let s = trailhound_generate::generate(&config, &out)?;
            eprintln!(
                "wrote {} events in {} files ({:.1} MB gzip), {} accounts, {} incidents to {} in {:.1}s",
                s.events,
                s.files,
                s.bytes_compressed as f64 / 1e6,
                s.accounts,
                s.incidents,
                out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Score { labels, anomalies } => {
            use std::io::Write;
            let labels = trailhound_generate::read_labels(&labels)?;
            let reported = read_reported(&anomalies)?;
            let score = trailhound_generate::score::score(&labels, &reported);
            writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string_pretty(&score)?
            )?;
            Ok(())
        }
        Command::Ask(args) => rt.block_on(ask::run(&args)),
        Command::Prices(args) => rt.block_on(prices::run(&args)),
        Command::Push(args) => rt.block_on(async {
            let s = push::run(&args).await?;
            eprintln!(
                "pushed {} files in {:.2}s: {} accepted, {} rejected, {} duplicates ({:.0} events/s)",
                s.files,
                s.seconds,
                s.accepted,
                s.rejected,
                s.duplicates,
                (s.accepted + s.rejected + s.duplicates) as f64 / s.seconds.max(1e-9)
            );
            Ok(())
        }),
        Command::Nab(args) => nab::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Audit(args) => audit::run(&common, &args),
        Command::Org(args) => rt.block_on(org::run(&common, &args)),
        command => rt.block_on(async move {
            trailhound_runtime::shutdown_on_signal(shutdown.clone());
            install_security(&common, &shutdown)?;
            match command {
                Command::Up(args) => up::run(&common, &args, shutdown).await,
                Command::Ingest(a) => trailhound_ingest::run(&common, &a, shutdown).await,
                Command::Enrich(a) => trailhound_enrich::run(&common, &a, shutdown).await,
                Command::Insights(a) => trailhound_insights::run(&common, &a, shutdown).await,
                Command::Notify(a) => trailhound_notify::run(&common, &a, shutdown).await,
                Command::Health(a) => trailhound_health::run(&common, &a, shutdown).await,
                Command::Demo(a) => demo::run(&common, &a, shutdown).await,
                _ => Ok(()),
            }
        }),
    }
}

/// Loads `[tls]`, `[auth]` and `[limits]` and makes them the process's:
/// every server it starts and every client it opens use them; certificate
/// files are watched for rotation.
fn install_security(common: &CommonArgs, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let security = trailhound_runtime::Security::from_file(
        common.config.as_deref(),
        &common.data_dir,
        common.insecure,
    )?;
    if let Some(tls) = &security.tls {
        tls.watch(shutdown.clone());
    }
    trailhound_runtime::client::install(security.client_security());
    trailhound_runtime::security::install(std::sync::Arc::new(security));
    Ok(())
}

/// Reads anomalies from JSON Lines as the scorer needs them.
fn read_reported(
    path: &std::path::Path,
) -> anyhow::Result<Vec<trailhound_generate::score::ReportedAnomaly>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: not an anomaly: {e}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
