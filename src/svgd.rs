//! Stein Variational Gradient Descent pieces (paper §3.2, Eq. 10 and 15;
//! DESIGN.md §1.5–1.8), in matrix form on any device and float kind.
//!
//! Every function takes particle sets as `[n, d]` or, batched over `G`
//! independent groups (one group per image when `particles_per_x > 1`),
//! as `[G, n, d]`; bandwidths are then `[G]`.

use tch::{Kind, Tensor};

/// Smallest bandwidth used, so identical particles cannot divide by zero.
pub const H_FLOOR: f64 = 1e-6;

fn batched(t: &Tensor) -> (Tensor, bool) {
    if t.dim() == 2 {
        (t.unsqueeze(0), true)
    } else {
        (t.shallow_clone(), false)
    }
}

/// Squared Euclidean distances between rows: `[G,n,d] × [G,m,d] → [G,n,m]`
/// (or 2-D in, 2-D out). Clamped at 0 against cancellation.
pub fn sq_dists(a: &Tensor, b: &Tensor) -> Tensor {
    let (a3, two_d) = batched(a);
    let (b3, _) = batched(b);
    let a2 = a3.square().sum_dim_intlist(-1, true, None); // [G,n,1]
    let b2 = b3.square().sum_dim_intlist(-1, true, None).transpose(1, 2); // [G,1,m]
    let d = (a2 + b2 - a3.bmm(&b3.transpose(1, 2)) * 2.0).clamp_min(0.0);
    if two_d {
        d.squeeze_dim(0)
    } else {
        d
    }
}

/// Median heuristic `h = med² / log n` (DESIGN §1.5): `med` is the median of
/// the pairwise distances over the upper triangle (i < j). For an even number
/// of pairs the lower middle value is taken (torch's `median`). Returns `[G]`
/// for batched input or a 0-d tensor for `[n, d]`; no gradient flows through.
pub fn median_bandwidth(z: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (z3, two_d) = batched(&z.detach());
    let s = z3.size();
    let (g, n) = (s[0], s[1]);
    let h = if n < 2 {
        Tensor::ones([g], (z3.kind(), z3.device()))
    } else {
        let d2 = sq_dists(&z3, &z3); // [G,n,n]
        let idx = Tensor::triu_indices(n, n, 1, (Kind::Int64, z3.device()));
        let flat = d2.view([g, n * n]);
        let lin = idx.get(0) * n + idx.get(1);
        let upper = flat.index_select(1, &lin); // [G, n(n-1)/2] squared distances
                                                // median of distances = sqrt(median of squared distances); med² is the latter.
        let med2 = upper.median_dim(1, false).0;
        (med2 / (n as f64).ln()).clamp_min(H_FLOOR)
    };
    if two_d {
        h.squeeze_dim(0)
    } else {
        h
    }
}

/// Median heuristic on at most `max_points` rows (a fixed random subset, drawn
/// from the current generator), for large sets such as the KDE bank.
pub fn median_bandwidth_subset(z: &Tensor, max_points: i64) -> Tensor {
    let n = z.size()[0];
    if n <= max_points {
        return median_bandwidth(z);
    }
    let idx = Tensor::randperm(n, (Kind::Int64, z.device())).narrow(0, 0, max_points);
    median_bandwidth(&z.index_select(0, &idx))
}

/// RBF kernel `K(a, b) = exp(-||a - b||² / h)`, `[.., n, m]`.
pub fn rbf(a: &Tensor, b: &Tensor, h: &Tensor) -> Tensor {
    let d = sq_dists(a, b);
    let h = if d.dim() == 3 {
        h.view([-1, 1, 1])
    } else {
        h.shallow_clone()
    };
    (-d / h).exp()
}

/// The Stein direction of Eq. (10)/(15) evaluated at targets `y`:
/// `Φ(y_j) = (1/n) Σ_i [K(z_i, y_j) s_i + ∇_{z_i} K(z_i, y_j)]`, with
/// `∇_{z_i} K(z_i, y) = (2/h)(y - z_i) K(z_i, y)`: two matmuls, no loops.
/// Sources `z` `[.., n, d]` with scores `s` (∇ log p at z), targets `y`
/// `[.., m, d]`, bandwidth `h`. Returns `[.., m, d]`. Computed without
/// gradient tracking: it enters the losses as a constant (stop-gradient).
pub fn stein_direction(z: &Tensor, s: &Tensor, y: &Tensor, h: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (z3, two_d) = batched(&z.detach());
    let (s3, _) = batched(&s.detach());
    let (y3, _) = batched(&y.detach());
    let n = z3.size()[1] as f64;
    let h3 = if h.dim() == 0 {
        h.view([1, 1, 1])
    } else {
        h.view([-1, 1, 1])
    };
    let k = (-sq_dists(&z3, &y3) / &h3).exp(); // [G,n,m]
    let kt = k.transpose(1, 2); // [G,m,n]
    let drive = kt.bmm(&s3); // Σ_i K_ij s_i
    let ksum = kt.sum_dim_intlist(-1, true, None); // [G,m,1]
    let repulse = (&y3 * ksum - kt.bmm(&z3)) * (h3.reciprocal() * 2.0); // Σ_i (2/h)(y_j - z_i) K_ij
    let phi = (drive + repulse) / n;
    if two_d {
        phi.squeeze_dim(0)
    } else {
        phi
    }
}

/// Kernel of an SVGD direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteinKernel {
    /// `K = exp(-d²/h)` (DESIGN §1.5).
    Rbf,
    /// Inverse multiquadric `K = (1 + d²/h)^(-1/2)`: heavier tails, so distant
    /// particles still repel.
    Imq,
}

