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

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, Duration, TimeZone, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::events::{CORP_UAS, Who, record};
use crate::labels::{Benign, Incident, IncidentKind, Labels, Target};
use crate::org::{self, Account, Env, REGIONS, pick};
use crate::{
    DAY_MS, GenerateConfig, GenerateError, GenerateSummary, HOUR_MS, Sink, create_volume, invoke,
    iso, poisson, region_index, run_instances, write_account,
};

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

const TEAMS: [&str; 14] = [
    "payments",
    "search",
    "data",
    "platform",
    "mobile",
    "ml",
    "identity",
    "billing",
    "growth",
    "media",
    "logistics",
    "risk",
    "support",
    "analytics",
];
const FN_NOUNS: [&str; 16] = [
    "orders", "images", "invoices", "events", "users", "reports", "emails", "sessions", "audit",
    "ledger", "catalog", "alerts", "exports", "webhooks", "metrics", "tokens",
];
const FN_VERBS: [&str; 10] = [
    "handler",
    "worker",
    "resizer",
    "sync",
    "ingest",
    "notifier",
    "compactor",
    "router",
    "validator",
    "scheduler",
];
const NORMAL_TYPES: [&str; 8] = [
    "m5.large",
    "m5.xlarge",
    "c5.xlarge",
    "t3.medium",
    "t3.large",
    "r5.large",
    "m6i.large",
    "c6g.large",
];
const GPU_TYPES: [&str; 5] = [
    "p3.2xlarge",
    "p4d.24xlarge",
    "g5.12xlarge",
    "g4dn.xlarge",
    "p3.8xlarge",
];

fn digits(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn hex(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

fn new_ip(rng: &mut ChaCha8Rng) -> String {
    // Addresses no baseline traffic uses (corporate ranges are 192.0.2/24
    // and 198.51.100/24 and 10.x NAT).
    format!(
        "{}.{}.{}.{}",
        pick(rng, &[45u8, 91, 103, 185, 194]),
        rng.random_range(1..255),
        rng.random_range(1..255),
        rng.random_range(2..254)
    )
}

// `*pick(..)`: clippy's suggestion does not infer.
#[allow(clippy::explicit_auto_deref)]
fn env_word(rng: &mut ChaCha8Rng, env: Env) -> &'static str {
    match env {
        Env::Production => *pick(rng, &["prod", "production", "prd"]),
        Env::Staging => *pick(rng, &["staging", "stage"]),
        Env::Development => *pick(rng, &["dev", "development"]),
        Env::Testing => *pick(rng, &["test", "qa"]),
        Env::Sandbox => *pick(rng, &["sandbox", "sbx"]),
    }
}

/// Builds the organization from the seed (accounts, functions, rhythms,
/// jobs) and plans incidents and traps.
pub(crate) fn build(cfg: &GenerateConfig) -> HardOrg {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x4841_5244_5052_4f46);
    let n = if cfg.accounts > 0 {
        cfg.accounts.max(8)
    } else {
        rng.random_range(12..=30)
    } as usize;
    let days = if cfg.days > 0 {
        cfg.days.max(WARMUP_DAYS as u32 + 2)
    } else {
        rng.random_range(10..=14)
    };
    let base = Utc
        .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .unwrap_or_default()
        .timestamp_millis();
    let start = base + rng.random_range(0..42) * DAY_MS;
    let org_id = format!("o-{}", hex(&mut rng, 10));
    // The organization's regions: where most accounts live.
    let main = *pick(
        &mut rng,
        &[
            "us-east-1",
            "us-east-1",
            "eu-west-1",
            "us-west-2",
            "eu-central-1",
            "ap-southeast-1",
        ],
    );
    let mut org_regions: Vec<&'static str> = vec![REGIONS[region_index(main)]];
    while org_regions.len() < 3 {
        let r = *pick(&mut rng, &REGIONS[..6]);
        if !org_regions.contains(&r) {
            org_regions.push(r);
        }
    }
    // Environment mix: at least three production, two development, two
    // sandbox accounts; the rest random.
    let mut envs = vec![
        Env::Production,
        Env::Production,
        Env::Production,
        Env::Development,
        Env::Development,
        Env::Sandbox,
        Env::Sandbox,
    ];
    while envs.len() < n {
        envs.push(*pick(
            &mut rng,
            &[
                Env::Production,
                Env::Production,
                Env::Staging,
                Env::Development,
                Env::Development,
                Env::Testing,
                Env::Sandbox,
                Env::Sandbox,
            ],
        ));
    }
    // Shuffle (Fisher–Yates with the seeded stream).
    for i in (1..envs.len()).rev() {
        let j = rng.random_range(0..=i);
        envs.swap(i, j);
    }
    let mut names = std::collections::BTreeSet::new();
    let mut accounts = Vec::new();
    for (i, env) in envs.into_iter().enumerate() {
        let team = *pick(&mut rng, &TEAMS);
        let word = env_word(&mut rng, env);
        let mut name = if i == 0 {
            "shared-services".to_string()
        } else {
            format!("{team}-{word}")
        };
        while !names.insert(name.clone()) {
            name = format!(
                "{team}-{}-{word}",
                pick(&mut rng, &["core", "api", "edge", "batch"])
            );
            if names.contains(&name) {
                name = format!("{name}-{i}");
            }
        }
        let ou = match env {
            Env::Production => vec!["Root", "Workloads", "Prod"],
            Env::Staging | Env::Testing => vec!["Root", "Workloads", "PreProd"],
            Env::Development => vec!["Root", "Workloads", "Dev"],
            Env::Sandbox => vec!["Root", "Sandbox"],
        };
        let mut tags = BTreeMap::new();
        tags.insert(
            "Environment".to_string(),
            if i == 0 {
                "prod".to_string()
            } else {
                word.to_string()
            },
        );
        tags.insert("Team".to_string(), team.to_string());
        tags.insert(
            "CostCenter".to_string(),
            format!("CC-{}", rng.random_range(1000..9999)),
        );
        let home = if rng.random_bool(0.7) {
            org_regions[0]
        } else {
            *pick(&mut rng, &org_regions[1..])
        };
        let mut regions = vec![home];
        for _ in 0..rng.random_range(0..3) {
            let r = if rng.random_bool(0.7) {
                *pick(&mut rng, &org_regions)
            } else {
                *pick(&mut rng, &REGIONS[..6])
            };
            if !regions.contains(&r) {
                regions.push(r);
            }
        }
        let id = format!("{}{}", rng.random_range(1..10), digits(&mut rng, 11));
        let roles: Vec<String> = ["app", "ci-deployer", "etl", "provisioner", "batch"]
            .iter()
            .map(|r| format!("arn:aws:iam::{id}:role/{team}-{r}"))
            .collect();
        let people = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
        ];
        let users: Vec<String> = (0..rng.random_range(2..6))
            .map(|_| {
                format!(
                    "arn:aws:sts::{id}:assumed-role/AWSReservedSSO_PowerUserAccess_{}/{}@example.com",
                    "5d6e7f8091a2b3c4",
                    pick(&mut rng, &people)
                )
            })
            .collect();
        let busy = match env {
            Env::Production => 1.0,
            Env::Staging => 0.5,
            Env::Development => 0.8,
            Env::Testing => 0.4,
            Env::Sandbox => 0.7,
        } * lognormal(&mut rng, 0.3);
        // Functions.
        let nf = rng.random_range(4..=10);
        let mut funcs: Vec<Func> = Vec::new();
        let mut fnames = std::collections::BTreeSet::new();
        for k in 0..nf {
            let mut fname = format!(
                "{team}-{}-{}",
                pick(&mut rng, &FN_NOUNS),
                pick(&mut rng, &FN_VERBS)
            );
            if !fnames.insert(fname.clone()) {
                fname = format!("{fname}-{k}");
                fnames.insert(fname.clone());
            }
            let region = if k == 0 || regions.len() == 1 || rng.random_bool(0.75) {
                home
            } else {
                regions[rng.random_range(1..regions.len())]
            };
            let (rhythm, rate) = if k == 0 {
                // The steadily busy one.
                (Rhythm::Steady, rng.random_range(0.2..0.5))
            } else {
                match rng.random_range(0..100) {
                    0..=29 => (Rhythm::Steady, rng.random_range(0.02..0.15) * busy),
                    30..=64 => (Rhythm::Business, rng.random_range(0.05..0.4) * busy),
                    65..=84 => (Rhythm::Bursty, rng.random_range(0.005..0.03)),
                    _ => (
                        Rhythm::Scheduled(*pick(&mut rng, &[10i64, 15, 30, 60]) * MIN_MS),
                        f64::from(rng.random_range(1..3)),
                    ),
                }
            };
            let invoker = match rhythm {
                Rhythm::Scheduled(_) => "events.amazonaws.com",
                _ => *pick(
                    &mut rng,
                    &[
                        "apigateway.amazonaws.com",
                        "sqs.amazonaws.com",
                        "s3.amazonaws.com",
                        "events.amazonaws.com",
                        "sns.amazonaws.com",
                    ],
                ),
            };
            let mut bursts = Vec::new();
            if rhythm == Rhythm::Bursty {
                for d in 0..i64::from(days) {
                    for _ in 0..rng.random_range(3..9) {
                        let s = start + d * DAY_MS + rng.random_range(0..DAY_MS);
                        let len = rng.random_range(2..12) * MIN_MS;
                        bursts.push((s, len, rng.random_range(8..50)));
                    }
                }
            }
            funcs.push(Func {
                name: fname,
                region,
                rhythm,
                rate,
                invoker,
                bursts,
            });
        }
        let ec2 = match env {
            Env::Production => (rng.random_range(0.4..1.2), rng.random_range(0.12..0.35)),
            Env::Staging | Env::Testing => (rng.random_range(0.15..0.5), 0.01),
            Env::Development => (rng.random_range(0.2..0.7), 0.01),
            Env::Sandbox => (rng.random_range(0.2..0.7), 0.005),
        };
        let ebs = rng.random_range(0.05..0.3) * busy;
        let swing_sigma = match env {
            Env::Development | Env::Sandbox => 0.5,
            _ => 0.15,
        };
        let swing = (0..days)
            .map(|_| lognormal(&mut rng, swing_sigma))
            .collect();
        let weekly_batch = (matches!(env, Env::Production | Env::Development | Env::Staging)
            && rng.random_bool(0.45))
        .then(|| {
            (
                if rng.random_bool(0.7) {
                    0
                } else {
                    rng.random_range(1..5)
                },
                *pick(&mut rng, &[6.0, 7.0, 7.0, 7.0, 8.0]),
                rng.random_range(10..41),
            )
        });
        let weekly_restore = rng
            .random_bool(0.3)
            .then(|| (6, 3.0, rng.random_range(4..9)));
        let monthly = (env == Env::Production && rng.random_bool(0.3)).then(|| {
            (
                rng.random_range(2.0..5.0),
                rng.random_range(15..50),
                rng.random_range(150..500),
            )
        });
        let corp_net = format!(
            "10.{}.{}",
            rng.random_range(0..255),
            rng.random_range(0..255)
        );
        accounts.push(HAccount {
            a: Account {
                email: format!("aws+{name}@example.com"),
                name,
                id,
                env,
                ou_path: ou.into_iter().map(String::from).collect(),
                tags,
                status: "ACTIVE",
                regions,
                roles,
                users,
                functions: funcs.iter().map(|f| f.name.clone()).collect(),
            },
            funcs,
            busy_func: 0,
            ec2,
            ebs,
            swing,
            weekly_batch,
            weekly_restore,
            monthly,
            corp_net,
        });
    }
    let ci_ip = format!("198.51.100.{}", rng.random_range(200..250));
    let audit_ip = format!("192.0.2.{}", rng.random_range(200..250));
    let mut org = HardOrg {
        org_id,
        effects: vec![Vec::new(); accounts.len()],
        accounts,
        start,
        days,
        incidents: Vec::new(),
        benign: Vec::new(),
        ci_ip,
        audit_ip,
        shared: 0,
        traps: Vec::new(),
        throttles: Vec::new(),
    };
    if cfg.incidents {
        plan_incidents(&mut org, &mut rng);
    }
    plan_traps(&mut org, &mut rng);
    org
}

