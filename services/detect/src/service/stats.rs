//! detect's figures for the `Stats` RPC and health.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Detect;
use crate::engine::EngineStats;

impl Detect {
    /// The figures every service reports alike (the `Stats` RPC). Lag is
    /// how long the oldest batch in hand has waited; freshness is how far
    /// the newest event's time is behind the wall clock, so a replay of
    /// history shows large freshness but no lag.
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let (s, entities, watermark) = self.stats();
        let partitions = self.engine().partitions();
        let (wal_entries, wal_events) = {
            let w = self.wal();
            (w.entries.len(), w.events)
        };
        let f = &self.figures;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = f.common.stats(s.events, s.evaluations);
        out.queues = vec![
            trailhound_runtime::stats::queue("batches_pending", f.pending.depth(), 0),
            trailhound_runtime::stats::queue("watchers", self.watchers.receiver_count() as u64, 0),
        ];
        out.batch_latency = Some(f.batch.summary());
        out.errors.insert("observe".into(), load(&f.observe_errors));
        if let Some(os) = self.opensearch.get() {
            // The OpenSearch backend's connection and indexing, for health.
            let o = os.figures();
            out.errors
                .insert("opensearch_dead_letters".into(), o.dead_lettered);
            out.errors
                .insert("opensearch_failed_batches".into(), o.failed_batches);
            out.gauges
                .insert("opensearch_indexed".into(), o.indexed as f64);
            out.gauges
                .insert("opensearch_detectors".into(), o.detectors as f64);
            if let Some(h) = o.healthy {
                out.gauges
                    .insert("opensearch_healthy".into(), f64::from(u8::from(h)));
            }
        }
        out.errors.insert("forward".into(), load(&f.forward_errors));
        // Late and quarantined events are input arriving too late or with
        // an implausible time, not faults of detect.
        out.input_rejected = self
            .late_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| {
                let kind = if k == "quarantined" {
                    "quarantined: event time ahead of detect's clock".to_string()
                } else {
                    format!("late for a closed window of {k}")
                };
                (kind, *v)
            })
            .collect();
        out.lag_seconds = f.pending.oldest_age_seconds();
        if watermark != i64::MIN {
            let now = chrono::Utc::now().timestamp_millis();
            out.freshness_seconds = Some((now - watermark).max(0) as f64 / 1000.0);
        }
        for (k, v) in [
            ("entities", entities as f64),
            ("late_events", s.late_events as f64),
            ("windows_closed", s.windows_closed as f64),
            ("anomalies", s.anomalies as f64),
            ("anomalies_forwarded", load(&f.forwarded) as f64),
            ("wal_enabled", f64::from(u8::from(self.wal_options.enabled))),
            ("wal_entries", wal_entries as f64),
            ("wal_events", wal_events as f64),
            ("duplicate_batches", load(&f.duplicate_batches) as f64),
            ("duplicate_events", load(&f.duplicate_events) as f64),
            ("replayed_entries", load(&f.replayed_entries) as f64),
            ("replayed_events", load(&f.replayed_events) as f64),
            ("partitions", partitions as f64),
            ("windows_skipped", s.windows_skipped as f64),
            ("folded_account_events", s.folded_account_events as f64),
            ("unlisted_region_events", s.unlisted_region_events as f64),
            ("entities_evicted", s.entities_evicted as f64),
            ("suppressed_environment", s.suppressed_environment as f64),
            ("suppressed_weekly", s.suppressed_weekly as f64),
            ("suppressed_new_region", s.suppressed_new_region as f64),
            ("suppressed_bursts", s.suppressed_bursts as f64),
            ("early_raised", s.early_raised as f64),
            ("coordinated", s.coordinated as f64),
            (
                "quarantined_events",
                self.late_by
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get("quarantined")
                    .copied()
                    .unwrap_or(0) as f64,
            ),
        ] {
            out.gauges.insert(k.into(), v);
        }
        out
    }

    /// The engine's counters, entities, and newest plausible event time.
    pub fn stats(&self) -> (EngineStats, usize, i64) {
        let e = self.engine();
        (e.stats().clone(), e.entity_count(), e.newest_ms())
    }
}