/// [`stein_direction`] with a choice of kernel. For the IMQ kernel
/// `∇_{z_i} K(z_i, y) = (1/h)(y - z_i)(1 + d²/h)^(-3/2)`.
pub fn stein_direction_with(
    z: &Tensor,
    s: &Tensor,
    y: &Tensor,
    h: &Tensor,
    kernel: SteinKernel,
) -> Tensor {
    if kernel == SteinKernel::Rbf {
        return stein_direction(z, s, y, h);
    }
    let _guard = tch::no_grad_guard();
    let (z, s, y) = (z.detach(), s.detach(), y.detach());
    let n = z.size()[0] as f64;
    let base = (sq_dists(&z, &y) / h).g_add_scalar_(1.0); // [n,m]
    let k = base.rsqrt();
    let gk = k.pow_tensor_scalar(3) / h; // (1/h)(1 + d²/h)^(-3/2)
    let (kt, gkt) = (k.transpose(0, 1), gk.transpose(0, 1)); // [m,n]
    let drive = kt.mm(&s);
    let repulse = &y * gkt.sum_dim_intlist(-1, true, None) - gkt.mm(&z);
    (drive + repulse) / n
}

/// Bandwidth multipliers of the multi-scale kernel in [`mmd_direction`]:
/// from local (¼ of the base bandwidth) to global (8×), as moment-matching
/// networks mix scales (Li et al. 2015) so that both the placement of mass
/// within a mode and the balance between modes are matched.
/// Each scale is twice the one before ([`rbf_pull`] squares its way down).
pub const MMD_SCALES: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// `(1/m) Σ_i ∇_y K(y, b_i)` for the multi-scale RBF kernel
/// `K = Σ_s exp(−d²/(c_s h))` ([`MMD_SCALES`]):
/// `(2/h)(1/m) Σ_i W(y, b_i)(b_i − y)` with `W = Σ_s exp(−d²/(c_s h))/c_s`,
/// `[n, d]` for `y` `[n, d]`, `b` `[m, d]`. The distances and the product with
/// `b` are computed once for all scales.
fn rbf_pull(y: &Tensor, b: &Tensor, h: &Tensor, m: f64) -> Tensor {
    // One pass over the whole [n, m] matrix: in blocks of bank rows that fit
    // in cache the per-op overhead of libtorch's thread pool won (measured with
    // n = 400, m = 10,000 on 2 cores: 53 ms whole, 63 ms in 1 MB blocks, 310 ms
    // in 256 KB blocks).
    //
    // One exp, for the widest scale; each narrower one (half the width) is the
    // square of the last: exp(−x/c)² = exp(−x/(c/2)). A multiply is several
    // times cheaper than an exp (the pull runs ~2× faster; relative error ≤ 32
    // ulp at the narrowest scale). Clamped at exp(−80) ≈ 2e-35 after every step
    // — the same value a clamped exp gives — so that far pairs never become
    // subnormal floats, whose arithmetic is many times slower on x86 CPUs
    // (7.5× measured for the exp).
    const FLOOR: f64 = 1.804_851_387_845_415e-35; // exp(−80)
    let mut e = sq_dists(y, b)
        .g_div_(h)
        .g_mul_scalar_(-1.0 / MMD_SCALES[MMD_SCALES.len() - 1])
        .clamp_min_(-80.0)
        .exp_(); // [n, m]
    let mut w = &e * (1.0 / MMD_SCALES[MMD_SCALES.len() - 1]);
    for &c in MMD_SCALES.iter().rev().skip(1) {
        let _ = e.square_().clamp_min_(FLOOR);
        let _ = w.g_add_(&(&e * (1.0 / c)));
    }
    (w.mm(b) - y * w.sum_dim_intlist(-1, true, None)) * (h.reciprocal() * (2.0 / m))
}

/// Descent direction of the squared MMD between the particles and a target
/// sample (`ldc.sampler_objective = mmd`): at each `y_j`,
/// `Φ(y_j) = Σ_s [(1/M) Σ_m ∇K_s(y_j, b_m) − (1/(n−1)) Σ_{i≠j} ∇K_s(y_j, y_i)]`,
/// i.e. `−½ ∂MMD²/∂y_j · n` with `K = Σ_s exp(−d²/(c_s h))`: attraction to the
/// target sample `bank` `[M, d]`, repulsion from the other particles
/// `particles` `[n, d]` (`y` are this process's particles, a subset of them;
/// the self-pair has zero gradient). No gradient is tracked.
pub fn mmd_direction(y: &Tensor, particles: &Tensor, bank: &Tensor, h: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (y, p, b) = (y.detach(), particles.detach(), bank.detach());
    let m = b.size()[0] as f64;
    let n = p.size()[0] as f64;
    rbf_pull(&y, &b, h, m) - rbf_pull(&y, &p, h, n - 1.0)
}

/// Transport plan of semi-discrete entropic optimal transport from the
/// particles `y` `[n, d]` to the rows of `bank` `[M, d]` (`ldc.sampler_objective
/// = ot`, Genevay et al. 2016): row j is `softmax_m((g_m − |y_j − b_m|²/h)/ε)`,
/// the c-transform's soft argmin under the bank's dual potential `g` `[M]`.
/// No gradient is tracked.
pub fn ot_plan(y: &Tensor, bank: &Tensor, potential: &Tensor, h: &Tensor, eps: f64) -> Tensor {
    let _guard = tch::no_grad_guard();
    // |y_j|² is the same for every m of row j and cancels in the softmax, so
    // the logits are one fused `bias + y·Bᵀ` (4–5× faster than the full
    // distances at 1,000 × 10,000 on a CPU, where this is the step's bulk).
    let b = bank.detach();
    let inv = (h * eps).reciprocal(); // 1/(hε)
    let bias = potential * (1.0 / eps) - b.square().sum_dim_intlist(-1, false, Kind::Float) * &inv;
    let scaled = b.transpose(0, 1) * (inv * 2.0);
    bias.unsqueeze(0)
        .addmm(&y.detach(), &scaled)
        .softmax(-1, Kind::Float)
}

/// Where the plan sends each particle, minus the particle: the barycentric
/// projection `Σ_m π_jm b_m − y_j`, the descent direction of the transport
/// cost (its gradient in `y_j` up to the factor 2/h).
pub fn ot_direction(y: &Tensor, plan: &Tensor, bank: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    plan.mm(&bank.detach()) - y.detach()
}

