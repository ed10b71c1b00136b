//! Feeding the engine a batch and handing on what it returned: quarantine
//! of events from the future, late events, anomalies to watchers and
//! downstream, the idle close and the final flush.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::Instrument;
use trailhound_core::{Anomaly, EnrichedEvent};
use trailhound_runtime::telemetry::{TraceLink, add_links};

use super::error::wal_error;
use super::{Detect, DetectError, ObserveOutcome};
use crate::engine::{LateEvent, SharedRising, WindowResult};
use crate::wal;

impl Detect {
    /// Feeds a batch (CPU-bound; callers on an async runtime use
    /// `spawn_blocking`).
    pub fn observe(&self, events: &[EnrichedEvent]) -> Result<ObserveOutcome, DetectError> {
        self.observe_with(events, &[])
    }

    /// [`Detect::observe`] after counting other replicas' rising accounts.
    pub fn observe_with(
        &self,
        events: &[EnrichedEvent],
        peers: &[SharedRising],
    ) -> Result<ObserveOutcome, DetectError> {
        let _pending = self.figures.pending.begin();
        let started = Instant::now();
        let out = self.observe_inner(events, peers);
        self.figures.batch.record(started.elapsed());
        if out.is_err() {
            self.figures.observe_errors.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    fn observe_inner(
        &self,
        events: &[EnrichedEvent],
        peers: &[SharedRising],
    ) -> Result<ObserveOutcome, DetectError> {
        let fingerprint = wal::fingerprint(events);
        let (events, quarantined) = self.quarantine(events);
        let events: &[EnrichedEvent] = &events;
        let n = events.len() as u64;
        let quarantined_count = quarantined.len() as u64;
        // Encoded before the engine is locked: other batches apply meanwhile.
        let logged = if self.wal_options.enabled {
            Some((fingerprint, wal::encode_batch(events).map_err(wal_error)?))
        } else {
            None
        };
        let mut results = Vec::new();
        let mut late: Vec<LateEvent>;
        // Raised by other replicas' reports: committed on their own, before
        // the batch (which may be a resend), so a restart replays both.
        let mut from_peers = Vec::new();
        let late_count = {
            let mut engine = self.engine();
            if !peers.is_empty() {
                engine.observe_shared(peers, &mut from_peers);
                if self.wal_options.enabled {
                    let entry = wal::encode_shared(peers).map_err(wal_error)?;
                    self.commit_locked(&mut engine, &entry, None, 0, &from_peers, &[])?;
                } else {
                    self.store.record(&from_peers, &[])?;
                }
            }
            // Reports alone (a replica with no events in this batch).
            if events.is_empty() && quarantined.is_empty() {
                drop(engine);
                return Ok(ObserveOutcome {
                    anomalies: self.announce(from_peers),
                    ..Default::default()
                });
            }
            if let Some((fp, _)) = &logged
                && self.wal().recent_set.contains(fp)
            {
                drop(engine);
                let anomalies = self.announce(from_peers);
                self.figures
                    .duplicate_batches
                    .fetch_add(1, Ordering::Relaxed);
                self.figures
                    .duplicate_events
                    .fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    events = n,
                    "batch acknowledged before (its answer was lost): not counted again"
                );
                return Ok(ObserveOutcome {
                    accepted: n,
                    duplicate: true,
                    anomalies,
                    ..Default::default()
                });
            }
            let before = engine.stats().late_events;
            for e in events {
                engine.observe(e, &mut results);
            }
            late = engine.take_late();
            late.extend(quarantined);
            if let Some((fp, entry)) = &logged {
                self.commit_locked(&mut engine, entry, Some(*fp), n, &results, &late)?;
            }
            self.last_arrival_watermark
                .store(engine.newest_ms(), Ordering::Relaxed);
            engine.stats().late_events - before
        };
        *self.last_arrival.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut anomalies = self.announce(from_peers);
        anomalies.extend(if logged.is_some() {
            let a = self.announce(results);
            self.checkpoint_if_due();
            a
        } else {
            self.publish(results, &late)?
        });
        self.note_late(&mut late);
        Ok(ObserveOutcome {
            accepted: n,
            late: late_count,
            quarantined: quarantined_count,
            anomalies,
            duplicate: false,
        })
    }

    fn publish(
        &self,
        results: Vec<WindowResult>,
        late: &[LateEvent],
    ) -> Result<Vec<Anomaly>, DetectError> {
        self.store.record(&results, late)?;
        Ok(self.announce(results))
    }

    /// Splits off events too far ahead of the wall clock: a batch from a
    /// caller that skipped ingest's checks must not move time on.
    fn quarantine<'a>(
        &self,
        events: &'a [EnrichedEvent],
    ) -> (std::borrow::Cow<'a, [EnrichedEvent]>, Vec<LateEvent>) {
        let now = chrono::Utc::now().timestamp_millis();
        let limit = now.saturating_add(self.max_future_skew_ms);
        if events.iter().all(|e| e.event.event_time_ms <= limit) {
            return (std::borrow::Cow::Borrowed(events), Vec::new());
        }
        let (kept, ahead): (Vec<EnrichedEvent>, Vec<EnrichedEvent>) = events
            .iter()
            .cloned()
            .partition(|e| e.event.event_time_ms <= limit);
        let quarantined = ahead
            .into_iter()
            .map(|e| LateEvent {
                detector: String::new(),
                reason: format!(
                    "quarantined: event time {} is more than max_future_skew ({}s) ahead of detect's clock {}",
                    chrono::DateTime::from_timestamp_millis(e.event.event_time_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| e.event.event_time_ms.to_string()),
                    self.max_future_skew_ms / 1000,
                    chrono::DateTime::from_timestamp_millis(now)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                ),
                event_id: e.event.event_id,
                account_id: e.event.recipient_account_id,
                region: e.event.aws_region,
                event_time_ms: e.event.event_time_ms,
                window_start_ms: e.event.event_time_ms,
                watermark_ms: now,
            })
            .collect();
        (std::borrow::Cow::Owned(kept), quarantined)
    }

