//! The `hard` profile: organizations unlike the default one, with their
//! structure drawn from the seed, so that held-out seeds are organizations
//! no detector was tuned on.
//!
//! - 12–30 accounts over 10–14 days (unless given), a random environment
//!   mix (production, staging, development, testing, sandbox) with the
//!   environment in each account's `Environment` tag, a start date drawn
//!   from the seed;
//! - one delivery file per account × region per 5 minutes, named and laid
//!   out as CloudTrail does, delivered a few minutes after the period ends;
//! - rhythms in each region's own local time (business hours, weekends);
//! - weekly jobs (a batch launch of instances early on a weekday, a weekly
//!   restore test creating volumes) and monthly jobs (on the 1st);
//! - 4–12 Lambda functions per account, each with its own rhythm (steady,
//!   business hours, bursty, scheduled);
//! - busy development and sandbox accounts whose business hours swing from
//!   day to day;
//! - failed-call noise (AccessDenied, Client.UnauthorizedOperation,
//!   ThrottlingException) at low rates, and occasional throttling bursts;
//! - cross-account automation: `OrganizationAccountAccessRole` assumed into
//!   every account nightly from one IP (an audit), and a CI role deploying
//!   into many accounts on weekdays from one IP (sometimes launching a test
//!   instance);
//! - single calls in a region an account never used (a trap);
//! - about 80% of events are noise (Describe*, List*, Get*, …).
//!
//! Incidents (nine kinds, each at least once per organization) start after
//! a warm-up of 7 days, so weekly jobs have been seen once. The benign traps
//! are listed in `labels.json` too (`benign`), so false alarms on them can
//! be told apart.

use std::path::Path;

