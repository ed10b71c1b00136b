//! `trailhound audit --since 1h [--subject …]`: reads the audit log the
//! security layer writes (one JSON line per authenticated or refused
//! request) and prints what matches, oldest first.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use trailhound_runtime::CommonArgs;
use trailhound_runtime::security::AuditRecord;

#[derive(Clone, Debug, clap::Args)]
pub struct AuditArgs {
    /// How far back, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    /// Only this caller: a token's sub or e-mail, an API token's name, a
    /// service's name (substring match).
    #[arg(long)]
    pub subject: Option<String>,
    /// Only refused requests (unauthenticated, permission denied, over a
    /// limit).
    #[arg(long)]
    pub denied: bool,
    /// The log to read [default: [auth] audit_log under the data dir].
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print the JSON lines as they are.
    #[arg(long)]
    pub json: bool,
}

pub fn run(common: &CommonArgs, args: &AuditArgs) -> anyhow::Result<()> {
    let path = match &args.file {
        Some(f) => f.clone(),
        None => {
            let auth: trailhound_runtime::auth::AuthConfig =
                trailhound_runtime::load_section(common.config.as_deref(), "auth")?;
            if auth.audit_log.is_absolute() {
                auth.audit_log
            } else {
                common.data_dir.join(auth.audit_log)
            }
        }
    };
    let file = std::fs::File::open(&path).map_err(|e| {
        anyhow::anyhow!(
            "failed to read the audit log {}: {e} (it is written when [auth] is on)",
            path.display()
        )
    })?;
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(args.since).unwrap_or(chrono::Duration::hours(1));
    let mut out = std::io::stdout().lock();
    let mut shown = 0usize;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (the writer was killed mid-line) is skipped.
        let Ok(r) = serde_json::from_str::<AuditRecord>(&line) else {
            eprintln!("{}:{}: not an audit record, skipped", path.display(), n + 1);
            continue;
        };
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(&r.time) else {
            continue;
        };
        if t < since {
            continue;
        }
        if let Some(s) = &args.subject
            && !r.subject.contains(s.as_str())
            && !r.name.as_deref().is_some_and(|n| n.contains(s.as_str()))
        {
            continue;
        }
        if args.denied && r.outcome == "ok" {
            continue;
        }
        shown += 1;
        if args.json {
            writeln!(out, "{line}")?;
            continue;
        }
        writeln!(
            out,
            "{} {} [{}{}] {} {} scope={}{}{}",
            r.time,
            r.name.as_deref().unwrap_or(&r.subject),
            r.kind,
            r.role
                .as_deref()
                .map(|x| format!(" {x}"))
                .unwrap_or_default(),
            r.method,
            r.outcome,
            r.scope,
            r.peer
                .as_deref()
                .map(|p| format!(" from {p}"))
                .unwrap_or_default(),
            r.reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default(),
        )?;
    }
    eprintln!("{shown} records since {}", since.to_rfc3339());
    Ok(())
}
