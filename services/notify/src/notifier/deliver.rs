//! Deciding and sending: each insight planned per channel in arrival
//! order under one lock, then sent with retries and its outcome recorded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use trailhound_core::Insight;

use super::{ChannelEntry, Item, Notifier, Plan, State, before, new_id, push_recent};
use crate::channel::Payload;
use crate::delivery::{Delivery, DeliveryStatus};
use crate::incident::{Decision, FollowUp, FollowUpReason, IncidentRecord};
use crate::render::Message;
use crate::retry::{self, Outcome};
use crate::store::{DeadLetter, Op};

const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Notifier {
    /// Decides, for each channel the rules choose, whether `insight` is a
    /// first message, a follow-up or skipped, and reserves the sends.
    /// Call in arrival order; then [`Notifier::execute`] the plan.
    pub fn plan(&self, insight: Arc<Insight>) -> Plan {
        self.counters
            .insights_received
            .fetch_add(1, Ordering::Relaxed);
        let routes = self.router.route(&insight);
        let now = Utc::now();
        let mut items = Vec::with_capacity(routes.len());
        let mut st = self.lock();
        self.prune(&mut st, now);
        let rec = match st.incidents.entry(insight.incident_id.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let r = e.into_mut();
                r.observe(&insight, now);
                r
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(IncidentRecord::new(&insight, now))
            }
        };
        for route in routes {
            let Some(&idx) = self.by_name.get(&route.channel) else {
                continue;
            };
            let entry = &self.channels[idx];
            let mut d = Delivery {
                id: new_id(now),
                insight_id: insight.id.clone(),
                incident_id: insight.incident_id.clone(),
                channel: entry.name.clone(),
                channel_kind: entry.channel.kind(),
                rule: route.rule,
                status: DeliveryStatus::Pending,
                follow_up: false,
                attempts: 0,
                detail: String::new(),
                created_at: now,
                finished_at: None,
                account_id: insight.anomaly.account_id.clone(),
                ou_path: insight.anomaly.ou_path.clone(),
                environment: insight.anomaly.environment,
            };
            let follow_up =
                match rec.decide(&entry.name, &insight, now, self.config.follow_up_interval) {
                    Decision::Skip(reason) => {
                        d.status = DeliveryStatus::Skipped;
                        d.detail = reason;
                        d.finished_at = Some(now);
                        items.push(Item::Done(d));
                        continue;
                    }
                    Decision::First => None,
                    Decision::FollowUp(f) => Some(f),
                };
            d.follow_up = follow_up.is_some();
            let limited = entry
                .bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_take(Instant::now());
            if let Err(wait) = limited {
                rec.release(&entry.name, &insight);
                d.status = DeliveryStatus::Skipped;
                d.detail = format!(
                    "rate limited: channel {} allows {} messages per minute; next message possible in {:.1}s",
                    entry.name,
                    entry
                        .bucket
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .per_minute(),
                    wait.as_secs_f64()
                );
                d.finished_at = Some(now);
                items.push(Item::Done(d));
                continue;
            }
            d.detail = follow_up.as_ref().map(describe).unwrap_or_default();
            items.push(Item::Send {
                channel: idx,
                follow_up,
                delivery: d,
            });
        }
        self.store.send(Op::Incident(Box::new(rec.clone())));
        for item in &items {
            match item {
                Item::Send { delivery, .. } => push_recent(&mut st, &self.config, delivery.clone()),
                Item::Done(d) => {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(channel = %d.channel, insight_id = %d.insight_id, detail = %d.detail, "skipped");
                    push_recent(&mut st, &self.config, d.clone());
                    self.store.send(Op::Delivery(Box::new(d.clone())));
                }
            }
        }
        Plan { insight, items }
    }

    /// Sends what `plan` decided, every channel in parallel, and records
    /// each outcome as it finishes. Returns the deliveries in route order.
    pub async fn execute(&self, plan: Plan) -> Vec<Delivery> {
        let insight = plan.insight;
        let sends = plan.items.into_iter().map(|item| {
            let insight = insight.clone();
            async move {
                match item {
                    Item::Done(d) => d,
                    Item::Send {
                        channel,
                        follow_up,
                        delivery,
                    } => {
                        let entry = &self.channels[channel];
                        let msg = Message {
                            insight: &insight,
                            follow_up: follow_up.as_ref(),
                            delivery_id: &delivery.id,
                            rule: &delivery.rule,
                        };
                        let payload = entry.channel.render(&msg);
                        let figures = &self.counters.figures;
                        let _pending = figures.pending.begin();
                        let outcome = figures
                            .delivery
                            .time(retry::deliver(
                                &*entry.channel,
                                &payload,
                                &entry.policy,
                                || {
                                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                                },
                            ))
                            .await;
                        self.finish(&insight, entry, delivery, outcome, &payload)
                    }
                }
            }
        });
        futures::future::join_all(sends).await
    }

    fn finish(
        &self,
        insight: &Insight,
        entry: &ChannelEntry,
        mut d: Delivery,
        outcome: Outcome,
        payload: &Payload,
    ) -> Delivery {
        let now = Utc::now();
        d.attempts = outcome.attempts;
        d.finished_at = Some(now);
        let delivered = outcome.result.is_ok();
        match outcome.result {
            Ok(()) => {
                d.status = DeliveryStatus::Delivered;
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(channel = %d.channel, kind = %d.channel_kind, insight_id = %d.insight_id, incident_id = %d.incident_id, follow_up = d.follow_up, attempts = d.attempts, "delivered");
            }
            Err(reason) => {
                d.status = DeliveryStatus::Failed;
                d.detail = reason;
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %d.channel, kind = %d.channel_kind, insight_id = %d.insight_id, incident_id = %d.incident_id, attempts = d.attempts, reason = %d.detail, dead_letters = %self.dead_letters.path().display(), "delivery failed");
                self.dead_letters.write(&DeadLetter {
                    time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    channel: &d.channel,
                    channel_kind: d.channel_kind.as_str(),
                    delivery_id: &d.id,
                    insight_id: &d.insight_id,
                    incident_id: &d.incident_id,
                    rule: &d.rule,
                    follow_up: d.follow_up,
                    reason: &d.detail,
                    attempts: d.attempts,
                    payload: &payload.body,
                });
            }
        }
        let mut st = self.lock();
        if let Some(rec) = st.incidents.get_mut(&insight.incident_id) {
            rec.finish(&entry.name, insight, delivered, now);
            self.store.send(Op::Incident(Box::new(rec.clone())));
        }
        if let Some(slot) = st.recent.iter_mut().rev().find(|r| r.id == d.id) {
            *slot = d.clone();
        }
        self.store.send(Op::Delivery(Box::new(d.clone())));
        d
    }

    fn prune(&self, st: &mut State, now: DateTime<Utc>) {
        if st.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        st.last_prune = Instant::now();
        let cutoff = before(now, self.config.forget_incidents_after);
        let stale: Vec<String> = st
            .incidents
            .values()
            .filter(|r| r.last_seen_at < cutoff)
            .map(|r| r.incident_id.clone())
            .collect();
        if !stale.is_empty() {
            for id in &stale {
                st.incidents.remove(id);
            }
            tracing::debug!(forgotten = stale.len(), "forgot old incidents");
            self.store.send(Op::Forget(stale));
        }
    }
}

fn describe(f: &FollowUp) -> String {
    match &f.reason {
        FollowUpReason::Escalated { from, to } => format!("follow-up: severity rose {from} → {to}"),
        FollowUpReason::StillOngoing { since_last_message } => format!(
            "follow-up: still ongoing {} after the last message ({} windows so far)",
            humantime::format_duration(*since_last_message),
            f.totals.windows
        ),
    }
}
