//! The detection engine on hand-built streams: spikes, drops, new regions,
//! lateness, checkpoints, and the store behind the service.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::sync::Arc;

use trailhound_core::account::Environment;
use trailhound_core::detector::default_detectors;
use trailhound_core::{AnomalyKind, EnrichedEvent, Event};
use trailhound_detect::engine::{Engine, EngineConfig, WindowResult};
use trailhound_detect::store::{AnomalyFilter, DetectStore};

use crate::fixtures::{MIN, T0, account, invoke_event};

fn invoke(id: u64, t: i64, acct: &str, region: &str, principal: &str) -> EnrichedEvent {
    EnrichedEvent {
        event: Event {
            request_parameters:
                r#"{"functionName":"arn:aws:lambda:us-east-1:111122223333:function:f"}"#.into(),
            ..invoke_event(id, t, acct, region, principal)
        },
        account: account(acct),
    }
}

fn run_instances(
    id: u64,
    t: i64,
    acct: &str,
    region: &str,
    n: usize,
    itype: &str,
) -> EnrichedEvent {
    let mut e = invoke(id, t, acct, region, "arn:aws:iam::111122223333:user/miner");
    e.event.event_source = "ec2.amazonaws.com".into();
    e.event.event_name = "RunInstances".into();
    e.event.source_ip_address = "203.0.113.99".into();
    let items: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"instanceId":"i-{i}","instanceType":"{itype}"}}"#))
        .collect();
    e.event.request_parameters =
        format!(r#"{{"instanceType":"{itype}","instancesSet":{{"items":[{{"maxCount":{n}}}]}}}}"#);
    e.event.response_elements = format!(r#"{{"instancesSet":{{"items":[{}]}}}}"#, items.join(","));
    e
}

/// A steady daily-rhythm invoke stream for `days`, 10 per minute by day and
/// 2 per minute by night; `tweak` may change the per-minute count.
fn steady(
    engine: &mut Engine,
    days: i64,
    out: &mut Vec<WindowResult>,
    tweak: impl Fn(i64) -> Option<u64>,
) -> u64 {
    let mut id = 0;
    for m in 0..days * 1440 {
        let t = T0 + m * MIN;
        let hour = (m % 1440) / 60;
        let n = tweak(t).unwrap_or(if (8..20).contains(&hour) { 10 } else { 2 });
        for k in 0..n {
            id += 1;
            let principal = format!("arn:aws:sts::111122223333:assumed-role/app/{}", k % 3);
            engine.observe(
                &invoke(
                    id,
                    t + k as i64 * 1000,
                    "111122223333",
                    "us-east-1",
                    &principal,
                ),
                out,
            );
        }
    }
    id
}

fn anomalies(out: &[WindowResult]) -> Vec<&trailhound_core::Anomaly> {
    out.iter().filter_map(|r| r.anomaly.as_ref()).collect()
}

#[test]
fn a_steady_stream_raises_nothing_and_a_burst_is_found_at_once() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    let burst_start = T0 + 4 * 86_400_000 + 14 * 3_600_000;
    let burst = |t: i64| (t >= burst_start && t < burst_start + 30 * MIN).then_some(200);
    steady(&mut e, 5, &mut out, burst);
    let mut flushed = Vec::new();
    e.flush(&mut flushed);
    out.extend(flushed);
    let found = anomalies(&out);
    assert!(!found.is_empty(), "burst missed");
    // Raised while its window was open, on the first few minutes of it…
    let early = found
        .iter()
        .find(|a| a.detector == "lambda-invoke")
        .expect("lambda-invoke raised");
    assert_eq!(
        early.window_start.timestamp_millis(),
        burst_start,
        "found late: {early:?}"
    );
    assert!(
        early.observed_until < early.window_end
            && early.observed_until.timestamp_millis() - burst_start <= 5 * MIN,
        "not raised early: {early:?}"
    );
    assert!(
        out.iter()
            .any(|r| r.extra && r.anomaly.as_ref() == Some(*early))
    );
    // …then raised again, same id, with the whole window when it closed.
    let first = found
        .iter()
        .rfind(|a| a.id == early.id)
        .expect("raised at the window's close");
    assert_eq!(first.observed_until, first.window_end);
    assert!(first.actual > early.actual);
    assert_eq!(first.kind, AnomalyKind::Spike);
    assert!(first.actual > 1000.0 && first.expected < 200.0, "{first:?}");
    assert!(first.grade > 0.0 && first.grade <= 1.0);
    // Every anomaly belongs to the burst: nothing before or long after.
    for a in &found {
        let ws = a.window_start.timestamp_millis();
        assert!(
            ws >= burst_start && ws < burst_start + 60 * MIN,
            "false alarm at {}",
            a.window_start
        );
    }
    let function = first
        .top_contributors
        .iter()
        .find(|c| c.dimension == "function")
        .expect("function contributor");
    assert!(function.value.ends_with(":function:f"));
}

