//! The monitor: checks every configured service each poll interval, judges
//! it against the objectives, publishes the system's health to readers
//! and watchers, raises alerts on changes and takes rate-limited recovery
//! actions.
//!
//! Every check of every service runs concurrently under its own deadline
//! (the prober's, and a second one here in case a prober ignores it), so a
//! hanging service costs one timeout per round and never stalls the rest.
//!
//! Recovery actions, each logged, counted and rate-limited per service:
//! - `replay`: a service downstream of ingest (enrich, detect) came back
//!   after being NOT_SERVING → ingest re-sends what it spooled meanwhile.
//! - `retry_dead_letters`: notify's dead letters grew and notify is now
//!   SERVING with no new ones → notify re-sends them.
//! - `reconnect`: insights keeps producing but notify receives nothing →
//!   notify reconnects its WatchInsights stream.
//! - `mark_not_serving`: a reachable service failed `not_serving_after`
//!   checks in a row → it is told to report NOT_SERVING on grpc.health, so
//!   an orchestrator restarts it.
//! - `mark_serving`: a service marked NOT_SERVING (and not restarted)
//!   passes its other checks `not_serving_after` times in a row → it is
//!   told to report SERVING again.
//!
//! Bad input (records rejected, events late or quarantined) is reported
//! as a reason but is not a failure: a trickle of malformed records says
//! nothing about the service that refused them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use trailhound_proto::common::v1::ServiceStats;
use trailhound_proto::health::v1 as pb;

use crate::alert::{Alert, Alerter};
use crate::config::HealthConfig;
use crate::evaluate::{Probe, evaluate, overall};
use crate::probe::Prober;
use crate::recovery::Limiter;

/// Recent recovery actions kept for GetSystemHealth and the dashboard.
const RECENT_ACTIONS: usize = 20;

#[derive(Debug, Default)]
struct ServiceState {
    prev: Option<ServiceStats>,
    status: Option<pb::Status>,
    consecutive_failures: u32,
    /// Was NOT_SERVING at some check since it last was SERVING.
    was_down: bool,
    /// Dead letters grew and have not been retried since.
    dead_letters_pending: bool,
    /// Checks in a row where this (notify) received nothing while
    /// insights produced.
    stalled_checks: u32,
    /// health told it to report NOT_SERVING (`mark_not_serving`): its own
    /// grpc.health then says so, which is not a new failure.
    marked_down: bool,
    /// While marked down: checks in a row that passed otherwise.
    passing_while_marked: u32,
}

struct State {
    services: BTreeMap<String, ServiceState>,
    overall: Option<pb::Status>,
    actions: VecDeque<pb::RecoveryAction>,
    limiter: Limiter,
}

/// health's own counters, for its Stats RPC and /metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub checks: AtomicU64,
    pub failed_checks: AtomicU64,
    pub actions: AtomicU64,
    pub actions_failed: AtomicU64,
    pub actions_rate_limited: AtomicU64,
    pub alerts: AtomicU64,
    pub alerts_undelivered: AtomicU64,
}

/// See the module docs.
pub struct Monitor {
    config: HealthConfig,
    prober: Arc<dyn Prober>,
    alerter: Arc<dyn Alerter>,
    state: tokio::sync::Mutex<State>,
    tx: watch::Sender<pb::SystemHealth>,
    pub counters: Counters,
    round: trailhound_runtime::stats::Histogram,
    common: trailhound_runtime::stats::Common,
}

