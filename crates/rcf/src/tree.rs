//! One random cut tree over points held in the forest's point store.
//!
//! Layout decisions, all for cache behaviour: the detect engine keeps one
//! forest per entity and touches each once per window, so trees are read
//! cold almost every time and memory traffic, not arithmetic, sets the
//! cost.
//! - Internal nodes and leaves live in separate arenas (`Vec`s with u32
//!   links and free lists); a link with the top bit set names a leaf.
//!   Nothing is allocated per update in steady state.
//! - Only internal nodes have a cached bounding box (min then max per
//!   dimension, `f32`); a leaf's box is its point.
//! - Values are `f32`: plenty for anomaly scores, and half the bytes.
//! - Scoring computes each level's separation probability on the way down
//!   and folds them in a small buffer, so every node is visited once.
//! - Box updates stop at the first ancestor whose box did not change.

use rand::Rng;

pub(crate) const NIL: u32 = u32::MAX;
const LEAF: u32 = 1 << 31;

thread_local! {
    /// Per-level (separation probability, depth) of the current descent.
    static LEVELS: std::cell::RefCell<Vec<(f64, f64)>> = std::cell::RefCell::new(Vec::with_capacity(64));
}

#[derive(Clone, Debug)]
struct Inner {
    parent: u32,
    left: u32,
    right: u32,
    /// Points below.
    mass: u32,
    cut_dim: u32,
    cut_value: f32,
}

