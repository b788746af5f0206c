//! Data-copying: the three-sample test C_T of Meehan, Chaudhuri & Dasgupta
//! (2020), "A Non-Parametric Test to Detect Data-Copying in Generative Models"
//! (AISTATS 2020).
//!
//! A generator *copies* its training set `T` when its samples lie closer to
//! training points than fresh data do: a model that replays (noisy) training
//! points scores well on FID, precision and MMD, yet has learnt nothing beyond
//! `T`. The test compares two distance samples:
//!
//! - `L(P_n) = { d(x, T) : x ∈ P_n }`, where `P_n` is a held-out sample of the
//!   data distribution (never seen in training) and `d(x, T)` the Euclidean
//!   distance from `x` to its nearest point of `T`;
//! - `L(Q_m) = { d(y, T) : y ∈ Q_m }`, for `m` generated samples `Q_m`.
//!
//! **Z_U** (one cell): the Mann–Whitney statistic
//! `U = Σ_{i,j} [ 1(d(Q_j) > d(P_i)) + ½·1(d(Q_j) = d(P_i)) ]`, z-scored with
//! its normal approximation under `H_0: L(P) = L(Q)`, mean `m·n/2` and
//! standard deviation `sqrt(m·n·(m+n+1)/12)` (no tie correction, as the
//! paper; the authors' code also subtracts a continuity correction of ½ from
//! the mean, which is ≤ 0.5/σ and is left out here). `Z_U ≪ 0`: the
//! generated samples are closer to `T` than held-out data are (copying);
//! `Z_U ≈ 0`: as close as fresh data; `Z_U ≫ 0`: farther (underfitting).
//!
//! **C_T**: copying can be local (one region copied, another underfit, the
//! two cancelling in a global `Z_U`), so the space is partitioned into `k`
//! cells `Π` — here by k-means on `T` (k-means++ seeding from the given seed,
//! then Lloyd iterations), every point going to the cell of its nearest
//! centre — and, with `Z_U(π)` computed on the points of cell `π` only
//! (distances to the training points of that same cell),
//! `C_T(P_n, Q_m) = Σ_{π∈Π_τ} π_P(π)·Z_U(π) / Σ_{π∈Π_τ} π_P(π)`, where
//! `π_P(π)` is the share of the held-out points in `π` and `Π_τ` keeps the
//! cells holding at least `min_generated` generated samples (the paper's
//! threshold `τ·m`; its experiments use 20 samples per cell). Meehan et al.
//! flag data-copying when C_T is well below 0 (a few standard deviations,
//! e.g. `C_T < −3`).
//!
//! The held-out and generated sets are compared at equal sizes (the first
//! `min(n, m)` rows of each), so neither dominates `U`. Everything runs on the
//! CPU in f64; nearest-neighbour distances go through row chunks of
//! `|a|² + |b|² − 2 a·b` (clamped at 0), so 10,000 × 10,000 fits in memory.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Meehan et al.'s threshold: cells with fewer generated samples are dropped.
pub const MIN_GENERATED: i64 = 20;

/// Settings of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyingOptions {
    /// `k`, the number of k-means cells (at most the training set's size).
    pub cells: i64,
    /// Cells with fewer generated samples than this are left out of C_T.
    pub min_generated: i64,
    /// Lloyd iterations of k-means (it stops earlier once no point moves).
    pub kmeans_iters: i64,
    /// Seed of the k-means++ initialisation.
    pub seed: u64,
}

impl CopyingOptions {
    /// The options used for `n` held-out points: `k = n / 40` cells, between 1
    /// and 50, so that an average cell holds twice the 20 generated samples
    /// it needs to count.
    pub fn for_size(n: i64, seed: u64) -> Self {
        CopyingOptions {
            cells: (n / (2 * MIN_GENERATED)).clamp(1, 50),
            min_generated: MIN_GENERATED,
            kmeans_iters: 30,
            seed,
        }
    }
}

