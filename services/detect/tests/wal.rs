//! The write-ahead log: detect dropped without a checkpoint (as a SIGKILL
//! leaves it) and opened again has the state, counts and anomalies of a
//! run that never stopped; a batch sent again after a lost answer is not
//! counted twice; without the log, what came after the checkpoint is lost.

#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use std::path::Path;
use std::sync::Arc;

use trailhound_core::account::AccountMetadata;
use trailhound_core::detector::default_detectors;
use trailhound_core::{EnrichedEvent, Event};
use trailhound_detect::engine::EngineConfig;
use trailhound_detect::store::{AnomalyFilter, DetectStore};
use trailhound_detect::{Detect, WalOptions};

use crate::fixtures::{MIN, T0, account, invoke_event};

fn invoke(id: u64, t: i64, acct: &Arc<AccountMetadata>, principal: &str) -> EnrichedEvent {
    EnrichedEvent {
        event: Event {
            raw: "{\"the raw record\":true}".into(),
            ..invoke_event(id, t, &acct.account_id, "us-east-1", principal)
        },
        account: acct.clone(),
    }
}

/// Four days of invokes in two accounts (a daily rhythm, and a burst on
/// the fourth afternoon, once three days of rhythm are known), as batches
/// of about 500 events in time order.
fn batches() -> Vec<Vec<EnrichedEvent>> {
    let accounts = [account("111122223333"), account("444455556666")];
    let burst = T0 + 3 * 86_400_000 + 14 * 3_600_000;
    let mut events = Vec::new();
    let mut id = 0;
    for m in 0..4 * 1440 {
        let t = T0 + m * MIN;
        let hour = (m % 1440) / 60;
        for (i, acct) in accounts.iter().enumerate() {
            let n = if i == 0 && (burst..burst + 20 * MIN).contains(&t) {
                120
            } else if (8..20).contains(&hour) {
                4
            } else {
                1
            };
            for k in 0..n {
                id += 1;
                let principal = format!(
                    "arn:aws:sts::{}:assumed-role/app/{}",
                    acct.account_id,
                    k % 3
                );
                events.push(invoke(id, t + k * 100, acct, &principal));
            }
        }
    }
    events.chunks(500).map(<[EnrichedEvent]>::to_vec).collect()
}

fn open(dir: &Path, wal: WalOptions) -> Detect {
    let store = DetectStore::open(&dir.join("detect.redb")).unwrap();
    Detect::open_with(
        store,
        default_detectors(),
        EngineConfig::default(),
        None,
        wal,
    )
    .unwrap()
}

/// What two runs must agree on.
#[derive(Debug, PartialEq)]
struct Seen {
    stats: trailhound_detect::engine::EngineStats,
    entities: usize,
    watermark: i64,
    /// (id, grade, actual, expected): detection times differ by run.
    anomalies: Vec<(String, String, f64, f64)>,
    series: usize,
}

fn seen(d: &Detect) -> Seen {
    let (stats, entities, watermark) = d.stats();
    let (all, _) = d.list(&AnomalyFilter::default(), 10_000, None).unwrap();
    let series = d
        .series(
            "lambda-invoke",
            "111122223333/us-east-1",
            T0,
            T0 + 10 * 86_400_000,
        )
        .unwrap()
        .len();
    Seen {
        stats,
        entities,
        watermark,
        anomalies: all
            .into_iter()
            .map(|a| (a.id, format!("{:.6}", a.grade), a.actual, a.expected))
            .collect(),
        series,
    }
}

fn gauge(d: &Detect, name: &str) -> f64 {
    d.service_stats().gauges.get(name).copied().unwrap_or(-1.0)
}

#[test]
fn a_kill_without_checkpoint_loses_nothing() {
    let all = batches();
    let total: u64 = all.iter().map(|b| b.len() as u64).sum();
    let half = all.len() / 2;

    // The uninterrupted run.
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = open(straight_dir.path(), WalOptions::default());
    for b in &all {
        straight.observe(b).unwrap();
    }

    // The same batches, killed halfway: no checkpoint since the start.
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), WalOptions::default());
    for b in &all[..half] {
        assert!(!first.observe(b).unwrap().duplicate);
    }
    let before = seen(&first);
    assert!(gauge(&first, "wal_entries") >= half as f64);
    drop(first);

    let second = open(dir.path(), WalOptions::default());
    assert_eq!(seen(&second), before, "state after the restart");
    assert_eq!(gauge(&second, "replayed_entries"), half as f64);
    // Opening checkpointed the replayed state: the log is empty again.
    assert_eq!(gauge(&second, "wal_entries"), 0.0);
    for b in &all[half..] {
        second.observe(b).unwrap();
    }
    let after = seen(&second);
    assert_eq!(after.stats.events, total, "every event counted once");
    assert_eq!(second.service_stats().events_in, total);
    assert!(
        !after.anomalies.is_empty(),
        "the burst is found: {after:#?}"
    );
    assert_eq!(after, seen(&straight), "same as a run that never stopped");

    // Killed again right away: the second half comes back from the log.
    drop(second);
    let third = open(dir.path(), WalOptions::default());
    assert_eq!(seen(&third), after);
}