#[test]
fn a_drop_to_zero_of_a_steady_entity_is_found() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    let gap = T0 + 4 * 86_400_000 + 10 * 3_600_000;
    steady(&mut e, 5, &mut out, |t| {
        (t >= gap && t < gap + 3 * 3_600_000).then_some(0)
    });
    let drops: Vec<_> = anomalies(&out)
        .into_iter()
        .filter(|a| a.kind == AnomalyKind::Drop)
        .collect();
    let first = drops
        .iter()
        .min_by_key(|a| a.window_start)
        .expect("drop missed");
    let ws = first.window_start.timestamp_millis();
    assert!(
        ws >= gap && ws <= gap + 20 * MIN,
        "drop found at {} (gap at {gap})",
        first.window_start
    );
    assert_eq!(first.actual, 0.0);
}

#[test]
fn first_activity_in_a_new_region_is_found_with_its_contributors() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    let last = steady(&mut e, 3, &mut out, |_| None);
    let t = T0 + 3 * 86_400_000 + 5 * MIN;
    let mut id = last + 1;
    for k in 0..4 {
        id += 1;
        e.observe(
            &run_instances(
                id,
                t + k * 1000,
                "111122223333",
                "ap-southeast-1",
                10,
                "p4d.24xlarge",
            ),
            &mut out,
        );
    }
    e.flush(&mut out);
    let found: Vec<_> = anomalies(&out)
        .into_iter()
        .filter(|a| a.detector == "ec2-run-instances")
        .collect();
    // Raised at its first events (GPU types, a new principal), then again
    // with the whole window: one anomaly id.
    assert!(found.iter().all(|a| a.id == found[0].id), "{found:#?}");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].observed_until.timestamp_millis() <= t + 3000);
    assert_eq!(found[0].actual, 10.0);
    let a = found[1];
    assert_eq!(a.kind, AnomalyKind::NewRegion);
    assert_eq!((a.region.as_str(), a.actual), ("ap-southeast-1", 40.0));
    let itype = a
        .top_contributors
        .iter()
        .find(|c| c.dimension == "instance_type")
        .unwrap();
    assert_eq!((itype.value.as_str(), itype.count), ("p4d.24xlarge", 40));
    let principal = a
        .top_contributors
        .iter()
        .find(|c| c.dimension == "principal")
        .unwrap();
    assert!(principal.is_new, "{principal:?}");
    let ip = a
        .top_contributors
        .iter()
        .find(|c| c.dimension == "source_ip")
        .unwrap();
    assert!(ip.is_new && ip.value == "203.0.113.99");
}

#[test]
fn events_for_closed_windows_are_counted_late() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    e.observe(&invoke(1, T0, "111122223333", "us-east-1", "p"), &mut out);
    e.observe(
        &invoke(2, T0 + 60 * MIN, "111122223333", "us-east-1", "p"),
        &mut out,
    );
    // One event alone does not move time (it could be an outlier).
    assert!(out.is_empty());
    e.observe(
        &invoke(5, T0 + 61 * MIN, "111122223333", "us-east-1", "p"),
        &mut out,
    );
    // The first window closed when the watermark passed its end + lateness.
    assert!(!out.is_empty());
    e.observe(
        &invoke(3, T0 + MIN, "111122223333", "us-east-1", "p"),
        &mut out,
    );
    // Once per detector it counted for (per account and per function).
    assert_eq!(e.stats().late_events, 2);
    let late = e.take_late();
    assert_eq!(late.len(), 2);
    assert_eq!(
        (late[0].event_id.as_str(), late[0].window_start_ms),
        ("e-3", T0)
    );
    assert!(late[0].reason.contains("closed"), "{}", late[0].reason);
    // Within the allowed lateness is fine.
    e.observe(
        &invoke(4, T0 + 59 * MIN, "111122223333", "us-east-1", "p"),
        &mut out,
    );
    assert_eq!(e.stats().late_events, 2);
}

