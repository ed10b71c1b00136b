//! Synthetic AWS Organizations with labelled incidents: the project's own
//! test and benchmark data.
//!
//! An organization of accounts across production, staging, development,
//! testing and sandbox, each active in one to three regions with daily and
//! weekly rhythms, many principals, user agents and source IPs, and plenty
//! of unrelated noise; into it go the incidents trailhound exists to catch
//! (a cryptomining burst, a Lambda invoke storm, an EBS spike, a drop to
//! zero, a subtle night-time rise), each written to `labels.json` with its
//! exact entity and time. The trail is written the way an organization trail
//! lands in S3 (`trail/AWSLogs/<org>/<account>/CloudTrail/<region>/Y/M/D/
//! …json.gz`), with the org snapshot beside it.
//!
//! Everything is derived from the seed (file names and event ids too), so a
//! seed names one dataset exactly. Accounts are generated on parallel
//! threads, each from its own seeded stream.

mod default_profile;
mod events;
pub mod hard;
mod labels;
mod org;
pub mod score;
mod write;

use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use labels::{Benign, Incident, IncidentKind, Labels, Target, read_labels};

use default_profile::{Plan, account_events, plan_incidents};
use write::{Sink, write_account};

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    pub days: u32,
    pub accounts: u32,
    pub seed: u64,
    pub start: DateTime<Utc>,
    /// Mean unrelated events per account per hour.
    pub noise_per_account_hour: u32,
    pub incidents: bool,
    /// Minutes of events per delivery file (one file per account × region
    /// each period): 60 (the default) gives few large files; CloudTrail
    /// itself delivers about every 5 minutes, many small files.
    pub file_minutes: u32,
    /// Which kind of organization: the default one (the fields above as
    /// given) or `Hard` (see the `hard` module: structure from the seed,
    /// 5-minute files; `days`/`accounts` of 0 let the seed choose,
    /// `start`, `noise_per_account_hour` and `file_minutes` are ignored).
    pub profile: Profile,
}

/// The generator's profiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// The project's original organizations (byte-identical per seed).
    #[default]
    Default,
    /// Organizations unlike the default one, for held-out evaluation.
    Hard,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Profile::Default),
            "hard" => Ok(Profile::Hard),
            other => Err(format!("unknown profile {other:?} (default, hard)")),
        }
    }
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            days: 14,
            accounts: 12,
            seed: 1,
            start: Utc
                .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            noise_per_account_hour: 40,
            incidents: true,
            file_minutes: 60,
            profile: Profile::Default,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    pub events: u64,
    pub files: u64,
    pub incidents: usize,
    pub accounts: usize,
    pub bytes_compressed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("failed to write {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is not valid: {message}")]
    Format { path: String, message: String },
}

impl GenerateError {
    fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        GenerateError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

const WINDOW_MS: i64 = 600_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// A Poisson draw (Knuth for small means, normal approximation above).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        let u: f64 = rng.random::<f64>().max(1e-12);
        let v: f64 = rng.random();
        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        return (mean + z * mean.sqrt()).round().max(0.0) as u64;
    }
    let l = (-mean).exp();
    let (mut k, mut p) = (0u64, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

fn iso(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}
/// Writes a whole organization under `out_dir`: `trail/`, `org.json` and
/// `labels.json`.
pub fn generate(config: &GenerateConfig, out_dir: &Path) -> Result<GenerateSummary, GenerateError> {
    if config.profile == Profile::Hard {
        return hard::generate(config, out_dir);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let (org_id, accounts) = org::build(&mut rng, config.accounts);
    let plans = plan_incidents(config, &accounts, &mut rng);
    std::fs::create_dir_all(out_dir).map_err(|e| GenerateError::io(out_dir, e))?;
    let snap = org::snapshot_json(&org_id, &accounts).map_err(|e| GenerateError::io(out_dir, e))?;
    let org_path = out_dir.join("org.json");
    std::fs::write(&org_path, snap).map_err(|e| GenerateError::io(&org_path, e))?;

    let active: Vec<usize> = (0..accounts.len())
        .filter(|i| accounts[*i].status == "ACTIVE")
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(active.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(u64, u64, u64), GenerateError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = active.get(k) else { return mine };
                        let a = &accounts[i];
                        let mut arng = ChaCha8Rng::seed_from_u64(
                            config
                                .seed
                                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                                .wrapping_add(i as u64 + 1),
                        );
                        let mine_plans: Vec<&Plan> =
                            plans.iter().filter(|p| p.account == i).collect();
                        let mut sink = Sink {
                            files: Default::default(),
                            period_ms: i64::from(config.file_minutes.clamp(1, 60)) * 60_000,
                        };
                        account_events(config, a, i, &mine_plans, &mut arng, &mut sink);
                        mine.push(write_account(out_dir, &org_id, a, sink, &mut arng));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut summary = GenerateSummary {
        incidents: plans.len(),
        accounts: accounts.len(),
        ..Default::default()
    };
    for r in results {
        let (e, f, b) = r?;
        summary.events += e;
        summary.files += f;
        summary.bytes_compressed += b;
    }
    let labels = Labels {
        seed: config.seed,
        start: config.start,
        end: config.start + Duration::days(i64::from(config.days)),
        interval_seconds: 600,
        incidents: plans.into_iter().map(|p| p.incident).collect(),
        profile: None,
        accounts: None,
        benign: Vec::new(),
    };
    let labels_path = out_dir.join("labels.json");
    let text =
        serde_json::to_string_pretty(&labels).map_err(|e| GenerateError::io(&labels_path, e))?;
    std::fs::write(&labels_path, text).map_err(|e| GenerateError::io(&labels_path, e))?;
    Ok(summary)
}