#[test]
fn a_batch_sent_again_is_acknowledged_but_not_counted() {
    let all = batches();
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), WalOptions::default());
    d.observe(&all[0]).unwrap();
    d.observe(&all[1]).unwrap();
    let again = d.observe(&all[1]).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.accepted, all[1].len() as u64);
    let n = (all[0].len() + all[1].len()) as u64;
    assert_eq!(d.stats().0.events, n);
    assert_eq!(gauge(&d, "duplicate_batches"), 1.0);
    // The answer was lost in a kill: the resend comes to a new process,
    // after a checkpoint even.
    d.checkpoint().unwrap();
    drop(d);
    let d = open(dir.path(), WalOptions::default());
    assert!(d.observe(&all[1]).unwrap().duplicate);
    assert!(!d.observe(&all[2]).unwrap().duplicate);
    assert_eq!(d.stats().0.events, n + all[2].len() as u64);
}

#[test]
fn checkpoints_empty_the_log() {
    let all = batches();
    let dir = tempfile::tempdir().unwrap();
    let d = open(
        dir.path(),
        WalOptions {
            enabled: true,
            checkpoint_after_events: 2_000,
        },
    );
    for b in &all[..20] {
        d.observe(b).unwrap();
        assert!(gauge(&d, "wal_events") < 2_000.0);
    }
    let events = d.stats().0.events;
    d.checkpoint().unwrap();
    assert_eq!(gauge(&d, "wal_entries"), 0.0);
    drop(d);
    let d = open(dir.path(), WalOptions::default());
    assert_eq!(gauge(&d, "replayed_entries"), 0.0);
    assert_eq!(d.stats().0.events, events);
}

#[test]
fn flushes_and_detector_changes_are_replayed_in_place() {
    let all = batches();
    let straight_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |d: &Detect, part: &[Vec<EnrichedEvent>], change: bool| {
        for (i, b) in part.iter().enumerate() {
            d.observe(b).unwrap();
            if change && i == 3 {
                d.set_enabled("lambda-invoke", false).unwrap();
            }
            if change && i == 6 {
                d.set_enabled("lambda-invoke", true).unwrap();
            }
        }
    };
    let straight = open(straight_dir.path(), WalOptions::default());
    run(&straight, &all[..10], true);
    straight.flush().unwrap();
    run(&straight, &all[10..12], false);

    let d = open(dir.path(), WalOptions::default());
    run(&d, &all[..10], true);
    d.flush().unwrap();
    drop(d);
    let d = open(dir.path(), WalOptions::default());
    run(&d, &all[10..12], false);
    assert_eq!(seen(&d), seen(&straight));
    assert!(d.detector("lambda-invoke").is_some_and(|s| s.enabled));
}

#[test]
fn without_the_log_a_kill_loses_what_came_after_the_checkpoint() {
    let all = batches();
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), WalOptions::disabled());
    assert_eq!(gauge(&d, "wal_enabled"), 0.0);
    d.observe(&all[0]).unwrap();
    d.checkpoint().unwrap();
    d.observe(&all[1]).unwrap();
    // No log: the same batch twice is counted twice.
    assert!(!d.observe(&all[1]).unwrap().duplicate);
    drop(d);
    let d = open(dir.path(), WalOptions::disabled());
    assert_eq!(d.stats().0.events, all[0].len() as u64);
}

/// The log's cost per batch, printed (not a check): `cargo test --release
/// -p trailhound-detect --test detect wal_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn wal_cost() {
    let all = batches();
    let events: usize = all.iter().map(Vec::len).sum();
    for wal in [WalOptions::disabled(), WalOptions::default()] {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path(), wal);
        let started = std::time::Instant::now();
        for b in &all {
            d.observe(b).unwrap();
        }
        let took = started.elapsed();
        let bytes: usize = all
            .iter()
            .map(|b| trailhound_detect::wal::encode_batch(b).unwrap().len())
            .sum();
        println!(
            "wal={}: {} batches of ~{} events in {:.2}s: {:.2} ms/batch, {:.0} events/s; log {} bytes/event",
            wal.enabled,
            all.len(),
            events / all.len(),
            took.as_secs_f64(),
            took.as_secs_f64() * 1000.0 / all.len() as f64,
            events as f64 / took.as_secs_f64(),
            bytes / events
        );
    }
}
