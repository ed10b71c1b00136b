//! The default profile: the project's original organizations' rhythms,
//! their incidents planned and every account's events written.

use chrono::{TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::events::{
    CORP_UAS, INVOKERS, NOISE, Who, corp_ip, create_volume, invoke, record, run_instances,
};
use crate::org::{Account, Env, REGIONS, pick};
use crate::write::{Sink, region_index};
use crate::{DAY_MS, GenerateConfig, HOUR_MS, Incident, IncidentKind, WINDOW_MS, iso, poisson};

/// Per-window rates at production scale: (day peak, night).
const LAMBDA: (f64, f64) = (80.0, 12.0);
const EC2_CALLS: (f64, f64) = (1.2, 0.15);
const EBS_CALLS: (f64, f64) = (0.8, 0.1);

fn diurnal(t: i64) -> f64 {
    let h = t.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
    if (6.0..21.0).contains(&h) {
        (std::f64::consts::PI * (h - 6.0) / 15.0).sin()
    } else {
        0.0
    }
}

fn weekend(t: i64) -> bool {
    matches!(t.div_euclid(DAY_MS).rem_euclid(7), 2 | 3)
}

fn rate(t: i64, (day, night): (f64, f64), scale: f64, weekend_factor: f64) -> f64 {
    let r = night + (day - night) * diurnal(t);
    r * scale * if weekend(t) { weekend_factor } else { 1.0 }
}

/// What an incident does to the baseline of its entity.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) incident: Incident,
    /// Index into the accounts.
    pub(crate) account: usize,
    /// Multiplier on the entity's lambda rate (0 = silence) within the span.
    lambda_factor: Option<f64>,
    /// For storms: one function gets the extra calls.
    seed: u64,
}

