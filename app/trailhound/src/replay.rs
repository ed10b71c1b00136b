//! `trailhound detect --input PATH`: the replay (`trailhound_replay`)
//! with the configuration's enrich rules and detectors, one JSON object
//! per anomaly (JSON Lines) on stdout and a summary on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use trailhound_detect::Engine;
use trailhound_enrich::Enricher;
use trailhound_replay::{Summary, replay};

/// Flags of `trailhound detect` in replay mode.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// CloudTrail file or AWSLogs tree to replay; without it, `detect` runs
    /// the detect service.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Parser threads [default: all cores but one].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Writes every rejected and late record here, one JSON object per
    /// line with the reason (the summary shows only the top kinds).
    #[arg(long)]
    pub rejected: Option<PathBuf>,
}

/// Runs the replay and prints JSON Lines on stdout, a summary on stderr.
pub fn run(
    common: &trailhound_runtime::CommonArgs,
    enrich: &trailhound_enrich::EnrichArgs,
    input: &std::path::Path,
    args: &ReplayArgs,
) -> anyhow::Result<Summary> {
    let enrich_cfg = enrich.config(common)?;
    let mut detect_cfg = trailhound_detect::DetectArgs::default().config(common)?;
    let source: Arc<dyn trailhound_enrich::AccountSource> = match &enrich_cfg.org_snapshot {
        Some(p) => Arc::new(trailhound_enrich::SnapshotSource::load(p)?),
        None => {
            // With no organization to know accounts from, every account
            // is tracked on its own (still capped by max_entities).
            detect_cfg.engine.unknown_accounts = trailhound_detect::UnknownAccounts::Track;
            eprintln!(
                "no --org given: every account is tracked as its own entity, and none has a name, OU or environment"
            );
            Arc::new(trailhound_enrich::SnapshotSource::empty())
        }
    };
    // A replay keeps nothing between runs: no persistent cache.
    let enricher = Arc::new(Enricher::new(
        source,
        None,
        enrich_cfg.rules.clone(),
        enrich_cfg.memory_ttl,
        enrich_cfg.store_ttl,
    ));
    let engine = Engine::new(detect_cfg.detectors.clone(), detect_cfg.engine.clone());
    // The consumer (detection) is one thread and the forests of a closing
    // window take a second: parsers on every core would make the three
    // share cores, and on two cores one parser is faster than two.
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .saturating_sub(1)
            .max(1)
    });
    let mut rejected_out = match &args.rejected {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |e| anyhow::anyhow!("failed to create {}: {e}", p.display()),
        )?)),
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    let mut reject_err = None;
    let (summary, _) = replay(
        input,
        enricher,
        engine,
        workers,
        |a| {
            if write_err.is_none()
                && let Err(e) = serde_json::to_writer(&mut out, a)
                    .map_err(std::io::Error::from)
                    .and_then(|_| out.write_all(b"\n"))
            {
                write_err = Some(e);
            }
        },
        |r| {
            tracing::debug!(source = %r.source, reason = %r.reason, "rejected");
            if let Some(w) = rejected_out.as_mut()
                && reject_err.is_none()
                && let Err(e) = serde_json::to_writer(&mut *w, r)
                    .map_err(std::io::Error::from)
                    .and_then(|_| w.write_all(b"\n"))
            {
                reject_err = Some(e);
            }
        },
    )?;
    out.flush()?;
    if let Some(e) = write_err {
        return Err(anyhow::anyhow!("failed to write anomalies: {e}"));
    }
    if let Some(mut w) = rejected_out {
        w.flush()?;
    }
    if let Some(e) = reject_err {
        return Err(anyhow::anyhow!("failed to write rejected records: {e}"));
    }
    eprintln!(
        "read {} events from {} files in {:.2}s ({:.0} events/s): {} accepted, {} rejected, {} duplicates, {} late; {} entities, {} entity windows judged; {} anomalies",
        summary.events_read,
        summary.files,
        summary.seconds,
        summary.events_per_second,
        summary.accepted,
        summary.rejected,
        summary.duplicates,
        summary.late,
        summary.entities,
        summary.evaluations,
        summary.anomalies
    );
    if summary.anomalies > 0 || summary.suppressed_environment + summary.suppressed_weekly > 0 {
        eprintln!(
            "{} raised early (printed again, same id, when their window closed), {} coordinated across accounts; not raised: {} within a development or sandbox account's swings, {} repeating the same weekday a week before, {} bursts no larger than the entity's bursts on other days, {} first uses of a region with nothing notable",
            summary.early,
            summary.coordinated,
            summary.suppressed_environment,
            summary.suppressed_weekly,
            summary.suppressed_bursts,
            summary.suppressed_new_region
        );
    }
    if summary.skipped_files > 0 {
        eprintln!(
            "skipped {} CloudTrail digest and Insights files (not event records)",
            summary.skipped_files
        );
    }
    if !summary.reasons.is_empty() {
        eprintln!(
            "why {} records did not count, most frequent first{}:\n{}",
            summary.reasons.total(),
            if args.rejected.is_some() {
                ""
            } else {
                " (every one with --rejected FILE)"
            },
            summary.reasons.report(5).trim_end()
        );
    }
    Ok(summary)
}
