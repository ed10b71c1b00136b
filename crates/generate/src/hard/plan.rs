//! When, where and how each incident and benign trap happens, planned
//! from the seed before any event is written.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::names::{GPU_TYPES, hex, new_ip};
use super::{Effect, HardOrg, MIN_MS, Rhythm, WARMUP_DAYS, at_local, local, ms};
use crate::events::CORP_UAS;
use crate::labels::{Benign, Incident, IncidentKind, Target};
use crate::org::{Env, REGIONS, pick};
use crate::{DAY_MS, HOUR_MS};

/// Every kind once, then 1–3 more of random kinds.
pub(super) const KINDS: [IncidentKind; 9] = [
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

pub(super) fn plan_incidents(org: &mut HardOrg, rng: &mut ChaCha8Rng) {
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
pub(super) fn plan_traps(org: &mut HardOrg, rng: &mut ChaCha8Rng) {
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
