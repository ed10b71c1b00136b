//! The replay's fast path (`trailhound detect --input PATH`, the demo,
//! the benchmarks): CloudTrail files read by the trail reader, enriched by
//! enrich's `Enricher` and judged by detect's `Engine`, the same code the
//! services run, in one process, without the hops between them.
//!
//! Parsing (decompress + JSON + validation) is most of the work, so it runs
//! on every core, one delivery group per task; the consumer takes groups
//! back in delivery order, so detection sees the same order however many
//! workers there are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use trailhound_core::cloudtrail::Collect;
use trailhound_core::reasons::ReasonTally;
use trailhound_core::{Anomaly, EnrichedEvent};
use trailhound_detect::{Engine, Prepared, WindowResult};
use trailhound_enrich::Enricher;
use trailhound_trail::dedupe::{Dedupe, event_key};
use trailhound_trail::files::{Skipped, trail_files};
use trailhound_trail::read::{parse_files_into, time_order};

/// What a replay did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub files: usize,
    pub events_read: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Digest and Insights files of a synced bucket, not read.
    pub skipped_files: usize,
    /// Rejected and late records, by kind.
    #[serde(skip)]
    pub reasons: ReasonTally,
    pub accepted: u64,
    pub anomalies: u64,
    /// Entities (detector × account × region) the engine tracked.
    pub entities: u64,
    /// Entity windows the engine judged.
    pub evaluations: u64,
    /// Of `anomalies`, those raised while their window was open (each is
    /// printed again, same id, when its window closes) and those of
    /// accounts rising together.
    pub early: u64,
    pub coordinated: u64,
    /// Windows that stood out but were not raised, by reason.
    pub suppressed_environment: u64,
    pub suppressed_weekly: u64,
    pub suppressed_new_region: u64,
    pub suppressed_bursts: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// An event as the consumer takes it: enriched, prepared for the engine,
/// and its event id as a dedupe key.
type Ready = (EnrichedEvent, Prepared, u128);

/// One delivery group, parsed, enriched and prepared for the engine.
struct Parsed {
    events: Vec<Ready>,
    rejections: Vec<trailhound_core::Rejection>,
}

/// Replays `input` and hands every anomaly to `on_anomaly`, in detection
/// order. Rejections, and events that arrived for a window already closed
/// (as rejections whose source starts with `late:`), are handed to
/// `on_reject`.
///
/// Workers parse, enrich and prepare delivery groups (everything per event
/// that needs no shared state); the calling thread dedupes and applies them
/// to the engine in delivery order, and hands each finished group back to
/// the workers to free, so the one serial thread spends its time on
/// detection, not on the allocator.
pub fn replay(
    input: &std::path::Path,
    enricher: Arc<Enricher>,
    mut engine: Engine,
    workers: usize,
    mut on_anomaly: impl FnMut(&Anomaly),
    mut on_reject: impl FnMut(&trailhound_core::Rejection),
) -> anyhow::Result<(Summary, Engine)> {
    let started = Instant::now();
    let (groups, skipped): (_, Skipped) = trail_files(input)
        .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", input.display()))?;
    let files = groups.iter().map(|g| g.files.len()).sum();
    let groups: Arc<Vec<Vec<PathBuf>>> = Arc::new(groups.into_iter().map(|g| g.files).collect());
    let limits = trailhound_core::ParseLimits {
        keep_raw: false,
        ..Default::default()
    };
    let preparer = Arc::new(engine.preparer());

    // A worker may run at most `ahead` groups in front of the consumer,
    // which bounds memory; the slack lets parsing absorb the consumer's
    // pauses when a window closes.
    let workers = workers.max(1);
    let ahead = workers * 8;
    let next = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new((Mutex::new(0usize), Condvar::new()));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, anyhow::Result<Parsed>)>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<Ready>>();
    let done_rx = Arc::new(Mutex::new(done_rx));
    let mut summary = Summary {
        files,
        skipped_files: skipped.total(),
        ..Default::default()
    };
    if skipped.total() > 0 {
        tracing::info!("{skipped}");
    }
    let mut dedupe = Dedupe::new(4_000_000);
    let mut results: Vec<WindowResult> = Vec::new();

    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..workers {
            let (tx, next, consumed, groups, limits, enricher, preparer, done_rx) = (
                tx.clone(),
                next.clone(),
                consumed.clone(),
                groups.clone(),
                limits.clone(),
                enricher.clone(),
                preparer.clone(),
                done_rx.clone(),
            );
            let worker = std::thread::Builder::new().name("th-parse".into());
            worker.spawn_scoped(scope, move || {
                let rt = match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send((0, Err(e.into())));
                        return;
                    }
                };
                // Buffers kept across groups: a group's vectors are large
                // enough that allocating them afresh each time cost more
                // (copies as they grew, pages faulted in and zeroed) than
                // parsing. `spare` holds emptied vectors the consumer
                // handed back.
                let mut bytes = Vec::new();
                let mut collect = Collect::default();
                let mut slots: Vec<Option<trailhound_core::Event>> = Vec::new();
                let mut spare: Vec<Vec<Ready>> = Vec::new();
                loop {
                    // Free what the consumer has finished with, keeping a
                    // couple of the emptied vectors for the next groups.
                    while let Ok(mut finished) =
                        done_rx.lock().unwrap_or_else(|p| p.into_inner()).try_recv()
                    {
                        finished.clear();
                        if spare.len() <= ahead {
                            spare.push(finished);
                        }
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= groups.len() {
                        return;
                    }
                    {
                        let (lock, cv) = &*consumed;
                        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while i >= *done + ahead {
                            done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                    collect.events.clear();
                    parse_files_into(&groups[i], &limits, &mut bytes, &mut collect);
                    let rejections = std::mem::take(&mut collect.rejections);
                    let mut events = spare.pop().unwrap_or_default();
                    events.reserve(collect.events.len());
                    let ready = |e: EnrichedEvent| {
                        let p = preparer.prepare(&e.event);
                        let k = event_key(&e.event.recipient_account_id, &e.event.event_id);
                        (e, p, k)
                    };
                    // In time order, as the ingest service sorts a group.
                    match time_order(&collect.events) {
                        None => rt.block_on(
                            enricher
                                .enrich_each(collect.events.drain(..), |e| events.push(ready(e))),
                        ),
                        Some(order) => {
                            slots.extend(collect.events.drain(..).map(Some));
                            let sorted = order.into_iter().filter_map(|i| slots[i].take());
                            rt.block_on(enricher.enrich_each(sorted, |e| events.push(ready(e))));
                            slots.clear();
                        }
                    }
                    if tx.send((i, Ok(Parsed { events, rejections }))).is_err() {
                        return;
                    }
                }
            })?;
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Parsed> = BTreeMap::new();
        let mut want = 0usize;
        for (i, parsed) in rx {
            pending.insert(i, parsed?);
            while let Some(parsed) = pending.remove(&want) {
                want += 1;
                {
                    let (lock, cv) = &*consumed;
                    *lock.lock().unwrap_or_else(|p| p.into_inner()) = want;
                    cv.notify_all();
                }
                summary.events_read += (parsed.events.len() + parsed.rejections.len()) as u64;
                summary.rejected += parsed.rejections.len() as u64;
                for r in &parsed.rejections {
                    summary.reasons.add(&r.reason);
                    on_reject(r);
                }
                let mut events = parsed.events;
                for (e, prepared, key) in events.iter_mut() {
                    if !dedupe.first_time_key(*key) {
                        summary.duplicates += 1;
                        continue;
                    }
                    summary.accepted += 1;
                    engine.apply(e, std::mem::take(prepared), &mut results);
                    for r in results.drain(..) {
                        if let Some(a) = &r.anomaly {
                            summary.anomalies += 1;
                            on_anomaly(a);
                        }
                    }
                }
                // Dropped by a worker; if they are all gone, here.
                let _ = done_tx.send(events);
                report_late(&mut engine, &mut summary, &mut on_reject);
            }
        }
        Ok(())
    })?;
    engine.flush(&mut results);
    for r in results.drain(..) {
        if let Some(a) = &r.anomaly {
            summary.anomalies += 1;
            on_anomaly(a);
        }
    }
    report_late(&mut engine, &mut summary, &mut on_reject);
    summary.late = engine.stats().late_events;
    summary.evaluations = engine.stats().evaluations;
    let stats = engine.stats();
    summary.early = stats.early_raised;
    summary.coordinated = stats.coordinated;
    summary.suppressed_environment = stats.suppressed_environment;
    summary.suppressed_weekly = stats.suppressed_weekly;
    summary.suppressed_new_region = stats.suppressed_new_region;
    summary.suppressed_bursts = stats.suppressed_bursts;
    summary.entities = engine.entity_count() as u64;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_second = summary.events_read as f64 / summary.seconds.max(1e-9);
    Ok((summary, engine))
}