#[test]
fn a_checkpoint_resumes_without_relearning() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    steady(&mut e, 3, &mut out, |_| None);
    let bytes = postcard::to_stdvec(&e.checkpoint()).unwrap();
    assert!(
        bytes.len() < 2_000_000,
        "checkpoint is {} bytes",
        bytes.len()
    );
    let mut restored =
        Engine::from_checkpoint(postcard::from_bytes(&bytes).unwrap(), &Default::default());
    assert_eq!(restored.entity_count(), e.entity_count());
    assert_eq!(restored.watermark_ms(), e.watermark_ms());
    // A burst right after the restore is found immediately: the baseline
    // and forest came back.
    let mut r = restored;
    let mut out2 = Vec::new();
    let t = T0 + 3 * 86_400_000 + 10 * 3_600_000;
    for k in 0..2000 {
        r.observe(
            &invoke(
                10_000_000 + k,
                t + (k as i64 % 600) * 1000,
                "111122223333",
                "us-east-1",
                "p",
            ),
            &mut out2,
        );
    }
    r.flush(&mut out2);
    assert!(
        anomalies(&out2)
            .iter()
            .any(|a| a.window_start.timestamp_millis() == t)
    );
}

#[test]
fn the_store_lists_newest_first_with_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = DetectStore::open(&dir.path().join("d.redb")).unwrap();
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    let burst_start = T0 + 4 * 86_400_000 + 14 * 3_600_000;
    steady(&mut e, 5, &mut out, |t| {
        (t >= burst_start && t < burst_start + 30 * MIN).then_some(200)
    });
    e.flush(&mut out);
    store.record(&out, &[]).unwrap();
    let (all, next) = store.list(&AnomalyFilter::default(), 1000, None).unwrap();
    assert!(next.is_none() && !all.is_empty());
    assert!(
        all.windows(2)
            .all(|w| w[0].window_start >= w[1].window_start)
    );
    let (page1, token) = store.list(&AnomalyFilter::default(), 1, None).unwrap();
    assert_eq!(page1.len(), 1);
    if all.len() > 1 {
        let (page2, _) = store
            .list(&AnomalyFilter::default(), 1, token.as_deref())
            .unwrap();
        assert_eq!(page2[0].id, all[1].id);
    }
    let none = AnomalyFilter {
        environment: Some(Environment::Production),
        ..Default::default()
    };
    assert!(store.list(&none, 10, None).unwrap().0.is_empty());
    let sandbox = AnomalyFilter {
        environment: Some(Environment::Sandbox),
        service: "lambda".into(),
        ..Default::default()
    };
    assert_eq!(store.list(&sandbox, 1000, None).unwrap().0.len(), all.len());
    let a = &all[0];
    assert_eq!(store.anomaly(&a.id).unwrap().as_ref(), Some(a));
    let series = store
        .series(
            "lambda-invoke",
            "111122223333/us-east-1",
            T0,
            T0 + 6 * 86_400_000,
        )
        .unwrap();
    assert_eq!(series.len(), 5 * 144);
}

/// An event of `name` at `t` in account `acct` (environment `env`) by
/// `principal` from `ip`; `n` instances for RunInstances.
#[allow(clippy::too_many_arguments)]
fn call(
    id: u64,
    t: i64,
    acct: &str,
    env: Environment,
    name: &str,
    principal: &str,
    ip: &str,
    n: usize,
) -> EnrichedEvent {
    let mut e = run_instances(id, t, acct, "us-east-1", n, "m5.large");
    e.event.event_name = name.into();
    e.event.user_identity.arn = principal.into();
    e.event.source_ip_address = ip.into();
    if name == "CreateVolume" {
        e.event.request_parameters = r#"{"size":8,"volumeType":"gp3"}"#.into();
        e.event.response_elements = String::new();
    }
    let mut a = (*e.account).clone();
    a.environment = env;
    e.account = Arc::new(a);
    e
}