    /// Counts late events per detector for `Stats` and logs a sample.
    fn note_late(&self, late: &mut Vec<LateEvent>) {
        if late.is_empty() {
            return;
        }
        let mut by = self.late_by.lock().unwrap_or_else(|p| p.into_inner());
        for l in late.iter() {
            let key = if l.detector.is_empty() {
                "quarantined"
            } else {
                l.detector.as_str()
            };
            *by.entry(key.to_string()).or_default() += 1;
        }
        if let Some(first) = late.first() {
            tracing::warn!(
                count = late.len(),
                detector = %first.detector,
                event = %first.event_id,
                reason = %first.reason,
                "late events recorded (ListLateEvents)"
            );
        }
        late.clear();
    }

    /// Logs the anomalies among stored results and tells the watchers.
    fn announce(&self, results: Vec<WindowResult>) -> Vec<Anomaly> {
        let anomalies: Vec<Anomaly> = results.into_iter().filter_map(|r| r.anomaly).collect();
        for a in &anomalies {
            tracing::info!(
                anomaly = %a.id, account = %a.account_id, region = %a.region,
                actual = a.actual, expected = a.expected, grade = a.grade,
                "anomaly detected"
            );
            // No watcher is fine.
            let _ = self.watchers.send(Arc::new(a.clone()));
        }
        anomalies
    }

    /// Forwards anomalies downstream (insights), logging failures: detect
    /// keeps every anomaly in its own store whatever happens downstream.
    /// Anomalies recovered on start and not sent yet go first. The span
    /// links every trace whose events filled their windows (`closing`, the
    /// trace of the batch that closed them, is its parent).
    pub async fn forward(&self, anomalies: &[Anomaly], closing: Option<&TraceLink>) {
        let mut unsent = self.take_unsent();
        let anomalies = if unsent.is_empty() {
            anomalies
        } else {
            unsent.extend_from_slice(anomalies);
            &unsent[..]
        };
        if anomalies.is_empty() {
            return;
        }
        // The span is the hand-off's even with nothing downstream: a
        // trace then still shows which requests fed the anomalies.
        let span = tracing::info_span!("trailhound.detect/Forward", anomalies = anomalies.len());
        add_links(
            &span,
            self.contributors
                .links_for(&crate::links::windows(anomalies), closing),
        );
        let Some(sink) = &self.downstream else {
            return;
        };
        match sink.send(anomalies.to_vec()).instrument(span).await {
            Ok(_) => {
                self.figures
                    .forwarded
                    .fetch_add(anomalies.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.figures.forward_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, count = anomalies.len(), "failed to forward anomalies");
            }
        }
    }

    /// Closes every open window (end of a replay).
    pub fn flush(&self) -> Result<Vec<Anomaly>, DetectError> {
        let mut results = Vec::new();
        if self.wal_options.enabled {
            let mut engine = self.engine();
            engine.flush(&mut results);
            self.commit_locked(&mut engine, &wal::encode_flush(), None, 0, &results, &[])?;
            drop(engine);
            return Ok(self.announce(results));
        }
        self.engine().flush(&mut results);
        let anomalies = self.publish(results, &[])?;
        self.store.sync()?;
        Ok(anomalies)
    }

    /// Called periodically: when no event has arrived for `idle`, moves the
    /// watermark on by the wall time that passed, so windows still close.
    pub fn tick(&self, idle: std::time::Duration) -> Result<Vec<Anomaly>, DetectError> {
        let since = self
            .last_arrival
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        let base = self.last_arrival_watermark.load(Ordering::Relaxed);
        if since < idle || base == i64::MIN {
            return Ok(Vec::new());
        }
        let target = base.saturating_add(since.as_millis() as i64);
        let mut results = Vec::new();
        let mut engine = self.engine();
        if target <= engine.newest_ms() {
            return Ok(Vec::new());
        }
        engine.advance(target, &mut results);
        if self.wal_options.enabled {
            self.commit_locked(
                &mut engine,
                &wal::encode_advance(target),
                None,
                0,
                &results,
                &[],
            )?;
            drop(engine);
            return Ok(self.announce(results));
        }
        drop(engine);
        self.publish(results, &[])
    }
}