/// Hands the engine's late events on as rejections, and counts them.
fn report_late(
    engine: &mut Engine,
    summary: &mut Summary,
    on_reject: &mut impl FnMut(&trailhound_core::Rejection),
) {
    for l in engine.take_late() {
        summary.reasons.add(&format!("late: {}", l.reason));
        on_reject(&trailhound_core::Rejection::new(
            format!(
                "late:{}:{}/{}:{}",
                l.detector, l.account_id, l.region, l.event_id
            ),
            format!("late: {}", l.reason),
            "",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anomalies as JSON without `detected_at` (the wall clock).
    fn found(dir: &std::path::Path, workers: usize) -> (Vec<serde_json::Value>, Summary) {
        let source = trailhound_enrich::SnapshotSource::load(&dir.join("org.json")).unwrap();
        let enricher = Arc::new(Enricher::new(
            Arc::new(source),
            None,
            Default::default(),
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(3600),
        ));
        let engine = Engine::new(
            trailhound_core::detector::default_detectors(),
            Default::default(),
        );
        let mut out = Vec::new();
        let (summary, _) = replay(
            &dir.join("trail"),
            enricher,
            engine,
            workers,
            |a| {
                let mut v = serde_json::to_value(a).unwrap();
                if let Some(o) = v.as_object_mut() {
                    o.remove("detected_at");
                }
                out.push(v);
            },
            |_| {},
        )
        .unwrap();
        (out, summary)
    }

    /// Workers hand groups back in delivery order and reuse their
    /// buffers: how many there are changes nothing that is found.
    #[test]
    fn any_number_of_workers_finds_the_same_anomalies() {
        let dir = tempfile::tempdir().unwrap();
        let config = trailhound_generate::GenerateConfig {
            days: 3,
            accounts: 4,
            seed: 7,
            noise_per_account_hour: 10,
            ..Default::default()
        };
        trailhound_generate::generate(&config, dir.path()).unwrap();
        let (one, s1) = found(dir.path(), 1);
        let (three, s3) = found(dir.path(), 3);
        assert!(s1.accepted > 1000 && !one.is_empty(), "{s1:?}");
        assert_eq!(
            (s1.events_read, s1.accepted, s1.evaluations),
            (s3.events_read, s3.accepted, s3.evaluations)
        );
        assert_eq!(one, three);
    }
}
