//! Detection quality: generated organizations of 14 days × 12 accounts,
//! replayed by the real `trailhound detect` binary and scored with the
//! repository's scorer. The bar: ≥ 90% of injected incidents found within
//! two intervals of their start, ≥ 80% of reported incidents real.

use std::process::Command;

use trailhound_generate::score::{ReportedAnomaly, score};

use crate::harness::{generated_org, run_ok, trailhound_bin};

/// Seeds scored; each is a different organization and incident schedule.
const SEEDS: [u64; 3] = [1, 2, 3];

/// What `trailhound detect` reports on the organization generated in
/// `dir` (its org.json and trail), one anomaly per line of its output.
fn detect_generated(dir: &std::path::Path) -> Vec<ReportedAnomaly> {
    let out = run_ok(
        Command::new(trailhound_bin())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["detect", "--org"])
            .arg(dir.join("org.json"))
            .arg("--input")
            .arg(dir.join("trail")),
        "trailhound detect",
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an anomaly per line"))
        .collect()
}

#[test]
fn detect_finds_the_injected_incidents_on_generated_organizations() {
    use trailhound_generate::score::Evaluation;
    let mut evals = Vec::new();
    let mut lines = Vec::new();
    for seed in SEEDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = generated_org(dir.path(), 14, 12, seed, 40);
        let anomalies = detect_generated(dir.path());
        let s = score(&labels, &anomalies);
        lines.push(format!(
            "seed {seed}: {}/{} found, precision {:.3}, missed {:?}",
            s.eval.found, s.eval.incidents, s.eval.precision, s.missed
        ));
        evals.push(s.eval);
    }
    let all = Evaluation::combine(&evals);
    let report = lines.join("\n");
    eprintln!(
        "{report}\nrecall {:.3}, precision {:.3}",
        all.recall, all.precision
    );
    assert!(
        all.incidents >= 25,
        "the generator injects incidents: {report}"
    );
    // Precision is the share of anomalies that belong to an incident: a
    // storm raised by the per-account and the per-function detector is
    // found twice, not once found and once a false alarm.
    assert!(
        all.recall >= 0.9,
        "recall {:.3} < 0.9\n{report}",
        all.recall
    );
    assert!(
        all.precision >= 0.8,
        "precision {:.3} < 0.8\n{report}",
        all.precision
    );
}

/// Held-out organizations of the hard profile (`--profile hard`), never
/// used for tuning (seeds 1–3 are the tuning set).
const HARD_HELD_OUT: [u64; 5] = [101, 102, 103, 104, 105];

/// Issue 12's bar on held-out hard organizations, with default
/// configuration: recall ≥ 0.9 with every kind found at least 2 times in 3,
/// precision ≥ 0.8, median delay ≤ 3 minutes. The default detectors do not
/// meet it yet (README, "Harder organizations, held out": most night-time
/// rises are missed and anomaly precision is about 0.70), hence ignored until
/// they do: `cargo test -p trailhound --test integration quality::hard --
/// --ignored`.
#[test]
#[ignore = "issue 12: the bar is not met yet (night-time rises, precision); ~5 minutes"]
fn hard_profile_held_out_organizations_meet_the_bar() {
    use trailhound_generate::score::{Evaluation, score_with_accounts};
    let mut evals = Vec::new();
    for seed in HARD_HELD_OUT {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = trailhound_generate::GenerateConfig {
            seed,
            days: 0,
            accounts: 0,
            profile: trailhound_generate::Profile::Hard,
            ..Default::default()
        };
        trailhound_generate::generate(&cfg, dir.path()).expect("generate");
        let labels =
            trailhound_generate::read_labels(&dir.path().join("labels.json")).expect("labels");
        let anomalies = detect_generated(dir.path());
        evals.push(score_with_accounts(&labels, &anomalies, None).eval);
    }
    let all = Evaluation::combine(&evals);
    let report = serde_json::to_string_pretty(&all).unwrap_or_default();
    eprintln!("{report}");
    assert!(
        all.incidents >= 45,
        "five organizations, nine kinds each: {report}"
    );
    for k in &all.by_kind {
        assert!(
            3 * k.found >= 2 * k.total,
            "{}: {}/{} found\n{report}",
            k.kind,
            k.found,
            k.total
        );
    }
    assert!(all.recall >= 0.9, "recall {:.3}\n{report}", all.recall);
    assert!(
        all.precision >= 0.8,
        "precision {:.3}\n{report}",
        all.precision
    );
    assert!(
        all.delay_median_s.is_some_and(|d| d <= 180.0),
        "median delay {:?} s\n{report}",
        all.delay_median_s
    );
}