/// The particles' barycentric projection onto the *other* particles under
/// the symmetric entropic plan of `particles` `[n, d]` with itself
/// (`ldc.ot_debias`), for this worker's rows `y`, which are rows
/// `[offset, offset + len)` of `particles`: the debiasing term of the Sinkhorn
/// divergence `OT_ε(α, β) − ½ OT_ε(α, α)` (Feydy et al. 2019), whose gradient
/// is `T_bank(y) − T_self(y)`. The entropic plan shrinks each particle toward a
/// local mean of the bank; the self-term shrinks it by as much toward the
/// local mean of its own cloud, so the difference keeps the spread.
///
/// Unless `keep_own_atom`, each particle's own atom is left out (issue 26): a
/// fresh particle is never one of the bank's atoms, so the bank term has no
/// zero-cost atom to hold it, and a self-term that keeps one shrinks less than
/// the bank term, leaving a contraction toward local means that grows as ε or
/// n shrink. Without it, particles drawn from the bank's own distribution get
/// a direction near zero (tested). With it, the direction is the exact
/// gradient of the Sinkhorn divergence between the two empirical measures,
/// and its slight contraction scored better FID on validation images, so
/// `ldc.recipe = ot` keeps it (`ldc.ot_debias_own_atom`). The symmetric
/// potential by averaged Sinkhorn iterations from zero.
pub fn ot_self_projection(
    y: &Tensor,
    particles: &Tensor,
    offset: i64,
    h: &Tensor,
    eps: f64,
    keep_own_atom: bool,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let p = particles.detach();
    let n = p.size()[0];
    assert!(n >= 2, "the OT self-term needs at least 2 particles");
    // `keep_own_atom`: the pre-issue-26 form (`ldc.ot_debias_own_atom`), for comparison.
    let own = if keep_own_atom {
        Tensor::zeros([n, n], (Kind::Bool, p.device()))
    } else {
        Tensor::eye(n, (Kind::Bool, p.device()))
    };
    let cost = (sq_dists(&p, &p) / h * (1.0 / eps)).masked_fill(&own, f64::INFINITY); // in units of ε
    let mut f = Tensor::zeros([n], (Kind::Float, p.device())); // f/ε
    for _ in 0..SELF_SINKHORN_ITERS {
        let next = -(f.unsqueeze(0) - &cost).logsumexp([1].as_slice(), false);
        f = (&f + next) * 0.5;
    }
    let rows = y.size()[0];
    let own_y = own.narrow(0, offset, rows);
    let c_y = (sq_dists(&y.detach(), &p) / h * (1.0 / eps)).masked_fill(&own_y, f64::INFINITY);
    (f.unsqueeze(0) - c_y).softmax(-1, Kind::Float).mm(&p)
}

/// Averaged Sinkhorn iterations for the symmetric potential of
/// [`ot_self_projection`] (the symmetric problem converges in a few).
const SELF_SINKHORN_ITERS: usize = 10;

/// One stochastic ascent step on the semi-dual in the bank's potential:
/// `g_m += lr · (1 − M · mean_j π_jm)`. A row that receives more than its
/// share `1/M` of the particles' mass becomes less attractive, one that
/// receives less more attractive, so at the fixed point every bank row (and
/// every cluster of them) gets its share. The step's noise is large for a
/// single row (400 particles against 10,000 rows) and averages out over the
/// rows of a cluster and over steps.
pub fn ot_potential_step(potential: &mut Tensor, plan: &Tensor, lr: f64) {
    let _guard = tch::no_grad_guard();
    let m = plan.size()[1] as f64;
    let excess = plan.mean_dim(0, false, Kind::Float) * m - 1.0; // [M]
    let _ = potential.g_add_(&(excess * (-lr)));
}

/// Leave-one-out form of a Stein direction whose targets `y` are among its
/// own sources: removes each particle's self-term (kernel weight K(y,y) = 1,
/// gradient 0) from the mean over `n` sources, `φ ← (n·φ − s)/(n − 1)`.
pub fn leave_one_out(phi: &Tensor, own_scores: &Tensor, n: i64) -> Tensor {
    let n = n as f64;
    (phi * n - own_scores.detach()) / (n - 1.0)
}

/// An affine map to whitened coordinates, `u = (z − mean)·w`, with `w` from
/// the eigendecomposition of the covariance of a reference set (eigenvalues
/// floored so that a flat direction cannot blow up).
pub struct Whitening {
    pub mean: Tensor,
    pub w: Tensor,
}

impl Whitening {
    pub fn fit(z: &Tensor) -> Whitening {
        let _guard = tch::no_grad_guard();
        let z = z.detach().to_kind(Kind::Double);
        let mean = z.mean_dim(0, true, Kind::Double);
        let c = &z - &mean;
        let cov = c.transpose(0, 1).mm(&c) / (z.size()[0] - 1).max(1) as f64;
        let (lam, v) = cov.linalg_eigh("L");
        let w = v / lam.clamp_min(1e-8).sqrt().unsqueeze(0);
        Whitening {
            mean: mean.to_kind(Kind::Float),
            w: w.to_kind(Kind::Float),
        }
    }

    /// Whitened coordinates of `z` (differentiable in `z`).
    pub fn apply(&self, z: &Tensor) -> Tensor {
        (z - &self.mean).mm(&self.w)
    }
}

/// Rule of thumb (or data-driven choice) for the KDE bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdeBandwidth {
    /// `τ² = h_bank/2`, `h_bank` the median heuristic on the bank (DESIGN §1.8).
    Median,
    /// Scott: `τ = σ̄ · n^(-1/(d+4))`, σ̄² the mean per-dimension variance.
    Scott,
    /// Silverman: Scott's `τ` times `(4/(d+2))^(1/(d+4))`.
    Silverman,
    /// The τ of a grid (multiples of Scott's) with the highest mean held-out
    /// log-likelihood: the bank's last 10% (at most 2,000 points) held out.
    HeldOut,
}