fn ms(t: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().unwrap_or_default()
}

/// Every kind once, then 1–3 more of random kinds.
const KINDS: [IncidentKind; 9] = [
    IncidentKind::Cryptomining,
    IncidentKind::InvokeStorm,
    IncidentKind::EbsSpike,
    IncidentKind::LambdaStopped,
    IncidentKind::NightRise,
    IncidentKind::FailedRunInstances,
    IncidentKind::CoordinatedLaunch,
    IncidentKind::SecretsHarvest,
    IncidentKind::IamPersistence,
];

fn plan_incidents(org: &mut HardOrg, rng: &mut ChaCha8Rng) {
    let mut kinds: Vec<IncidentKind> = KINDS.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let k = *pick(rng, &KINDS);
        if k != IncidentKind::CoordinatedLaunch {
            kinds.push(k);
        }
    }
    // Busy spans per account, so incidents in one account never overlap.
    let mut busy: Vec<Vec<(i64, i64)>> = vec![Vec::new(); org.accounts.len()];
    let free = |busy: &Vec<Vec<(i64, i64)>>, a: usize, s: i64, e: i64| {
        busy[a]
            .iter()
            .all(|(bs, be)| e + 2 * HOUR_MS <= *bs || s >= *be + 2 * HOUR_MS)
    };
    let first = org.start + WARMUP_DAYS * DAY_MS;
    let last = org.start + i64::from(org.days) * DAY_MS - 2 * HOUR_MS;
    let n_days = (i64::from(org.days) - WARMUP_DAYS).max(1);
    // Kinds already planned per account: a kind is never repeated in one
    // account (a second cryptomining burst would not be in a new region),
    // and accounts without incidents are preferred while there are some.
    let mut kinds_of: Vec<Vec<IncidentKind>> = vec![Vec::new(); org.accounts.len()];
    for kind in kinds {
        for attempt in 0..300 {
            if let Some((inc, effects)) = try_plan(org, rng, kind, first, last, n_days)
                && effects.iter().all(|(a, s, e, _)| {
                    free(&busy, *a, *s, *e)
                        && *s >= first
                        && *e <= last
                        && !kinds_of[*a].contains(&kind)
                        && (attempt >= 100 || kinds_of[*a].is_empty())
                })
            {
                for (a, s, e, eff) in effects {
                    busy[a].push((s, e));
                    kinds_of[a].push(kind);
                    org.effects[a].push(eff);
                }
                org.incidents.push(inc);
                break;
            }
        }
    }
    org.incidents.sort_by_key(|i| i.start);
    for (k, inc) in org.incidents.iter_mut().enumerate() {
        inc.id = format!("{}-{}", inc.kind.as_str(), k + 1);
    }
}

