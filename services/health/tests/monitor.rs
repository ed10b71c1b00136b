//! The monitor against fake services that are up, slow, erroring, gone and
//! hanging: statuses and reasons, alerts on changes, recovery that fires
//! once and not in a loop, and a round that finishes on time whatever a
//! service does.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use trailhound_health::alert::{Alert, Alerter};
use trailhound_health::evaluate::Probe;
use trailhound_health::probe::Prober;
use trailhound_health::{HealthConfig, HealthError, Monitor, RecoveryConfig};
use trailhound_proto::common::v1::ServiceStats;
use trailhound_proto::health::v1 as pb;

#[derive(Clone, Debug)]
enum Behaviour {
    Up {
        events_in: u64,
        errors: u64,
        dead: u64,
    },
    /// Up, turning away `rejected` bad records so far (dead-lettered).
    Rejecting {
        events_in: u64,
        rejected: u64,
    },
    Slow(Duration),
    Hangs,
    Gone,
    Absurd,
}

#[derive(Default)]
struct Fake {
    behaviour: Mutex<HashMap<String, Behaviour>>,
    calls: Mutex<Vec<String>>,
    /// Endpoints told to report NOT_SERVING, as a real server would.
    marked: Mutex<std::collections::HashSet<String>>,
}

impl Fake {
    fn set(&self, name: &str, b: Behaviour) {
        self.behaviour.lock().unwrap().insert(name.into(), b);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn stats(name: &str, events_in: u64, errors: u64, dead: u64) -> ServiceStats {
    let mut s = ServiceStats {
        service: name.into(),
        events_in,
        dead_letters: dead,
        ..Default::default()
    };
    s.errors.insert("forward".into(), errors);
    s
}

#[async_trait]
impl Prober for Fake {
    async fn probe(&self, name: &str, endpoint: &str, _timeout: Duration) -> Probe {
        let b = self.behaviour.lock().unwrap().get(name).cloned();
        let marked = self.marked.lock().unwrap().contains(endpoint);
        let ok = |s| Probe {
            health: if marked {
                Err(HealthError::NotServing("NOT_SERVING".into()))
            } else {
                Ok(())
            },
            stats: Ok(s),
            latency: Duration::from_millis(1),
        };
        match b.unwrap_or(Behaviour::Gone) {
            Behaviour::Up {
                events_in,
                errors,
                dead,
            } => ok(stats(name, events_in, errors, dead)),
            Behaviour::Rejecting {
                events_in,
                rejected,
            } => {
                let mut s = stats(name, events_in, 0, rejected);
                s.input_rejected
                    .insert("malformed record: …".into(), rejected);
                ok(s)
            }
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                Probe {
                    latency: d,
                    ..ok(stats(name, 0, 0, 0))
                }
            }
            // Ignores its deadline on purpose: the monitor must not care.
            Behaviour::Hangs => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ok(stats(name, 0, 0, 0))
            }
            Behaviour::Gone => Probe {
                health: Err(HealthError::Unreachable("connection refused".into())),
                stats: Err(HealthError::Unreachable(String::new())),
                latency: Duration::ZERO,
            },
            Behaviour::Absurd => {
                let mut s = stats(name, u64::MAX, u64::MAX, u64::MAX);
                s.lag_seconds = f64::NAN;
                s.events_in_per_second = -1.0;
                s.uptime_seconds = f64::INFINITY;
                ok(s)
            }
        }
    }

    async fn set_serving(
        &self,
        endpoint: &str,
        serving: bool,
        _r: &str,
    ) -> Result<(), HealthError> {
        if serving {
            self.marked.lock().unwrap().remove(endpoint);
        } else {
            self.marked.lock().unwrap().insert(endpoint.to_string());
        }
        self.calls
            .lock()
            .unwrap()
            .push(format!("set_serving {endpoint} {serving}"));
        Ok(())
    }

    async fn recover(&self, endpoint: &str, action: &str, _r: &str) -> Result<String, HealthError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{action} {endpoint}"));
        Ok("done".into())
    }
}

#[derive(Default)]
struct Alerts {
    sent: Mutex<Vec<Alert>>,
    fail: bool,
}

#[async_trait]
impl Alerter for Alerts {
    async fn send(&self, a: &Alert) -> Result<(), HealthError> {
        self.sent.lock().unwrap().push(a.clone());
        if self.fail {
            Err(HealthError::Unreachable("notify".into()))
        } else {
            Ok(())
        }
    }
}