const ACCOUNTS: [&str; 4] = [
    "111111111111",
    "222222222222",
    "333333333333",
    "444444444444",
];

/// Two launches of one instance per 10 minutes in each account, by its
/// own deploy role from its own address, for `days`; `extra(t, account
/// index)` adds launches by someone else.
fn fleet(
    e: &mut Engine,
    days: i64,
    env: Environment,
    out: &mut Vec<WindowResult>,
    extra: impl Fn(i64, usize) -> Option<(&'static str, &'static str, usize)>,
) {
    fleet_events(days, env, extra, |step| {
        if let Some(ev) = step {
            e.observe(ev, out);
        }
    });
    e.flush(out);
}

/// [`fleet`]'s events in order, each as `Some`, with a `None` after each
/// 10-minute step.
fn fleet_events(
    days: i64,
    env: Environment,
    extra: impl Fn(i64, usize) -> Option<(&'static str, &'static str, usize)>,
    mut step: impl FnMut(Option<&EnrichedEvent>),
) {
    let mut id = 1_000_000;
    for w in 0..days * 144 {
        let t0 = T0 + w * 10 * MIN;
        for (k, acct) in ACCOUNTS.iter().enumerate() {
            let own = format!("arn:aws:sts::{acct}:assumed-role/deploy/ci");
            let ip = format!("10.0.{k}.1");
            for j in 0..2 {
                id += 1;
                step(Some(&call(
                    id,
                    t0 + j * 4 * MIN + k as i64 * 1000,
                    acct,
                    env,
                    "RunInstances",
                    &own,
                    &ip,
                    1,
                )));
            }
            if let Some((role, ip, n)) = extra(t0, k) {
                for j in 0..n {
                    id += 1;
                    let p = format!("arn:aws:sts::{acct}:assumed-role/{role}");
                    step(Some(&call(
                        id,
                        t0 + 5 * MIN + j as i64 * 1000,
                        acct,
                        env,
                        "RunInstances",
                        &p,
                        ip,
                        1,
                    )));
                }
            }
        }
        step(None);
    }
}

/// [`fleet`] in production for four days, on a fresh engine.
fn production_fleet(
    extra: impl Fn(i64, usize) -> Option<(&'static str, &'static str, usize)>,
) -> (Engine, Vec<WindowResult>) {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    fleet(&mut e, 4, Environment::Production, &mut out, extra);
    (e, out)
}

/// Whether any window raised a coordinated anomaly.
fn any_coordinated(out: &[WindowResult]) -> bool {
    anomalies(out)
        .iter()
        .any(|a| a.kind == AnomalyKind::Coordinated)
}

/// An account in two coordinated groups (one role name in four accounts,
/// one address in three of them) is graded by the wider, whatever order
/// the engine's hash maps happen to hold the groups in: every run and
/// every path grades alike.
#[test]
fn a_coordinated_account_is_graded_by_its_widest_group_every_time() {
    let rise = T0 + 3 * 86_400_000 + 14 * 3_600_000;
    let shared = |t: i64, k: usize| {
        (t >= rise && t < rise + 30 * MIN).then_some((
            "OrganizationAccountAccessRole/ops",
            if k < 3 {
                "198.51.100.50"
            } else {
                "203.0.113.7"
            },
            5,
        ))
    };
    for _ in 0..3 {
        let (_, out) = production_fleet(shared);
        let grades: Vec<(String, f64)> = anomalies(&out)
            .iter()
            .filter(|a| a.kind == AnomalyKind::Coordinated)
            .map(|a| (a.account_id.clone(), a.grade))
            .collect();
        let accounts: std::collections::BTreeSet<&str> =
            grades.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(accounts.len(), ACCOUNTS.len(), "{grades:?}");
        for (account, grade) in &grades {
            assert!(
                (grade - 0.8).abs() < 1e-9,
                "{account}: {grade} ({grades:?})"
            );
        }
    }
}

