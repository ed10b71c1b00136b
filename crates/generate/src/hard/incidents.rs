//! The events each planned incident writes into its accounts.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::names::{NORMAL_TYPES, hex, new_ip};
use super::structure::FN_NOUNS;
use super::traffic::ec2_instances_per_step;
use super::{Effect, HardOrg, MIN_MS, Rhythm, STEP, business};
use crate::events::{CORP_UAS, Who, record};
use crate::events::{create_volume, invoke, run_instances};
use crate::org::pick;
use crate::write::{Sink, region_index};
use crate::{DAY_MS, iso, poisson};

pub(super) fn incident_events(
    org: &HardOrg,
    ai: usize,
    rng: &mut ChaCha8Rng,
    sink: &mut Sink,
) -> u64 {
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