#[allow(clippy::type_complexity)]
fn try_plan(
    org: &HardOrg,
    rng: &mut ChaCha8Rng,
    kind: IncidentKind,
    first: i64,
    last: i64,
    n_days: i64,
) -> Option<(Incident, Vec<(usize, i64, i64, Effect)>)> {
    let na = org.accounts.len();
    let day = WARMUP_DAYS + rng.random_range(0..n_days);
    let any_time = |rng: &mut ChaCha8Rng| rng.random_range(first..last);
    let prefer = |rng: &mut ChaCha8Rng, envs: &[Env]| -> usize {
        let c: Vec<usize> = (1..na)
            .filter(|i| envs.contains(&org.accounts[*i].a.env))
            .collect();
        if c.is_empty() || rng.random_bool(0.15) {
            rng.random_range(1..na)
        } else {
            *pick(rng, &c)
        }
    };
    let mk =
        |ai: usize, region: &str, s: i64, e: i64, detector: &str, service: &str, what: &str| {
            Incident {
                id: String::new(),
                kind,
                detector: detector.into(),
                account_id: org.accounts[ai].a.id.clone(),
                region: region.into(),
                start: ms(s),
                end: ms(e),
                description: what.into(),
                principal_arn: None,
                source_ip: None,
                user_agent: None,
                instance_type: None,
                service: Some(service.into()),
                entity: Vec::new(),
                targets: Vec::new(),
            }
        };
    match kind {
        IncidentKind::Cryptomining => {
            let ai = prefer(rng, &[Env::Sandbox, Env::Development, Env::Testing]);
            let a = &org.accounts[ai].a;
            let unused: Vec<&'static str> = REGIONS
                .iter()
                .copied()
                .filter(|r| !a.regions.contains(r) && *r != "us-east-1")
                .collect();
            let region = *pick(rng, &unused);
            let s = any_time(rng);
            let e = s + rng.random_range(10..31) * MIN_MS;
            let principal = format!(
                "arn:aws:iam::{}:user/{}",
                a.id,
                pick(
                    rng,
                    &[
                        "svc-backup",
                        "temp-admin",
                        "ci-legacy",
                        "jenkins2",
                        "ops-tmp"
                    ]
                )
            );
            let ip = new_ip(rng);
            let itype = pick(rng, &GPU_TYPES).to_string();
            let mut inc = mk(
                ai,
                region,
                s,
                e,
                "ec2-run-instances",
                "ec2",
                "GPU instances launched by a new IAM user from a new IP in a region the account never used",
            );
            inc.principal_arn = Some(principal.clone());
            inc.source_ip = Some(ip.clone());
            inc.user_agent = Some(CORP_UAS[4].into());
            inc.instance_type = Some(itype.clone());
            let eff = Effect::Cryptomining {
                region: region.into(),
                s,
                e,
                principal,
                ip,
                itype,
            };
            Some((inc, vec![(ai, s - MIN_MS, e, eff)]))
        }
        IncidentKind::InvokeStorm => {
            let ai = prefer(
                rng,
                &[
                    Env::Production,
                    Env::Staging,
                    Env::Development,
                    Env::Sandbox,
                ],
            );
            let h = &org.accounts[ai];
            let candidates: Vec<usize> = (1..h.funcs.len())
                .filter(|k| {
                    matches!(h.funcs[*k].rhythm, Rhythm::Steady | Rhythm::Business)
                        && h.funcs[*k].rate >= 0.1
                })
                .collect();
            let fi = if candidates.is_empty() {
                0
            } else {
                *pick(rng, &candidates)
            };
            let f = &h.funcs[fi];
            let s = if f.rhythm == Rhythm::Business {
                at_local(org.start, day, rng.random_range(10.0..15.0), f.region)
            } else {
                any_time(rng)
            };
            if f.rhythm == Rhythm::Business && local(s, f.region).0 >= 5 {
                return None;
            }
            let e = s + rng.random_range(30..91) * MIN_MS;
            let factor = rng.random_range(17.0..36.0);
            let mut inc = mk(
                ai,
                f.region,
                s,
                e,
                "lambda-invoke",
                "lambda",
                &format!(
                    "Lambda function {} invoked at {factor:.0}x its usual rate (a recursive loop)",
                    f.name
                ),
            );
            inc.entity = vec![("function".into(), f.name.clone())];
            inc.principal_arn = Some(format!(
                "arn:aws:sts::{}:assumed-role/{}-role/{}",
                h.a.id, f.name, f.name
            ));
            Some((
                inc,
                vec![(
                    ai,
                    s,
                    e,
                    Effect::Storm {
                        func: fi,
                        s,
                        e,
                        factor,
                    },
                )],
            ))
        }
        IncidentKind::EbsSpike => {
            let ai = prefer(rng, &[Env::Development, Env::Production, Env::Staging]);
            let a = &org.accounts[ai].a;
            let region = a.regions[0];
            let s = at_local(org.start, day, rng.random_range(0.0..24.0), region);
            let e = s + rng.random_range(15..41) * MIN_MS;
            let principal = format!(
                "arn:aws:iam::{}:role/{}",
                a.id,
                pick(
                    rng,
                    &[
                        "bulk-restore",
                        "dr-tooling",
                        "migration-runner",
                        "vendor-access"
                    ]
                )
            );
            let n = rng.random_range(15..41);
            let mut inc = mk(
                ai,
                region,
                s,
                e,
                "ebs-create-volume",
                "ebs",
                "many large io2/gp3 volumes created by a principal that never created volumes",
            );
            inc.principal_arn = Some(principal.clone());
            Some((
                inc,
                vec![(
                    ai,
                    s,
                    e,
                    Effect::Ebs {
                        region: region.into(),
                        s,
                        e,
                        principal,
                        n,
                    },
                )],
            ))
        }
        IncidentKind::LambdaStopped => {
            let ai = prefer(rng, &[Env::Production, Env::Staging]);
            let h = &org.accounts[ai];
            let f = &h.funcs[h.busy_func];
            let s = any_time(rng);
            let e = s + rng.random_range(300..421) * MIN_MS;
            let mut inc = mk(
                ai,
                f.region,
                s,
                e,
                "lambda-invoke",
                "lambda",
                &format!(
                    "the steadily invoked function {} stops (its trigger broke) while the account's other functions go on",
                    f.name
                ),
            );
            inc.entity = vec![("function".into(), f.name.clone())];
            Some((
                inc,
                vec![(
                    ai,
                    s,
                    e,
                    Effect::Stop {
                        func: h.busy_func,
                        s,
                        e,
                    },
                )],
            ))
        }
        IncidentKind::NightRise => {
            let ai = prefer(rng, &[Env::Production]);
            let h = &org.accounts[ai];
            if h.a.env != Env::Production {
                return None;
            }
            let region = h.a.regions[0];
            let s = at_local(org.start, day, rng.random_range(0.5..2.0), region);
            let e = s + rng.random_range(120..211) * MIN_MS;
            let factor = rng.random_range(3.5..4.0);
            let inc = mk(
                ai,
                region,
                s,
                e,
                "ec2-run-instances",
                "ec2",
                &format!(
                    "night-time instance launches by the usual principals rise {factor:.1}x, still below the daytime level"
                ),
            );
            Some((inc, vec![(ai, s, e, Effect::NightRise { s, e, factor })]))
        }
        IncidentKind::FailedRunInstances => {
            let ai = rng.random_range(1..na);
            let a = &org.accounts[ai].a;
            let region = a.regions[rng.random_range(0..a.regions.len())];
            let s = any_time(rng);
            let e = s + rng.random_range(10..31) * MIN_MS;
            let principal = if rng.random_bool(0.5) {
                format!("arn:aws:iam::{}:user/deploy-bot", a.id)
            } else {
                format!(
                    "arn:aws:iam::{}:user/{}",
                    a.id,
                    pick(rng, &["legacy-ci", "reporting", "backup-agent"])
                )
            };
            let ip = new_ip(rng);
            let n = rng.random_range(150..601);
            let mut inc = mk(
                ai,
                region,
                s,
                e,
                "failed-calls",
                "ec2",
                &format!(
                    "{n} RunInstances calls failing with Client.UnauthorizedOperation from an IP never seen (leaked keys probing)"
                ),
            );
            inc.principal_arn = Some(principal.clone());
            inc.source_ip = Some(ip.clone());
            Some((
                inc,
                vec![(
                    ai,
                    s,
                    e,
                    Effect::FailedRun {
                        region: region.into(),
                        s,
                        e,
                        principal,
                        ip,
                        n,
                    },
                )],
            ))
        }
        IncidentKind::CoordinatedLaunch => {
            // Five accounts with daytime launches, in their home regions.
            let mut c: Vec<usize> = (1..na)
                .filter(|i| org.accounts[*i].a.env != Env::Sandbox)
                .collect();
            if c.len() < 5 {
                return None;
            }
            for i in (1..c.len()).rev() {
                let j = rng.random_range(0..=i);
                c.swap(i, j);
            }
            c.truncate(5);
            let lead_region = org.accounts[c[0]].a.regions[0];
            let t0 = at_local(org.start, day, rng.random_range(10.0..15.0), lead_region);
            if local(t0, lead_region).0 >= 5 {
                return None;
            }
            let session = format!("ops-{}", hex(rng, 6));
            let ip = new_ip(rng);
            let mut effects = Vec::new();
            let mut targets = Vec::new();
            let mut end = t0;
            for &ai in &c {
                let region = org.accounts[ai].a.regions[0];
                let s = t0 + rng.random_range(0..40) * MIN_MS;
                let e = s + rng.random_range(20..41) * MIN_MS;
                end = end.max(e);
                let factor = rng.random_range(3.4..4.0);
                targets.push(Target {
                    account_id: org.accounts[ai].a.id.clone(),
                    region: region.into(),
                });
                effects.push((
                    ai,
                    s,
                    e,
                    Effect::Coordinated {
                        region: region.into(),
                        s,
                        e,
                        factor,
                        session: session.clone(),
                        ip: ip.clone(),
                    },
                ));
            }
            let mut inc = mk(
                c[0],
                lead_region,
                t0,
                end,
                "ec2-run-instances",
                "ec2",
                "five accounts launch ~3.7x their usual instances within an hour, as OrganizationAccountAccessRole from one IP",
            );
            inc.entity = vec![(
                "principal".into(),
                format!("OrganizationAccountAccessRole/{session}"),
            )];
            inc.source_ip = Some(ip);
            inc.targets = targets;
            Some((inc, effects))
        }
        IncidentKind::SecretsHarvest => {
            let ai = prefer(rng, &[Env::Production, Env::Staging]);
            let a = &org.accounts[ai].a;
            let region = a.regions[0];
            let s = any_time(rng);
            let e = s + rng.random_range(5..26) * MIN_MS;
            let principal = format!(
                "arn:aws:iam::{}:user/{}",
                a.id,
                pick(
                    rng,
                    &["grafana", "jenkins", "old-integration", "contractor-01"]
                )
            );
            let ip = new_ip(rng);
            let n = rng.random_range(80..401);
            let mut inc = mk(
                ai,
                region,
                s,
                e,
                "secretsmanager-get-secret-value",
                "secretsmanager",
                &format!(
                    "{n} GetSecretValue calls over many secrets by a principal that never read secrets (credential harvesting)"
                ),
            );
            inc.principal_arn = Some(principal.clone());
            inc.source_ip = Some(ip.clone());
            Some((
                inc,
                vec![(
                    ai,
                    s,
                    e,
                    Effect::Secrets {
                        region: region.into(),
                        s,
                        e,
                        principal,
                        ip,
                        n,
                    },
                )],
            ))
        }
        IncidentKind::IamPersistence => {
            let ai = rng.random_range(1..na);
            let a = &org.accounts[ai].a;
            let s = any_time(rng);
            let e = s + rng.random_range(5..21) * MIN_MS;
            let role = &a.roles[if rng.random_bool(0.5) { 0 } else { 2 }];
            let rname = role.rsplit('/').next().unwrap_or("app");
            let principal = format!(
                "arn:aws:sts::{}:assumed-role/{rname}/i-{}",
                a.id,
                hex(rng, 17)
            );
            let ip = new_ip(rng);
            let users = rng.random_range(3..9);
            let mut inc = mk(
                ai,
                "us-east-1",
                s,
                e,
                "iam-persistence",
                "iam",
                &format!(
                    "{users} IAM users created with access keys, console passwords and AdministratorAccess by an application role (persistence)"
                ),
            );
            inc.principal_arn = Some(principal.clone());
            inc.source_ip = Some(ip.clone());
            Some((
                inc,
                vec![(
                    ai,
                    s,
                    e,
                    Effect::Iam {
                        s,
                        e,
                        principal,
                        ip,
                        users,
                    },
                )],
            ))
        }
        IncidentKind::DropToZero => None,
    }
}

