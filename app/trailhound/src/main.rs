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
mod prices;
mod probe;
mod push;
mod replay;
mod up;

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
        /// Days of events [default: 14; hard profile: 10–14 from the seed].
        #[arg(long)]
        days: Option<u32>,
        /// Active accounts [default: 12; hard profile: 12–30 from the seed].
        #[arg(long)]
        accounts: Option<u32>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Unrelated events per account per hour (default profile only).
        #[arg(long, default_value_t = 40)]
        noise: u32,
        /// Minutes of events per file (one file per account × region per
        /// period): 60 for few large files, 5 for CloudTrail's own layout
        /// (default profile only; the hard profile always writes 5).
        #[arg(long, default_value_t = 60)]
        file_minutes: u32,
        /// `default`: the project's original organizations; `hard`:
        /// organizations whose structure, rhythms, jobs, traps and incidents
        /// (nine kinds) are drawn from the seed, for held-out evaluation.
        #[arg(long, default_value = "default")]
        profile: trailhound_generate::Profile,
    },
    /// Scores anomalies (JSON Lines from `trailhound detect`) against a
    /// generated organization's labels: recall per incident kind, overall
    /// recall, precision (anomalies matched to an incident), false alarms
    /// per day per 100 accounts, median and p90 delay from incident start
    /// to the anomaly's observed_until; and the original figures (found
    /// within two intervals of the start, reported incidents that are
    /// real). Repeat --labels/--anomalies in pairs to score several
    /// organizations together.
    Score {
        #[arg(long, required = true)]
        labels: Vec<PathBuf>,
        #[arg(long, required = true)]
        anomalies: Vec<PathBuf>,
        /// Print the figures as JSON (one object per organization and the
        /// combined evaluation) instead of text.
        #[arg(long)]
        json: bool,
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
    Org(trailhound_enrich::org_command::OrgArgs),
    /// Writes a development CA and a certificate and key for each service
    /// and for tools (`client`), for TLS and mTLS ([tls] section).
    Certs(certs::CertsArgs),
    /// Reads the audit log: `audit --since 1h [--subject …] [--denied]`.
    Audit(audit::AuditArgs),
    /// Checks a running service's grpc.health once: exit 0 when SERVING,
    /// 1 otherwise (container health checks; the images have no shell).
    Probe(probe::ProbeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Probe(args) = &cli.command {
        // Run every few seconds by container engines: no telemetry, no
        // thread pool, one line out.
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(probe::run(args, &cli.common));
    }
    let deadline = cli.common.shutdown_deadline;
    trailhound_runtime::shutdown::set_deadline(deadline);
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
    // Services keep an organization's activity there: private to the user.
    // health keeps nothing but the audit log (which makes its own folder),
    // so it runs on a read-only filesystem without a data volume.
    let runs_services = matches!(
        &cli.command,
        Command::Up(_)
            | Command::Ingest(_)
            | Command::Enrich(_)
            | Command::Insights(_)
            | Command::Notify(_)
    ) || matches!(&cli.command, Command::Detect { replay, .. } if replay.input.is_none());
    if runs_services {
        trailhound_runtime::private::dir(&common.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "failed to create the data directory {}: {e}",
                common.data_dir.display()
            )
        })?;
    }
    match cli.command {
        Command::Detect {
            replay,
            enrich,
            detect,
        } => match replay.input.clone() {
            Some(input) => {
                drop(rt);
                replay::run(&common, &enrich, &input, &replay).map(|_| ())
            }
            None => {
                let done = rt.block_on(async {
                    trailhound_runtime::shutdown_on_signal(shutdown.clone());
                    install_security(&common, &shutdown, Some("detect"))?;
                    let run = trailhound_detect::run(&common, &detect, shutdown.clone());
                    trailhound_runtime::within_deadline(shutdown, deadline, run).await
                });
                // Blocking work abandoned at the deadline must not hold the exit.
                rt.shutdown_timeout(EXIT_GRACE);
                done
            }
        },
        Command::Generate {
            out,
            days,
            accounts,
            seed,
            noise,
            file_minutes,
            profile,
        } => {
            let hard = profile == trailhound_generate::Profile::Hard;
            let config = trailhound_generate::GenerateConfig {
                days: days.unwrap_or(if hard { 0 } else { 14 }),
                accounts: accounts.unwrap_or(if hard { 0 } else { 12 }),
                seed,
                noise_per_account_hour: noise,
                file_minutes,
                profile,
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
        Command::Score {
            labels,
            anomalies,
            json,
        } => {
            use std::io::Write;
            anyhow::ensure!(
                labels.len() == anomalies.len(),
                "give --labels and --anomalies in pairs ({} labels, {} anomalies files)",
                labels.len(),
                anomalies.len()
            );
            let mut scores = Vec::new();
            for (l, a) in labels.iter().zip(&anomalies) {
                let lab = trailhound_generate::read_labels(l)?;
                let reported = read_reported(a)?;
                let accounts = l
                    .parent()
                    .map(|d| d.join("org.json"))
                    .and_then(|p| active_accounts(&p));
                let s = trailhound_generate::score::score_with_accounts(&lab, &reported, accounts);
                scores.push((l.clone(), lab, s));
            }
            // Incident ids repeat across organizations: name the seed.
            let evals: Vec<_> = scores
                .iter()
                .map(|(_, lab, s)| {
                    let mut e = s.eval.clone();
                    for k in &mut e.by_kind {
                        for id in &mut k.missed {
                            *id = format!("s{}:{id}", lab.seed);
                        }
                    }
                    e
                })
                .collect();
            let all = trailhound_generate::score::Evaluation::combine(&evals);
            let mut out = std::io::stdout().lock();
            if json {
                let per: Vec<_> = scores
                    .iter()
                    .map(|(l, _, s)| serde_json::json!({"labels": l, "score": s}))
                    .collect();
                let v = if per.len() == 1 {
                    serde_json::to_value(&scores[0].2)?
                } else {
                    serde_json::json!({"organizations": per, "combined": all})
                };
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for (l, lab, s) in &scores {
                    write!(out, "{}", score_text(l, lab, s))?;
                }
                if scores.len() > 1 {
                    writeln!(out, "== all {} organizations ==", scores.len())?;
                    write!(out, "{}", eval_text(&all))?;
                }
            }
            Ok(())
        }
        Command::Ask(args) => rt.block_on(ask::run(&args)),
        Command::Prices(args) => rt.block_on(prices::run(&args)),
        Command::Push(args) => rt.block_on(async {
            let s = push::run(&args).await?;
            eprint!("{}", s.report());
            if s.failed_files.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{} of {} files could not be read (the others were sent)",
                    s.failed_files.len(),
                    s.files
                ))
            }
        }),
        Command::Nab(args) => nab::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Audit(args) => audit::run(&common, &args),
        Command::Org(args) => rt.block_on(trailhound_enrich::org_command::run(&common, &args)),
        command => {
            let done = rt.block_on(async move {
                trailhound_runtime::shutdown_on_signal(shutdown.clone());
                let standalone = match &command {
                    Command::Ingest(_) => Some("ingest"),
                    Command::Enrich(_) => Some("enrich"),
                    Command::Insights(_) => Some("insights"),
                    Command::Notify(_) => Some("notify"),
                    Command::Health(_) => Some("health"),
                    _ => None,
                };
                install_security(&common, &shutdown, standalone)?;
                let stop = shutdown.clone();
                let run = async move {
                    match command {
                        Command::Up(args) => up::run(&common, &args, stop).await,
                        Command::Ingest(a) => trailhound_ingest::run(&common, &a, stop).await,
                        Command::Enrich(a) => trailhound_enrich::run(&common, &a, stop).await,
                        Command::Insights(a) => trailhound_insights::run(&common, &a, stop).await,
                        Command::Notify(a) => trailhound_notify::run(&common, &a, stop).await,
                        Command::Health(a) => trailhound_health::run(&common, &a, stop).await,
                        Command::Demo(a) => demo::run(&common, &a, stop).await,
                        _ => Ok(()),
                    }
                };
                trailhound_runtime::within_deadline(shutdown, deadline, run).await
            });
            rt.shutdown_timeout(EXIT_GRACE);
            done
        }
    }
}

