//! One message per incident, not per window.
//!
//! detect reports every anomalous window; consecutive windows of one entity
//! share an `incident_id`. People want to hear about an incident once, and
//! again only when it gets worse or has gone on for a while. This module
//! holds, per incident, the running totals and what each channel was told,
//! and decides for each (insight, channel) whether to send the first
//! message, a follow-up, or nothing:
//!
//! - an insight id already sent (or being sent) to the channel: SKIPPED,
//!   whatever else holds — the same insight is never sent twice;
//! - an incident the channel has not been told about: the full message;
//! - a severity above everything sent to the channel for the incident: a
//!   follow-up ("escalated");
//! - `follow_up_interval` since the channel's last message for the
//!   incident: a follow-up with the running totals ("still ongoing");
//! - otherwise SKIPPED.
//!
//! A send is reserved when decided (so a window decided while the previous
//! one is still being delivered sees it) and committed when it succeeds; a
//! first message that fails leaves the incident un-notified, so the next
//! window is sent in full. The records are persisted by the store so a
//! restart keeps them.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trailhound_core::{Insight, Severity};

/// Insight ids remembered per incident and channel; older ones fall off
/// (a window that old is not re-sent by any sane replay).
const MAX_IDS: usize = 512;

/// What an incident amounts to so far, across the windows notify has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentTotals {
    pub windows: u32,
    pub first_window_start: DateTime<Utc>,
    pub last_window_end: DateTime<Utc>,
    /// The highest actual value of any window, and what was expected then.
    pub peak_actual: f64,
    pub expected_at_peak: f64,
    pub max_severity: Severity,
    /// The latest window's cost rate.
    pub latest_usd_per_hour: f64,
    /// Σ over windows of the window's $/h × its length: what the excess
    /// has cost so far, roughly.
    pub cost_so_far_usd: f64,
    pub cost_estimated: bool,
}

impl IncidentTotals {
    fn first(i: &Insight) -> Self {
        let a = &i.anomaly;
        Self {
            windows: 1,
            first_window_start: a.window_start,
            last_window_end: a.window_end,
            peak_actual: a.actual,
            expected_at_peak: a.expected,
            max_severity: i.severity,
            latest_usd_per_hour: i.cost.usd_per_hour,
            cost_so_far_usd: window_cost(i),
            cost_estimated: i.cost.estimated,
        }
    }

    fn add(&mut self, i: &Insight) {
        let a = &i.anomaly;
        self.windows = self.windows.saturating_add(1);
        self.first_window_start = self.first_window_start.min(a.window_start);
        if a.window_end >= self.last_window_end {
            self.last_window_end = a.window_end;
            self.latest_usd_per_hour = i.cost.usd_per_hour;
        }
        if a.actual > self.peak_actual {
            self.peak_actual = a.actual;
            self.expected_at_peak = a.expected;
        }
        self.max_severity = self.max_severity.max(i.severity);
        self.cost_so_far_usd += window_cost(i);
        self.cost_estimated |= i.cost.estimated;
    }
}

fn window_cost(i: &Insight) -> f64 {
    let hours = (i.anomaly.window_end - i.anomaly.window_start)
        .num_milliseconds()
        .max(0) as f64
        / 3_600_000.0;
    i.cost.usd_per_hour * hours
}

/// Why a follow-up is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FollowUpReason {
    /// Severity rose above everything sent before.
    Escalated { from: Severity, to: Severity },
    /// The follow-up interval passed since the last message.
    StillOngoing {
        #[serde(with = "humantime_serde")]
        since_last_message: Duration,
    },
}

/// A follow-up: why, and the incident so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    #[serde(flatten)]
    pub reason: FollowUpReason,
    pub totals: IncidentTotals,
    /// Messages this channel already got for the incident.
    pub previous_messages: u32,
    pub first_notified_at: DateTime<Utc>,
}

/// What one channel was told about one incident.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelState {
    /// The first (full) message was delivered.
    pub notified: bool,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub max_severity_sent: Option<Severity>,
    pub messages: u32,
    /// Insight ids delivered, oldest first.
    pub sent: Vec<String>,
    /// Sends decided and not finished yet: (insight id, severity, first?).
    #[serde(skip)]
    in_flight: Vec<(String, Severity, bool)>,
    #[serde(skip)]
    reserved_at: Option<DateTime<Utc>>,
}

