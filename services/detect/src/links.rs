//! Which traces fed which account's windows. An anomaly is judged when a
//! window closes, inside the trace of the batch that closed it; the other
//! batches whose events filled that window belong to other traces. The
//! span that hands anomalies on links to them, so a trace viewer can walk
//! from an alert back to every request that contributed to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use trailhound_core::{Anomaly, EnrichedEvent};
use trailhound_runtime::telemetry::TraceLink;

/// An anomaly's account (empty for org-wide) and window, in ms.
pub type Window<'a> = (&'a str, i64, i64);

/// The windows `anomalies` judged, for [`Contributors::links_for`].
pub fn windows(anomalies: &[Anomaly]) -> Vec<Window<'_>> {
    anomalies
        .iter()
        .map(|a| {
            (
                a.account_id.as_str(),
                a.window_start.timestamp_millis(),
                a.window_end.timestamp_millis(),
            )
        })
        .collect()
}

/// At most this many links on one span: enough to follow a burst back,
/// few enough that an hour of small batches does not bloat the span.
pub const MAX_LINKS: usize = 64;

/// One batch's events for one account: the trace they came in and the
/// event-time range they covered.
#[derive(Debug)]
struct Contribution {
    link: TraceLink,
    account: String,
    first_ms: i64,
    last_ms: i64,
}

/// A bounded memory of recent contributions (oldest forgotten first).
#[derive(Debug)]
pub struct Contributors {
    recent: Mutex<VecDeque<Contribution>>,
    capacity: usize,
}

impl Default for Contributors {
    fn default() -> Self {
        Self::with_capacity(8192)
    }
}

impl Contributors {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
        }
    }

    /// Remembers that `link`'s trace carried `events`.
    pub fn note(&self, link: &TraceLink, events: &[EnrichedEvent]) {
        self.note_times(
            link,
            events
                .iter()
                .map(|e| (e.event.recipient_account_id.as_str(), e.event.event_time_ms)),
        );
    }

    /// [`Self::note`] over (account, event time in ms) pairs.
    pub fn note_times<'a>(
        &self,
        link: &TraceLink,
        events: impl IntoIterator<Item = (&'a str, i64)>,
    ) {
        let mut ranges: HashMap<&str, (i64, i64)> = HashMap::new();
        for (account, t) in events {
            ranges
                .entry(account)
                .and_modify(|r| *r = (r.0.min(t), r.1.max(t)))
                .or_insert((t, t));
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for (account, (first_ms, last_ms)) in ranges {
            if recent.len() == self.capacity {
                recent.pop_front();
            }
            recent.push_back(Contribution {
                link: link.clone(),
                account: account.to_string(),
                first_ms,
                last_ms,
            });
        }
    }

    /// The traces whose events fell in an anomaly's account and window,
    /// newest first, without `closing` (the span's own trace) and at most
    /// [`MAX_LINKS`] over all `windows`. A window without an account
    /// (org-wide) matches every account.
    pub fn links_for(&self, windows: &[Window<'_>], closing: Option<&TraceLink>) -> Vec<TraceLink> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen: HashSet<String> = closing.map(TraceLink::trace_id).into_iter().collect();
        let mut out = Vec::new();
        for c in recent.iter().rev() {
            if out.len() == MAX_LINKS {
                break;
            }
            let fed = windows.iter().any(|&(account, start, end)| {
                (account.is_empty() || account == c.account)
                    && c.first_ms < end
                    && c.last_ms >= start
            });
            if fed && seen.insert(c.link.trace_id()) {
                out.push(c.link.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(n: u8) -> TraceLink {
        let tp = format!("00-{:032x}-{:016x}-01", u128::from(n) + 1, u64::from(n) + 1);
        TraceLink::from_traceparent(&tp).expect("valid traceparent")
    }

    #[test]
    fn links_the_traces_that_fed_the_window_and_only_those() {
        let c = Contributors::default();
        // Three batches fill 10:00-10:05 of account A; one is account B's;
        // one is A's but an hour earlier.
        c.note_times(&link(1), [("A", 1_000), ("A", 2_000)]);
        c.note_times(&link(2), [("B", 1_500)]);
        c.note_times(&link(3), [("A", 3_000), ("B", 3_100)]);
        c.note_times(&link(4), [("A", -3_600_000)]);
        c.note_times(&link(5), [("A", 4_000)]);
        let got: Vec<String> = c
            .links_for(&[("A", 0, 300_000)], Some(&link(5)))
            .iter()
            .map(TraceLink::trace_id)
            .collect();
        // Newest first; the closing batch's own trace is the parent, not a link.
        assert_eq!(got, vec![link(3).trace_id(), link(1).trace_id()]);
        // An org-wide window (no account) takes every account's batches.
        assert_eq!(c.links_for(&[("", 0, 300_000)], None).len(), 4);
        // A window no batch touched links nothing.
        assert!(c.links_for(&[("A", 900_000, 1_200_000)], None).is_empty());
    }

    #[test]
    fn memory_and_links_are_bounded() {
        let c = Contributors::with_capacity(100);
        for n in 0..=200u8 {
            c.note_times(&link(n), [("A", i64::from(n))]);
        }
        let got = c.links_for(&[("A", 0, 1_000)], None);
        assert_eq!(got.len(), MAX_LINKS);
        // The oldest were forgotten: the newest is first.
        assert_eq!(got[0].trace_id(), link(200).trace_id());
        assert!(
            c.links_for(&[("A", 0, 100)], None).is_empty(),
            "batches 0..=100 are forgotten"
        );
    }
}
