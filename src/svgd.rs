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

/// Gaussian KDE log-density (up to a constant) of `y` `[m, d]` on `bank`
/// `[b, d]`: `log p(y) = logsumexp_i(-||y - b_i||² / (2τ²))` (DESIGN §1.8).
pub fn kde_log_density(y: &Tensor, bank: &Tensor, tau2: f64) -> Tensor {
    (-sq_dists(y, bank) / (2.0 * tau2)).logsumexp([1], false)
}

/// Closed-form score of [`kde_log_density`]: `(Σ_i softmax_i · b_i - y) / τ²`.
pub fn kde_score(y: &Tensor, bank: &Tensor, tau2: f64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let w = (-sq_dists(&y.detach(), bank) / (2.0 * tau2)).softmax(1, y.kind()); // [m,b]
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