/// How long blocking tasks still running after a service stopped may hold
/// the exit (a detect checkpoint abandoned at the deadline, say).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Loads `[tls]`, `[auth]` and `[limits]` and makes them the process's:
/// every server it starts and every client it opens use them; certificate
/// files are watched for rotation. `standalone` names the service when it
/// runs as its own process: with `[auth]` it then needs mTLS.
fn install_security(
    common: &CommonArgs,
    shutdown: &CancellationToken,
    standalone: Option<&str>,
) -> anyhow::Result<()> {
    let security = trailhound_runtime::Security::from_args(common)?;
    if let Some(service) = standalone {
        security.check_service_identity(service)?;
    }
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

/// Active accounts in an org snapshot file, if it is there and readable.
fn active_accounts(path: &std::path::Path) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let n = v
        .get("accounts")?
        .as_array()?
        .iter()
        .filter(|a| a.get("status").and_then(|s| s.as_str()).unwrap_or("ACTIVE") == "ACTIVE")
        .count();
    u32::try_from(n).ok()
}

fn minutes(s: Option<f64>) -> String {
    s.map(|s| format!("{:.1} min", s / 60.0))
        .unwrap_or_else(|| "-".into())
}

fn eval_text(e: &trailhound_generate::score::Evaluation) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<22} {:>7} {:>6} {:>12} {:>12}  missed",
        "kind", "found", "named", "median delay", "p90 delay"
    );
    for k in &e.by_kind {
        let mut d = k.delays_s.clone();
        d.sort_by(f64::total_cmp);
        let q = |q: f64| {
            (!d.is_empty()).then(|| d[((q * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1])
        };
        let _ = writeln!(
            t,
            "{:<22} {:>7} {:>6} {:>12} {:>12}  {}",
            k.kind,
            format!("{}/{}", k.found, k.total),
            k.named,
            minutes(q(0.5)),
            minutes(q(0.9)),
            k.missed.join(" ")
        );
    }
    let _ = writeln!(
        t,
        "recall {:.3} ({}/{} incidents found)",
        e.recall, e.found, e.incidents
    );
    let _ = writeln!(
        t,
        "precision {:.3} ({} of {} anomalies matched an incident)",
        e.precision, e.true_anomalies, e.anomalies
    );
    let causes: Vec<String> = e
        .false_alarms_by_cause
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let _ = writeln!(
        t,
        "false alarms {:.2} per day per 100 accounts ({} alarms over {:.0} account-days: {})",
        e.false_alarms_per_day_per_100_accounts,
        e.false_alarms,
        e.account_days,
        causes.join(", ")
    );
    let _ = writeln!(
        t,
        "delay from incident start to observed_until: median {}, p90 {}",
        minutes(e.delay_median_s),
        minutes(e.delay_p90_s)
    );
    t
}

fn score_text(
    path: &std::path::Path,
    labels: &trailhound_generate::Labels,
    s: &trailhound_generate::score::Score,
) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "== {} (seed {}, profile {}) ==",
        path.display(),
        labels.seed,
        labels.profile.as_deref().unwrap_or("default")
    );
    t.push_str(&eval_text(&s.eval));
    let _ = writeln!(
        t,
        "within two intervals of the start: {}/{} found (recall {:.3}); {}/{} reported incidents real (precision {:.3})",
        s.detected, s.incidents, s.recall, s.true_reported, s.reported_incidents, s.precision
    );
    t
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