/// Benign traps: first calls in unused regions, throttling bursts, and the
/// weekly and monthly jobs (listed so false alarms on them are explained).
fn plan_traps(org: &mut HardOrg, rng: &mut ChaCha8Rng) {
    let na = org.accounts.len();
    let end = org.start + i64::from(org.days) * DAY_MS;
    let first = org.start + WARMUP_DAYS * DAY_MS;
    for _ in 0..rng.random_range(2..5) {
        let ai = rng.random_range(1..na);
        let a = &org.accounts[ai].a;
        let unused: Vec<&'static str> = REGIONS
            .iter()
            .copied()
            .filter(|r| !a.regions.contains(r) && *r != "us-east-1")
            .collect();
        let region = *pick(rng, &unused);
        let t = rng.random_range(first..end - HOUR_MS);
        let what = rng.random_range(0..3u8);
        org.traps.push((ai, region, t, what));
        org.benign.push(Benign {
            kind: "first_region_call".into(),
            account_id: a.id.clone(),
            region: region.into(),
            start: ms(t),
            end: ms(t + MIN_MS),
            description: [
                "one CreateVolume",
                "one RunInstances (t3.micro)",
                "one DescribeInstances",
            ][usize::from(what)]
            .into(),
        });
    }
    for _ in 0..(org.days / 2) {
        let ai = rng.random_range(0..na);
        let t = rng.random_range(org.start..end - HOUR_MS);
        let n = rng.random_range(20..80);
        org.throttles.push((ai, t, n));
        let a = &org.accounts[ai].a;
        org.benign.push(Benign {
            kind: "throttling_burst".into(),
            account_id: a.id.clone(),
            region: a.regions[0].into(),
            start: ms(t),
            end: ms(t + 2 * MIN_MS),
            description: format!("{n} DescribeInstances calls throttled (a monitoring tool)"),
        });
    }
    for h in &org.accounts {
        let home = h.a.regions[0];
        for d in 0..i64::from(org.days) {
            let day0 = at_local(org.start, d, 0.0, home);
            let (wd, _, dom) = local(day0 + HOUR_MS, home);
            let mut push = |kind: &str, hour: f64, len: i64, what: String| {
                let s = at_local(org.start, d, hour, home);
                if s >= org.start && s < end {
                    org.benign.push(Benign {
                        kind: kind.into(),
                        account_id: h.a.id.clone(),
                        region: home.into(),
                        start: ms(s),
                        end: ms(s + len),
                        description: what,
                    });
                }
            };
            if let Some((bwd, hour, n)) = h.weekly_batch
                && bwd == wd
            {
                push(
                    "weekly_batch",
                    hour,
                    5 * MIN_MS,
                    format!("weekly batch launch of {n} instances"),
                );
            }
            if let Some((rwd, hour, n)) = h.weekly_restore
                && rwd == wd
            {
                push(
                    "weekly_restore_test",
                    hour,
                    10 * MIN_MS,
                    format!("weekly restore test creating {n} volumes"),
                );
            }
            if let Some((hour, n, inv)) = h.monthly
                && dom == 1
            {
                push(
                    "monthly_job",
                    hour,
                    20 * MIN_MS,
                    format!("monthly run: {n} instances and {inv} invocations"),
                );
            }
        }
    }
}

