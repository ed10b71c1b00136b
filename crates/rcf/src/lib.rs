//! A streaming Random Cut Forest — the algorithm behind OpenSearch Anomaly
//! Detection and Amazon's RCF — and a thresholded detector on top of it
//! that turns scores into an anomaly grade and confidence.
//!
//! Decisions:
//! - Trees are arenas (`Vec` of nodes with u32 links and a free list) over
//!   one point store per forest, so an update allocates nothing in steady
//!   state and points are stored once however many trees sample them.
//! - Each tree keeps a time-decayed reservoir sample (keys
//!   `λ·t − ln(−ln u)`, largest kept), so the forest follows drift.
//! - Scores use the AWS scalar score definition (≈1 or less for inliers).
//! - Randomness is derived from the seed and the update number, never from
//!   the OS: the same stream gives the same scores.
//! - Serialized state is the samples and points, not the trees; trees are
//!   rebuilt on load. Checkpoints stay small (a forest of 30 trees × 256
//!   points of 8 dimensions is ~100 KB), at the price that a restored forest
//!   agrees with the original in distribution, not bit for bit.

mod forest;
mod threshold;
mod tree;

pub use forest::{ForestConfig, RandomCutForest};
pub use threshold::{Detection, DetectorConfig, ThresholdedForest};

#[cfg(test)]
mod tests;