impl KdeBandwidth {
    pub fn parse(s: &str) -> KdeBandwidth {
        match s {
            "scott" => Self::Scott,
            "silverman" => Self::Silverman,
            "cv" => Self::HeldOut,
            _ => Self::Median,
        }
    }
}

/// τ² of a Gaussian KDE on `bank` `[b, d]` by `rule` (before any scale).
/// `h_bank`: the bank's median-heuristic bandwidth (used by `Median`).
pub fn kde_tau2(bank: &Tensor, rule: KdeBandwidth, h_bank: f64) -> f64 {
    match rule {
        KdeBandwidth::HeldOut => held_out_tau2(bank),
        _ => kde_tau2_tensor(bank, rule, &Tensor::from(h_bank)).double_value(&[]),
    }
}

/// [`kde_tau2`] as a 0-dim f64 tensor on the bank's device, with no host
/// read for the median, Scott and Silverman rules; the held-out search reads
/// its log-likelihoods.
pub fn kde_tau2_tensor(bank: &Tensor, rule: KdeBandwidth, h_bank: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let d = bank.size()[1] as f64;
    match rule {
        KdeBandwidth::Median => h_bank.to_kind(Kind::Double).reshape([]) / 2.0,
        KdeBandwidth::Scott => scott_tau2(bank),
        KdeBandwidth::Silverman => scott_tau2(bank) * (4.0 / (d + 2.0)).powf(2.0 / (d + 4.0)),
        KdeBandwidth::HeldOut => Tensor::from(held_out_tau2(bank)).to_device(bank.device()),
    }
}

/// Scott's τ²: mean per-dimension variance × n^(-2/(d+4)), 0-dim f64.
fn scott_tau2(bank: &Tensor) -> Tensor {
    let s = bank.size();
    let (n, d) = (s[0] as f64, s[1] as f64);
    bank.var_dim(0, true, false)
        .mean(Kind::Float)
        .to_kind(Kind::Double)
        * n.powf(-2.0 / (d + 4.0))
}

/// The held-out rule of [`KdeBandwidth::HeldOut`].
fn held_out_tau2(bank: &Tensor) -> f64 {
    let _guard = tch::no_grad_guard();
    let s = bank.size();
    let d = s[1] as f64;
    let nh = (s[0] / 10).clamp(1, 2000);
    let fit = bank.narrow(0, 0, s[0] - nh);
    let nf = (s[0] - nh) as f64;
    let base = scott_tau2(bank).double_value(&[]);
    let grid = [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.4, 2.0];
    let mut ll = [0f64; 10];
    // Held-out rows in chunks, so a 60,000-point bank needs ~50 MB.
    let mut i = 0;
    while i < nh {
        let len = 200.min(nh - i);
        let d2 = sq_dists(&bank.narrow(0, s[0] - nh + i, len), &fit);
        for (g, f) in grid.iter().enumerate() {
            ll[g] += (-&d2 / (2.0 * base * f * f))
                .logsumexp([1], false)
                .sum(Kind::Double)
                .double_value(&[]);
        }
        i += len;
    }
    let mut best = (f64::NEG_INFINITY, base);
    for (g, f) in grid.iter().enumerate() {
        let tau2 = base * f * f;
        let mean_ll =
            ll[g] / nh as f64 - 0.5 * d * (2.0 * std::f64::consts::PI * tau2).ln() - nf.ln();
        if mean_ll > best.0 {
            best = (mean_ll, tau2);
        }
    }
    best.1
}

/// Gaussian KDE log-density (up to a constant) of `y` `[m, d]` on `bank`
/// `[b, d]`: `log p(y) = logsumexp_i(-||y - b_i||² / (2τ²))` (DESIGN §1.8).
pub fn kde_log_density(y: &Tensor, bank: &Tensor, tau2: f64) -> Tensor {
    (-sq_dists(y, bank) / (2.0 * tau2)).logsumexp([1], false)
}

/// Closed-form score of [`kde_log_density`]: `(Σ_i softmax_i · b_i - y) / τ²`.
pub fn kde_score(y: &Tensor, bank: &Tensor, tau2: f64) -> Tensor {
    kde_score_t(y, bank, &Tensor::from(tau2))
}

/// [`kde_score`] with τ² a 1-element tensor (a 0-dim f64 one on the CPU
/// gives the same numbers as the f64 argument: libtorch casts both to the
/// data's dtype).
pub fn kde_score_t(y: &Tensor, bank: &Tensor, tau2: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let w = (-sq_dists(&y.detach(), bank) / (tau2 * 2.0)).softmax(1, y.kind()); // [m,b]
    (w.mm(bank) - y.detach()) / tau2
}

