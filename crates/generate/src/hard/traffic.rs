//! An account's everyday traffic: its signal calls in their rhythms and
//! the noise around them (failed calls, the audit, the traps).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::names::NORMAL_TYPES;
use super::{Effect, Func, HAccount, HardOrg, MIN_MS, Rhythm, STEP, at_local, business, local};
use crate::events::{CORP_UAS, Who, record};
use crate::events::{create_volume, invoke, run_instances};
use crate::org::{Account, Env, pick};
use crate::write::{Sink, region_index};
use crate::{DAY_MS, HOUR_MS, iso, poisson};

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
pub(super) fn account_events(
    org: &HardOrg,
    ai: usize,
    rng: &mut ChaCha8Rng,
    sink: &mut Sink,
) -> (u64, u64) {
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
pub(super) fn noise_events(
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
pub(super) fn ec2_instances_per_step(h: &HAccount, t: i64, d: usize) -> f64 {
    let region = h.a.regions[0];
    let swing = if matches!(h.a.env, Env::Development | Env::Sandbox) {
        h.swing.get(d).copied().unwrap_or(1.0)
    } else {
        1.0
    };
    let (day, night) = h.ec2;
    (night + (day - night) * business(t, region) * swing) / 2.0 * 2.0
}