/// Noise calls: (source, name, read-only, global).
const NOISE: [(&str, &str, bool); 44] = [
    ("ec2.amazonaws.com", "DescribeInstances", true),
    ("ec2.amazonaws.com", "DescribeInstances", true),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", true),
    ("ec2.amazonaws.com", "DescribeVolumes", true),
    ("ec2.amazonaws.com", "DescribeSubnets", true),
    ("ec2.amazonaws.com", "DescribeNetworkInterfaces", true),
    ("ec2.amazonaws.com", "DescribeSnapshots", true),
    ("ec2.amazonaws.com", "CreateTags", false),
    ("s3.amazonaws.com", "ListBuckets", true),
    ("s3.amazonaws.com", "GetBucketLocation", true),
    ("s3.amazonaws.com", "GetBucketPolicy", true),
    ("sts.amazonaws.com", "AssumeRole", true),
    ("sts.amazonaws.com", "GetCallerIdentity", true),
    ("iam.amazonaws.com", "GetRole", true),
    ("iam.amazonaws.com", "ListRoles", true),
    ("iam.amazonaws.com", "ListAttachedRolePolicies", true),
    ("iam.amazonaws.com", "GetUser", true),
    ("kms.amazonaws.com", "Decrypt", true),
    ("kms.amazonaws.com", "Decrypt", true),
    ("kms.amazonaws.com", "GenerateDataKey", true),
    ("logs.amazonaws.com", "CreateLogStream", false),
    ("logs.amazonaws.com", "DescribeLogGroups", true),
    ("logs.amazonaws.com", "FilterLogEvents", true),
    ("ssm.amazonaws.com", "GetParameter", true),
    ("ssm.amazonaws.com", "GetParameters", true),
    ("secretsmanager.amazonaws.com", "GetSecretValue", true),
    ("secretsmanager.amazonaws.com", "DescribeSecret", true),
    ("lambda.amazonaws.com", "ListFunctions20150331", true),
    ("lambda.amazonaws.com", "GetFunction20150331v2", true),
    ("cloudformation.amazonaws.com", "DescribeStacks", true),
    ("cloudformation.amazonaws.com", "ListStackResources", true),
    ("monitoring.amazonaws.com", "DescribeAlarms", true),
    ("monitoring.amazonaws.com", "GetMetricData", true),
    ("ecr.amazonaws.com", "GetAuthorizationToken", true),
    ("ecr.amazonaws.com", "BatchGetImage", true),
    ("dynamodb.amazonaws.com", "DescribeTable", true),
    ("rds.amazonaws.com", "DescribeDBInstances", true),
    (
        "elasticloadbalancing.amazonaws.com",
        "DescribeTargetHealth",
        true,
    ),
    (
        "autoscaling.amazonaws.com",
        "DescribeAutoScalingGroups",
        true,
    ),
    ("sqs.amazonaws.com", "GetQueueAttributes", true),
    ("sns.amazonaws.com", "ListTopics", true),
    ("config.amazonaws.com", "DescribeConfigRules", true),
    ("ec2.amazonaws.com", "StopInstances", false),
    ("ec2.amazonaws.com", "DescribeImages", true),
];

fn is_global(source: &str) -> bool {
    source == "iam.amazonaws.com"
}