#[derive(Clone, Debug)]
struct Leaf {
    parent: u32,
    /// Copies of the same point.
    mass: u32,
    /// The point's slot in the store.
    point: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Tree {
    dims: usize,
    root: u32,
    inner: Vec<Inner>,
    /// [i * 2 * dims ..]: min then max of internal node i.
    boxes: Vec<f32>,
    leaves: Vec<Leaf>,
    free_inner: Vec<u32>,
    free_leaves: Vec<u32>,
    /// Scratch for box recomputation (2 × dims).
    scratch: Vec<f32>,
}

/// Where points are: a flat store shared by the trees of a forest.
pub(crate) trait Points {
    fn point(&self, slot: u32) -> &[f32];
}

fn is_leaf(r: u32) -> bool {
    r != NIL && r & LEAF != 0
}

// `f32::min` and `f32::max` handle NaN, which costs several instructions
// on every use in the hottest loops here; points are never NaN (the forest
// stores only finite values), so one comparison does. For non-NaN input
// these return the same number as `f32::min`/`max`; like those, they may
// return either zero when given -0.0 and +0.0, and nothing here can tell
// the two zeros apart (they compare equal, and only their differences and
// comparisons are used).
#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

impl Tree {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            root: NIL,
            inner: Vec::new(),
            boxes: Vec::new(),
            leaves: Vec::new(),
            free_inner: Vec::new(),
            free_leaves: Vec::new(),
            scratch: vec![0.0; 2 * dims],
        }
    }

    fn leaf(&self, r: u32) -> &Leaf {
        &self.leaves[(r & !LEAF) as usize]
    }

    fn leaf_mut(&mut self, r: u32) -> &mut Leaf {
        &mut self.leaves[(r & !LEAF) as usize]
    }

    fn mass_of(&self, r: u32) -> u32 {
        if r == NIL {
            0
        } else if is_leaf(r) {
            self.leaf(r).mass
        } else {
            self.inner[r as usize].mass
        }
    }

    fn parent_of(&self, r: u32) -> u32 {
        if is_leaf(r) {
            self.leaf(r).parent
        } else {
            self.inner[r as usize].parent
        }
    }

    fn set_parent(&mut self, r: u32, parent: u32) {
        if is_leaf(r) {
            self.leaf_mut(r).parent = parent;
        } else {
            self.inner[r as usize].parent = parent;
        }
    }

    pub fn mass(&self) -> u32 {
        self.mass_of(self.root)
    }

    fn alloc_leaf(&mut self, leaf: Leaf) -> u32 {
        let i = match self.free_leaves.pop() {
            Some(i) => {
                self.leaves[i as usize] = leaf;
                i
            }
            None => {
                self.leaves.push(leaf);
                (self.leaves.len() - 1) as u32
            }
        };
        i | LEAF
    }

    fn alloc_inner(&mut self, node: Inner) -> u32 {
        match self.free_inner.pop() {
            Some(i) => {
                self.inner[i as usize] = node;
                i
            }
            None => {
                self.inner.push(node);
                self.boxes.extend(std::iter::repeat_n(0.0, 2 * self.dims));
                (self.inner.len() - 1) as u32
            }
        }
    }

    fn bbox(&self, n: u32) -> (&[f32], &[f32]) {
        let o = n as usize * 2 * self.dims;
        (
            &self.boxes[o..o + self.dims],
            &self.boxes[o + self.dims..o + 2 * self.dims],
        )
    }

    /// The box of any node: internal from the arena, leaf from its point.
    fn node_box<'a, P: Points>(&'a self, r: u32, pts: &'a P) -> (&'a [f32], &'a [f32]) {
        if is_leaf(r) {
            let p = pts.point(self.leaf(r).point);
            (p, p)
        } else {
            self.bbox(r)
        }
    }

    /// Recomputes an internal node's box from its children; true if it
    /// changed.
    fn set_box_from_children<P: Points>(&mut self, n: u32, pts: &P) -> bool {
        let (l, r) = {
            let node = &self.inner[n as usize];
            (node.left, node.right)
        };
        let d = self.dims;
        let mut merged = std::mem::take(&mut self.scratch);
        merged.resize(2 * d, 0.0);
        {
            let (lmin, lmax) = self.node_box(l, pts);
            let (rmin, rmax) = self.node_box(r, pts);
            let (mmin, mmax) = merged.split_at_mut(d);
            for (m, (&l, &r)) in mmin.iter_mut().zip(lmin.iter().zip(rmin)) {
                *m = min(l, r);
            }
            for (m, (&l, &r)) in mmax.iter_mut().zip(lmax.iter().zip(rmax)) {
                *m = max(l, r);
            }
        }
        let o = n as usize * 2 * d;
        let changed = self.boxes[o..o + 2 * d] != merged[..];
        if changed {
            self.boxes[o..o + 2 * d].copy_from_slice(&merged);
        }
        self.scratch = merged;
        changed
    }

    /// Grows an internal node's box to hold `p`; true if it changed.
    fn grow_box(&mut self, n: u32, p: &[f32]) -> bool {
        let d = self.dims;
        let o = n as usize * 2 * d;
        let (lo, hi) = self.boxes[o..o + 2 * d].split_at_mut(d);
        let mut changed = false;
        for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(p) {
            if x < *l {
                *l = x;
                changed = true;
            }
            if x > *h {
                *h = x;
                changed = true;
            }
        }
        changed
    }

    /// Inserts the point at `slot`. Returns true if a new leaf references
    /// the slot (false: an equal point's leaf gained mass).
    pub fn insert<P: Points, R: Rng>(&mut self, slot: u32, pts: &P, rng: &mut R) -> bool {
        if self.root == NIL {
            self.root = self.alloc_leaf(Leaf {
                parent: NIL,
                mass: 1,
                point: slot,
            });
            return true;
        }
        let p = pts.point(slot);
        let mut n = self.root;
        loop {
            let (cut, separates) = {
                let (lo, hi) = self.node_box(n, pts);
                let mut total = 0.0f64;
                for ((&l, &h), &x) in lo.iter().zip(hi).zip(p) {
                    total += f64::from(max(h, x) - min(l, x));
                }
                if total <= 0.0 {
                    (None, false)
                } else {
                    let mut r = rng.random::<f64>() * total;
                    let mut cut = None;
                    let last = self.dims - 1;
                    for (i, ((&l, &h), &x)) in lo.iter().zip(hi).zip(p).enumerate() {
                        let (a, b) = (min(l, x), max(h, x));
                        let w = f64::from(b - a);
                        if r < w || i == last {
                            let v = ((f64::from(a) + r.min(w)) as f32).clamp(a, b);
                            cut = Some((i, v));
                            break;
                        }
                        r -= w;
                    }
                    let sep = cut
                        .is_some_and(|(i, v)| (p[i] <= v && v < lo[i]) || (p[i] > v && v >= hi[i]));
                    (cut, sep)
                }
            };
            let leaf_here = is_leaf(n);
            if leaf_here && !separates && pts.point(self.leaf(n).point) == p {
                // The same point again: more mass, no new node.
                self.leaf_mut(n).mass += 1;
                let mut a = self.leaf(n).parent;
                while a != NIL {
                    self.inner[a as usize].mass += 1;
                    a = self.inner[a as usize].parent;
                }
                return false;
            }
            if separates || leaf_here {
                let (dim, value) = match cut {
                    Some(c) if separates => c,
                    _ => {
                        // A leaf with a different point the random cut did
                        // not separate: cut on the widest gap, at its
                        // lower end when the midpoint rounds onto the top.
                        let q = pts.point(self.leaf(n).point);
                        let (i, _) = (0..self.dims)
                            .map(|i| (i, (q[i] - p[i]).abs()))
                            .fold((0, -1.0), |a, b| if b.1 > a.1 { b } else { a });
                        let (a, b) = (q[i].min(p[i]), q[i].max(p[i]));
                        let mid = a + (b - a) * 0.5;
                        (i, if mid >= b { a } else { mid })
                    }
                };
                let parent = self.parent_of(n);
                let new_leaf = self.alloc_leaf(Leaf {
                    parent: NIL,
                    mass: 1,
                    point: slot,
                });
                let inner = self.alloc_inner(Inner {
                    parent,
                    left: NIL,
                    right: NIL,
                    mass: self.mass_of(n) + 1,
                    cut_dim: dim as u32,
                    cut_value: value,
                });
                let (left, right) = if p[dim] <= value {
                    (new_leaf, n)
                } else {
                    (n, new_leaf)
                };
                self.inner[inner as usize].left = left;
                self.inner[inner as usize].right = right;
                self.set_parent(new_leaf, inner);
                self.set_parent(n, inner);
                if parent == NIL {
                    self.root = inner;
                } else if self.inner[parent as usize].left == n {
                    self.inner[parent as usize].left = inner;
                } else {
                    self.inner[parent as usize].right = inner;
                }
                self.set_box_from_children(inner, pts);
                // Ancestors gain one point; their boxes grow to hold it
                // until one already does (then all above do too).
                let mut a = parent;
                let mut growing = true;
                while a != NIL {
                    self.inner[a as usize].mass += 1;
                    if growing {
                        growing = self.grow_box(a, p);
                    }
                    a = self.inner[a as usize].parent;
                }
                return true;
            }
            let node = &self.inner[n as usize];
            n = if p[node.cut_dim as usize] <= node.cut_value {
                node.left
            } else {
                node.right
            };
        }
    }

    fn find_leaf<P: Points>(&self, p: &[f32], pts: &P, slot: u32) -> Option<u32> {
        let mut n = self.root;
        while n != NIL {
            if is_leaf(n) {
                let leaf = self.leaf(n);
                return (leaf.point == slot || pts.point(leaf.point) == p).then_some(n);
            }
            let node = &self.inner[n as usize];
            n = if p[node.cut_dim as usize] <= node.cut_value {
                node.left
            } else {
                node.right
            };
        }
        None
    }

    /// Removes one copy of the point at `slot`. Returns the slot the leaf
    /// referenced if the leaf itself went away (the caller releases it).
    pub fn delete<P: Points>(&mut self, slot: u32, pts: &P) -> Option<u32> {
        let p = pts.point(slot);
        let leaf = self.find_leaf(p, pts, slot)?;
        let (lparent, lmass, held) = {
            let l = self.leaf(leaf);
            (l.parent, l.mass, l.point)
        };
        if lmass > 1 {
            self.leaf_mut(leaf).mass -= 1;
            let mut a = lparent;
            while a != NIL {
                self.inner[a as usize].mass -= 1;
                a = self.inner[a as usize].parent;
            }
            return None;
        }
        self.free_leaves.push(leaf & !LEAF);
        if lparent == NIL {
            self.root = NIL;
            return Some(held);
        }
        let (sibling, grand) = {
            let pn = &self.inner[lparent as usize];
            (if pn.left == leaf { pn.right } else { pn.left }, pn.parent)
        };
        self.set_parent(sibling, grand);
        if grand == NIL {
            self.root = sibling;
        } else if self.inner[grand as usize].left == lparent {
            self.inner[grand as usize].left = sibling;
        } else {
            self.inner[grand as usize].right = sibling;
        }
        self.free_inner.push(lparent);
        // Ancestors lose one point; their boxes shrink until one does not
        // change (then none above does either).
        let mut a = grand;
        let mut shrinking = true;
        while a != NIL {
            self.inner[a as usize].mass -= 1;
            if shrinking {
                shrinking = self.set_box_from_children(a, pts);
            }
            a = self.inner[a as usize].parent;
        }
        Some(held)
    }

    /// The AWS RCF scalar score of `p` in this tree, unnormalized. With
    /// `attr`, also the score's attribution per dimension.
    pub fn score<P: Points>(&self, p: &[f32], pts: &P, attr: Option<&mut [f64]>) -> f64 {
        if self.root == NIL {
            return 0.0;
        }
        match attr {
            None => LEVELS.with(|cell| self.score_fast(p, pts, &mut cell.borrow_mut())),
            Some(a) => self.score_attributed(p, pts, a),
        }
    }

    fn leaf_score<P: Points>(&self, leaf: u32, depth: f64, p: &[f32], pts: &P) -> f64 {
        let tree_mass = f64::from(self.mass());
        let l = self.leaf(leaf);
        if pts.point(l.point) == p {
            let mass = f64::from(l.mass);
            let damp = 1.0 - mass / (2.0 * tree_mass);
            damp / (depth + (mass + 1.0).log2())
        } else {
            1.0 / (depth + 1.0)
        }
    }

    /// One descent: each level's chance that a random cut would have
    /// separated `p` from the node's box, folded from the leaf up.
    fn score_fast<P: Points>(&self, p: &[f32], pts: &P, levels: &mut Vec<(f64, f64)>) -> f64 {
        levels.clear();
        let mut n = self.root;
        let mut depth = 0.0f64;
        while !is_leaf(n) {
            let (lo, hi) = self.bbox(n);
            let mut gap = 0.0f32;
            let mut range = 0.0f32;
            for ((&l, &h), &x) in lo.iter().zip(hi).zip(p) {
                gap += max(x - h, 0.0) + max(l - x, 0.0);
                range += max(h, x) - min(l, x);
            }
            if range > 0.0 && gap > 0.0 {
                levels.push((f64::from(gap) / f64::from(range), depth));
            }
            let node = &self.inner[n as usize];
            n = if p[node.cut_dim as usize] <= node.cut_value {
                node.left
            } else {
                node.right
            };
            depth += 1.0;
        }
        let mut score = self.leaf_score(n, depth, p, pts);
        for &(prob, d) in levels.iter().rev() {
            score = prob / (d + 1.0) + (1.0 - prob) * score;
        }
        score * (f64::from(self.mass()) + 1.0).log2()
    }

    /// Like [`Self::score_fast`], also splitting the score by dimension;
    /// only anomalies are attributed, so this keeps the simple two passes.
    fn score_attributed<P: Points>(&self, p: &[f32], pts: &P, a: &mut [f64]) -> f64 {
        let mut path = Vec::with_capacity(32);
        let mut n = self.root;
        while !is_leaf(n) {
            path.push(n);
            let node = &self.inner[n as usize];
            n = if p[node.cut_dim as usize] <= node.cut_value {
                node.left
            } else {
                node.right
            };
        }
        let mut score = self.leaf_score(n, path.len() as f64, p, pts);
        let share = score / self.dims as f64;
        a.iter_mut().for_each(|x| *x = share);
        let mut gaps = vec![0.0f64; self.dims];
        for (k, &node) in path.iter().enumerate().rev() {
            let (lo, hi) = self.bbox(node);
            let mut gap = 0.0;
            let mut range = 0.0;
            for i in 0..self.dims {
                let x = f64::from(p[i]);
                let (l, h) = (f64::from(lo[i]), f64::from(hi[i]));
                gaps[i] = (x - h).max(0.0) + (l - x).max(0.0);
                gap += gaps[i];
                range += h.max(x) - l.min(x);
            }
            if range <= 0.0 || gap <= 0.0 {
                continue;
            }
            let prob = gap / range;
            let unseen = 1.0 / (k as f64 + 1.0);
            score = prob * unseen + (1.0 - prob) * score;
            for (ai, g) in a.iter_mut().zip(&gaps) {
                *ai = g / range * unseen + (1.0 - prob) * *ai;
            }
        }
        let scale = (f64::from(self.mass()) + 1.0).log2();
        a.iter_mut().for_each(|x| *x *= scale);
        score * scale
    }

    /// Values of `missing` dimensions for `p`: descend by the cuts on known
    /// dimensions; at a cut on a missing one, follow the heavier side.
    pub fn impute<P: Points>(&self, p: &[f32], missing: &[usize], pts: &P) -> Option<Vec<f32>> {
        let mut n = self.root;
        while n != NIL {
            if is_leaf(n) {
                let q = pts.point(self.leaf(n).point);
                return Some(missing.iter().map(|&i| q[i]).collect());
            }
            let node = &self.inner[n as usize];
            let d = node.cut_dim as usize;
            n = if missing.contains(&d) {
                if self.mass_of(node.left) >= self.mass_of(node.right) {
                    node.left
                } else {
                    node.right
                }
            } else if p[d] <= node.cut_value {
                node.left
            } else {
                node.right
            };
        }
        None
    }

    /// Checks masses, links and boxes; for tests.
    #[cfg(test)]
    pub fn check<P: Points>(&self, pts: &P) -> Result<u32, String> {
        type Walked = (u32, Vec<f32>, Vec<f32>);
        fn walk<P: Points>(t: &Tree, n: u32, pts: &P) -> Result<Walked, String> {
            if is_leaf(n) {
                let l = t.leaf(n);
                let p = pts.point(l.point).to_vec();
                return Ok((l.mass, p.clone(), p));
            }
            let node = &t.inner[n as usize];
            if t.parent_of(node.left) != n || t.parent_of(node.right) != n {
                return Err(format!("bad parent link under {n}"));
            }
            let (ml, lmin, lmax) = walk(t, node.left, pts)?;
            let (mr, rmin, rmax) = walk(t, node.right, pts)?;
            if ml + mr != node.mass {
                return Err(format!("mass {} != {} + {}", node.mass, ml, mr));
            }
            let (bmin, bmax) = t.bbox(n);
            for i in 0..t.dims {
                if bmin[i] != lmin[i].min(rmin[i]) || bmax[i] != lmax[i].max(rmax[i]) {
                    return Err(format!("box of {n} is stale in dim {i}"));
                }
            }
            Ok((
                node.mass,
                (0..t.dims).map(|i| lmin[i].min(rmin[i])).collect(),
                (0..t.dims).map(|i| lmax[i].max(rmax[i])).collect(),
            ))
        }
        if self.root == NIL {
            return Ok(0);
        }
        walk(self, self.root, pts).map(|(m, _, _)| m)
    }
}