#[test]
fn accounts_rising_together_under_one_role_are_raised_as_coordinated() {
    let rise = T0 + 3 * 86_400_000 + 14 * 3_600_000;
    let shared = |t: i64, _k: usize| {
        (t >= rise && t < rise + 30 * MIN).then_some((
            "OrganizationAccountAccessRole/ops",
            "198.51.100.50",
            5,
        ))
    };
    let (e, out) = production_fleet(shared);
    let found = anomalies(&out);
    let coordinated: std::collections::BTreeSet<&str> = found
        .iter()
        .filter(|a| a.kind == AnomalyKind::Coordinated)
        .map(|a| a.account_id.as_str())
        .collect();
    // No account alone is alarming…
    assert!(
        !found.iter().any(|a| a.kind == AnomalyKind::Spike),
        "{found:#?}"
    );
    // …together they are, each of them.
    assert_eq!(coordinated.len(), ACCOUNTS.len(), "{found:#?}");
    for a in found.iter().filter(|a| a.kind == AnomalyKind::Coordinated) {
        let ws = a.window_start.timestamp_millis();
        assert!((rise..rise + 30 * MIN).contains(&ws), "{a:?}");
        assert!(a.id.ends_with(":coordinated"));
    }
    assert!(e.stats().coordinated >= 4);

    // The same rise by each account's own people from their own
    // addresses is not coordination.
    let own = |t: i64, k: usize| {
        (t >= rise && t < rise + 30 * MIN).then_some((
            ["a/1", "b/2", "c/3", "d/4"][k],
            [
                "198.51.100.1",
                "198.51.100.2",
                "198.51.100.3",
                "198.51.100.4",
            ][k],
            5,
        ))
    };
    let (_, out) = production_fleet(own);
    assert!(!any_coordinated(&out), "{:#?}", anomalies(&out));

    // Nor is a CI role launching one test instance in each account from a
    // runner's fresh address: new in every account, but nothing of note.
    let ci = |t: i64, _k: usize| (t == rise).then_some(("ci-deployer/gha-1", "198.51.100.205", 1));
    let (_, out) = production_fleet(ci);
    assert!(!any_coordinated(&out), "{:#?}", anomalies(&out));
    // The same address launching a handful in each account is.
    let intruder =
        |t: i64, _k: usize| (t == rise).then_some(("ci-deployer/gha-1", "198.51.100.205", 5));
    let (_, out) = production_fleet(intruder);
    assert!(any_coordinated(&out), "{:#?}", anomalies(&out));
}

/// detect split across replicas (`--shard`): two engines, each seeing
/// half the accounts and told after every step what the other saw rising
/// (as enrich carries it between replicas), raise exactly the coordinated
/// anomalies one engine seeing every account raises; without the reports
/// neither sees enough accounts to raise any.
#[test]
fn replicas_that_share_rising_accounts_coordinate_as_one_engine() {
    let rise = T0 + 3 * 86_400_000 + 14 * 3_600_000;
    let shared = |t: i64, _k: usize| {
        (t >= rise && t < rise + 30 * MIN).then_some((
            "OrganizationAccountAccessRole/ops",
            "198.51.100.50",
            5,
        ))
    };
    let ids = |out: &[WindowResult]| -> std::collections::BTreeSet<String> {
        anomalies(out).iter().map(|a| a.id.clone()).collect()
    };
    let (_, one) = production_fleet(shared);
    let expected = ids(&one);
    assert!(any_coordinated(&one));

    for exchange in [true, false] {
        let mut replicas: Vec<Engine> = (0..2)
            .map(|_| {
                let mut e = Engine::new(default_detectors(), EngineConfig::default());
                e.share_rising();
                e
            })
            .collect();
        let mut out = Vec::new();
        let owner = |acct: &str| usize::from(ACCOUNTS.iter().position(|a| *a == acct) >= Some(2));
        fleet_events(4, Environment::Production, shared, |step| match step {
            Some(ev) => replicas[owner(&ev.event.recipient_account_id)].observe(ev, &mut out),
            None if exchange => {
                let reports: Vec<_> = replicas.iter_mut().map(Engine::take_shared).collect();
                for (i, r) in replicas.iter_mut().enumerate() {
                    r.observe_shared(&reports[1 - i], &mut out);
                }
            }
            None => {}
        });
        for r in replicas.iter_mut() {
            r.flush(&mut out);
        }
        if exchange {
            assert_eq!(ids(&out), expected);
        } else {
            assert!(!any_coordinated(&out), "{:#?}", anomalies(&out));
        }
    }
}

