//! Detection quality: generated organizations of 14 days × 12 accounts,
//! replayed by the real `trailhound detect` binary and scored with the
//! repository's scorer. The bar: ≥ 90% of injected incidents found within
//! two intervals of their start, ≥ 80% of reported incidents real.

use std::process::Command;

use trailhound_generate::score::{ReportedAnomaly, score};

use crate::harness::{generated_org, trailhound_bin};

/// Seeds scored; each is a different organization and incident schedule.
const SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn detect_finds_the_injected_incidents_on_generated_organizations() {
    let (mut incidents, mut detected, mut reported, mut true_reported) = (0, 0, 0, 0);
    let mut lines = Vec::new();
    for seed in SEEDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels = generated_org(dir.path(), 14, 12, seed, 40);
        let out = Command::new(trailhound_bin())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["detect", "--org"])
            .arg(dir.path().join("org.json"))
            .arg("--input")
            .arg(dir.path().join("trail"))
            .output()
            .expect("run trailhound detect");
        assert!(
            out.status.success(),
            "trailhound detect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let anomalies: Vec<ReportedAnomaly> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("an anomaly per line"))
            .collect();
        let s = score(&labels, &anomalies);
        lines.push(format!(
            "seed {seed}: {}/{} found, {}/{} reported real, missed {:?}, false alarms {:?}",
            s.detected,
            s.incidents,
            s.true_reported,
            s.reported_incidents,
            s.missed,
            s.false_alarms
        ));
        incidents += s.incidents;
        detected += s.detected;
        reported += s.reported_incidents;
        true_reported += s.true_reported;
    }
    let recall = detected as f64 / incidents as f64;
    let precision = true_reported as f64 / reported.max(1) as f64;
    let report = lines.join("\n");
    eprintln!("{report}\nrecall {recall:.3}, precision {precision:.3}");
    assert!(incidents >= 25, "the generator injects incidents: {report}");
    assert!(recall >= 0.9, "recall {recall:.3} < 0.9\n{report}");
    assert!(precision >= 0.8, "precision {precision:.3} < 0.8\n{report}");
}
