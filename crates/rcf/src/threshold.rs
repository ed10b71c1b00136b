//! From scores to verdicts: shingling, an adaptive threshold, grade and
//! confidence — the role AWS's ThresholdedRandomCutForest plays in
//! OpenSearch Anomaly Detection.
//!
//! The threshold is `max(lower_threshold, mean + z_factor × stddev)` of
//! recent scores, tracked with exponential decay. Scores of windows judged
//! anomalous enter those statistics at a tenth of the weight, so a lasting
//! burst keeps being flagged for a while instead of becoming normal at
//! once. Grade maps how far the score is past the threshold into (0, 1].
//! Confidence grows as the forest fills its samples, as OpenSearch's does.

use serde::{Deserialize, Serialize};

use crate::forest::{ForestConfig, RandomCutForest};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DetectorConfig {
    pub forest: ForestConfig,
    /// Steps per shingle.
    pub shingle_size: usize,
    /// Values per step.
    pub input_dimensions: usize,
    pub z_factor: f64,
    /// No score below this is ever anomalous.
    pub lower_threshold: f64,
    /// Weight of each new score in the running statistics.
    pub score_decay: f64,
    /// The threshold's statistics learn from every `score_every`-th step
    /// (each with that much more weight); other steps are scored only when
    /// the caller needs a verdict (see [`ThresholdedForest::process_if`]).
    /// 1 scores every step, as the reference does.
    #[serde(default = "one")]
    pub score_every: u64,
    /// Steps that need no verdict are learned this many at a time (1:
    /// at once, as the reference does).
    #[serde(default = "one_usize")]
    pub update_batch: usize,
}

fn one_usize() -> usize {
    1
}

fn one() -> u64 {
    1
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            forest: ForestConfig::default(),
            shingle_size: 8,
            input_dimensions: 1,
            z_factor: 3.0,
            lower_threshold: 1.1,
            score_decay: 0.01,
            score_every: 1,
            update_batch: 1,
        }
    }
}

/// The verdict on one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub score: f64,
    /// 0 when normal, else (0, 1].
    pub grade: f64,
    pub confidence: f64,
    pub threshold: f64,
    /// What the forest expected for this step's values (computed for
    /// anomalous steps; the step itself otherwise).
    pub expected: Vec<f64>,
    /// Score attribution per input value, summed over shingle positions
    /// (computed for anomalous steps; zeros otherwise).
    pub attribution: Vec<f64>,
    pub ready: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdedForest {
    config: DetectorConfig,
    forest: RandomCutForest,
    shingle: Vec<f64>,
    steps: u64,
    mean: f64,
    var: f64,
    scored: u64,
    /// The last shingle learned, and whether it was judged normal: an
    /// exact repeat of a normal shingle is neither scored nor learned.
    #[serde(default)]
    last_shingle: Vec<f64>,
    #[serde(default)]
    last_normal: bool,
    #[serde(default)]
    last_score: f64,
    /// Steps waiting to be learned (see `update_batch`).
    #[serde(default)]
    pending: Vec<Pending>,
}

/// A step not yet learned.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    point: Vec<f64>,
    /// Whether the threshold learns from this step's score.
    sample: bool,
    /// The score, when it was computed already.
    score: Option<f64>,
}

