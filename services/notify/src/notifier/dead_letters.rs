//! Retrying the dead letters: each lost delivery sent again, and kept only
//! if it fails again.

use std::sync::atomic::Ordering;

use chrono::Utc;
use futures::StreamExt;

use super::{Notifier, RetrySummary, new_id, push_recent};
use crate::channel::Payload;
use crate::delivery::{Delivery, DeliveryStatus};
use crate::retry;
use crate::store::{Op, StoredDeadLetter};

impl Notifier {
    /// Re-sends every entry of the dead-letter file through its channel
    /// (with the channel's retries). Those delivered are recorded as
    /// delivered and leave the file; the rest stay. One run at a time: a
    /// second call waits for the first and finds what it left.
    pub async fn retry_dead_letters(&self) -> std::io::Result<RetrySummary> {
        let _one = self.retrying.lock().await;
        let (lines, read) = self.dead_letters.read_lines()?;
        let width = self.config.max_in_flight.max(1);
        let results: Vec<(String, bool)> = futures::stream::iter(lines)
            .map(|line| async move {
                let sent = match serde_json::from_str::<StoredDeadLetter>(&line) {
                    Ok(dl) => self.resend(&dl).await,
                    Err(e) => {
                        tracing::warn!(path = %self.dead_letters.path().display(), error = %e, "keeping an unreadable dead letter");
                        false
                    }
                };
                (line, sent)
            })
            .buffered(width)
            .collect()
            .await;
        let mut summary = RetrySummary {
            retried: results.len(),
            ..Default::default()
        };
        let mut keep = Vec::new();
        for (line, sent) in results {
            if sent {
                summary.delivered += 1;
            } else {
                keep.push(line);
            }
        }
        summary.still_failing = keep.len();
        if summary.delivered > 0 {
            self.dead_letters.replace(&keep, read)?;
        }
        tracing::info!(path = %self.dead_letters.path().display(), %summary, "dead letters retried");
        Ok(summary)
    }

    /// One dead letter through its channel; true when delivered (and
    /// recorded).
    async fn resend(&self, dl: &StoredDeadLetter) -> bool {
        let Some(entry) = self.by_name.get(&dl.channel).map(|&i| &self.channels[i]) else {
            tracing::warn!(channel = %dl.channel, insight_id = %dl.insight_id, "dead letter for a channel no longer configured; kept");
            return false;
        };
        let payload = Payload {
            event: if dl.follow_up {
                "insight.follow_up"
            } else {
                "insight.opened"
            },
            delivery_id: dl.delivery_id.clone(),
            summary: format!("re-sent dead letter for insight {}", dl.insight_id),
            body: dl.payload.clone(),
        };
        let outcome = retry::deliver(&*entry.channel, &payload, &entry.policy, || {
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
        })
        .await;
        if let Err(reason) = outcome.result {
            tracing::warn!(channel = %dl.channel, insight_id = %dl.insight_id, %reason, "dead letter still failing");
            return false;
        }
        let now = Utc::now();
        let detail = format!(
            "delivered on retry from the dead letters (delivery {})",
            dl.delivery_id
        );
        let mut st = self.lock();
        let d = match st.recent.iter_mut().rev().find(|r| r.id == dl.delivery_id) {
            // Still in memory: the failed delivery becomes a delivered one.
            Some(d) => {
                d.status = DeliveryStatus::Delivered;
                d.attempts += outcome.attempts;
                d.detail = detail;
                d.finished_at = Some(now);
                d.clone()
            }
            None => {
                let d = Delivery {
                    id: new_id(now),
                    insight_id: dl.insight_id.clone(),
                    incident_id: dl.incident_id.clone(),
                    channel: entry.name.clone(),
                    channel_kind: entry.channel.kind(),
                    rule: dl.rule.clone(),
                    status: DeliveryStatus::Delivered,
                    follow_up: dl.follow_up,
                    attempts: outcome.attempts,
                    detail,
                    created_at: now,
                    finished_at: Some(now),
                    account_id: String::new(),
                    ou_path: Vec::new(),
                    environment: trailhound_core::Environment::Unknown,
                };
                push_recent(&mut st, &self.config, d.clone());
                d
            }
        };
        drop(st);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(channel = %d.channel, insight_id = %d.insight_id, attempts = outcome.attempts, "dead letter delivered");
        self.store.send(Op::Delivery(Box::new(d)));
        true
    }
}
