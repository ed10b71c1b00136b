//! The forest: trees over a shared point store, each tree fed by its own
//! time-decayed reservoir sample.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::tree::{Points, Tree};

/// Forest settings. The defaults are OpenSearch AD's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ForestConfig {
    pub num_trees: usize,
    /// Points kept per tree.
    pub sample_size: usize,
    /// Recency bias of the reservoir: a point `1/time_decay` updates old is
    /// e times less likely to be kept than a new one.
    pub time_decay: f64,
    /// Updates before scores are meaningful.
    pub output_after: usize,
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        Self {
            num_trees: 30,
            sample_size: 256,
            time_decay: 1.0 / (10.0 * 256.0),
            output_after: 32,
            seed: 0,
        }
    }
}

/// Points shared by all trees, reference counted (one per sample entry and
/// one per leaf that names the slot).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PointStore {
    dims: usize,
    values: Vec<f32>,
    refs: Vec<u32>,
    #[serde(skip)]
    free: Vec<u32>,
}

impl Points for PointStore {
    fn point(&self, slot: u32) -> &[f32] {
        let o = slot as usize * self.dims;
        &self.values[o..o + self.dims]
    }
}

impl PointStore {
    fn add(&mut self, p: &[f32]) -> u32 {
        match self.free.pop() {
            Some(s) => {
                let o = s as usize * self.dims;
                self.values[o..o + self.dims].copy_from_slice(p);
                self.refs[s as usize] = 0;
                s
            }
            None => {
                self.values.extend_from_slice(p);
                self.refs.push(0);
                (self.refs.len() - 1) as u32
            }
        }
    }
    fn acquire(&mut self, s: u32) {
        self.refs[s as usize] += 1;
    }
    fn release(&mut self, s: u32) {
        let r = &mut self.refs[s as usize];
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.free.push(s);
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Entry {
    key: f64,
    slot: u32,
    seq: u64,
}

/// Pushes onto a min-heap ordered by key.
fn heap_push(h: &mut Vec<Entry>, e: Entry) {
    h.push(e);
    let mut i = h.len() - 1;
    while i > 0 {
        let parent = (i - 1) / 2;
        if h[parent].key <= h[i].key {
            break;
        }
        h.swap(parent, i);
        i = parent;
    }
}

/// Pops the smallest key of a non-empty min-heap.
fn heap_pop(h: &mut Vec<Entry>) -> Entry {
    let top = h.swap_remove(0);
    let n = h.len();
    let mut i = 0;
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut m = i;
        if l < n && h[l].key < h[m].key {
            m = l;
        }
        if r < n && h[r].key < h[m].key {
            m = r;
        }
        if m == i {
            return top;
        }
        h.swap(i, m);
        i = m;
    }
}

/// A streaming Random Cut Forest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "ForestRepr", into = "ForestRepr")]
pub struct RandomCutForest {
    config: ForestConfig,
    dims: usize,
    updates: u64,
    store: PointStore,
    samples: Vec<Vec<Entry>>,
    trees: Vec<Tree>,
}

/// What is serialized: samples and points, not trees. Trees are rebuilt
/// from the samples on load (deterministically from the seed), which keeps
/// checkpoints small; the rebuilt trees are a fresh draw over the same
/// sample, so scores after a restore agree with the original in
/// distribution rather than bit for bit.
#[derive(Serialize, Deserialize)]
struct ForestRepr {
    config: ForestConfig,
    dims: usize,
    updates: u64,
    store: PointStore,
    samples: Vec<Vec<Entry>>,
}

impl From<RandomCutForest> for ForestRepr {
    fn from(f: RandomCutForest) -> Self {
        Self {
            config: f.config,
            dims: f.dims,
            updates: f.updates,
            store: f.store,
            samples: f.samples,
        }
    }
}

impl From<ForestRepr> for RandomCutForest {
    fn from(r: ForestRepr) -> Self {
        let mut f = RandomCutForest {
            trees: (0..r.samples.len()).map(|_| Tree::new(r.dims)).collect(),
            config: r.config,
            dims: r.dims,
            updates: r.updates,
            store: r.store,
            samples: r.samples,
        };
        f.store.dims = f.dims;
        f.rebuild();
        f
    }
}

impl RandomCutForest {
    pub fn new(dimensions: usize, config: ForestConfig) -> Self {
        let dims = dimensions.max(1);
        let n = config.num_trees.max(1);
        Self {
            store: PointStore {
                dims,
                ..Default::default()
            },
            samples: vec![Vec::new(); n],
            trees: (0..n).map(|_| Tree::new(dims)).collect(),
            config,
            dims,
            updates: 0,
        }
    }