impl ThresholdedForest {
    pub fn new(config: DetectorConfig) -> Self {
        let input = config.input_dimensions.max(1);
        let shingle_size = config.shingle_size.max(1);
        let dims = input * shingle_size;
        Self {
            forest: RandomCutForest::new(dims, config.forest.clone()),
            shingle: vec![0.0; dims],
            steps: 0,
            mean: 0.0,
            var: 0.0,
            scored: 0,
            last_shingle: Vec::new(),
            last_normal: false,
            last_score: 0.0,
            pending: Vec::new(),
            config: DetectorConfig {
                input_dimensions: input,
                shingle_size,
                ..config
            },
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn forest(&self) -> &RandomCutForest {
        &self.forest
    }

    /// Grows as the forest fills its samples and the threshold has seen
    /// scores, as OpenSearch's does.
    fn confidence(&self) -> f64 {
        if !self.forest.is_ready() {
            return 0.0;
        }
        let fill = self.forest.sample_fill();
        let seen = (self.scored * self.config.score_every.max(1)) as f64;
        (fill * (1.0 - (-seen / 64.0).exp())).clamp(0.0, 1.0)
    }

    fn threshold(&self) -> f64 {
        let sd = self.var.max(0.0).sqrt();
        (self.mean + self.config.z_factor * sd).max(self.config.lower_threshold)
    }

    /// Pushes one step and judges it against history before learning it.
    /// Values beyond `input_dimensions` are ignored, missing ones are 0, and
    /// non-finite ones count as 0.
    pub fn process(&mut self, values: &[f64]) -> Detection {
        self.process_if(values, true)
    }

    /// Like [`Self::process`], but when `needed` is false the step is not
    /// scored now (`score` NaN, grade 0): the caller knows the verdict
    /// cannot matter because nothing else about the window is unusual.
    /// Such steps are learned in batches of `update_batch`, together with
    /// the sampled scores the threshold learns from, while the forest is
    /// warm in cache; with one forest per entity, that is most of the cost
    /// of a step.
    pub fn process_if(&mut self, values: &[f64], needed: bool) -> Detection {
        let k = self.config.input_dimensions;
        let mut step: Vec<f64> = values
            .iter()
            .take(k)
            .map(|v| if v.is_finite() { *v } else { 0.0 })
            .collect();
        step.resize(k, 0.0);
        self.shingle.rotate_left(k);
        let n = self.shingle.len();
        self.shingle[n - k..].copy_from_slice(&step);
        self.steps += 1;
        let full = self.steps >= self.config.shingle_size as u64;
        if !full {
            return Detection {
                score: 0.0,
                grade: 0.0,
                confidence: 0.0,
                threshold: self.threshold(),
                expected: step,
                attribution: vec![0.0; k],
                ready: false,
            };
        }
        // An unchanged shingle (an idle entity's zeros, a flat series)
        // carries no new information: the last verdict stands and the same
        // point is not learned again.
        if self.last_normal && self.forest.is_ready() && self.last_shingle == self.shingle {
            return Detection {
                score: self.last_score,
                grade: 0.0,
                confidence: self.confidence(),
                threshold: self.threshold(),
                expected: step,
                attribution: vec![0.0; k],
                ready: true,
            };
        }
        self.last_shingle.clone_from(&self.shingle);
        let every = self.config.score_every.max(1);
        let sampled = self.steps.is_multiple_of(every);
        if !needed {
            self.last_normal = true;
            self.last_score = f64::NAN;
            self.pending.push(Pending {
                point: self.shingle.clone(),
                sample: sampled,
                score: None,
            });
            if self.pending.len() >= self.config.update_batch.max(1) {
                self.learn_pending();
            }
            return Detection {
                score: f64::NAN,
                grade: 0.0,
                confidence: self.confidence(),
                threshold: self.threshold(),
                expected: step,
                attribution: vec![0.0; k],
                ready: self.forest.is_ready(),
            };
        }
        // A verdict is needed: learn what is pending first, so the step is
        // judged against everything before it.
        self.learn_pending();
        let ready = self.forest.is_ready();
        let score = self.forest.score(&self.shingle);
        let threshold = self.threshold();
        let grade = self.grade(score, threshold);
        // Attribution and imputation cost three more passes over the
        // forest: only an anomaly needs explaining.
        let (expected, attribution) = if ready && grade > 0.0 {
            let missing: Vec<usize> = (n - k..n).collect();
            let attr = self.forest.attribution(&self.shingle);
            let mut per_input = vec![0.0; k];
            for (i, a) in attr.iter().enumerate() {
                per_input[i % k] += a;
            }
            (self.forest.impute(&self.shingle, &missing), per_input)
        } else {
            (step, vec![0.0; k])
        };
        self.last_normal = grade == 0.0;
        self.last_score = score;
        let point = Pending {
            point: self.shingle.clone(),
            sample: sampled,
            score: Some(score),
        };
        self.learn(&point);
        Detection {
            score,
            grade,
            confidence: self.confidence(),
            threshold,
            expected,
            attribution,
            ready,
        }
    }

    /// 0 when `score` is within the threshold, else how far past it, in
    /// (0, 1].
    fn grade(&self, score: f64, threshold: f64) -> f64 {
        let warmed = self.scored >= 16;
        if self.forest.is_ready() && warmed && score > threshold {
            (1.0 - (-(score - threshold) / (0.5 * threshold)).exp()).clamp(1e-6, 1.0)
        } else {
            0.0
        }
    }

    /// Learns the pending steps in order.
    fn learn_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in &pending {
            self.learn(p);
        }
        self.pending = pending;
        self.pending.clear();
    }

    /// Updates the threshold's statistics with the step's score (when the
    /// step is sampled) and then the forest with the step.
    fn learn(&mut self, p: &Pending) {
        if p.sample && self.forest.is_ready() {
            let score = p.score.unwrap_or_else(|| self.forest.score(&p.point));
            let every = self.config.score_every.max(1);
            let base = (self.config.score_decay * every as f64).min(0.5);
            // Scores past the threshold count a tenth: a lasting burst keeps
            // being flagged for a while instead of becoming normal at once.
            let past = self.grade(score, self.threshold()) > 0.0;
            let w = if past { base * 0.1 } else { base };
            let w = if self.scored < 100 {
                w.max(1.0 / (self.scored as f64 + 1.0))
            } else {
                w
            };
            let d = score - self.mean;
            self.mean += w * d;
            self.var = (1.0 - w) * (self.var + w * d * d);
            self.scored += 1;
        }
        self.forest.update(&p.point);
    }
}