/// Score of `N(mean, cov)` at `y`: `-(y - mean) Σ⁻¹`; for tests and toy targets.
pub fn gaussian_score(y: &Tensor, mean: &Tensor, cov_inv: &Tensor) -> Tensor {
    -(y - mean).mm(cov_inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    fn v(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// The OT direction with a tiny ε points at the nearest bank row; the
    /// potential's step conserves Σg and lowers an over-covered row's g.
    #[test]
    fn ot_plan_direction_and_potential_step_by_hand() {
        let bank = Tensor::from_slice(&[0.0f32, 0.0, 4.0, 0.0, 0.0, 4.0]).view([3, 2]);
        let y = Tensor::from_slice(&[0.5f32, 0.0, 3.0, 1.0]).view([2, 2]);
        let h = Tensor::from(1.0f32);
        let mut g = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let plan = ot_plan(&y, &bank, &g, &h, 1e-3);
        let phi = v(&ot_direction(&y, &plan, &bank));
        for (a, b) in phi.iter().zip([-0.5, 0.0, 1.0, -1.0]) {
            assert!((a - b).abs() < 1e-5, "{phi:?}");
        }
        ot_potential_step(&mut g, &plan, 0.1);
        // Shares (½, ½, 0) against (⅓, ⅓, ⅓): g = 0.1·(1 − 3·share).
        let gv = v(&g);
        for (a, b) in gv.iter().zip([-0.05, -0.05, 0.1]) {
            assert!((a - b).abs() < 1e-5, "{gv:?}");
        }
    }

    /// Particles drawn from the bank's own distribution have nothing to
    /// transport: the debiased OT direction's pull on their spread is near
    /// zero. The plan alone (no debias), a flipped debias sign, or a self-term
    /// that keeps each particle's own atom (before issue 26) contract them.
    #[test]
    fn debiased_ot_direction_vanishes_for_particles_from_the_bank_distribution() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(3);
        // Ten clusters in 16 dimensions, as MNIST's latents: there a particle's
        // own atom holds a real share of its self-plan.
        let centres = Tensor::randn([10, 16], (Kind::Float, Device::Cpu)) * 2.0;
        let draw = |n: i64| {
            let idx = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
            centres.index_select(0, &idx) + Tensor::randn([n, 16], (Kind::Float, Device::Cpu)) * 0.8
        };
        let bank = draw(4000);
        let y = draw(500);
        let eps = 0.5;
        let h = median_bandwidth_subset(&bank, 1000);
        let potential = Tensor::zeros([4000], (Kind::Float, Device::Cpu));
        let plan = ot_plan(&y, &bank, &potential, &h, eps);
        let to_bank = ot_direction(&y, &plan, &bank); // T_bank(y) − y
        let to_self = ot_self_projection(&y, &y, 0, &h, eps, false) - &y;
        // The old self-term: each particle's own atom kept (`ldc.ot_debias_own_atom`).
        let with_own = ot_self_projection(&y, &y, 0, &h, eps, true) - &y;
        // Relative rate of change of the spread under the direction: −Σ φ·(y − ȳ) / Σ|y − ȳ|².
        let centred = &y - y.mean_dim(0, true, Kind::Float);
        let contraction = |phi: &Tensor| {
            -f64::try_from((phi * &centred).sum(Kind::Float)).unwrap()
                / f64::try_from(centred.square().sum(Kind::Float)).unwrap()
        };
        let debiased = contraction(&(&to_bank - &to_self));
        let plain = contraction(&to_bank);
        let flipped = contraction(&(&to_bank + &to_self));
        let old = contraction(&(&to_bank - &with_own));
        eprintln!("contraction: debiased {debiased:.4}, plain {plain:.4}, flipped {flipped:.4}, own atom kept {old:.4}");
        // Measured over seeds 3–5: plain 0.127–0.137, debiased |·| ≤ 0.0055,
        // own atom kept 0.020–0.024.
        assert!(plain > 0.05, "the plan alone should contract: {plain}");
        assert!(
            debiased.abs() < 0.06 * plain,
            "debiased {debiased} against plain {plain}"
        );
        assert!(
            flipped > 1.5 * plain,
            "flipped sign {flipped} against plain {plain}"
        );
        assert!(
            old > 0.12 * plain,
            "own atom kept {old} against plain {plain}"
        );
    }

    /// Without its own atom, a far-apart particle goes to the nearest other
    /// one; the plan is doubly stochastic (the symmetric potential converged),
    /// so it keeps a skewed cloud's mean while shrinking its spread.
    #[test]
    fn ot_self_projection_leaves_out_the_own_atom_and_keeps_the_mean() {
        let _rng = crate::rng::exclusive();
        let y = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0, 0.0, 10.0, 20.0, 0.0]).view([4, 2]);
        let h = Tensor::from(1.0f32);
        let t = ot_self_projection(&y, &y, 0, &h, 0.1, false);
        // (20, 0)'s nearest other particle is (10, 0); nothing stays on itself.
        let last = Vec::<f32>::try_from(t.get(3)).unwrap();
        assert!(
            (last[0] - 10.0).abs() < 1e-3 && last[1].abs() < 1e-3,
            "{last:?}"
        );
        assert!(
            f64::try_from((&t - &y).abs().sum_dim_intlist(1, false, Kind::Float).min()).unwrap()
                > 1.0
        );
        // A worker's rows (offset 2) get the same rows as the whole set.
        let part = ot_self_projection(&y.narrow(0, 2, 2), &y, 2, &h, 0.1, false);
        assert!(part.allclose(&t.narrow(0, 2, 2), 1e-5, 1e-5, false));
        // A 16-dimensional cloud: the symmetric potential converges in the
        // few iterations used, so the plan is doubly stochastic and the
        // projection keeps the cloud's mean.
        tch::manual_seed(1);
        let p = Tensor::randn([200, 16], (Kind::Float, Device::Cpu)) + 1.0;
        let h = median_bandwidth(&p);
        let t = ot_self_projection(&p, &p, 0, &h, 1.0, false);
        let mean = |x: &Tensor| v(&x.mean_dim(0, false, Kind::Float));
        let (mt, mp) = (mean(&t), mean(&p));
        for k in 0..16 {
            assert!((mt[k] - mp[k]).abs() < 2e-2, "mean {mt:?} against {mp:?}");
        }
        let var = |x: &Tensor| f64::try_from(x.var_dim(0, true, false).sum(Kind::Float)).unwrap();
        assert!(var(&t) < var(&p));
    }

    /// The point of the potential (semi-discrete OT): particles drawn afresh
    /// each step from a source with 3/4 of its mass near one of two equal
    /// clusters; once the potential has converged the plan sends half the
    /// mass to each cluster (so the directions move the surplus across),
    /// where with the potential frozen (lr 0) it sends 3/4 to the nearer.
    #[test]
    fn ot_potential_balances_the_plan_between_clusters() {
        let _rng = crate::rng::exclusive();
        let run = |lr: f64| -> f64 {
            tch::manual_seed(3);
            let a = Tensor::randn([100, 2], (Kind::Float, Device::Cpu)) * 0.3;
            let bank = Tensor::cat(&[&a - 3.0, &a + 3.0], 0); // clusters at ∓3
            let mut g = Tensor::zeros([200], (Kind::Float, Device::Cpu));
            let h = Tensor::from(10.0f32);
            let mut right = 0.0;
            for i in 0..3000 {
                let noise = Tensor::randn([40, 2], (Kind::Float, Device::Cpu)) * 0.5;
                let y = Tensor::cat(
                    &[noise.narrow(0, 0, 30) - 3.0, noise.narrow(0, 30, 10) + 3.0],
                    0,
                );
                let plan = ot_plan(&y, &bank, &g, &h, 0.1);
                ot_potential_step(&mut g, &plan, lr);
                if i >= 2000 {
                    let r = plan.narrow(1, 100, 100).sum(Kind::Float) / 40.0;
                    right += r.double_value(&[]) / 1000.0;
                }
            }
            right
        };
        let (frozen, balancing) = (run(0.0), run(0.01));
        assert!((frozen - 0.25).abs() < 0.01, "frozen potential: {frozen}");
        assert!(
            (balancing - 0.5).abs() < 0.05,
            "the potential should split the plan's mass in half, got {balancing}"
        );
    }

    /// IMQ direction against a per-pair loop; leave-one-out against the same
    /// loop without the i = j term.
    #[test]
    fn imq_and_leave_one_out_match_brute_force() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(4);
        let (n, d) = (6usize, 3usize);
        let y = Tensor::randn([n as i64, d as i64], F64);
        let s = Tensor::randn([n as i64, d as i64], F64);
        let h = Tensor::from(0.9f64);
        let (yv, sv) = (v(&y), v(&s));
        let brute = |imq: bool, skip_self: bool| -> Vec<f64> {
            let mut out = vec![0.0; n * d];
            for j in 0..n {
                for i in 0..n {
                    if skip_self && i == j {
                        continue;
                    }
                    let d2: f64 = (0..d)
                        .map(|e| (yv[i * d + e] - yv[j * d + e]).powi(2))
                        .sum();
                    let (k, gk) = if imq {
                        let b = 1.0 + d2 / 0.9;
                        (b.powf(-0.5), b.powf(-1.5) / 0.9)
                    } else {
                        ((-d2 / 0.9).exp(), 2.0 / 0.9 * (-d2 / 0.9).exp())
                    };
                    for c in 0..d {
                        out[j * d + c] += k * sv[i * d + c] + gk * (yv[j * d + c] - yv[i * d + c]);
                    }
                }
            }
            let denom = if skip_self { n - 1 } else { n } as f64;
            out.iter().map(|x| x / denom).collect()
        };
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
        let imq = stein_direction_with(&y, &s, &y, &h, SteinKernel::Imq);
        assert!(close(&v(&imq), &brute(true, false)));
        let rbf_loo = leave_one_out(&stein_direction(&y, &s, &y, &h), &s, n as i64);
        assert!(close(&v(&rbf_loo), &brute(false, true)));
        let imq_loo = leave_one_out(&imq, &s, n as i64);
        assert!(close(&v(&imq_loo), &brute(true, true)));
    }

    /// The MMD direction is −(n/2) times the gradient of the unbiased squared
    /// MMD (multi-scale RBF) with respect to each particle, by autograd; and a
    /// few steps along it bring particles drawn off-target closer to the bank.
    #[test]
    fn mmd_direction_is_the_scaled_negative_mmd_gradient() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(6);
        let (n, m, d) = (7i64, 9i64, 3i64);
        let y = Tensor::randn([n, d], F64) + 1.0;
        let b = Tensor::randn([m, d], F64);
        let h = Tensor::from(0.7f64);
        let mmd2 = |y: &Tensor| -> Tensor {
            let mut u = Tensor::zeros([], F64);
            for c in MMD_SCALES {
                let hs = &h * c;
                let kyy = (-sq_dists(y, y) / &hs).exp();
                let off = kyy.sum(Kind::Double) - kyy.diagonal(0, 0, 1).sum(Kind::Double);
                u = u + off / (n * (n - 1)) as f64
                    - (-sq_dists(y, &b) / &hs).exp().mean(Kind::Double) * 2.0;
            }
            u
        };
        let yg = y.set_requires_grad(true);
        let g = Tensor::run_backward(&[mmd2(&yg)], &[&yg], false, false)
            .pop()
            .unwrap();
        let phi = mmd_direction(&y, &y, &b, &h);
        let expect = g * (-(n as f64) / 2.0);
        let err = (&phi - &expect).abs().max().double_value(&[]);
        assert!(err < 1e-10, "max |Φ − (−n/2)∇MMD²| = {err}");
        let mut z = y.copy();
        let before = mmd2(&z).double_value(&[]);
        for _ in 0..20 {
            z = &z + mmd_direction(&z, &z, &b, &h) * 0.05;
        }
        let after = mmd2(&z).double_value(&[]);
        assert!(after < before - 0.05, "MMD² {before} → {after}");
    }

    /// The squaring cascade of [`rbf_pull`] in f32 gives the pull of the
    /// multi-scale kernel computed with one exp per scale, near and far pairs
    /// alike (the scales must double for the cascade to hold).
    #[test]
    fn rbf_pull_squaring_matches_one_exp_per_scale() {
        let _rng = crate::rng::exclusive();
        assert!(MMD_SCALES.windows(2).all(|w| w[1] == 2.0 * w[0]));
        tch::manual_seed(8);
        let opts = (Kind::Float, Device::Cpu);
        let y = Tensor::randn([50, 16], opts);
        let b = Tensor::randn([300, 16], opts) * 2.0;
        let h = Tensor::from(0.6f32);
        let got = rbf_pull(&y, &b, &h, 300.0);
        let (y64, b64, h64) = (y.to_kind(Kind::Double), b.to_kind(Kind::Double), 0.6f64);
        let d2 = sq_dists(&y64, &b64);
        let mut w = d2.zeros_like();
        for c in MMD_SCALES {
            w += (-&d2 / (c * h64)).exp() / c;
        }
        let want = (w.mm(&b64) - &y64 * w.sum_dim_intlist(-1, true, None)) * (2.0 / h64 / 300.0);
        let scale = want.abs().max().double_value(&[]);
        let err = (got.to_kind(Kind::Double) - &want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            scale > 0.0 && err < 1e-5 * scale,
            "max error {err} against {scale}"
        );
    }

    /// Whitened coordinates have zero mean and identity covariance.
    #[test]
    fn whitening_gives_identity_covariance() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(5);
        let a = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 1.5, 0.3, 0.0, 0.0, -0.4, 0.2]).view([3, 3]);
        let z = Tensor::randn([5000, 3], (Kind::Float, Device::Cpu)).mm(&a) + 3.0;
        let w = Whitening::fit(&z);
        let u = w.apply(&z).to_kind(Kind::Double);
        let c = &u - u.mean_dim(0, true, Kind::Double);
        let cov = c.transpose(0, 1).mm(&c) / 4999.0;
        let eye = Tensor::eye(3, F64);
        assert!(cov.allclose(&eye, 1e-4, 1e-4, false), "{cov:?}");
        assert!(
            u.mean_dim(0, false, Kind::Double)
                .abs()
                .max()
                .double_value(&[])
                < 1e-4
        );
    }

    /// Scott's and Silverman's τ² by their formulas; held-out likelihood on a
    /// Gaussian sample picks a τ near the rules of thumb (which are derived
    /// for exactly that case), and a much smaller one for a tight mixture.
    #[test]
    fn kde_bandwidth_rules() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(6);
        let (n, d) = (4000i64, 4i64);
        let z = Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 2.0;
        let var = z
            .var_dim(0, true, false)
            .mean(Kind::Float)
            .double_value(&[]);
        let scott = kde_tau2(&z, KdeBandwidth::Scott, 0.0);
        let want = var * (n as f64).powf(-2.0 / 8.0);
        assert!((scott / want - 1.0).abs() < 1e-6);
        let silver = kde_tau2(&z, KdeBandwidth::Silverman, 0.0);
        assert!((silver / (want * (4.0f64 / 6.0).powf(0.25)) - 1.0).abs() < 1e-6);
        assert_eq!(kde_tau2(&z, KdeBandwidth::Median, 0.8), 0.4);
        let cv = kde_tau2(&z, KdeBandwidth::HeldOut, 0.0);
        assert!(
            (0.25..4.0).contains(&(cv / scott)),
            "cv {cv} vs scott {scott}"
        );
        // Ten tight clusters far apart: the held-out choice is far below Scott's
        // (which sees only the overall variance).
        let centres = Tensor::randn([10, d], (Kind::Float, Device::Cpu)) * 10.0;
        let idx = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10);
        let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let mix = (centres.index_select(0, &idx)
            + Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 0.1)
            .index_select(0, &perm);
        let cv = kde_tau2(&mix, KdeBandwidth::HeldOut, 0.0);
        let scott = kde_tau2(&mix, KdeBandwidth::Scott, 0.0);
        assert!(cv < 0.1 * scott, "cv {cv} vs scott {scott}");
    }

    #[test]
    fn phi_matches_brute_force() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(3);
        let (n, m, d) = (7, 5, 3);
        let z = Tensor::randn([n, d], F64);
        let s = Tensor::randn([n, d], F64);
        let y = Tensor::randn([m, d], F64);
        let h = Tensor::from(0.7f64);
        let phi = v(&stein_direction(&z, &s, &y, &h));
        let (zv, sv, yv) = (v(&z), v(&s), v(&y));
        for j in 0..m as usize {
            for c in 0..d as usize {
                let mut acc = 0.0;
                for i in 0..n as usize {
                    let mut d2 = 0.0;
                    for e in 0..d as usize {
                        d2 += (zv[i * 3 + e] - yv[j * 3 + e]).powi(2);
                    }
                    let k = (-d2 / 0.7).exp();
                    acc += k * sv[i * 3 + c] + 2.0 / 0.7 * (yv[j * 3 + c] - zv[i * 3 + c]) * k;
                }
                let want = acc / n as f64;
                assert!(
                    (phi[j * 3 + c] - want).abs() < 1e-5,
                    "{} vs {}",
                    phi[j * 3 + c],
                    want
                );
            }
        }
        // f32 agrees with f64.
        let phi32 = stein_direction(
            &z.to_kind(Kind::Float),
            &s.to_kind(Kind::Float),
            &y.to_kind(Kind::Float),
            &h.to_kind(Kind::Float),
        );
        let d = v(&phi32)
            .iter()
            .zip(&phi)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-5, "f32 vs f64 differ by {d}");
    }

    #[test]
    fn batched_phi_equals_per_group() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(4);
        let z = Tensor::randn([3, 6, 2], F64);
        let s = Tensor::randn([3, 6, 2], F64);
        let h = median_bandwidth(&z);
        assert_eq!(h.size(), vec![3]);
        let phi = stein_direction(&z, &s, &z, &h);
        for g in 0..3 {
            let hg = median_bandwidth(&z.get(g));
            assert!((hg.double_value(&[]) - h.double_value(&[g])).abs() < 1e-12);
            let pg = stein_direction(&z.get(g), &s.get(g), &z.get(g), &hg);
            assert!(pg.allclose(&phi.get(g), 1e-10, 1e-12, false));
        }
    }

    #[test]
    fn kernel_gradient_matches_autograd() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(5);
        let z = Tensor::randn([4, 3], F64).set_requires_grad(true);
        let y = Tensor::randn([2, 3], F64);
        let h = Tensor::from(1.3f64);
        // Σ_j K(z_i, y_j) differentiated w.r.t. z_i gives Σ_j ∇_{z_i}K(z_i, y_j);
        // with zero scores, n·Φ summed over targets is Σ_ij ∇_{z_i}K — compare
        // the per-target kernel gradient for one target.
        let y0 = y.narrow(0, 0, 1);
        let k = rbf(&z, &y0, &h).sum(Kind::Double);
        let g = Tensor::run_backward(&[k], &[&z], false, false)
            .pop()
            .unwrap(); // [4,3]
                       // Analytic ∇_{z_i}K(z_i, y) = (2/h)(y - z_i) K(z_i, y)
        let zd = z.detach();
        let kk = rbf(&zd, &y0, &h); // [4,1]
        let analytic = (&y0 - &zd) * kk * (2.0 / 1.3);
        assert!(g.allclose(&analytic, 1e-10, 1e-12, false));
        // And Φ's kernel term (zero scores) is the mean of that gradient.
        let phi = stein_direction(&zd, &zd.zeros_like(), &y0, &h);
        assert!(phi.allclose(
            &analytic.mean_dim(0, true, Kind::Double),
            1e-10,
            1e-12,
            false
        ));
    }

    #[test]
    fn bandwidth_is_median_squared_over_log_n() {
        let _rng = crate::rng::exclusive();
        // Points on a line at 0, 1, 3, 7: distances 1,3,7,2,6,4 → sorted 1,2,3,4,6,7;
        // lower median 3 → h = 9 / ln 4.
        let z = Tensor::from_slice(&[0.0f64, 1.0, 3.0, 7.0]).view([4, 1]);
        let h = median_bandwidth(&z).double_value(&[]);
        assert!((h - 9.0 / 4f64.ln()).abs() < 1e-12, "h = {h}");
        // Three points: distances 1, 3, 2 → median 2 → h = 4 / ln 3.
        let z = Tensor::from_slice(&[0.0f64, 1.0, 3.0]).view([3, 1]);
        assert!((median_bandwidth(&z).double_value(&[]) - 4.0 / 3f64.ln()).abs() < 1e-12);
        // Degenerate sets are floored, not zero.
        let z = Tensor::zeros([5, 2], F64);
        assert_eq!(median_bandwidth(&z).double_value(&[]), H_FLOOR);
        let z = Tensor::zeros([1, 2], F64);
        assert_eq!(median_bandwidth(&z).double_value(&[]), 1.0);
    }

    /// The device-side τ² equals the f64 one for every rule, and the score
    /// with a tensor τ² equals the one with an f64 τ² bit for bit.
    #[test]
    fn kde_tau2_tensor_matches_f64() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(11);
        let z = Tensor::randn([300, 8], (Kind::Float, Device::Cpu));
        let h = median_bandwidth(&z);
        for rule in [
            KdeBandwidth::Median,
            KdeBandwidth::Scott,
            KdeBandwidth::Silverman,
            KdeBandwidth::HeldOut,
        ] {
            let a = kde_tau2(&z, rule, h.double_value(&[]));
            let b = kde_tau2_tensor(&z, rule, &h);
            assert_eq!(b.kind(), Kind::Double);
            assert_eq!(a, b.double_value(&[]), "{rule:?}");
        }
        let y = Tensor::randn([20, 8], (Kind::Float, Device::Cpu));
        let t = kde_tau2_tensor(&z, KdeBandwidth::Median, &h) * 0.3;
        let s1 = kde_score(&y, &z, t.double_value(&[]));
        let s2 = kde_score_t(&y, &z, &t);
        assert!(s1.equal(&s2));
    }

    #[test]
    fn kde_score_matches_autograd() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(6);
        let bank = Tensor::randn([50, 4], F64);
        let y = (Tensor::randn([6, 4], F64) * 2.0).set_requires_grad(true);
        let lp = kde_log_density(&y, &bank, 0.3).sum(Kind::Double);
        let g = Tensor::run_backward(&[lp], &[&y], false, false)
            .pop()
            .unwrap();
        let s = kde_score(&y.detach(), &bank, 0.3);
        assert!(
            g.allclose(&s, 1e-9, 1e-10, false),
            "max diff {}",
            (g - s).abs().max().double_value(&[])
        );
    }

    fn run_svgd(mut x: Tensor, score: impl Fn(&Tensor) -> Tensor, steps: usize, lr: f64) -> Tensor {
        for _ in 0..steps {
            let h = median_bandwidth(&x);
            let phi = stein_direction(&x, &score(&x), &x, &h);
            x += phi * lr;
        }
        x
    }

    #[test]
    fn svgd_reaches_a_gaussian() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(7);
        let mean = Tensor::from_slice(&[2.0f64, -1.0]).view([1, 2]);
        let cov = Tensor::from_slice(&[1.0f64, 0.6, 0.6, 0.8]).view([2, 2]);
        let cov_inv = cov.inverse();
        // Badly placed start: a tight blob far from the mean.
        let x0 =
            Tensor::randn([200, 2], F64) * 0.1 + Tensor::from_slice(&[-4.0f64, 5.0]).view([1, 2]);
        let x = run_svgd(x0, |x| gaussian_score(x, &mean, &cov_inv), 3000, 0.1);
        let m = x.mean_dim(0, true, Kind::Double);
        let err = (&m - &mean).abs().max().double_value(&[]);
        assert!(err < 0.05, "mean off by {err}: {m:?}");
        let xc = &x - &m;
        let c = xc.transpose(0, 1).mm(&xc) / 199.0;
        let rel = ((&c - &cov).abs() / cov.abs().max())
            .max()
            .double_value(&[]);
        assert!(rel < 0.10, "covariance off by {:.1}%: {c:?}", rel * 100.0);
    }

    #[test]
    fn svgd_covers_both_modes_of_a_mixture() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(8);
        // Equal mixture of N((-3,0), I) and N((3,0), I).
        let mus = Tensor::from_slice(&[-3.0f64, 0.0, 3.0, 0.0]).view([2, 2]);
        let score = |x: &Tensor| {
            let d = sq_dists(x, &mus); // [n,2]
            let w = (-d / 2.0).softmax(1, Kind::Double);
            w.mm(&mus) - x
        };
        let x0 = Tensor::randn([100, 2], F64) * 0.5;
        let x = run_svgd(x0, score, 1000, 0.2);
        let left = i64::try_from(x.select(1, 0).lt(0.0).sum(Kind::Int64)).unwrap();
        assert!(
            (25..=75).contains(&left),
            "{left} of 100 particles in the left mode"
        );
        let far = i64::try_from(x.select(1, 0).abs().gt(1.5).sum(Kind::Int64)).unwrap();
        assert!(far > 70, "only {far} particles near a mode");
    }
}