/// An incident as notify knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub incident_id: String,
    pub totals: IncidentTotals,
    /// Insight ids counted into the totals, oldest first.
    pub seen: Vec<String>,
    pub channels: BTreeMap<String, ChannelState>,
    /// Wall-clock time of the latest insight; the record is forgotten
    /// `forget_incidents_after` later.
    pub last_seen_at: DateTime<Utc>,
}

/// The decision for one insight on one channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    First,
    FollowUp(FollowUp),
    Skip(String),
}

fn push_bounded(v: &mut Vec<String>, id: &str) {
    if v.len() >= MAX_IDS {
        v.remove(0);
    }
    v.push(id.to_string());
}

impl IncidentRecord {
    pub fn new(i: &Insight, now: DateTime<Utc>) -> Self {
        Self {
            incident_id: i.incident_id.clone(),
            totals: IncidentTotals::first(i),
            seen: vec![i.id.clone()],
            channels: BTreeMap::new(),
            last_seen_at: now,
        }
    }

    /// Counts the insight into the totals unless it was seen before.
    pub fn observe(&mut self, i: &Insight, now: DateTime<Utc>) {
        self.last_seen_at = now;
        if !self.seen.iter().any(|s| s == &i.id) {
            self.totals.add(i);
            push_bounded(&mut self.seen, &i.id);
        }
    }