pub(crate) fn plan_incidents(
    cfg: &GenerateConfig,
    accounts: &[Account],
    rng: &mut ChaCha8Rng,
) -> Vec<Plan> {
    if !cfg.incidents || cfg.days == 0 {
        return Vec::new();
    }
    let per_kind = if cfg.days >= 10 && cfg.accounts >= 8 {
        2
    } else {
        1
    };
    let kinds = [
        IncidentKind::Cryptomining,
        IncidentKind::InvokeStorm,
        IncidentKind::EbsSpike,
        IncidentKind::DropToZero,
        IncidentKind::NightRise,
    ];
    let active: Vec<usize> = (0..accounts.len())
        .filter(|i| accounts[*i].status == "ACTIVE")
        .collect();
    let mut used: Vec<usize> = Vec::new();
    let mut plans = Vec::new();
    let first_day = if cfg.days < 5 { cfg.days - 1 } else { 3 };
    let span_days = (cfg.days - first_day).max(1);
    let mut n = 0u32;
    for round in 0..per_kind {
        for kind in kinds {
            let prefer: &[Env] = match kind {
                IncidentKind::Cryptomining => &[Env::Sandbox, Env::Development, Env::Testing],
                IncidentKind::InvokeStorm => &[Env::Staging, Env::Production, Env::Development],
                IncidentKind::EbsSpike => &[
                    Env::Development,
                    Env::Production,
                    Env::Testing,
                    Env::Staging,
                ],
                IncidentKind::DropToZero | IncidentKind::NightRise => &[Env::Production],
                // The hard profile's kinds.
                _ => continue,
            };
            let candidates = || {
                prefer.iter().flat_map(|e| {
                    active
                        .iter()
                        .copied()
                        .filter(move |i| accounts[*i].env == *e)
                })
            };
            let Some(ai) = candidates()
                .find(|i| !used.contains(i))
                .or_else(|| candidates().nth(round as usize))
                .or_else(|| candidates().next())
            else {
                continue;
            };
            used.push(ai);
            let a = &accounts[ai];
            let day = first_day + (n * 7 + round * 3) % span_days;
            n += 1;
            let day_start = cfg.start.timestamp_millis() + i64::from(day) * DAY_MS;
            let window = |h: f64| {
                day_start + ((h * HOUR_MS as f64) as i64).div_euclid(WINDOW_MS) * WINDOW_MS
            };
            let home = a.regions[0];
            let seed = rng.random();
            let (detector, region, start, minutes, factor, principal, ip, ua, itype, what) =
                match kind {
                    IncidentKind::Cryptomining => {
                        let region = *REGIONS
                            .iter()
                            .rev()
                            .find(|r| !a.regions.contains(r))
                            .unwrap_or(&"ap-southeast-1");
                        let t = day_start
                            + rng.random_range(1..22) * HOUR_MS
                            + rng.random_range(0..60) * 60_000
                            + rng.random_range(0..60) * 1000;
                        let user = format!(
                            "arn:aws:iam::{}:user/svc-backup-{:04x}",
                            a.id,
                            rng.random::<u16>()
                        );
                        let ip = format!("203.0.113.{}", rng.random_range(100..250));
                        let itype = *pick(
                            rng,
                            &["p3.2xlarge", "p4d.24xlarge", "g5.12xlarge", "g4dn.xlarge"],
                        );
                        ("ec2-run-instances", region, t, rng.random_range(10..30), None, Some(user), Some(ip), Some("Boto3/1.34.2 md/Botocore#1.34.2 ua/2.0 os/linux#5.15.0 md/arch#x86_64 lang/python#3.10.12".to_string()), Some(itype.to_string()), "GPU instances launched by a new IAM user from a new IP in a region the account never used")
                    }
                    IncidentKind::InvokeStorm => {
                        let t = day_start
                            + rng.random_range(9..17) * HOUR_MS
                            + rng.random_range(0..60) * 60_000;
                        (
                            "lambda-invoke",
                            home,
                            t,
                            rng.random_range(30..60),
                            Some(rng.random_range(20.0..50.0)),
                            Some(format!(
                                "arn:aws:sts::{}:assumed-role/{}-role/{}",
                                a.id, a.functions[1], a.functions[1]
                            )),
                            Some("lambda.amazonaws.com".to_string()),
                            None,
                            None,
                            "a Lambda function invoking itself recursively",
                        )
                    }
                    IncidentKind::EbsSpike => {
                        let t = day_start
                            + rng.random_range(8..18) * HOUR_MS
                            + rng.random_range(0..60) * 60_000;
                        (
                            "ebs-create-volume",
                            home,
                            t,
                            rng.random_range(20..40),
                            None,
                            Some(a.roles[1].clone()),
                            None,
                            None,
                            None,
                            "many large io2/gp3 volumes created at once",
                        )
                    }
                    IncidentKind::DropToZero => {
                        let t = window(9.0 + rng.random_range(0.0..2.0));
                        (
                            "lambda-invoke",
                            home,
                            t,
                            rng.random_range(120..360),
                            Some(0.0),
                            None,
                            None,
                            None,
                            None,
                            "a steadily busy Lambda workload falls silent",
                        )
                    }
                    IncidentKind::NightRise => {
                        let t = window(rng.random_range(0.5..2.5));
                        (
                            "lambda-invoke",
                            home,
                            t,
                            rng.random_range(120..180),
                            Some(rng.random_range(3.0..5.0)),
                            None,
                            None,
                            None,
                            None,
                            "night-time invocations rise several times over, still below the daytime peak",
                        )
                    }
                    _ => continue,
                };
            plans.push(Plan {
                incident: Incident {
                    id: format!(
                        "{}-{}",
                        serde_json::to_value(kind)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        plans.len() + 1
                    ),
                    kind,
                    detector: detector.into(),
                    account_id: a.id.clone(),
                    region: region.into(),
                    start: Utc.timestamp_millis_opt(start).single().unwrap_or_default(),
                    end: Utc
                        .timestamp_millis_opt(start + minutes * 60_000)
                        .single()
                        .unwrap_or_default(),
                    description: what.into(),
                    principal_arn: principal,
                    source_ip: ip,
                    user_agent: ua,
                    instance_type: itype,
                    service: None,
                    entity: Vec::new(),
                    targets: Vec::new(),
                },
                account: ai,
                lambda_factor: factor,
                seed,
            });
        }
    }
    plans
}

