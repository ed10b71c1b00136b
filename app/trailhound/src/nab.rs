//! `trailhound nab`: trailhound's Random Cut Forest on the Numenta Anomaly
//! Benchmark, so its quality can be compared with published detectors.
//!
//! Two modes, both writing one `anomaly_score` in [0, 1] per input row where
//! NAB's runner looks for a detector's results
//! (`<out>/trailhound/<group>/trailhound_<name>.csv`), so NAB's own scorer
//! rates them (`python run.py -d trailhound --optimize --score --normalize`):
//! - `forest` (default): the forest exactly as NAB's published RCF entry ran
//!   AWS's (raw values, shingle 1, score / log2(sample size)), with
//!   trailhound's forest defaults. This compares the algorithm like for like.
//! - `engine`: the pieces detect runs per CloudTrail entity — seasonal
//!   baseline, residuals in noise units, shingled thresholded forest — with
//!   the grade as the score. Tuned for bursty counts, not NAB's sensor
//!   series; it is here to show that, not to compete.

use std::path::{Path, PathBuf};

use trailhound_detect::baseline::Baseline;
use trailhound_rcf::{DetectorConfig, ForestConfig, ThresholdedForest};

#[derive(Clone, Debug, clap::Args)]
pub struct NabArgs {
    /// NAB's data directory (…/nab/data).
    #[arg(long)]
    pub data: PathBuf,
    /// Results directory (NAB's results/).
    #[arg(long)]
    pub out: PathBuf,
    /// What scores the series.
    #[arg(long, value_enum, default_value_t = NabMode::Forest)]
    pub mode: NabMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NabMode {
    /// The forest alone, as NAB's published RCF entry ran it.
    Forest,
    /// detect's per-entity pipeline (baseline, residuals, shingled forest).
    Engine,
}

/// One parsed NAB row: the timestamp text as given, epoch ms and value.
struct Row {
    timestamp: String,
    ms: i64,
    value: f64,
}

fn read_series(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (ts, v) = line.split_once(',').ok_or_else(|| {
            anyhow::anyhow!("{}:{}: expected timestamp,value", path.display(), i + 1)
        })?;
        let ms = chrono::NaiveDateTime::parse_from_str(ts.trim(), "%Y-%m-%d %H:%M:%S")
            .map_err(|e| {
                anyhow::anyhow!("{}:{}: bad timestamp {ts:?}: {e}", path.display(), i + 1)
            })?
            .and_utc()
            .timestamp_millis();
        let value: f64 = v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{}:{}: bad value {v:?}: {e}", path.display(), i + 1))?;
        rows.push(Row {
            timestamp: ts.trim().to_string(),
            ms,
            value,
        });
    }
    Ok(rows)
}

/// Scores one series with the forest alone, as NAB's RCF entry did: raw
/// values, no shingle, and the score over its scale (log2 of the sample
/// size), clipped to 1.
pub fn forest_scores(values: &[f64]) -> Vec<f64> {
    let config = ForestConfig {
        seed: 7,
        ..ForestConfig::default()
    };
    let scale = (config.sample_size.max(2) as f64).log2();
    let mut forest = ThresholdedForest::new(DetectorConfig {
        forest: config,
        shingle_size: 1,
        input_dimensions: 1,
        ..DetectorConfig::default()
    });
    values
        .iter()
        .map(|x| {
            let d = forest.process(&[*x]);
            if d.ready && d.score.is_finite() {
                (d.score / scale).clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// Scores one series with detect's per-entity pipeline; one grade per row.
pub fn engine_scores(ms: &[i64], values: &[f64]) -> Vec<f64> {
    let mut gaps: Vec<i64> = ms
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    let interval = gaps
        .get(gaps.len() / 2)
        .copied()
        .unwrap_or(300_000)
        .max(60_000);
    let mut baseline = Baseline::with_noise_floor(1, interval, false);
    let mut forest = ThresholdedForest::new(DetectorConfig {
        forest: ForestConfig {
            seed: 7,
            ..ForestConfig::default()
        },
        shingle_size: 8,
        input_dimensions: 1,
        ..DetectorConfig::default()
    });
    let mut exp = Vec::new();
    let mut scores = Vec::with_capacity(values.len());
    for (t, x) in ms.iter().zip(values) {
        baseline.expect(*t, &mut exp);
        let e = exp[0];
        let z = ((x - e.expected) / e.scale).clamp(-50.0, 50.0);
        let d = forest.process(&[z]);
        baseline.record(*t, &[*x], &exp, d.grade > 0.0);
        scores.push(d.grade.clamp(0.0, 1.0));
    }
    scores
}

pub fn run(args: &NabArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for group in std::fs::read_dir(&args.data)
        .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", args.data.display()))?
    {
        let group = group?.path();
        if !group.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&group)? {
            let f = f?.path();
            if f.extension().and_then(|e| e.to_str()) == Some("csv") {
                files.push(f);
            }
        }
    }
    files.sort();
    for f in &files {
        let rows = read_series(f)?;
        let ms: Vec<i64> = rows.iter().map(|r| r.ms).collect();
        let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
        let scores = match args.mode {
            NabMode::Forest => forest_scores(&values),
            NabMode::Engine => engine_scores(&ms, &values),
        };
        let group = f
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("series.csv");
        let dir = args.out.join("trailhound").join(group);
        std::fs::create_dir_all(&dir)?;
        let mut out = String::from("timestamp,value,anomaly_score\n");
        for (r, s) in rows.iter().zip(&scores) {
            out.push_str(&format!("{},{},{}\n", r.timestamp, r.value, s));
        }
        std::fs::write(dir.join(format!("trailhound_{name}")), out)?;
    }
    eprintln!(
        "scored {} series into {}",
        files.len(),
        args.out.join("trailhound").display()
    );
    Ok(())
}