trailhound_core::debug_fields!(Monitor {
    targets: config.targets,
    ..
});

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Monitor {
    pub fn new(config: HealthConfig, prober: Arc<dyn Prober>, alerter: Arc<dyn Alerter>) -> Self {
        let (tx, _) = watch::channel(pb::SystemHealth {
            status: pb::Status::Unspecified as i32,
            reasons: vec!["not checked yet".into()],
            ..Default::default()
        });
        Self {
            state: tokio::sync::Mutex::new(State {
                services: BTreeMap::new(),
                overall: None,
                actions: VecDeque::new(),
                limiter: Limiter::new(config.recovery.clone()),
            }),
            config,
            prober,
            alerter,
            tx,
            counters: Counters::default(),
            round: Default::default(),
            common: trailhound_runtime::stats::Common::new("health"),
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The latest system health.
    pub fn current(&self) -> pb::SystemHealth {
        self.tx.borrow().clone()
    }

    /// Sees every new system health as it is published.
    pub fn subscribe(&self) -> watch::Receiver<pb::SystemHealth> {
        self.tx.subscribe()
    }

    /// Checks every `poll_interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while trailhound_runtime::shutdown::next_tick(&mut tick, &shutdown).await {
            self.check_once().await;
        }
    }

    /// One round: probe all, judge, publish, alert, recover.
    pub async fn check_once(&self) -> pb::SystemHealth {
        let started = Instant::now();
        let timeout = self.config.timeout;
        // A prober that ignores its deadline still cannot stall the round.
        let hard = timeout + Duration::from_millis(500);
        let probes = self.config.targets.iter().map(|(name, ep)| async move {
            let probe = match tokio::time::timeout(hard, self.prober.probe(name, ep, timeout)).await
            {
                Ok(p) => p,
                Err(_) => {
                    let why = crate::HealthError::Deadline(hard.as_millis());
                    Probe {
                        health: Err(why.clone()),
                        stats: Err(why),
                        latency: hard,
                    }
                }
            };
            (name.clone(), ep.clone(), probe)
        });
        let probes = futures::future::join_all(probes).await;
        let checked_at = trailhound_proto::time::from_millis(now_ms());

        let mut alerts = Vec::new();
        let mut todo: Vec<(String, String, String)> = Vec::new(); // action, target, reason
        let snapshot = {
            let mut st = self.state.lock().await;
            let mut services = Vec::with_capacity(probes.len());
            for (name, endpoint, probe) in &probes {
                self.counters.checks.fetch_add(1, Ordering::Relaxed);
                let s = st.services.entry(name.clone()).or_default();
                // A service health marked NOT_SERVING reports so itself;
                // it is judged on the rest, and marked SERVING again once
                // that passes `not_serving_after` checks in a row.
                let marked = s.marked_down
                    && probe.stats.is_ok()
                    && matches!(&probe.health, Err(crate::HealthError::NotServing(_)));
                let judged;
                let probe = if marked {
                    judged = Probe {
                        health: Ok(()),
                        stats: probe.stats.clone(),
                        latency: probe.latency,
                    };
                    &judged
                } else {
                    probe
                };
                let mut v = evaluate(probe, s.prev.as_ref(), &self.config.objectives);
                if marked {
                    let needed = self.config.objectives.not_serving_after;
                    if v.status == pb::Status::Serving {
                        s.passing_while_marked = s.passing_while_marked.saturating_add(1);
                    } else {
                        s.passing_while_marked = 0;
                    }
                    v.reasons.insert(
                        0,
                        format!(
                            "reports NOT_SERVING because health told it to; its checks pass again {} of {needed} in a row",
                            s.passing_while_marked.min(needed)
                        ),
                    );
                    if s.passing_while_marked >= needed {
                        todo.push((
                            "mark_serving".into(),
                            name.clone(),
                            format!("its checks passed {needed} times in a row"),
                        ));
                    }
                    v.status = pb::Status::NotServing;
                } else if s.marked_down && probe.health.is_ok() {
                    // Restarted (or marked SERVING by someone else).
                    s.marked_down = false;
                    s.passing_while_marked = 0;
                }
                let status = v.status;
                if status == pb::Status::Serving {
                    s.consecutive_failures = 0;
                } else if !marked {
                    self.counters.failed_checks.fetch_add(1, Ordering::Relaxed);
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                }
                // Dead letters that grew are waiting for a retry.
                if let (Some(p), Some(n)) = (&s.prev, &v.stats)
                    && n.dead_letters > p.dead_letters
                {
                    s.dead_letters_pending = true;
                }
                if let Some(old) = s.status
                    && old != status
                {
                    alerts.push(Alert {
                        subject: name.clone(),
                        from: old,
                        to: status,
                        reasons: v.reasons.clone(),
                        at_ms: now_ms(),
                    });
                }
                if status == pb::Status::NotServing {
                    s.was_down = true;
                } else if s.was_down && probe.health.is_ok() {
                    s.was_down = false;
                    if matches!(name.as_str(), "enrich" | "detect")
                        && self.config.targets.contains_key("ingest")
                    {
                        todo.push((
                            "replay".into(),
                            "ingest".into(),
                            format!("{name} is back after being NOT_SERVING"),
                        ));
                    }
                }
                if name == "notify" && status == pb::Status::Serving && s.dead_letters_pending {
                    todo.push((
                        "retry_dead_letters".into(),
                        "notify".into(),
                        "dead letters grew and notify is healthy again".into(),
                    ));
                }
                if probe.health.is_ok()
                    && !marked
                    && status != pb::Status::Serving
                    && s.consecutive_failures >= self.config.objectives.not_serving_after
                    && s.consecutive_failures % self.config.objectives.not_serving_after == 0
                {
                    todo.push((
                        "mark_not_serving".into(),
                        name.clone(),
                        format!(
                            "failed {} checks in a row: {}",
                            s.consecutive_failures,
                            v.reasons.join("; ")
                        ),
                    ));
                }
                if let Some(stats) = &v.stats {
                    s.prev = Some(stats.clone());
                }
                s.status = Some(status);
                services.push(pb::ServiceHealth {
                    name: name.clone(),
                    endpoint: endpoint.clone(),
                    status: status as i32,
                    reasons: v.reasons,
                    latency_ms: probe.latency.as_secs_f64() * 1000.0,
                    stats: v.stats,
                    checked_at: Some(checked_at),
                    consecutive_failures: s.consecutive_failures,
                    error_rate: v.error_rate,
                });
            }
            self.detect_stall(&mut st, &services, &mut todo);
            let (status, reasons) = overall(&services);
            if let Some(old) = st.overall
                && old != status
            {
                alerts.push(Alert {
                    subject: "system".into(),
                    from: old,
                    to: status,
                    reasons: reasons.clone(),
                    at_ms: now_ms(),
                });
            }
            st.overall = Some(status);
            pb::SystemHealth {
                status: status as i32,
                services,
                reasons,
                updated_at: Some(checked_at),
                recent_actions: st.actions.iter().cloned().collect(),
            }
        };
        self.tx.send_replace(snapshot.clone());
        self.round.record(started.elapsed());
        for a in alerts {
            self.alert(a).await;
        }
        if !todo.is_empty() {
            for (action, target, reason) in todo {
                self.act(&action, &target, &reason).await;
            }
            // Show the actions at once rather than a round later.
            let actions: Vec<_> = self.state.lock().await.actions.iter().cloned().collect();
            self.tx.send_modify(|h| h.recent_actions = actions);
        }
        self.current()
    }

    /// notify receiving nothing for two checks while insights produced
    /// means the stream between them is stuck.
    fn detect_stall(
        &self,
        st: &mut State,
        services: &[pb::ServiceHealth],
        todo: &mut Vec<(String, String, String)>,
    ) {
        let rate = |n: &str| {
            services
                .iter()
                .find(|s| s.name == n)
                .and_then(|s| s.stats.as_ref())
                .map(|s| (s.events_out_per_second, s.events_in_per_second))
        };
        let (Some((insights_out, _)), Some((_, notify_in))) = (rate("insights"), rate("notify"))
        else {
            return;
        };
        let Some(n) = st.services.get_mut("notify") else {
            return;
        };
        if insights_out > 0.0 && notify_in == 0.0 {
            n.stalled_checks += 1;
            if n.stalled_checks >= 2 {
                n.stalled_checks = 0;
                todo.push((
                    "reconnect".into(),
                    "notify".into(),
                    format!("insights produces {insights_out:.2}/s but notify receives nothing"),
                ));
            }
        } else {
            n.stalled_checks = 0;
        }
    }

    async fn alert(&self, a: Alert) {
        self.counters.alerts.fetch_add(1, Ordering::Relaxed);
        let summary = a.summary();
        match a.to {
            pb::Status::Serving => tracing::info!(subject = %a.subject, "health alert: {summary}"),
            _ => tracing::warn!(subject = %a.subject, "health alert: {summary}"),
        }
        // notify judging itself: if it is the one down, say so plainly.
        if let Err(e) = self.alerter.send(&a).await {
            self.counters
                .alerts_undelivered
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, subject = %a.subject, "notify is down or refused: health alert logged only");
        }
    }

    async fn act(&self, action: &str, target: &str, reason: &str) {
        let Some(endpoint) = self.config.targets.get(target).cloned() else {
            return;
        };
        let allowed = self
            .state
            .lock()
            .await
            .limiter
            .try_acquire(action, target, Instant::now());
        if let Err(refusal) = allowed {
            self.counters
                .actions_rate_limited
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(action, target, reason, %refusal, "recovery action held back");
            return;
        }
        self.counters.actions.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(action, target, reason, "recovery action");
        let result = match action {
            "mark_not_serving" => self
                .prober
                .set_serving(&endpoint, false, reason)
                .await
                .map(|_| "told to report NOT_SERVING".to_string()),
            "mark_serving" => self
                .prober
                .set_serving(&endpoint, true, reason)
                .await
                .map(|_| "told to report SERVING again".to_string()),
            _ => self.prober.recover(&endpoint, action, reason).await,
        };
        let (ok, detail) = match result {
            Ok(d) => {
                tracing::info!(action, target, detail = %d, "recovery action done");
                (true, d)
            }
            Err(e) => {
                self.counters.actions_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(action, target, error = %e, "recovery action failed");
                (false, e.to_string())
            }
        };
        let mut st = self.state.lock().await;
        if ok && let Some(s) = st.services.get_mut(target) {
            match action {
                "retry_dead_letters" => s.dead_letters_pending = false,
                "mark_not_serving" => {
                    s.marked_down = true;
                    s.passing_while_marked = 0;
                }
                "mark_serving" => {
                    s.marked_down = false;
                    s.passing_while_marked = 0;
                    s.consecutive_failures = 0;
                }
                _ => {}
            }
        }
        st.actions.push_front(pb::RecoveryAction {
            action: action.to_string(),
            target: target.to_string(),
            reason: reason.to_string(),
            at: Some(trailhound_proto::time::from_millis(now_ms())),
            ok,
            detail,
        });
        st.actions.truncate(RECENT_ACTIONS);
    }

    /// health's own figures (the `Stats` RPC and /metrics).
    pub fn service_stats(&self) -> ServiceStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = self.common.stats(load(&c.checks), load(&c.checks));
        out.batch_latency = Some(self.round.summary());
        out.errors.insert("check".into(), load(&c.failed_checks));
        out.errors
            .insert("recovery".into(), load(&c.actions_failed));
        out.errors
            .insert("alert_undelivered".into(), load(&c.alerts_undelivered));
        for (k, v) in [
            ("recovery_actions", load(&c.actions)),
            ("recovery_rate_limited", load(&c.actions_rate_limited)),
            ("alerts", load(&c.alerts)),
        ] {
            out.gauges.insert(k.into(), v as f64);
        }
        out
    }
}