/// Generates one account's whole history into its sink.
pub(crate) fn account_events(
    cfg: &GenerateConfig,
    a: &Account,
    index: usize,
    plans: &[&Plan],
    rng: &mut ChaCha8Rng,
    sink: &mut Sink,
) {
    let start = cfg.start.timestamp_millis();
    let end = start + i64::from(cfg.days) * DAY_MS;
    let scale = a.env.scale();
    let weekend_factor = if a.env == Env::Production { 0.7 } else { 0.4 };
    let autoscaling = Who::Role(
        format!(
            "arn:aws:iam::{}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
            a.id
        ),
        "AutoScaling".into(),
    );
    let external = format!("{}", 999_900_000_000u64 + index as u64);
    let mut w = start;
    while w < end {
        for (ri, region) in a.regions.iter().enumerate() {
            let rx = region_index(region);
            let share = if ri == 0 { 1.0 } else { 0.5 };
            // Lambda: in the home region and the second one.
            if ri < 2 {
                let mut mean = rate(w, LAMBDA, scale * share, weekend_factor);
                for p in plans {
                    let inc = &p.incident;
                    if inc.detector == "lambda-invoke"
                        && inc.region == *region
                        && p.incident.kind != IncidentKind::InvokeStorm
                    {
                        let (s, e) = (inc.start.timestamp_millis(), inc.end.timestamp_millis());
                        if w >= s && w < e {
                            mean *= p.lambda_factor.unwrap_or(1.0);
                        }
                    }
                }
                for _ in 0..poisson(rng, mean) {
                    let t = w + rng.random_range(0..WINDOW_MS);
                    let function = pick(rng, &a.functions).clone();
                    let (who, ip) = if rng.random_bool(0.6) {
                        (
                            Who::Service(INVOKERS[rng.random_range(0..INVOKERS.len())]),
                            "".to_string(),
                        )
                    } else {
                        (
                            Who::Role(a.roles[0].clone(), format!("{function}-session")),
                            "lambda.amazonaws.com".to_string(),
                        )
                    };
                    let ip = if ip.is_empty() {
                        match &who {
                            Who::Service(s) => s.to_string(),
                            _ => ip,
                        }
                    } else {
                        ip
                    };
                    let v = invoke(rng, t, a, region, &function, &who, &ip);
                    sink.push(rx, t, v);
                }
            }
            // EC2 launches: autoscaling mostly, CI and people sometimes.
            for _ in 0..poisson(
                rng,
                rate(w, EC2_CALLS, scale.max(0.2) * share, weekend_factor),
            ) {
                let t = w + rng.random_range(0..WINDOW_MS);
                let itype = *pick(
                    rng,
                    &[
                        "m5.large",
                        "m5.xlarge",
                        "c5.xlarge",
                        "t3.medium",
                        "t3.large",
                        "r5.large",
                    ],
                );
                let (who, ip, ua, n) = match rng.random_range(0..10) {
                    0..=5 => (
                        autoscaling.clone(),
                        "autoscaling.amazonaws.com".to_string(),
                        "autoscaling.amazonaws.com",
                        rng.random_range(1..4),
                    ),
                    6..=7 => (
                        Who::Role(a.roles[1].clone(), "ci".into()),
                        corp_ip(rng),
                        CORP_UAS[2],
                        rng.random_range(1..3),
                    ),
                    _ => (
                        Who::Sso(pick(rng, &a.users).clone()),
                        corp_ip(rng),
                        CORP_UAS[1],
                        1,
                    ),
                };
                let err = rng.random_bool(0.03).then_some((
                    "Client.UnauthorizedOperation",
                    "You are not authorized to perform this operation.",
                ));
                let v = run_instances(rng, t, a, region, &who, &ip, ua, n, itype, err);
                sink.push(rx, t, v);
            }
            for _ in 0..poisson(
                rng,
                rate(w, EBS_CALLS, scale.max(0.2) * share, weekend_factor),
            ) {
                let t = w + rng.random_range(0..WINDOW_MS);
                let who = Who::Role(
                    a.roles[rng.random_range(0..3)].clone(),
                    "provisioner".into(),
                );
                let ip = corp_ip(rng);
                let size = *pick(rng, &[8u64, 20, 50, 100, 100, 200, 500]);
                let vtype = *pick(rng, &["gp3", "gp3", "gp2"]);
                let v = create_volume(rng, t, a, region, &who, &ip, CORP_UAS[2], size, vtype);
                sink.push(rx, t, v);
            }
            // Noise.
            let noise_mean = f64::from(cfg.noise_per_account_hour) / 6.0
                * if ri == 0 {
                    0.7
                } else {
                    0.3 / (a.regions.len() - 1).max(1) as f64
                }
                * (0.3 + 0.7 * diurnal(w) / 0.6).min(1.6);
            for _ in 0..poisson(rng, noise_mean) {
                let t = w + rng.random_range(0..WINDOW_MS);
                let (src, name, ro) = *pick(rng, &NOISE);
                let who = match rng.random_range(0..4) {
                    0 => Who::Sso(pick(rng, &a.users).clone()),
                    1 => Who::User(format!(
                        "arn:aws:iam::{}:user/{}",
                        a.id,
                        pick(rng, &["deploy-bot", "grafana", "backup-agent"])
                    )),
                    _ => Who::Role(pick(rng, &a.roles).clone(), "session".into()),
                };
                let ip = corp_ip(rng);
                let ua = *pick(rng, &CORP_UAS);
                let mut extra = json!({});
                if rng.random_bool(0.04) {
                    extra = json!({"errorCode": "AccessDenied", "errorMessage": format!("User is not authorized to perform: {name}")});
                }
                if rng.random_bool(0.005) {
                    // A cross-account call: recipient is an account outside the org.
                    extra["recipientAccountId"] = json!(external);
                }
                let v = record(
                    rng,
                    &iso(t),
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
                    Some(extra),
                );
                sink.push(rx, t, v);
            }
        }
        w += WINDOW_MS;
    }
    for p in plans {
        let mut irng = ChaCha8Rng::seed_from_u64(p.seed);
        incident_events(p, a, &mut irng, sink);
    }
}