fn config(names: &[&str]) -> HealthConfig {
    HealthConfig {
        targets: names
            .iter()
            .map(|n| (n.to_string(), format!("http://{n}")))
            .collect::<BTreeMap<_, _>>(),
        timeout: Duration::from_millis(200),
        recovery: RecoveryConfig {
            enabled: true,
            min_interval: Duration::from_secs(3600),
            max_per_hour: 1,
        },
        ..Default::default()
    }
}

/// A monitor of `names`, answered by a fake whose behaviour each test
/// sets, with alerts going nowhere.
fn watching(names: &[&str]) -> (Arc<Fake>, Monitor) {
    let fake = Arc::new(Fake::default());
    let m = Monitor::new(config(names), fake.clone(), Arc::new(Alerts::default()));
    (fake, m)
}

/// A service up with these counters.
fn up(events_in: u64, errors: u64, dead: u64) -> Behaviour {
    Behaviour::Up {
        events_in,
        errors,
        dead,
    }
}

fn find<'a>(h: &'a pb::SystemHealth, name: &str) -> &'a pb::ServiceHealth {
    h.services.iter().find(|s| s.name == name).unwrap()
}

#[tokio::test]
async fn up_slow_erroring_gone_and_absurd_each_get_their_status() {
    let fake = Arc::new(Fake::default());
    let names = ["up", "slow", "erroring", "gone", "absurd"];
    for (n, b) in [
        ("up", up(10, 0, 0)),
        ("slow", Behaviour::Slow(Duration::from_millis(1200))),
        ("erroring", up(10, 0, 0)),
        ("gone", Behaviour::Gone),
        ("absurd", Behaviour::Absurd),
    ] {
        fake.set(n, b);
    }
    let mut cfg = config(&names);
    cfg.timeout = Duration::from_secs(3);
    let m = Monitor::new(cfg, fake.clone(), Arc::new(Alerts::default()));
    m.check_once().await;
    fake.set("erroring", up(110, 30, 0));
    let h = m.check_once().await;
    assert_eq!(h.status(), pb::Status::Degraded);
    assert_eq!(find(&h, "up").status(), pb::Status::Serving);
    let slow = find(&h, "slow");
    assert_eq!(slow.status(), pb::Status::Degraded);
    assert!(slow.reasons[0].starts_with("slow"), "{:?}", slow.reasons);
    let e = find(&h, "erroring");
    assert_eq!(e.status(), pb::Status::Degraded);
    assert!((e.error_rate - 0.3).abs() < 1e-9);
    assert_eq!(find(&h, "gone").status(), pb::Status::NotServing);
    let a = find(&h, "absurd");
    assert_eq!(a.status(), pb::Status::Degraded);
    let s = a.stats.as_ref().unwrap();
    assert!(s.lag_seconds == 0.0 && s.uptime_seconds == 0.0 && s.events_in_per_second == 0.0);
    assert!(h.reasons.iter().any(|r| r.starts_with("gone NOT_SERVING")));
}

#[tokio::test]
async fn a_hanging_service_does_not_stall_the_round_or_the_others() {
    let fake = Arc::new(Fake::default());
    fake.set("hangs", Behaviour::Hangs);
    fake.set("up", up(1, 0, 0));
    let m = Monitor::new(
        config(&["hangs", "up"]),
        fake.clone(),
        Arc::new(Alerts::default()),
    );
    let start = Instant::now();
    let h = m.check_once().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(find(&h, "hangs").status(), pb::Status::NotServing);
    assert!(find(&h, "hangs").reasons[0].contains("no answer"));
    assert_eq!(find(&h, "up").status(), pb::Status::Serving);
}