/// The test's result, as written to `eval.json` (`copying`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Copying {
    /// C_T: the held-out-weighted mean of the cells' Z_U (NaN, written as
    /// null, when no cell holds enough generated samples).
    #[serde(deserialize_with = "nan_if_null")]
    pub ct: f64,
    /// Z_U of the whole space (one cell).
    #[serde(deserialize_with = "nan_if_null")]
    pub zu: f64,
    /// Cells of the partition (`k`, less any k-means left empty).
    pub cells: usize,
    /// Cells in C_T (enough generated samples and at least one held-out point).
    pub cells_kept: usize,
    pub n_train: usize,
    /// Held-out and generated points compared (equal: the smaller of the two sets).
    pub n_held_out: usize,
    pub n_generated: usize,
}

/// `null` (how serde_json writes a non-finite f64) read back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn cpu_f64(x: &Tensor) -> Tensor {
    x.detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .contiguous()
}

/// Squared distance from each row of `x` `[n,d]` to its nearest row of `t`
/// `[l,d]`, and that row's index: `([n] f64, [n] i64)`, by chunks of rows so
/// that each chunk's distance matrix holds at most 2²⁴ entries.
pub fn nearest_sq(x: &Tensor, t: &Tensor) -> (Tensor, Tensor) {
    let _g = tch::no_grad_guard();
    let (x, t) = (cpu_f64(x), cpu_f64(t));
    let (n, l) = (x.size()[0], t.size()[0]);
    assert!(l > 0, "nearest neighbours in an empty set");
    if n == 0 {
        return (
            Tensor::zeros([0], (Kind::Double, Device::Cpu)),
            Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        );
    }
    let t2 = t
        .square()
        .sum_dim_intlist(1, false, Kind::Double)
        .unsqueeze(0); // [1,l]
    let tt = t.transpose(0, 1);
    let rows = ((1i64 << 24) / l).max(1);
    let (mut ds, mut is) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < n {
        let len = rows.min(n - i);
        let a = x.narrow(0, i, len);
        let a2 = a.square().sum_dim_intlist(1, true, Kind::Double); // [len,1]
        let d2 = (a2 + &t2 - a.mm(&tt) * 2.0).clamp_min(0.0);
        let (d, idx) = d2.min_dim(1, false);
        ds.push(d);
        is.push(idx);
        i += len;
    }
    (Tensor::cat(&ds, 0), Tensor::cat(&is, 0))
}

/// Distance from each row of `x` to its nearest row of `t` (`[n]`, f64).
pub fn nearest_dist(x: &Tensor, t: &Tensor) -> Tensor {
    nearest_sq(x, t).0.sqrt()
}

/// Z_U of held-out distances `d_p` `[n]` against generated distances `d_q`
/// `[m]` (see the module's docs): `(U − m·n/2) / sqrt(m·n·(m+n+1)/12)`, with
/// `U` counting the pairs where the generated distance is the larger (ties
/// ½). NaN when either set is empty.
pub fn mann_whitney_z(d_p: &Tensor, d_q: &Tensor) -> f64 {
    let _g = tch::no_grad_guard();
    let (p, q) = (cpu_f64(d_p).view([-1]), cpu_f64(d_q).view([-1]));
    let (n, m) = (p.size()[0] as f64, q.size()[0] as f64);
    if n == 0.0 || m == 0.0 {
        return f64::NAN;
    }
    let sorted = p.sort(0, false).0;
    let none: Option<Tensor> = None;
    // Held-out distances strictly below each generated one, and those equal.
    let below = q.searchsorted(&sorted, false, false, "left", none.as_ref());
    let below_eq = q.searchsorted(&sorted, false, true, "right", none.as_ref());
    let lt = below.sum(Kind::Double).double_value(&[]);
    let le = below_eq.sum(Kind::Double).double_value(&[]);
    let u = lt + 0.5 * (le - lt);
    (u - m * n / 2.0) / (m * n * (m + n + 1.0) / 12.0).sqrt()
}