    fn rebuild(&mut self) {
        let n_slots = self.store.refs.len();
        // Validate what came from outside before trusting indices.
        let n_values = self.store.values.len() / self.dims.max(1);
        let valid = n_slots.min(n_values);
        self.store.refs = vec![0; valid];
        self.store.values.truncate(valid * self.dims);
        // As `fit` stores them: the trees rely on points never being NaN.
        for v in &mut self.store.values {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        let cap = self.config.sample_size.max(1);
        for s in &mut self.samples {
            s.retain(|e| (e.slot as usize) < valid && e.key.is_finite());
            if s.len() > cap {
                s.sort_by(|a, b| b.key.total_cmp(&a.key));
                s.truncate(cap);
            }
            s.sort_by_key(|e| e.seq);
        }
        self.trees = (0..self.samples.len())
            .map(|_| Tree::new(self.dims))
            .collect();
        for t in 0..self.samples.len() {
            for k in 0..self.samples[t].len() {
                let e = self.samples[t][k];
                let mut rng = ChaCha8Rng::seed_from_u64(
                    self.config.seed
                        ^ (t as u64).wrapping_mul(0x9E37_79B9)
                        ^ e.seq.wrapping_mul(0x2545_F491_4F6C_DD1D),
                );
                self.store.acquire(e.slot);
                if self.trees[t].insert(e.slot, &self.store, &mut rng) {
                    self.store.acquire(e.slot);
                }
            }
            // Sorted by key is a valid min-heap.
            self.samples[t].sort_by(|a, b| a.key.total_cmp(&b.key));
        }
        self.store.free = (0..valid as u32)
            .filter(|s| self.store.refs[*s as usize] == 0)
            .collect();
    }

    pub fn dimensions(&self) -> usize {
        self.dims
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn is_ready(&self) -> bool {
        self.updates >= self.config.output_after as u64
    }

    pub fn config(&self) -> &ForestConfig {
        &self.config
    }

    /// Points held by the fullest tree, for confidence.
    pub fn sample_fill(&self) -> f64 {
        let held = self.samples.iter().map(Vec::len).max().unwrap_or(0);
        held as f64 / self.config.sample_size.max(1) as f64
    }

    /// The point as the trees hold it: `f32`, non-finite values as 0.
    fn fit(&self, point: &[f64]) -> Vec<f32> {
        let mut p: Vec<f32> = point
            .iter()
            .map(|v| {
                let x = *v as f32;
                if x.is_finite() { x } else { 0.0 }
            })
            .collect();
        p.resize(self.dims, 0.0);
        p
    }

    /// The RCF anomaly score: ~1 or less for inliers, larger for outliers;
    /// 0 before the forest is ready.
    pub fn score(&self, point: &[f64]) -> f64 {
        if !self.is_ready() {
            return 0.0;
        }
        let p = self.fit(point);
        let sum: f64 = self
            .trees
            .iter()
            .map(|t| t.score(&p, &self.store, None))
            .sum();
        sum / self.trees.len() as f64
    }

    /// How much each dimension contributes to the score (sums to it).
    pub fn attribution(&self, point: &[f64]) -> Vec<f64> {
        let mut total = vec![0.0; self.dims];
        if !self.is_ready() {
            return total;
        }
        let p = self.fit(point);
        let mut a = vec![0.0; self.dims];
        for t in &self.trees {
            a.iter_mut().for_each(|x| *x = 0.0);
            let s = t.score(&p, &self.store, Some(&mut a));
            let raw: f64 = a.iter().sum();
            let norm = if raw > 0.0 { s / raw } else { 0.0 };
            for (x, y) in total.iter_mut().zip(&a) {
                *x += y * norm;
            }
        }
        let n = self.trees.len() as f64;
        total.iter_mut().for_each(|x| *x /= n);
        total
    }

    /// Estimates the `missing` dimensions of `point` from what the forest
    /// has seen (median over trees).
    pub fn impute(&self, point: &[f64], missing: &[usize]) -> Vec<f64> {
        let p = self.fit(point);
        let missing: Vec<usize> = missing.iter().copied().filter(|i| *i < self.dims).collect();
        let mut per_dim: Vec<Vec<f64>> = vec![Vec::new(); missing.len()];
        for t in &self.trees {
            if let Some(v) = t.impute(&p, &missing, &self.store) {
                for (k, x) in v.into_iter().enumerate() {
                    per_dim[k].push(f64::from(x));
                }
            }
        }
        per_dim
            .into_iter()
            .zip(&missing)
            .map(|(mut v, &i)| {
                if v.is_empty() {
                    return f64::from(p[i]);
                }
                let mid = v.len() / 2;
                *v.select_nth_unstable_by(mid, f64::total_cmp).1
            })
            .collect()
    }

    pub fn update(&mut self, point: &[f64]) {
        let p = self.fit(point);
        let seq = self.updates;
        self.updates += 1;
        let mut slot: Option<u32> = None;
        let lambda = self.config.time_decay;
        let cap = self.config.sample_size.max(1);
        for t in 0..self.trees.len() {
            let mut rng = ChaCha8Rng::seed_from_u64(
                self.config.seed
                    ^ (t as u64).wrapping_mul(0x9E37_79B9)
                    ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            let u: f64 = rng.random::<f64>().clamp(1e-300, 1.0 - 1e-16);
            let key = lambda * seq as f64 - (-u.ln()).ln();
            let sample = &mut self.samples[t];
            if sample.len() >= cap {
                // The sample is a min-heap on key: its root is the entry to
                // evict, read in O(1) (most updates stop here).
                if key <= sample[0].key {
                    continue;
                }
                let evicted = heap_pop(sample);
                if let Some(held) = self.trees[t].delete(evicted.slot, &self.store) {
                    self.store.release(held);
                }
                self.store.release(evicted.slot);
            }
            let s = *slot.get_or_insert_with(|| self.store.add(&p));
            self.store.acquire(s);
            heap_push(&mut self.samples[t], Entry { key, slot: s, seq });
            if self.trees[t].insert(s, &self.store, &mut rng) {
                self.store.acquire(s);
            }
        }
        if let Some(s) = slot {
            // Every tree that took it holds a reference; drop the store's own.
            if self.store.refs[s as usize] == 0 {
                self.store.free.push(s);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        for (t, tree) in self.trees.iter().enumerate() {
            let m = tree.check(&self.store)?;
            if m as usize != self.samples[t].len() {
                return Err(format!(
                    "tree {t} has mass {m} but {} samples",
                    self.samples[t].len()
                ));
            }
            if self.samples[t].len() > self.config.sample_size {
                return Err(format!("tree {t} holds {} points", self.samples[t].len()));
            }
        }
        Ok(())
    }
}
