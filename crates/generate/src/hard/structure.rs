//! The organization's structure drawn from the seed: accounts,
//! environments, regions, teams, functions and their rhythms, weekly and
//! monthly jobs.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::names::hex;
use super::plan::{plan_incidents, plan_traps};
use super::{Func, HAccount, HardOrg, MIN_MS, Rhythm, WARMUP_DAYS, lognormal};
use crate::org::{Account, Env, REGIONS, pick};
use crate::write::region_index;
use crate::{DAY_MS, GenerateConfig};

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
pub(super) const FN_NOUNS: [&str; 16] = [
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
fn digits(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
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