#[test]
fn a_rise_over_hours_no_window_shows_is_raised_when_sustained_rises_are_on() {
    // One launch every half hour, by the usual principal from the usual
    // address, for eight days; on the last night three hours hold two
    // launches every ten minutes: six times as many, which no window shows.
    let night = T0 + 7 * 86_400_000 + 2 * 3_600_000;
    let run = |sustained_z: f64| {
        let cfg = EngineConfig {
            sustained_z,
            ..Default::default()
        };
        let mut e = Engine::new(default_detectors(), cfg);
        let mut out = Vec::new();
        let acct = ACCOUNTS[0];
        let own = format!("arn:aws:sts::{acct}:assumed-role/deploy/ci");
        for w in 0..8 * 144 {
            let t = T0 + w * 10 * MIN;
            let rising = (night..night + 180 * MIN).contains(&t);
            let n = if rising { 2 } else { u64::from(w % 3 == 0) };
            for k in 0..n {
                let id = 2 * u64::try_from(w).unwrap_or(0) + k + 1;
                let ev = call(
                    id,
                    t + MIN + i64::try_from(k).unwrap_or(0) * 3 * MIN,
                    acct,
                    Environment::Production,
                    "RunInstances",
                    &own,
                    "10.0.0.1",
                    1,
                );
                e.observe(&ev, &mut out);
            }
        }
        e.flush(&mut out);
        anomalies(&out)
            .into_iter()
            .filter(|a| a.detector == "ec2-run-instances")
            .map(|a| a.window_start.timestamp_millis())
            .collect::<Vec<_>>()
    };
    assert!(run(0.0).is_empty(), "{:?}", run(0.0));
    let found = run(4.0);
    assert!(!found.is_empty());
    // Windows within the hour after the rise still hold its share of it.
    assert!(found.iter().any(|s| (night..night + 180 * MIN).contains(s)));
    for start in &found {
        assert!((night..night + 240 * MIN).contains(start), "{start}");
    }
}

#[test]
fn a_weekly_job_seen_once_is_not_raised_again_and_the_stats_say_why() {
    // Mondays at 07:00, 30 launches by the batch role; T0 is a Monday.
    let batch = |t: i64, k: usize| {
        let day = (t - T0) / 86_400_000;
        let in_day = (t - T0) % 86_400_000;
        (k == 0 && day % 7 == 0 && (7 * 3_600_000..7 * 3_600_000 + 10 * MIN).contains(&in_day))
            .then_some(("batch/weekly", "10.9.9.9", 30))
    };
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    fleet(&mut e, 15, Environment::Production, &mut out, batch);
    let ec2: Vec<_> = anomalies(&out)
        .into_iter()
        .filter(|a| a.detector == "ec2-run-instances" && a.account_id == ACCOUNTS[0])
        .collect();
    assert!(ec2.is_empty(), "{ec2:#?}");
    assert!(e.stats().suppressed_weekly >= 2, "{:?}", e.stats());

    // The same launch on a Wednesday is raised.
    let wednesday = |t: i64, k: usize| {
        let day = (t - T0) / 86_400_000;
        let in_day = (t - T0) % 86_400_000;
        (k == 0 && day == 9 && (7 * 3_600_000..7 * 3_600_000 + 10 * MIN).contains(&in_day))
            .then_some(("batch/weekly", "10.9.9.9", 30))
    };
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    fleet(&mut e, 10, Environment::Production, &mut out, wednesday);
    assert!(
        anomalies(&out)
            .iter()
            .any(|a| a.detector == "ec2-run-instances" && a.account_id == ACCOUNTS[0])
    );
}

