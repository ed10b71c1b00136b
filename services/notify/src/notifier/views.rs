//! What ListDeliveries, ListChannels and Stats show of the notifier.

use std::sync::atomic::Ordering;

use super::{ChannelInfo, DeliveryFilter, Notifier, NotifyStats};
use crate::delivery::Delivery;

impl Notifier {
    /// Recent deliveries, newest first.
    pub fn deliveries(&self, filter: &DeliveryFilter) -> Vec<Delivery> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        self.lock()
            .recent
            .iter()
            .rev()
            .filter(|d| filter.matches(d))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The configured channels, secrets redacted.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|c| ChannelInfo {
                name: c.name.clone(),
                kind: c.channel.kind(),
                target: c.channel.target(),
                rate_limit_per_minute: c
                    .bucket
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .per_minute(),
            })
            .collect()
    }

    pub fn stats(&self) -> NotifyStats {
        let c = &self.counters;
        NotifyStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.count(),
            insights_received: c.insights_received.load(Ordering::Relaxed),
        }
    }

    /// The figures every service reports alike (the `Stats` RPC). Lag is
    /// the age of the oldest delivery still being tried.
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let s = self.stats();
        let f = &self.counters.figures;
        let mut out = f.common.stats(s.insights_received, s.delivered);
        out.queues = vec![trailhound_runtime::stats::queue(
            "deliveries_in_flight",
            f.pending.depth(),
            self.config.max_in_flight as u64,
        )];
        let latency = f.delivery.summary();
        out.backend_calls = latency.count;
        out.batch_latency = Some(latency);
        out.backend_latency = Some(latency);
        out.errors.insert("delivery".into(), s.failed);
        out.dead_letters = s.dead_letters;
        out.lag_seconds = f.pending.oldest_age_seconds();
        for (k, v) in [("skipped", s.skipped), ("retries", s.retries)] {
            out.gauges.insert(k.into(), v as f64);
        }
        out
    }
}