/// Generates one account's whole history into its sink. Returns
/// (signal events, noise events) of the baseline.
fn account_events(org: &HardOrg, ai: usize, rng: &mut ChaCha8Rng, sink: &mut Sink) -> (u64, u64) {
    let h = &org.accounts[ai];
    let a = &h.a;
    let effects = &org.effects[ai];
    let start = org.start;
    let end = start + i64::from(org.days) * DAY_MS;
    let corp_ip = |rng: &mut ChaCha8Rng| {
        format!(
            "{}.{}",
            pick(rng, &["192.0.2", "198.51.100"]),
            rng.random_range(10..60)
        )
    };
    let autoscaling = Who::Role(
        format!(
            "arn:aws:iam::{}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
            a.id
        ),
        "AutoScaling".into(),
    );
    let ci = Who::Role(
        format!("arn:aws:iam::{}:role/ci-deployer", a.id),
        format!("gha-{}", &a.id[..6]),
    );
    let shared = &org.accounts[org.shared].a.id;
    let mut signal = 0u64;
    let push = |sink: &mut Sink, region: &str, t: i64, v: Value, count: &mut u64| {
        sink.push(region_index(region), t, v);
        *count += 1;
    };
    let mut t = start;
    while t < end {
        let d = ((t - start) / DAY_MS) as usize;
        let swing = h.swing.get(d).copied().unwrap_or(1.0);
        // Lambda.
        for (fi, f) in h.funcs.iter().enumerate() {
            let stopped = effects.iter().any(|x| matches!(x, Effect::Stop { func, s, e } if *func == fi && t + STEP > *s && t < *e));
            let biz = business(t, f.region);
            let mean = match f.rhythm {
                Rhythm::Steady => f.rate * (0.85 + 0.3 * biz) * 5.0,
                Rhythm::Business => f.rate * (0.03 + 0.97 * biz) * swing * 5.0,
                Rhythm::Bursty => {
                    let mut m = f.rate * 5.0;
                    for (bs, bl, bn) in &f.bursts {
                        let ov = (t + STEP).min(bs + bl) - t.max(*bs);
                        if ov > 0 {
                            m += *bn as f64 * ov as f64 / *bl as f64;
                        }
                    }
                    m
                }
                Rhythm::Scheduled(_) => 0.0,
            };
            let mut times: Vec<i64> = (0..poisson(rng, mean))
                .map(|_| t + rng.random_range(0..STEP))
                .collect();
            if let Rhythm::Scheduled(every) = f.rhythm {
                let mut k = (t + every - 1) / every * every;
                while k < t + STEP {
                    for j in 0..f.rate as i64 {
                        times.push(k + 200 + j * 150 + rng.random_range(0..800));
                    }
                    k += every;
                }
            }
            for tt in times {
                if stopped {
                    let gap = effects.iter().any(|x| matches!(x, Effect::Stop { func, s, e } if *func == fi && tt >= *s && tt < *e));
                    if gap {
                        continue;
                    }
                }
                let (who, ip) = lambda_caller(rng, a, f);
                let v = invoke(rng, tt, a, f.region, &f.name, &who, &ip);
                push(sink, f.region, tt, v, &mut signal);
            }
        }
        // EC2 launches and EBS volumes, per region.
        for (ri, region) in a.regions.iter().enumerate() {
            let share = if ri == 0 { 1.0 } else { 0.35 };
            let biz = business(t, region);
            let swing_here = if matches!(a.env, Env::Development | Env::Sandbox) {
                swing
            } else {
                1.0
            };
            let (day, night) = h.ec2;
            let mut calls = (night + (day - night) * biz * swing_here) * share / 2.0;
            for x in effects {
                if let Effect::NightRise { s, e, factor } = x
                    && ri == 0
                    && t >= *s
                    && t < *e
                {
                    calls *= factor;
                }
            }
            for _ in 0..poisson(rng, calls) {
                let tt = t + rng.random_range(0..STEP);
                let itype = *pick(rng, &NORMAL_TYPES);
                let r = rng.random_range(0..10);
                let (who, ip, ua, n) = match a.env {
                    Env::Production if r < 7 => (
                        autoscaling.clone(),
                        "autoscaling.amazonaws.com".to_string(),
                        "autoscaling.amazonaws.com",
                        rng.random_range(1..4),
                    ),
                    Env::Sandbox if r < 8 => (
                        Who::Sso(pick(rng, &a.users).clone()),
                        corp_ip(rng),
                        CORP_UAS[1],
                        rng.random_range(1..3),
                    ),
                    _ if r < 9 => (
                        Who::Role(a.roles[1].clone(), "deploy".into()),
                        corp_ip(rng),
                        CORP_UAS[2],
                        rng.random_range(1..4),
                    ),
                    _ => (
                        Who::Sso(pick(rng, &a.users).clone()),
                        corp_ip(rng),
                        CORP_UAS[0],
                        1,
                    ),
                };
                let err = rng.random_bool(0.02).then_some((
                    "Client.UnauthorizedOperation",
                    "You are not authorized to perform this operation. Encoded authorization failure message: AbCdEf",
                ));
                let v = run_instances(rng, tt, a, region, &who, &ip, ua, n, itype, err);
                push(sink, region, tt, v, &mut signal);
            }
            let vols = (0.01 + h.ebs * biz * swing_here) * share / 2.0;
            for _ in 0..poisson(rng, vols) {
                let tt = t + rng.random_range(0..STEP);
                let who = Who::Role(a.roles[3].clone(), "provisioner".into());
                let ip = corp_ip(rng);
                let size = *pick(rng, &[8u64, 20, 50, 100, 100, 200, 500]);
                let vtype = *pick(rng, &["gp3", "gp3", "gp2"]);
                let v = create_volume(rng, tt, a, region, &who, &ip, CORP_UAS[2], size, vtype);
                push(sink, region, tt, v, &mut signal);
            }
            // Jobs, at the step their local time falls in.
            let (wd, hour, dom) = local(t, region);
            let step_h = STEP as f64 / HOUR_MS as f64;
            let now = |x: f64| hour <= x && x < hour + step_h;
            if ri == 0 {
                if let Some((bwd, bh, n)) = h.weekly_batch
                    && wd == bwd
                    && now(bh)
                {
                    let mut left = n;
                    let who = Who::Role(a.roles[4].clone(), "weekly-batch".into());
                    while left > 0 {
                        let k = left.min(rng.random_range(5..16));
                        left -= k;
                        let tt = t + rng.random_range(0..STEP);
                        let v = run_instances(
                            rng,
                            tt,
                            a,
                            region,
                            &who,
                            &format!("{}.{}", h.corp_net, 17),
                            CORP_UAS[4],
                            k,
                            "c5.2xlarge",
                            None,
                        );
                        push(sink, region, tt, v, &mut signal);
                    }
                }
                if let Some((rwd, rh, n)) = h.weekly_restore
                    && wd == rwd
                    && now(rh)
                {
                    let who = Who::Role(a.roles[3].clone(), "restore-test".into());
                    for _ in 0..n {
                        let tt = t + rng.random_range(0..STEP);
                        let v = create_volume(
                            rng,
                            tt,
                            a,
                            region,
                            &who,
                            &format!("{}.{}", h.corp_net, 18),
                            CORP_UAS[4],
                            500,
                            "gp3",
                        );
                        push(sink, region, tt, v, &mut signal);
                    }
                }
                if let Some((mh, n, inv)) = h.monthly
                    && dom == 1
                    && now(mh)
                {
                    let who = Who::Role(a.roles[4].clone(), "month-end".into());
                    let v = run_instances(
                        rng,
                        t + 1000,
                        a,
                        region,
                        &who,
                        &format!("{}.{}", h.corp_net, 17),
                        CORP_UAS[4],
                        n,
                        "r5.4xlarge",
                        None,
                    );
                    push(sink, region, t + 1000, v, &mut signal);
                    let f = &h.funcs[h.funcs.len() - 1];
                    for _ in 0..inv {
                        let tt = t + rng.random_range(0..STEP);
                        let (who, ip) = lambda_caller(rng, a, f);
                        let v = invoke(rng, tt, a, f.region, &f.name, &who, &ip);
                        push(sink, f.region, tt, v, &mut signal);
                    }
                }
                // CI deploys on weekdays at 10:00 and 15:00 in the shared
                // account's time, from the CI runner's IP.
                let shared_region = org.accounts[org.shared].a.regions[0];
                let (swd, sh, _) = local(t, shared_region);
                if a.env != Env::Sandbox && swd < 5 && (now_at(sh, 10.0) || now_at(sh, 15.0)) {
                    let tt = t + rng.random_range(0..STEP);
                    let f = pick(rng, &h.funcs).clone();
                    let v = record(
                        rng,
                        &iso(tt),
                        &a.id,
                        region,
                        &ci,
                        "sts.amazonaws.com",
                        "AssumeRole",
                        &org.ci_ip,
                        CORP_UAS[2],
                        true,
                        json!({"roleArn": a.roles[1], "roleSessionName": "gha"}),
                        Value::Null,
                        None,
                    );
                    push(sink, region, tt, v, &mut signal);
                    let v = record(
                        rng,
                        &iso(tt + 20_000),
                        &a.id,
                        f.region,
                        &ci,
                        "lambda.amazonaws.com",
                        "UpdateFunctionCode20150331v2",
                        &org.ci_ip,
                        CORP_UAS[2],
                        false,
                        json!({"functionName": f.name}),
                        Value::Null,
                        None,
                    );
                    push(sink, f.region, tt + 20_000, v, &mut signal);
                    if rng.random_bool(0.5) {
                        let v = run_instances(
                            rng,
                            tt + 40_000,
                            a,
                            region,
                            &ci,
                            &org.ci_ip,
                            CORP_UAS[2],
                            1,
                            "t3.medium",
                            None,
                        );
                        push(sink, region, tt + 40_000, v, &mut signal);
                    }
                }
            }
        }
        t += STEP;
    }
    let _ = shared;
    (signal, 0)
}

fn now_at(hour: f64, x: f64) -> bool {
    hour <= x && x < hour + STEP as f64 / HOUR_MS as f64
}

fn lambda_caller(rng: &mut ChaCha8Rng, a: &Account, f: &Func) -> (Who, String) {
    if rng.random_bool(0.8) {
        (Who::Service(f.invoker), f.invoker.to_string())
    } else {
        (
            Who::Role(a.roles[0].clone(), format!("{}-session", f.name)),
            "lambda.amazonaws.com".to_string(),
        )
    }
}