#[test]
fn swings_normal_in_development_are_suppressed_not_in_production() {
    // Twenty launches in a window where two are usual: clear in
    // production, within what a development account does.
    let swing = T0 + 3 * 86_400_000 + 11 * 3_600_000;
    let extra = |t: i64, k: usize| (k == 1 && t == swing).then_some(("dev/alice", "10.1.1.1", 18));
    let run = |env: Environment| {
        let cfg = EngineConfig {
            early_raise: false,
            ..Default::default()
        };
        let mut e = Engine::new(default_detectors(), cfg);
        let mut out = Vec::new();
        fleet(&mut e, 4, env, &mut out, extra);
        let raised = anomalies(&out)
            .iter()
            .any(|a| a.account_id == ACCOUNTS[1] && a.window_start.timestamp_millis() == swing);
        (raised, e.stats().suppressed_environment)
    };
    assert_eq!(run(Environment::Production), (true, 0));
    let (raised, suppressed) = run(Environment::Development);
    assert!(!raised);
    assert!(suppressed >= 1);
}

/// A detector that ignores quiet environments (the security ones: IAM
/// changes, secret reads, refused calls) judges a development account as
/// it judges production.
#[test]
fn a_detector_may_judge_every_environment_alike() {
    let swing = T0 + 3 * 86_400_000 + 11 * 3_600_000;
    let extra = |t: i64, k: usize| (k == 1 && t == swing).then_some(("dev/alice", "10.1.1.1", 18));
    let mut specs = default_detectors();
    for s in &mut specs {
        s.ignore_quiet_environments = s.name == "ec2-run-instances";
    }
    let cfg = EngineConfig {
        early_raise: false,
        ..Default::default()
    };
    let mut e = Engine::new(specs, cfg);
    let mut out = Vec::new();
    fleet(&mut e, 4, Environment::Development, &mut out, extra);
    assert!(
        anomalies(&out)
            .iter()
            .any(|a| a.account_id == ACCOUNTS[1] && a.window_start.timestamp_millis() == swing),
        "{:?}",
        e.stats()
    );
}

#[test]
fn one_ordinary_call_in_a_new_region_is_context_not_an_alert() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    fleet(&mut e, 3, Environment::Production, &mut out, |_, _| None);
    let t = T0 + 3 * 86_400_000 + 5 * MIN;
    let own = format!("arn:aws:sts::{}:assumed-role/deploy/ci", ACCOUNTS[0]);
    let mut v = call(
        9,
        t,
        ACCOUNTS[0],
        Environment::Production,
        "CreateVolume",
        &own,
        "10.0.0.1",
        1,
    );
    v.event.aws_region = "eu-central-1".into();
    e.observe(&v, &mut out);
    // Time moves on in the account's usual region.
    for k in 0..40 {
        e.observe(
            &call(
                100 + k,
                t + k as i64 * MIN,
                ACCOUNTS[0],
                Environment::Production,
                "RunInstances",
                &own,
                "10.0.0.1",
                1,
            ),
            &mut out,
        );
    }
    e.flush(&mut out);
    assert!(
        !anomalies(&out).iter().any(|a| a.region == "eu-central-1"),
        "{:#?}",
        anomalies(&out)
    );
    assert_eq!(e.stats().suppressed_new_region, 1);
}

#[test]
fn failed_calls_name_the_service_that_refused_them() {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    let burst = T0 + 3 * 86_400_000 + 15 * 3_600_000;
    let mut id = 5_000_000;
    for w in 0..4 * 144 {
        let t0 = T0 + w * 10 * MIN;
        // A little background refusal noise in S3.
        if w % 6 == 0 {
            id += 1;
            let mut d = call(
                id,
                t0,
                ACCOUNTS[0],
                Environment::Production,
                "GetObject",
                "arn:aws:sts::111111111111:assumed-role/app/x",
                "10.0.0.1",
                1,
            );
            d.event.event_source = "s3.amazonaws.com".into();
            d.event.error_code = "AccessDenied".into();
            e.observe(&d, &mut out);
        }
        let n = if t0 == burst { 200 } else { 1 };
        for j in 0..n {
            id += 1;
            let mut f = call(
                id,
                t0 + j as i64 * 500,
                ACCOUNTS[0],
                Environment::Production,
                "RunInstances",
                "arn:aws:iam::111111111111:user/leaked",
                "203.0.113.7",
                1,
            );
            if n > 1 {
                f.event.error_code = "Client.UnauthorizedOperation".into();
            }
            e.observe(&f, &mut out);
        }
    }
    e.flush(&mut out);
    let failed: Vec<_> = anomalies(&out)
        .into_iter()
        .filter(|a| a.detector == "failed-calls")
        .collect();
    assert!(!failed.is_empty());
    assert!(failed.iter().all(|a| a.service == "ec2"), "{failed:#?}");
    assert!(
        failed
            .iter()
            .all(|a| a.window_start.timestamp_millis() == burst)
    );
}