    /// Decides what `channel` gets for `i` and, for a send, reserves it.
    pub fn decide(
        &mut self,
        channel: &str,
        i: &Insight,
        now: DateTime<Utc>,
        follow_up_interval: Duration,
    ) -> Decision {
        let totals = self.totals.clone();
        let cs = self.channels.entry(channel.to_string()).or_default();
        if cs.sent.iter().any(|s| s == &i.id) || cs.in_flight.iter().any(|(s, ..)| s == &i.id) {
            return Decision::Skip(format!("insight {} was already sent to this channel", i.id));
        }
        let pending_first = cs.in_flight.iter().any(|(_, _, first)| *first);
        if !cs.notified && !pending_first {
            cs.in_flight.push((i.id.clone(), i.severity, true));
            cs.reserved_at = Some(now);
            return Decision::First;
        }
        let told = cs
            .in_flight
            .iter()
            .map(|(_, s, _)| *s)
            .chain(cs.max_severity_sent)
            .max()
            .unwrap_or(Severity::Low);
        let last = cs.last_sent_at.max(cs.reserved_at).unwrap_or(now);
        let elapsed = (now - last).to_std().unwrap_or_default();
        let reason = if i.severity > told {
            FollowUpReason::Escalated {
                from: told,
                to: i.severity,
            }
        } else if elapsed >= follow_up_interval {
            FollowUpReason::StillOngoing {
                since_last_message: Duration::from_secs(elapsed.as_secs()),
            }
        } else {
            let next = chrono::Duration::from_std(follow_up_interval)
                .ok()
                .and_then(|d| last.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            return Decision::Skip(format!(
                "incident {} already notified on this channel at {}; a follow-up goes out when severity rises above {} or after {} UTC",
                self.incident_id,
                last.format("%Y-%m-%d %H:%M:%S UTC"),
                told,
                next.format("%Y-%m-%d %H:%M:%S"),
            ));
        };
        let follow_up = FollowUp {
            reason,
            totals,
            previous_messages: cs.messages,
            first_notified_at: cs.first_sent_at.unwrap_or(last),
        };
        cs.in_flight.push((i.id.clone(), i.severity, false));
        cs.reserved_at = Some(now);
        Decision::FollowUp(follow_up)
    }

    /// Records how a reserved send ended.
    pub fn finish(&mut self, channel: &str, i: &Insight, delivered: bool, now: DateTime<Utc>) {
        let Some(cs) = self.channels.get_mut(channel) else {
            return;
        };
        cs.in_flight.retain(|(s, ..)| s != &i.id);
        if delivered {
            cs.notified = true;
            cs.first_sent_at.get_or_insert(now);
            cs.last_sent_at = Some(now);
            cs.max_severity_sent = cs.max_severity_sent.max(Some(i.severity));
            cs.messages = cs.messages.saturating_add(1);
            push_bounded(&mut cs.sent, &i.id);
        }
        if cs.in_flight.is_empty() {
            cs.reserved_at = None;
        }
    }

    /// Drops a reservation that was never attempted (rate limited).
    pub fn release(&mut self, channel: &str, i: &Insight) {
        self.finish(channel, i, false, Utc::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_insight as insight;

    const MIN30: Duration = Duration::from_secs(1800);

    #[test]
    fn first_then_skip_then_escalation_then_reminder() {
        let t0 = Utc::now();
        let w1 = insight("w1", "inc", Severity::Medium);
        let mut r = IncidentRecord::new(&w1, t0);
        assert_eq!(r.decide("slack", &w1, t0, MIN30), Decision::First);
        r.finish("slack", &w1, true, t0);
        // The same insight again: never twice.
        assert!(
            matches!(r.decide("slack", &w1, t0, MIN30), Decision::Skip(s) if s.contains("already sent"))
        );

        let w2 = insight("w2", "inc", Severity::Medium);
        r.observe(&w2, t0);
        assert!(
            matches!(r.decide("slack", &w2, t0, MIN30), Decision::Skip(s) if s.contains("follow-up goes out"))
        );

        let w3 = insight("w3", "inc", Severity::High);
        r.observe(&w3, t0);
        match r.decide("slack", &w3, t0, MIN30) {
            Decision::FollowUp(f) => {
                assert_eq!(
                    f.reason,
                    FollowUpReason::Escalated {
                        from: Severity::Medium,
                        to: Severity::High
                    }
                );
                assert_eq!(f.totals.windows, 3);
                assert_eq!(f.previous_messages, 1);
            }
            d => panic!("{d:?}"),
        }
        r.finish("slack", &w3, true, t0);

        let w4 = insight("w4", "inc", Severity::Low);
        let later = t0 + chrono::Duration::minutes(31);
        r.observe(&w4, later);
        assert!(matches!(
            r.decide("slack", &w4, later, MIN30),
            Decision::FollowUp(FollowUp {
                reason: FollowUpReason::StillOngoing { .. },
                ..
            })
        ));
        // Another channel has its own state.
        assert_eq!(r.decide("teams", &w4, later, MIN30), Decision::First);
    }

    #[test]
    fn a_failed_first_message_leaves_the_incident_unnotified() {
        let t0 = Utc::now();
        let w1 = insight("w1", "inc", Severity::High);
        let w2 = insight("w2", "inc", Severity::High);
        let mut r = IncidentRecord::new(&w1, t0);
        assert_eq!(r.decide("c", &w1, t0, MIN30), Decision::First);
        // While w1 is in flight, w2 is a later window of a notified incident.
        assert!(matches!(r.decide("c", &w2, t0, MIN30), Decision::Skip(_)));
        r.finish("c", &w1, false, t0);
        assert_eq!(r.decide("c", &w2, t0, MIN30), Decision::First);
    }

    #[test]
    fn totals_count_each_window_once() {
        let t0 = Utc::now();
        let mut w1 = insight("w1", "inc", Severity::Low);
        w1.cost.usd_per_hour = 6.0;
        let mut w2 = insight("w2", "inc", Severity::High);
        w2.anomaly.window_start += chrono::Duration::minutes(10);
        w2.anomaly.window_end += chrono::Duration::minutes(10);
        w2.anomaly.actual = 99.0;
        w2.cost.usd_per_hour = 12.0;
        let mut r = IncidentRecord::new(&w1, t0);
        r.observe(&w2, t0);
        r.observe(&w2, t0);
        let t = &r.totals;
        assert_eq!(t.windows, 2);
        assert_eq!(t.peak_actual, 99.0);
        assert_eq!(t.max_severity, Severity::High);
        assert_eq!(t.latest_usd_per_hour, 12.0);
        // 10-minute windows: 6/6 + 12/6.
        assert!(
            (t.cost_so_far_usd - 3.0).abs() < 1e-9,
            "{}",
            t.cost_so_far_usd
        );
    }
}