/// About four noise events per signal event, in business-hours rhythm
/// (plus a floor of automation), spread over the account's regions, IAM in
/// us-east-1; with failed calls at low rates, the nightly audit and the
/// benign traps.
fn noise_events(
    org: &HardOrg,
    ai: usize,
    signal: u64,
    rng: &mut ChaCha8Rng,
    sink: &mut Sink,
) -> u64 {
    let h = &org.accounts[ai];
    let a = &h.a;
    let start = org.start;
    let end = start + i64::from(org.days) * DAY_MS;
    let mut count = 0u64;
    let weight = |t: i64, ri: usize, region: &str| {
        let share = if ri == 0 {
            0.7
        } else {
            0.3 / (a.regions.len() - 1).max(1) as f64
        };
        (0.25 + business(t, region)) * share
    };
    let mut total_w = 0.0;
    let mut t = start;
    while t < end {
        for (ri, region) in a.regions.iter().enumerate() {
            total_w += weight(t, ri, region);
        }
        t += STEP;
    }
    let per_w = 4.0 * signal as f64 / total_w.max(1e-9);
    let corp_ip = |rng: &mut ChaCha8Rng| {
        format!(
            "{}.{}",
            pick(rng, &["192.0.2", "198.51.100"]),
            rng.random_range(10..60)
        )
    };
    let mut t = start;
    while t < end {
        for (ri, region) in a.regions.iter().enumerate() {
            for _ in 0..poisson(rng, per_w * weight(t, ri, region)) {
                let tt = t + rng.random_range(0..STEP);
                let (src, name, ro) = *pick(rng, &NOISE);
                let region: &str = if is_global(src) { "us-east-1" } else { region };
                let who = match rng.random_range(0..6) {
                    0 | 1 => Who::Sso(pick(rng, &a.users).clone()),
                    2 => Who::User(format!(
                        "arn:aws:iam::{}:user/{}",
                        a.id,
                        pick(rng, &["deploy-bot", "grafana", "backup-agent"])
                    )),
                    _ => Who::Role(pick(rng, &a.roles).clone(), "session".into()),
                };
                let ip = corp_ip(rng);
                let ua = *pick(rng, &CORP_UAS);
                let r: f64 = rng.random();
                let extra = if r < 0.015 {
                    if src == "ec2.amazonaws.com" && !ro {
                        Some(
                            json!({"errorCode": "Client.UnauthorizedOperation", "errorMessage": "You are not authorized to perform this operation."}),
                        )
                    } else {
                        Some(
                            json!({"errorCode": "AccessDenied", "errorMessage": format!("User is not authorized to perform: {name}")}),
                        )
                    }
                } else if r < 0.02 && ro {
                    Some(
                        json!({"errorCode": "ThrottlingException", "errorMessage": "Rate exceeded"}),
                    )
                } else {
                    None
                };
                let v = record(
                    rng,
                    &iso(tt),
                    &a.id,
                    region,
                    &who,
                    src,
                    name,
                    &ip,
                    ua,
                    ro,
                    json!({}),
                    Value::Null,
                    extra,
                );
                sink.push(region_index(region), tt, v);
                count += 1;
            }
        }
        t += STEP;
    }
    // The nightly audit: OrganizationAccountAccessRole from the shared
    // account, from one IP, into every account at 02:00 UTC.
    let audit = Who::Role(
        format!("arn:aws:iam::{}:role/OrganizationAccountAccessRole", a.id),
        "org-audit".into(),
    );
    for d in 0..i64::from(org.days) {
        let t0 = start + d * DAY_MS + 2 * HOUR_MS + rng.random_range(0..10) * MIN_MS;
        let v = record(
            rng,
            &iso(t0),
            &a.id,
            "us-east-1",
            &audit,
            "sts.amazonaws.com",
            "AssumeRole",
            &org.audit_ip,
            CORP_UAS[4],
            true,
            json!({"roleArn": format!("arn:aws:iam::{}:role/OrganizationAccountAccessRole", a.id), "roleSessionName": "org-audit"}),
            Value::Null,
            None,
        );
        sink.push(region_index("us-east-1"), t0, v);
        count += 1;
        for region in &a.regions {
            for _ in 0..rng.random_range(10..40) {
                let tt = t0 + rng.random_range(0..15 * MIN_MS);
                let (src, name, _) = *pick(rng, &NOISE[..7]);
                let v = record(
                    rng,
                    &iso(tt),
                    &a.id,
                    region,
                    &audit,
                    src,
                    name,
                    &org.audit_ip,
                    CORP_UAS[4],
                    true,
                    json!({}),
                    Value::Null,
                    None,
                );
                sink.push(region_index(region), tt, v);
                count += 1;
            }
        }
    }
    // Rare IAM administration by people (so IAM writes are not new).
    for d in 0..i64::from(org.days) {
        if rng.random_bool(0.3) {
            let tt = at_local(start, d, rng.random_range(9.0..17.0), a.regions[0]);
            let who = Who::Sso(pick(rng, &a.users).clone());
            let name = *pick(
                rng,
                &[
                    "CreateAccessKey",
                    "CreateUser",
                    "AttachRolePolicy",
                    "UpdateAccessKey",
                    "DeleteAccessKey",
                ],
            );
            let ip = corp_ip(rng);
            let v = record(
                rng,
                &iso(tt),
                &a.id,
                "us-east-1",
                &who,
                "iam.amazonaws.com",
                name,
                &ip,
                CORP_UAS[1],
                false,
                json!({"userName": "svc-reporting"}),
                Value::Null,
                None,
            );
            sink.push(region_index("us-east-1"), tt, v);
            count += 1;
        }
    }
    // Traps.
    for &(tai, region, tt, what) in &org.traps {
        if tai != ai {
            continue;
        }
        let who = Who::Role(a.roles[3].clone(), "provisioner".into());
        let ip = corp_ip(rng);
        let v = match what {
            0 => create_volume(rng, tt, a, region, &who, &ip, CORP_UAS[2], 8, "gp3"),
            1 => run_instances(
                rng,
                tt,
                a,
                region,
                &who,
                &ip,
                CORP_UAS[2],
                1,
                "t3.micro",
                None,
            ),
            _ => record(
                rng,
                &iso(tt),
                &a.id,
                region,
                &who,
                "ec2.amazonaws.com",
                "DescribeInstances",
                &ip,
                CORP_UAS[0],
                true,
                json!({}),
                Value::Null,
                None,
            ),
        };
        sink.push(region_index(region), tt, v);
        count += 1;
    }
    for &(tai, tt, n) in &org.throttles {
        if tai != ai {
            continue;
        }
        let who = Who::User(format!("arn:aws:iam::{}:user/grafana", a.id));
        let ip = corp_ip(rng);
        for _ in 0..n {
            let t1 = tt + rng.random_range(0..2 * MIN_MS);
            let v = record(
                rng,
                &iso(t1),
                &a.id,
                a.regions[0],
                &who,
                "ec2.amazonaws.com",
                "DescribeInstances",
                &ip,
                CORP_UAS[3],
                true,
                json!({}),
                Value::Null,
                Some(
                    json!({"errorCode": "Client.RequestLimitExceeded", "errorMessage": "Request limit exceeded."}),
                ),
            );
            sink.push(region_index(a.regions[0]), t1, v);
            count += 1;
        }
    }
    count
}

/// The expected RunInstances instances per 5 minutes in the home region
/// at `t` (calls × mean instances per call).
fn ec2_instances_per_step(h: &HAccount, t: i64, d: usize) -> f64 {
    let region = h.a.regions[0];
    let swing = if matches!(h.a.env, Env::Development | Env::Sandbox) {
        h.swing.get(d).copied().unwrap_or(1.0)
    } else {
        1.0
    };
    let (day, night) = h.ec2;
    (night + (day - night) * business(t, region) * swing) / 2.0 * 2.0
}