/// A uniform number in (0, 1] from (seed, counter), without libtorch's generator.
fn uniform(seed: u64, counter: u64) -> f64 {
    let h = crate::rng::mix(crate::rng::mix(seed) ^ counter);
    ((h >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// k-means of `x` `[n,d]` into at most `k` cells: k-means++ seeding drawn from
/// `seed`, then up to `iters` Lloyd iterations (stopping once no point changes
/// cell); cells left empty are dropped. Returns the centres `[k',d]` (f64, CPU).
pub fn kmeans(x: &Tensor, k: i64, iters: i64, seed: u64) -> Tensor {
    let _g = tch::no_grad_guard();
    let x = cpu_f64(x);
    let n = x.size()[0];
    assert!(n > 0, "k-means of an empty set");
    let k = k.clamp(1, n);
    // k-means++: each next centre drawn with probability ∝ squared distance
    // to the nearest centre so far (by inverting the cumulative sum).
    let first = ((uniform(seed, 0) * n as f64) as i64).min(n - 1);
    let mut chosen = vec![first];
    let mut d2 = nearest_sq(&x, &x.narrow(0, first, 1)).0;
    for j in 1..k {
        let cum = d2.cumsum(0, Kind::Double);
        let total = cum.double_value(&[n - 1]);
        let next = if total > 0.0 {
            let target = Tensor::from_slice(&[uniform(seed, j as u64) * total]);
            let none: Option<Tensor> = None;
            target
                .searchsorted(&cum, false, false, "left", none.as_ref())
                .int64_value(&[0])
                .min(n - 1)
        } else {
            // Fewer distinct points than cells: a duplicate centre, whose
            // cell ends up empty and is dropped below.
            ((uniform(seed, j as u64) * n as f64) as i64).min(n - 1)
        };
        chosen.push(next);
        d2 = d2.minimum(&nearest_sq(&x, &x.narrow(0, next, 1)).0);
    }
    let mut centres = x.index_select(0, &Tensor::from_slice(&chosen));
    let mut assign = nearest_sq(&x, &centres).1;
    for _ in 0..iters {
        let counts = assign.bincount(None::<Tensor>, k).to_kind(Kind::Double);
        let sums =
            Tensor::zeros([k, x.size()[1]], (Kind::Double, Device::Cpu)).index_add(0, &assign, &x);
        let filled = counts.gt(0.0).unsqueeze(1);
        centres = sums
            .g_div(&counts.clamp_min(1.0).unsqueeze(1))
            .where_self(&filled, &centres);
        let next = nearest_sq(&x, &centres).1;
        let moved = next.ne_tensor(&assign).any().int64_value(&[]) != 0;
        assign = next;
        if !moved {
            break;
        }
    }
    let counts = assign.bincount(None::<Tensor>, k);
    centres.index_select(0, &counts.gt(0).nonzero().squeeze_dim(1))
}

/// Rows of `x` (`[n]` cells in `cells`) in cell `c`: their indices `[n_c]`.
fn members(cells: &Tensor, c: i64) -> Tensor {
    cells.eq(c).nonzero().squeeze_dim(1)
}

/// Distance of each row of `x` to its nearest training point of its own cell.
fn in_cell_dist(x: &Tensor, cells: &Tensor, cell_train: &[Tensor]) -> Tensor {
    let mut out = Tensor::zeros([x.size()[0]], (Kind::Double, Device::Cpu));
    for (c, t) in cell_train.iter().enumerate() {
        let idx = members(cells, c as i64);
        if idx.size()[0] > 0 {
            let d = nearest_dist(&x.index_select(0, &idx), t);
            let _ = out.index_copy_(0, &idx, &d);
        }
    }
    out
}

/// The test's fixed part — the partition of the training set and the
/// held-out set's cells and distances — to score several generators against
/// the same reference.
pub struct CopyingTest {
    opts: CopyingOptions,
    centres: Tensor,
    /// The training rows of each cell.
    cell_train: Vec<Tensor>,
    train: Tensor,
    held_cells: Tensor,
    /// Held-out distances to the nearest training point: of its cell, of all.
    held_local: Tensor,
    held_global: Tensor,
}

impl CopyingTest {
    /// Partition `train` `[l,d]` by k-means and place `held_out` `[n,d]` in it.
    pub fn new(train: &Tensor, held_out: &Tensor, opts: CopyingOptions) -> Self {
        let _g = tch::no_grad_guard();
        let train = cpu_f64(train);
        let held = cpu_f64(held_out);
        let centres = kmeans(&train, opts.cells, opts.kmeans_iters, opts.seed);
        let train_cells = nearest_sq(&train, &centres).1;
        let cell_train: Vec<Tensor> = (0..centres.size()[0])
            .map(|c| train.index_select(0, &members(&train_cells, c)))
            .collect();
        let held_cells = nearest_sq(&held, &centres).1;
        let held_local = in_cell_dist(&held, &held_cells, &cell_train);
        let held_global = nearest_dist(&held, &train);
        CopyingTest {
            opts,
            centres,
            cell_train,
            train,
            held_cells,
            held_local,
            held_global,
        }
    }

    /// Cells of the partition.
    pub fn cells(&self) -> usize {
        self.cell_train.len()
    }

    /// C_T and the global Z_U of `generated` `[m,d]`, on the first
    /// `min(n, m)` rows of the held-out and of the generated set.
    pub fn score(&self, generated: &Tensor) -> Copying {
        let _g = tch::no_grad_guard();
        let gen = cpu_f64(generated);
        let n = self.held_global.size()[0].min(gen.size()[0]);
        let gen = gen.narrow(0, 0, n);
        let (p_cells, p_local) = (
            self.held_cells.narrow(0, 0, n),
            self.held_local.narrow(0, 0, n),
        );
        let q_cells = nearest_sq(&gen, &self.centres).1;
        let q_local = in_cell_dist(&gen, &q_cells, &self.cell_train);
        let zu = mann_whitney_z(
            &self.held_global.narrow(0, 0, n),
            &nearest_dist(&gen, &self.train),
        );
        let (mut num, mut den, mut kept) = (0.0, 0.0, 0);
        for c in 0..self.cells() as i64 {
            let (ip, iq) = (members(&p_cells, c), members(&q_cells, c));
            let (np, nq) = (ip.size()[0], iq.size()[0]);
            if np == 0 || nq < self.opts.min_generated {
                continue;
            }
            let z = mann_whitney_z(&p_local.index_select(0, &ip), &q_local.index_select(0, &iq));
            let w = np as f64 / n as f64;
            num += w * z;
            den += w;
            kept += 1;
        }
        Copying {
            ct: if kept > 0 { num / den } else { f64::NAN },
            zu,
            cells: self.cells(),
            cells_kept: kept,
            n_train: self.train.size()[0] as usize,
            n_held_out: n as usize,
            n_generated: n as usize,
        }
    }
}

/// The data-copying test of `generated` against training set `train` and
/// held-out set `held_out` (`[·, d]` each).
pub fn copying(
    train: &Tensor,
    held_out: &Tensor,
    generated: &Tensor,
    opts: CopyingOptions,
) -> Copying {
    CopyingTest::new(train, held_out, opts).score(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> CopyingOptions {
        CopyingOptions {
            cells: 10,
            min_generated: MIN_GENERATED,
            kmeans_iters: 30,
            seed,
        }
    }

    /// A correlated Gaussian data set in 6 dimensions.
    fn data(n: i64) -> Tensor {
        let o = (Kind::Double, Device::Cpu);
        let l = Tensor::eye(6, o) + Tensor::ones([6, 6], o).tril(-1) * 0.4;
        Tensor::randn([n, 6], o).mm(&l.transpose(0, 1)) + 1.0
    }

    #[test]
    fn z_u_matches_a_hand_computed_example() {
        let t = |v: &[f64]| Tensor::from_slice(v);
        // U = 1 + 2 + 3 = 6 pairs where the generated distance is larger;
        // mean 4.5, std sqrt(9·7/12) = sqrt(5.25).
        let z = mann_whitney_z(&t(&[1.0, 3.0, 5.0]), &t(&[6.0, 2.0, 4.0]));
        assert!((z - 1.5 / 5.25f64.sqrt()).abs() < 1e-12, "{z}");
        // Ties count ½: U = 1.5 + 1.5 + 0 = 3.
        let z = mann_whitney_z(&t(&[1.0, 2.0, 3.0]), &t(&[2.0, 2.0, 0.0]));
        assert!((z + 1.5 / 5.25f64.sqrt()).abs() < 1e-12, "{z}");
        // The same through the nearest-neighbour distances: T = {0} in 1-D.
        let pts = |v: &[f64]| Tensor::from_slice(v).view([-1, 1]);
        let r = copying(
            &pts(&[0.0]),
            &pts(&[1.0, -3.0, 5.0]),
            &pts(&[-2.0, 4.0, 6.0, 100.0]),
            CopyingOptions {
                cells: 1,
                min_generated: 3,
                kmeans_iters: 5,
                seed: 1,
            },
        );
        assert_eq!((r.cells, r.cells_kept, r.n_generated), (1, 1, 3));
        assert!((r.zu - 1.5 / 5.25f64.sqrt()).abs() < 1e-12, "{r:?}");
        assert_eq!(r.ct, r.zu);
    }

    #[test]
    fn chunked_nearest_neighbours_match_brute_force() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(3);
        let (x, t) = (data(300), data(70_000));
        let (d, i) = nearest_sq(&x, &t); // 70,000 columns: 239-row chunks
        let full = Tensor::cdist(&x, &t, 2.0, None).min_dim(1, false);
        assert!((d.sqrt() - full.0).abs().max().double_value(&[]) < 1e-9);
        assert!(i.equal(&full.1));
    }

    #[test]
    fn replayed_training_points_are_flagged() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(5);
        let train = data(3000);
        let held = data(1000);
        let pick = Tensor::randint(3000, [1000], (Kind::Int64, Device::Cpu));
        let replay = train.index_select(0, &pick) + data(1000) * 1e-4;
        let r = copying(&train, &held, &replay, opts(7));
        assert!(r.ct < -3.0 && r.zu < -3.0, "{r:?}");
        assert!(r.cells_kept >= 5 && r.cells == 10, "{r:?}");
        assert_eq!((r.n_train, r.n_held_out, r.n_generated), (3000, 1000, 1000));
    }

    #[test]
    fn fresh_draws_and_a_fitted_gaussian_are_not_flagged() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(6);
        let train = data(3000);
        let held = data(1000);
        let test = CopyingTest::new(&train, &held, opts(7));
        let fresh = test.score(&data(1000));
        assert!(fresh.ct.abs() < 3.0 && fresh.zu.abs() < 3.0, "{fresh:?}");
        let gauss = crate::eval::mmd::Gaussian::fit(&train);
        let fitted = test.score(&gauss.sample(1200));
        assert!(fitted.ct.abs() < 3.0 && fitted.zu.abs() < 3.0, "{fitted:?}");
        assert_eq!(fitted.n_generated, 1000, "compared at equal sizes");
        // Too wide a generator is far from the training points: underfitting.
        let wide = test.score(&(gauss.sample(1000).to_kind(Kind::Double) * 1.5));
        assert!(wide.ct > 3.0, "{wide:?}");
    }

    #[test]
    fn deterministic_for_a_seed() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(8);
        let (train, held, gen) = (data(2000), data(500), data(500));
        let a = copying(&train, &held, &gen, opts(3));
        let b = copying(&train, &held, &gen, opts(3));
        assert_eq!(a, b);
        let c1 = kmeans(&train, 10, 30, 3);
        assert!(c1.equal(&kmeans(&train, 10, 30, 3)));
        assert!(!c1.equal(&kmeans(&train, 10, 30, 4)));
    }

    #[test]
    fn kmeans_finds_separated_clusters_and_drops_empty_cells() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(9);
        let o = (Kind::Double, Device::Cpu);
        let offsets = Tensor::from_slice(&[0.0, 0.0, 50.0, 0.0, 0.0, 50.0]).view([3, 2]);
        let x = Tensor::randn([900, 2], o) + offsets.repeat_interleave_self_int(300, 0, None);
        let c = kmeans(&x, 3, 30, 1);
        let (d, _) = nearest_sq(&offsets, &c);
        assert!(d.max().double_value(&[]) < 0.1, "{c}");
        // Two distinct points, five cells: the duplicates' cells are dropped.
        let two = Tensor::from_slice(&[0.0, 1.0, 0.0, 1.0]).view([4, 1]);
        assert_eq!(kmeans(&two, 5, 10, 2).size(), [2, 1]);
    }

    #[test]
    fn null_ct_reads_back_as_nan() {
        let c = Copying {
            ct: f64::NAN,
            zu: -1.0,
            cells: 4,
            ..Default::default()
        };
        let v = serde_json::to_value(c).unwrap();
        assert!(v["ct"].is_null());
        let back: Copying = serde_json::from_value(v).unwrap();
        assert!(back.ct.is_nan() && back.zu == -1.0 && back.cells == 4);
    }
}