#[tokio::test]
async fn a_downstream_restart_alerts_and_replays_once() {
    let fake = Arc::new(Fake::default());
    let alerts = Arc::new(Alerts {
        fail: true, // notify is down: alerts are logged, health goes on
        ..Default::default()
    });
    let up = up(1, 0, 0);
    fake.set("ingest", up.clone());
    fake.set("enrich", up.clone());
    let m = Monitor::new(config(&["ingest", "enrich"]), fake.clone(), alerts.clone());
    let mut watch = m.subscribe();
    assert_eq!(m.check_once().await.status(), pb::Status::Serving);

    fake.set("enrich", Behaviour::Gone);
    assert_eq!(m.check_once().await.status(), pb::Status::Degraded);
    fake.set("enrich", up.clone());
    assert_eq!(m.check_once().await.status(), pb::Status::Serving);
    // Down and up again within the rate limit: no second replay.
    fake.set("enrich", Behaviour::Gone);
    m.check_once().await;
    fake.set("enrich", up.clone());
    let h = m.check_once().await;

    assert_eq!(fake.calls(), vec!["replay http://ingest".to_string()]);
    assert_eq!(h.recent_actions.len(), 1);
    assert_eq!(h.recent_actions[0].action, "replay");
    assert!(h.recent_actions[0].ok);
    let sent = alerts.sent.lock().unwrap().clone();
    let enrich: Vec<_> = sent.iter().filter(|a| a.subject == "enrich").collect();
    assert_eq!(enrich.len(), 4, "{sent:?}");
    assert_eq!(enrich[0].to, pb::Status::NotServing);
    assert_eq!(enrich[1].to, pb::Status::Serving);
    assert!(sent.iter().any(|a| a.subject == "system"));
    assert!(
        m.counters
            .alerts_undelivered
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
    assert!(
        m.counters
            .actions_rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(watch.has_changed().unwrap());
    assert_eq!(watch.borrow_and_update().status(), pb::Status::Serving);
}

#[tokio::test]
async fn a_service_that_keeps_failing_is_marked_not_serving_once() {
    let (fake, m) = watching(&["detect"]);
    let mut errors = 0;
    for i in 0..8u64 {
        errors += 50;
        fake.set("detect", up(100 * (i + 1), errors, 0));
        m.check_once().await;
    }
    assert_eq!(
        fake.calls(),
        vec!["set_serving http://detect false".to_string()]
    );
}

#[tokio::test]
async fn notify_dead_letters_are_retried_when_it_is_healthy() {
    let (fake, m) = watching(&["notify"]);
    fake.set("notify", up(1, 0, 0));
    m.check_once().await;
    fake.set("notify", up(2, 0, 3));
    let h = m.check_once().await;
    assert_eq!(find(&h, "notify").status(), pb::Status::Degraded);
    assert!(fake.calls().is_empty());
    for _ in 0..3 {
        m.check_once().await;
    }
    assert_eq!(
        fake.calls(),
        vec!["retry_dead_letters http://notify".to_string()]
    );
}

#[tokio::test]
async fn bad_input_is_a_reason_not_a_failure() {
    let (fake, m) = watching(&["ingest"]);
    for i in 0..6u64 {
        // A trickle of malformed records: a third of what arrives.
        fake.set(
            "ingest",
            Behaviour::Rejecting {
                events_in: 300 * (i + 1),
                rejected: 100 * (i + 1),
            },
        );
        let h = m.check_once().await;
        let ingest = find(&h, "ingest");
        assert_eq!(ingest.status(), pb::Status::Serving, "{:?}", ingest.reasons);
        if i > 0 {
            assert!(
                ingest
                    .reasons
                    .iter()
                    .any(|r| r.starts_with("input: 100 records")),
                "{:?}",
                ingest.reasons
            );
        }
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[tokio::test]
async fn a_service_marked_not_serving_is_marked_serving_again_once_it_passes() {
    let fake = Arc::new(Fake::default());
    let mut cfg = config(&["detect"]);
    cfg.recovery.max_per_hour = 10;
    cfg.recovery.min_interval = Duration::ZERO;
    let m = Monitor::new(cfg, fake.clone(), Arc::new(Alerts::default()));
    let mut errors = 0;
    let mut events = 0;
    // The first check has nothing to compare with; three failing follow.
    for _ in 0..4 {
        errors += 50;
        events += 100;
        fake.set("detect", up(events, errors, 0));
        m.check_once().await;
    }
    assert_eq!(
        fake.calls(),
        vec!["set_serving http://detect false".to_string()]
    );
    // It recovers (no new errors) but reports NOT_SERVING, as told.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        events += 100;
        fake.set("detect", up(events, errors, 0));
        let h = m.check_once().await;
        statuses.push(find(&h, "detect").status());
        if statuses.len() == 1 {
            let reasons = &find(&h, "detect").reasons;
            assert!(reasons[0].contains("health told it to"), "{reasons:?}");
        }
    }
    assert_eq!(
        fake.calls(),
        vec![
            "set_serving http://detect false".to_string(),
            "set_serving http://detect true".to_string()
        ]
    );
    assert_eq!(
        statuses,
        vec![
            pb::Status::NotServing,
            pb::Status::NotServing,
            pb::Status::NotServing,
            pb::Status::Serving
        ]
    );
}