/// An IAM change by the usual role on day 4 of four days of launches
/// (the IAM entity is then young), then 24 more at `BURST` by `who(k)`
/// from `ip`; returns the engine and what it raised.
fn young_iam_burst(who: impl Fn(i64) -> String, ip: &str) -> (Engine, Vec<WindowResult>) {
    let mut e = Engine::new(default_detectors(), EngineConfig::default());
    let mut out = Vec::new();
    fleet(&mut e, 3, Environment::Production, &mut out, |_, _| None);
    let acct = ACCOUNTS[0];
    let own = format!("arn:aws:sts::{acct}:assumed-role/deploy/ci");
    let iam = |id: u64, t: i64, who: &str, ip: &str| {
        let mut c = call(
            id,
            t,
            acct,
            Environment::Production,
            "CreateUser",
            who,
            ip,
            1,
        );
        c.event.event_source = "iam.amazonaws.com".into();
        c.event.request_parameters = r#"{"userName":"x"}"#.into();
        c
    };
    let day4 = T0 + 3 * 86_400_000 + 3_600_000;
    e.observe(&iam(1, day4, &own, "10.0.0.1"), &mut out);
    let mut id = 9_000_000;
    for w in 0..20 {
        id += 1;
        e.observe(
            &call(
                id,
                day4 + 10 * MIN + w * 90 * MIN,
                acct,
                Environment::Production,
                "RunInstances",
                &own,
                "10.0.0.1",
                1,
            ),
            &mut out,
        );
    }
    for k in 0..24 {
        id += 1;
        e.observe(&iam(id, BURST + k * 10_000, &who(k), ip), &mut out);
    }
    e.flush(&mut out);
    (e, out)
}

/// When [`young_iam_burst`]'s burst starts: day 5, 08:00.
const BURST: i64 = T0 + 4 * 86_400_000 + 8 * 3_600_000;

#[test]
fn a_large_burst_by_a_newcomer_on_a_young_entity_is_raised_early() {
    let acct = ACCOUNTS[0];
    let own = format!("arn:aws:sts::{acct}:assumed-role/deploy/ci");
    // 24 IAM changes by a role never seen, from a new address.
    let intruder = format!("arn:aws:sts::{acct}:assumed-role/app-runner/x");
    let (e, out) = young_iam_burst(|_| intruder.clone(), "198.51.100.66");
    assert_eq!(e.stats().late_events, 0);
    let raised: Vec<_> = anomalies(&out)
        .into_iter()
        .filter(|a| a.detector == "iam-changes")
        .collect();
    assert!(!raised.is_empty(), "{:#?}", anomalies(&out));
    // Raised within the first minutes of the burst, not at the window's end.
    assert!(raised[0].observed_until.timestamp_millis() < BURST + 5 * MIN);
    assert!(
        raised
            .iter()
            .all(|a| a.window_start.timestamp_millis() >= BURST - 10 * MIN)
    );

    // The same burst by the usual deploy role from its usual address is
    // not judged until the entity has a rhythm.
    let (_, out) = young_iam_burst(|_| own.clone(), "10.0.0.1");
    assert!(!anomalies(&out).iter().any(|a| a.detector == "iam-changes"));

    // Nor when one call among them comes from a new session: the burst
    // must be the newcomer's, not a busy window a newcomer touched once.
    let session = format!("arn:aws:sts::{acct}:assumed-role/deploy/new-session");
    let (_, out) = young_iam_burst(
        |k| if k == 5 { session.clone() } else { own.clone() },
        "10.0.0.1",
    );
    assert!(!anomalies(&out).iter().any(|a| a.detector == "iam-changes"));
}