fn incident_events(p: &Plan, a: &Account, rng: &mut ChaCha8Rng, sink: &mut Sink) {
    let inc = &p.incident;
    let (s, e) = (inc.start.timestamp_millis(), inc.end.timestamp_millis());
    let rx = region_index(&inc.region);
    match inc.kind {
        IncidentKind::Cryptomining => {
            let who = Who::User(inc.principal_arn.clone().unwrap_or_default());
            let ip = inc.source_ip.clone().unwrap_or_default();
            let ua = inc.user_agent.clone().unwrap_or_default();
            let itype = inc.instance_type.clone().unwrap_or_default();
            // Reconnaissance seconds before, in the same window.
            for (k, name) in [
                "DescribeRegions",
                "DescribeInstanceTypeOfferings",
                "DescribeImages",
            ]
            .iter()
            .enumerate()
            {
                let v = record(
                    rng,
                    &iso(s - 30_000 + k as i64 * 5000),
                    &a.id,
                    &inc.region,
                    &who,
                    "ec2.amazonaws.com",
                    name,
                    &ip,
                    &ua,
                    true,
                    json!({}),
                    Value::Null,
                    None,
                );
                sink.push(rx, s - 30_000 + k as i64 * 5000, v);
            }
            let total: u64 = rng.random_range(20..61);
            let mut launched = 0;
            let mut t = s;
            while launched < total && t < e {
                let n = rng.random_range(5..16).min(total - launched);
                let v = run_instances(rng, t, a, &inc.region, &who, &ip, &ua, n, &itype, None);
                sink.push(rx, t, v);
                launched += n;
                if rng.random_bool(0.4) {
                    let v = run_instances(
                        rng,
                        t + 2000,
                        a,
                        &inc.region,
                        &who,
                        &ip,
                        &ua,
                        8,
                        &itype,
                        Some((
                            "Client.VcpuLimitExceeded",
                            "You have requested more vCPU capacity than your current vCPU limit allows.",
                        )),
                    );
                    sink.push(rx, t + 2000, v);
                }
                t += ((e - s) / 4).max(60_000);
            }
        }
        IncidentKind::InvokeStorm => {
            let factor = p.lambda_factor.unwrap_or(30.0);
            let function = a.functions[1].clone();
            let who = Who::Role(
                format!("arn:aws:iam::{}:role/{function}-role", a.id),
                function.clone(),
            );
            let mut w = s;
            while w < e {
                let extra = rate(w, LAMBDA, a.env.scale(), 1.0) * (factor - 1.0);
                for _ in 0..poisson(rng, extra) {
                    let t = (w + rng.random_range(0..WINDOW_MS)).min(e - 1).max(s);
                    let v = invoke(
                        rng,
                        t,
                        a,
                        &inc.region,
                        &function,
                        &who,
                        "lambda.amazonaws.com",
                    );
                    sink.push(rx, t, v);
                }
                w += WINDOW_MS;
            }
        }
        IncidentKind::EbsSpike => {
            let who = Who::Role(
                inc.principal_arn.clone().unwrap_or_default(),
                "bulk-restore".into(),
            );
            let n = rng.random_range(12..25);
            for _ in 0..n {
                let t = rng.random_range(s..e);
                let size = rng.random_range(1000..16000);
                let vtype = *pick(rng, &["io2", "gp3"]);
                let ip = corp_ip(rng);
                let v = create_volume(rng, t, a, &inc.region, &who, &ip, CORP_UAS[4], size, vtype);
                sink.push(rx, t, v);
            }
        }
        // Shaped through the baseline rates; the others are the hard
        // profile's.
        _ => {}
    }
}