fn incident_events(org: &HardOrg, ai: usize, rng: &mut ChaCha8Rng, sink: &mut Sink) -> u64 {
    let h = &org.accounts[ai];
    let a = &h.a;
    let mut count = 0u64;
    let mut put = |sink: &mut Sink, region: &str, t: i64, v: Value| {
        sink.push(region_index(region), t, v);
        count += 1;
    };
    for eff in &org.effects[ai] {
        match eff {
            Effect::Cryptomining {
                region,
                s,
                e,
                principal,
                ip,
                itype,
            } => {
                let who = Who::User(principal.clone());
                for (k, name) in [
                    "GetCallerIdentity",
                    "DescribeRegions",
                    "DescribeInstanceTypeOfferings",
                    "DescribeImages",
                ]
                .iter()
                .enumerate()
                {
                    let tt = s - 40_000 + k as i64 * 6000;
                    let src = if k == 0 {
                        "sts.amazonaws.com"
                    } else {
                        "ec2.amazonaws.com"
                    };
                    let v = record(
                        rng,
                        &iso(tt),
                        &a.id,
                        region,
                        &who,
                        src,
                        name,
                        ip,
                        CORP_UAS[4],
                        true,
                        json!({}),
                        Value::Null,
                        None,
                    );
                    put(sink, region, tt, v);
                }
                let total: u64 = rng.random_range(20..61);
                let mut launched = 0;
                let mut tt = *s;
                while launched < total && tt < *e {
                    let n = rng.random_range(5..16).min(total - launched);
                    let v =
                        run_instances(rng, tt, a, region, &who, ip, CORP_UAS[4], n, itype, None);
                    put(sink, region, tt, v);
                    launched += n;
                    if rng.random_bool(0.4) {
                        let v = run_instances(
                            rng,
                            tt + 2000,
                            a,
                            region,
                            &who,
                            ip,
                            CORP_UAS[4],
                            8,
                            itype,
                            Some((
                                "Client.VcpuLimitExceeded",
                                "You have requested more vCPU capacity than your current vCPU limit allows.",
                            )),
                        );
                        put(sink, region, tt + 2000, v);
                    }
                    tt += ((e - s) / 4).max(MIN_MS);
                }
            }
            Effect::Storm { func, s, e, factor } => {
                let f = &h.funcs[*func];
                let who = Who::Role(
                    format!("arn:aws:iam::{}:role/{}-role", a.id, f.name),
                    f.name.clone(),
                );
                let mut t = *s;
                while t < *e {
                    let base = match f.rhythm {
                        Rhythm::Steady => f.rate * (0.85 + 0.3 * business(t, f.region)),
                        _ => f.rate * (0.03 + 0.97 * business(t, f.region)),
                    };
                    for _ in 0..poisson(rng, base * (factor - 1.0)) {
                        let tt = (t + rng.random_range(0..MIN_MS)).min(e - 1);
                        let v = invoke(rng, tt, a, f.region, &f.name, &who, "lambda.amazonaws.com");
                        put(sink, f.region, tt, v);
                    }
                    t += MIN_MS;
                }
            }
            Effect::Ebs {
                region,
                s,
                e,
                principal,
                n,
            } => {
                let who = Who::Role(principal.clone(), "bulk".into());
                let ip = new_ip(rng);
                for _ in 0..*n {
                    let tt = rng.random_range(*s..*e);
                    let size = rng.random_range(1000..16000);
                    let vtype = *pick(rng, &["io2", "gp3"]);
                    let v = create_volume(rng, tt, a, region, &who, &ip, CORP_UAS[4], size, vtype);
                    put(sink, region, tt, v);
                }
            }
            Effect::Stop { .. } | Effect::NightRise { .. } => {}
            Effect::FailedRun {
                region,
                s,
                e,
                principal,
                ip,
                n,
            } => {
                let who = Who::User(principal.clone());
                for _ in 0..*n {
                    let tt = rng.random_range(*s..*e);
                    let itype = *pick(
                        rng,
                        &["p3.2xlarge", "g4dn.12xlarge", "c5.24xlarge", "m5.large"],
                    );
                    let n = rng.random_range(1..10);
                    let v = run_instances(
                        rng,
                        tt,
                        a,
                        region,
                        &who,
                        ip,
                        CORP_UAS[4],
                        n,
                        itype,
                        Some((
                            "Client.UnauthorizedOperation",
                            "You are not authorized to perform this operation. Encoded authorization failure message: XyZ",
                        )),
                    );
                    put(sink, region, tt, v);
                }
            }
            Effect::Coordinated {
                region,
                s,
                e,
                factor,
                session,
                ip,
            } => {
                let who = Who::Role(
                    format!("arn:aws:iam::{}:role/OrganizationAccountAccessRole", a.id),
                    session.clone(),
                );
                let v = record(
                    rng,
                    &iso(s - 20_000),
                    &a.id,
                    "us-east-1",
                    &who,
                    "sts.amazonaws.com",
                    "AssumeRole",
                    ip,
                    CORP_UAS[0],
                    true,
                    json!({"roleSessionName": session}),
                    Value::Null,
                    None,
                );
                put(sink, "us-east-1", s - 20_000, v);
                let mut t = *s;
                while t < *e {
                    let d = ((t - org.start) / DAY_MS) as usize;
                    let step = (*e - t).min(STEP);
                    let normal =
                        ec2_instances_per_step(h, t, d).max(0.5) * step as f64 / STEP as f64;
                    let mut extra = poisson(rng, normal * (factor - 1.0));
                    while extra > 0 {
                        let k = extra.min(rng.random_range(1..4));
                        extra -= k;
                        let tt = t + rng.random_range(0..step);
                        let itype = *pick(rng, &NORMAL_TYPES);
                        let v = run_instances(
                            rng,
                            tt,
                            a,
                            region,
                            &who,
                            ip,
                            CORP_UAS[0],
                            k,
                            itype,
                            None,
                        );
                        put(sink, region, tt, v);
                    }
                    t += STEP;
                }
            }
            Effect::Secrets {
                region,
                s,
                e,
                principal,
                ip,
                n,
            } => {
                let who = Who::User(principal.clone());
                for k in 0..*n {
                    let tt = rng.random_range(*s..*e);
                    let secret = format!(
                        "arn:aws:secretsmanager:{region}:{}:secret:{}/{}-{}",
                        a.id,
                        pick(rng, &["prod", "app", "db", "svc"]),
                        pick(rng, &FN_NOUNS),
                        k
                    );
                    let extra = rng.random_bool(0.1).then(|| json!({"errorCode": "AccessDeniedException", "errorMessage": "not authorized to perform secretsmanager:GetSecretValue"}));
                    let v = record(
                        rng,
                        &iso(tt),
                        &a.id,
                        region,
                        &who,
                        "secretsmanager.amazonaws.com",
                        "GetSecretValue",
                        ip,
                        CORP_UAS[4],
                        true,
                        json!({"secretId": secret}),
                        Value::Null,
                        extra,
                    );
                    put(sink, region, tt, v);
                }
            }
            Effect::Iam {
                s,
                e,
                principal,
                ip,
                users,
            } => {
                let role = principal.split('/').nth(1).unwrap_or("app").to_string();
                let who = Who::Role(
                    format!("arn:aws:iam::{}:role/{role}", a.id),
                    principal.rsplit('/').next().unwrap_or("s").to_string(),
                );
                let span = (e - s) / (*users as i64).max(1);
                for u in 0..*users {
                    let user = format!(
                        "{}-{}",
                        pick(rng, &["svc", "support", "backup", "monitor"]),
                        hex(rng, 4)
                    );
                    let t0 = s + u as i64 * span;
                    for (k, (name, req)) in [
                        ("CreateUser", json!({"userName": user})),
                        ("CreateAccessKey", json!({"userName": user})),
                        ("AttachUserPolicy", json!({"userName": user, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})),
                        ("CreateLoginProfile", json!({"userName": user, "passwordResetRequired": false})),
                    ].into_iter().enumerate() {
                        let tt = (t0 + k as i64 * rng.random_range(2000..20_000)).min(e - 1);
                        let v = record(rng, &iso(tt), &a.id, "us-east-1", &who, "iam.amazonaws.com", name, ip, CORP_UAS[4], false, req, Value::Null, None);
                        put(sink, "us-east-1", tt, v);
                    }
                }
            }
        }
    }
    count
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

    use super::*;
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