use chrono::{Datelike, Duration, TimeZone, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::labels::{Benign, Incident, Labels};
use crate::org::{self, Account};
use crate::write::{Sink, write_account};
use crate::{DAY_MS, GenerateConfig, GenerateError, GenerateSummary, HOUR_MS};

mod incidents;
mod names;
mod plan;
mod structure;
mod traffic;

use incidents::incident_events;
use structure::build;
use traffic::{account_events, noise_events};

/// One delivery period (and the generation step), ms.
const STEP: i64 = 300_000;
const MIN_MS: i64 = 60_000;
/// Days of warm-up before the first incident.
pub const WARMUP_DAYS: i64 = 7;

/// Each region's standard offset from UTC, minutes (the organizations are
/// generated in January and February, outside daylight saving).
pub fn utc_offset_minutes(region: &str) -> i64 {
    match region {
        "us-east-1" => -300,
        "us-west-2" => -480,
        "eu-west-1" => 0,
        "eu-central-1" => 60,
        "ap-southeast-1" => 480,
        "ap-northeast-1" => 540,
        "ap-south-1" => 330,
        "sa-east-1" => -180,
        _ => 0,
    }
}

/// Local (weekday 0 = Monday, hour with fraction, day of month).
fn local(t: i64, region: &str) -> (u32, f64, u32) {
    let lt = Utc
        .timestamp_millis_opt(t + utc_offset_minutes(region) * MIN_MS)
        .single()
        .unwrap_or_default();
    (
        lt.weekday().num_days_from_monday(),
        f64::from(lt.hour()) + f64::from(lt.minute()) / 60.0,
        lt.day(),
    )
}

/// Business-hours activity in the region's local time: 0 at night, up to
/// 1 mid-day on weekdays, a tenth of that at weekends.
fn business(t: i64, region: &str) -> f64 {
    let (wd, h, _) = local(t, region);
    let day = if (7.0..19.0).contains(&h) {
        (std::f64::consts::PI * (h - 7.0) / 12.0).sin()
    } else {
        0.0
    };
    if wd >= 5 { 0.1 * day } else { day }
}

/// The UTC ms of local hour `h` on day `d` (counted from `start`) in `region`.
fn at_local(start: i64, d: i64, h: f64, region: &str) -> i64 {
    start + d * DAY_MS + (h * HOUR_MS as f64) as i64 - utc_offset_minutes(region) * MIN_MS
}

fn ms(t: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().unwrap_or_default()
}

fn lognormal(rng: &mut ChaCha8Rng, sigma: f64) -> f64 {
    let u: f64 = rng.random::<f64>().max(1e-12);
    let v: f64 = rng.random();
    let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
    (z * sigma).exp()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Rhythm {
    /// Invoked all day at about the same rate.
    Steady,
    /// Busy in local business hours, quiet at night and weekends, with day
    /// to day swings.
    Business,
    /// Near-idle with bursts a few times a day.
    Bursty,
    /// Invoked by a schedule every so many minutes.
    Scheduled(i64),
}

#[derive(Clone, Debug)]
pub(crate) struct Func {
    pub name: String,
    pub region: &'static str,
    pub rhythm: Rhythm,
    /// Invocations per minute at peak (Scheduled: per firing).
    pub rate: f64,
    pub invoker: &'static str,
    /// (start ms, length ms, invocations) of each burst (Bursty).
    pub bursts: Vec<(i64, i64, u64)>,
}

/// An account with what drives its traffic.
#[derive(Clone, Debug)]
pub(crate) struct HAccount {
    pub a: Account,
    pub funcs: Vec<Func>,
    /// Index of the steadily busy function (always Steady, home region).
    pub busy_func: usize,
    /// RunInstances calls per 10 minutes in the home region: (day, night).
    pub ec2: (f64, f64),
    /// CreateVolume calls per 10 minutes at business peak.
    pub ebs: f64,
    /// Day-to-day swing of business-hours activity, one factor per day.
    pub swing: Vec<f64>,
    /// Weekly batch launch: (local weekday, local hour, instances).
    pub weekly_batch: Option<(u32, f64, u64)>,
    /// Weekly restore test: (local weekday, local hour, volumes).
    pub weekly_restore: Option<(u32, f64, u64)>,
    /// Monthly job on the 1st: (local hour, instances, invocations).
    pub monthly: Option<(f64, u64, u64)>,
    pub corp_net: String,
}

/// What an incident does in one account.
#[derive(Clone, Debug)]
enum Effect {
    Cryptomining {
        region: String,
        s: i64,
        e: i64,
        principal: String,
        ip: String,
        itype: String,
    },
    Storm {
        func: usize,
        s: i64,
        e: i64,
        factor: f64,
    },
    Ebs {
        region: String,
        s: i64,
        e: i64,
        principal: String,
        n: u64,
    },
    Stop {
        func: usize,
        s: i64,
        e: i64,
    },
    NightRise {
        s: i64,
        e: i64,
        factor: f64,
    },
    FailedRun {
        region: String,
        s: i64,
        e: i64,
        principal: String,
        ip: String,
        n: u64,
    },
    Coordinated {
        region: String,
        s: i64,
        e: i64,
        factor: f64,
        session: String,
        ip: String,
    },
    Secrets {
        region: String,
        s: i64,
        e: i64,
        principal: String,
        ip: String,
        n: u64,
    },
    Iam {
        s: i64,
        e: i64,
        principal: String,
        ip: String,
        users: u64,
    },
}

/// The organization drawn from the seed, with incidents and traps planned.
pub(crate) struct HardOrg {
    pub org_id: String,
    pub accounts: Vec<HAccount>,
    pub start: i64,
    pub days: u32,
    pub incidents: Vec<Incident>,
    pub benign: Vec<Benign>,
    effects: Vec<Vec<Effect>>,
    /// The org's CI runner and audit IPs.
    ci_ip: String,
    audit_ip: String,
    /// Index of the shared-services account automation comes from.
    shared: usize,
    /// Single calls in a region an account never used: (account, region, t, what).
    traps: Vec<(usize, &'static str, i64, u8)>,
    /// Throttling bursts: (account, t, calls).
    throttles: Vec<(usize, i64, u64)>,
}

pub(crate) fn generate(
    cfg: &GenerateConfig,
    out_dir: &Path,
) -> Result<GenerateSummary, GenerateError> {
    let org = build(cfg);
    std::fs::create_dir_all(out_dir).map_err(|e| GenerateError::io(out_dir, e))?;
    let accounts: Vec<Account> = org.accounts.iter().map(|h| h.a.clone()).collect();
    let snap =
        org::snapshot_json(&org.org_id, &accounts).map_err(|e| GenerateError::io(out_dir, e))?;
    let org_path = out_dir.join("org.json");
    std::fs::write(&org_path, snap).map_err(|e| GenerateError::io(&org_path, e))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(accounts.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(u64, u64, u64), GenerateError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= org.accounts.len() {
                            return mine;
                        }
                        let mut rng = ChaCha8Rng::seed_from_u64(
                            cfg.seed
                                .wrapping_mul(0xD1B5_4A32_D192_ED03)
                                .wrapping_add(i as u64 + 1),
                        );
                        let mut sink = Sink {
                            files: Default::default(),
                            period_ms: STEP,
                        };
                        let (signal, _) = account_events(&org, i, &mut rng, &mut sink);
                        noise_events(&org, i, signal, &mut rng, &mut sink);
                        incident_events(&org, i, &mut rng, &mut sink);
                        mine.push(write_account(
                            out_dir,
                            &org.org_id,
                            &org.accounts[i].a,
                            sink,
                            &mut rng,
                        ));
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
        incidents: org.incidents.len(),
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
        seed: cfg.seed,
        start: ms(org.start),
        end: ms(org.start) + Duration::days(i64::from(org.days)),
        interval_seconds: 600,
        incidents: org.incidents,
        profile: Some("hard".into()),
        accounts: Some(accounts.len() as u32),
        benign: org.benign,
    };
    let labels_path = out_dir.join("labels.json");
    let text =
        serde_json::to_string_pretty(&labels).map_err(|e| GenerateError::io(&labels_path, e))?;
    std::fs::write(&labels_path, text).map_err(|e| GenerateError::io(&labels_path, e))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Read;

    use serde_json::Value;

    use super::plan::KINDS;
    use super::*;
    use crate::labels::IncidentKind;
    use crate::{Profile, read_labels};

    fn cfg(seed: u64, days: u32, accounts: u32) -> GenerateConfig {
        GenerateConfig {
            seed,
            days,
            accounts,
            profile: Profile::Hard,
            ..Default::default()
        }
    }

    #[test]
    fn organizations_come_from_the_seed_and_plan_every_kind_after_the_warm_up() {
        let mut all_kinds = BTreeSet::new();
        let mut shapes = BTreeSet::new();
        for seed in [1, 2, 3, 101] {
            let org = build(&cfg(seed, 0, 0));
            let n = org.accounts.len();
            assert!((12..=30).contains(&n), "seed {seed}: {n} accounts");
            assert!(
                (10..=14).contains(&org.days),
                "seed {seed}: {} days",
                org.days
            );
            shapes.insert((n, org.days, org.start, org.accounts[1].a.id.clone()));
            for h in &org.accounts {
                let env = h.a.tags.get("Environment").expect("an Environment tag");
                assert!(!env.is_empty());
                assert!((4..=10).contains(&h.funcs.len()));
                assert_eq!(h.funcs[h.busy_func].rhythm, Rhythm::Steady);
            }
            let envs: BTreeSet<_> = org
                .accounts
                .iter()
                .map(|h| format!("{:?}", h.a.env))
                .collect();
            for e in ["Production", "Development", "Sandbox"] {
                assert!(envs.contains(e), "seed {seed}: no {e} account");
            }
            let kinds: BTreeSet<_> = org.incidents.iter().map(|i| i.kind).collect();
            assert_eq!(kinds.len(), KINDS.len(), "seed {seed}: kinds {kinds:?}");
            all_kinds.extend(kinds);
            let end = org.start + i64::from(org.days) * DAY_MS;
            for inc in &org.incidents {
                let (s, e) = (inc.start.timestamp_millis(), inc.end.timestamp_millis());
                assert!(
                    s >= org.start + WARMUP_DAYS * DAY_MS,
                    "{} starts in the warm-up",
                    inc.id
                );
                assert!(s < e && e <= end, "{} ends after the data", inc.id);
                assert!(inc.service.is_some());
                if inc.kind == IncidentKind::CoordinatedLaunch {
                    let accts: BTreeSet<_> = inc.targets.iter().map(|t| &t.account_id).collect();
                    assert_eq!(accts.len(), 5);
                    assert!(e - s <= 90 * MIN_MS);
                }
            }
            // A second incident of a kind is never in the same account.
            let mut seen = BTreeSet::new();
            for inc in &org.incidents {
                for t in inc.targets() {
                    assert!(
                        seen.insert((inc.kind, t.account_id)),
                        "{} repeats a kind in an account",
                        inc.id
                    );
                }
            }
            assert!(org.benign.iter().any(|b| b.kind == "first_region_call"));
        }
        assert_eq!(all_kinds.len(), KINDS.len());
        assert_eq!(shapes.len(), 4, "every seed is a different organization");
    }

    /// Every record of every file: (path relative to the trail, records).
    fn read_trail(dir: &Path) -> Vec<(String, Vec<Value>)> {
        fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(d).expect("read dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut paths = Vec::new();
        walk(dir, &mut paths);
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let mut text = String::new();
                flate2::read::GzDecoder::new(std::fs::File::open(&p).expect("open"))
                    .read_to_string(&mut text)
                    .expect("gunzip");
                let v: Value = serde_json::from_str(&text).expect("json");
                let recs = v["Records"].as_array().cloned().unwrap_or_default();
                (
                    p.strip_prefix(dir).expect("prefix").display().to_string(),
                    recs,
                )
            })
            .collect()
    }

    fn ms_of(v: &Value) -> i64 {
        chrono::DateTime::parse_from_rfc3339(v["eventTime"].as_str().unwrap_or(""))
            .expect("eventTime")
            .timestamp_millis()
    }

    #[test]
    fn hard_trails_are_deterministic_laid_out_like_cloudtrail_and_match_their_labels() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let config = cfg(7, 9, 8);
        let sa = crate::generate(&config, a.path()).expect("generate");
        let sb = crate::generate(&config, b.path()).expect("generate");
        assert_eq!(sa, sb);
        let ta = read_trail(&a.path().join("trail"));
        let names_b: Vec<String> = read_trail(&b.path().join("trail"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            ta.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            names_b
        );
        for (name, _) in ta.iter().take(50) {
            let x = std::fs::read(a.path().join("trail").join(name)).expect("read");
            let y = std::fs::read(b.path().join("trail").join(name)).expect("read");
            assert!(x == y, "{name} differs between two runs of one seed");
        }
        assert_eq!(
            std::fs::read(a.path().join("labels.json")).expect("labels"),
            std::fs::read(b.path().join("labels.json")).expect("labels")
        );
        let labels = read_labels(&a.path().join("labels.json")).expect("labels");
        assert_eq!(labels.profile.as_deref(), Some("hard"));
        let org: Value =
            serde_json::from_str(&std::fs::read_to_string(a.path().join("org.json")).expect("org"))
                .expect("org json");
        let org_id = org["organization_id"].as_str().expect("org id").to_string();
        for acct in org["accounts"].as_array().expect("accounts") {
            assert!(
                acct["tags"]["Environment"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty())
            );
        }

        // Layout: AWSLogs/<org>/<account>/CloudTrail/<region>/Y/M/D/<account>_CloudTrail_<region>_<delivery>Z_<16>.json.gz,
        // one file per account × region × 5 minutes, delivered after the period ends.
        let mut periods = BTreeSet::new();
        let mut events: Vec<Value> = Vec::new();
        for (name, recs) in &ta {
            let parts: Vec<&str> = name.split('/').collect();
            assert_eq!(parts.len(), 9, "{name}");
            assert_eq!(
                (parts[0], parts[1], parts[3]),
                ("AWSLogs", org_id.as_str(), "CloudTrail"),
                "{name}"
            );
            let (account, region) = (parts[2], parts[4]);
            let file = parts[8];
            assert!(
                file.starts_with(&format!("{account}_CloudTrail_{region}_"))
                    && file.ends_with(".json.gz"),
                "{name}"
            );
            let stamp = &file[format!("{account}_CloudTrail_{region}_").len()..][..14];
            let delivered = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%MZ")
                .expect("delivery stamp")
                .and_utc()
                .timestamp_millis();
            assert!(!recs.is_empty());
            let period = ms_of(&recs[0]).div_euclid(STEP);
            for r in recs {
                assert_eq!(
                    ms_of(r).div_euclid(STEP),
                    period,
                    "{name}: one 5-minute period per file"
                );
                assert_eq!(r["recipientAccountId"], account);
                assert_eq!(r["awsRegion"], region);
            }
            assert!(
                delivered > (period + 1) * STEP,
                "{name}: delivered after the period ends"
            );
            assert!(
                periods.insert((account.to_string(), region.to_string(), period)),
                "{name}: a second file for one period"
            );
            events.extend(recs.iter().cloned());
        }
        let noise = events
            .iter()
            .filter(|e| {
                !matches!(
                    e["eventName"].as_str(),
                    Some("Invoke" | "RunInstances" | "CreateVolume")
                )
            })
            .count();
        let share = noise as f64 / events.len() as f64;
        assert!((0.7..0.9).contains(&share), "noise share {share}");
        let failed = |code: &str| {
            events.iter().filter(|e| e["errorCode"] == code).count() as f64 / events.len() as f64
        };
        assert!(failed("AccessDenied") > 0.002 && failed("AccessDenied") < 0.03);
        assert!(failed("ThrottlingException") > 0.0005 && failed("ThrottlingException") < 0.01);

        // Labels agree with the events.
        let invokes = |acct: &str, function: &str, s: i64, e: i64| {
            events
                .iter()
                .filter(|v| {
                    v["eventName"] == "Invoke"
                        && v["recipientAccountId"] == acct
                        && v["requestParameters"]["functionName"]
                            .as_str()
                            .is_some_and(|f| f.ends_with(&format!(":function:{function}")))
                        && (s..e).contains(&ms_of(v))
                })
                .count()
        };
        let mut checked = BTreeMap::new();
        for inc in &labels.incidents {
            let (s, e) = (inc.start.timestamp_millis(), inc.end.timestamp_millis());
            let acct = inc.account_id.as_str();
            match inc.kind {
                IncidentKind::LambdaStopped => {
                    let f = &inc.entity[0].1;
                    assert_eq!(
                        invokes(acct, f, s, e),
                        0,
                        "{}: the stopped function is silent",
                        inc.id
                    );
                    for hour in 1..=6 {
                        let n = invokes(acct, f, s - hour * HOUR_MS, s - (hour - 1) * HOUR_MS);
                        assert!(
                            n >= 3,
                            "{}: only {n} invokes in hour -{hour} before the stop",
                            inc.id
                        );
                    }
                    // The account's other functions go on in the gap.
                    let others = events
                        .iter()
                        .filter(|v| {
                            v["eventName"] == "Invoke"
                                && v["recipientAccountId"] == acct
                                && v["awsRegion"] == inc.region.as_str()
                                && (s..e).contains(&ms_of(v))
                        })
                        .count();
                    assert!(others > 0, "{}: other functions go on", inc.id);
                }
                IncidentKind::InvokeStorm => {
                    let f = &inc.entity[0].1;
                    let during = invokes(acct, f, s, e) as f64 / (e - s) as f64;
                    let before = invokes(acct, f, s - 7 * DAY_MS, s - HOUR_MS) as f64
                        / (7 * DAY_MS - HOUR_MS) as f64;
                    assert!(
                        during > 8.0 * before,
                        "{}: storm rate {during} vs {before}",
                        inc.id
                    );
                }
                IncidentKind::Cryptomining => {
                    let before = events
                        .iter()
                        .filter(|v| {
                            v["recipientAccountId"] == acct
                                && v["awsRegion"] == inc.region.as_str()
                                && ms_of(v) < s - 60_000
                        })
                        .count();
                    assert_eq!(before, 0, "{}: the region was never used before", inc.id);
                }
                IncidentKind::FailedRunInstances => {
                    let n = events
                        .iter()
                        .filter(|v| {
                            v["eventName"] == "RunInstances"
                                && v["errorCode"] == "Client.UnauthorizedOperation"
                                && v["sourceIPAddress"] == inc.source_ip.as_deref().unwrap_or("")
                                && (s..e).contains(&ms_of(v))
                        })
                        .count();
                    assert!(n >= 150, "{}: {n} failing calls", inc.id);
                }
                IncidentKind::CoordinatedLaunch => {
                    let who = &inc.entity[0].1;
                    for t in &inc.targets {
                        let n = events
                            .iter()
                            .filter(|v| {
                                v["eventName"] == "RunInstances"
                                    && v["recipientAccountId"] == t.account_id.as_str()
                                    && v["userIdentity"]["arn"]
                                        .as_str()
                                        .is_some_and(|a| a.ends_with(who.as_str()))
                                    && v["sourceIPAddress"]
                                        == inc.source_ip.as_deref().unwrap_or("")
                            })
                            .count();
                        assert!(n > 0, "{}: no launches in {}", inc.id, t.account_id);
                    }
                }
                IncidentKind::SecretsHarvest | IncidentKind::IamPersistence => {
                    let ip = inc.source_ip.as_deref().unwrap_or("");
                    let n = events
                        .iter()
                        .filter(|v| {
                            v["sourceIPAddress"] == ip
                                && v["recipientAccountId"] == acct
                                // Event times are whole seconds.
                                && (s - 1000..e).contains(&ms_of(v))
                        })
                        .count();
                    assert!(n >= 12, "{}: {n} calls from its IP", inc.id);
                    let earlier = events
                        .iter()
                        .filter(|v| v["sourceIPAddress"] == ip && ms_of(v) < s - 1000)
                        .count();
                    assert_eq!(earlier, 0, "{}: the IP is new", inc.id);
                }
                _ => {}
            }
            *checked.entry(inc.kind).or_insert(0) += 1;
        }
        assert!(checked.len() >= 6, "incidents checked: {checked:?}");
    }
}
