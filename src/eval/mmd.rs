//! Latent-consistency numbers (the paper shows Fig. 2 only as a picture):
//! squared MMD with an RBF kernel between two latent sets, and the ex-post
//! Gaussian baseline it is compared against (DESIGN.md §1.8, §4).

use tch::{Kind, Tensor};

/// Unbiased squared MMD between `a` `[n,d]` and `b` `[m,d]` with the kernel
/// `exp(-||x-y||² / (2 ℓ²))`, `ℓ` the median pairwise distance of the pooled
/// set (on at most 2,000 pooled points). Computed in f64. Two samples of the
/// same distribution give ≈ 0 (it can be slightly negative).
pub fn mmd2_rbf(a: &Tensor, b: &Tensor) -> f64 {
    let _g = tch::no_grad_guard();
    let a = a.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let b = b.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let pooled = Tensor::cat(&[&a, &b], 0);
    let sub = if pooled.size()[0] > 2000 {
        // Deterministic subset: every k-th row.
        let k = pooled.size()[0] / 2000 + 1;
        pooled.slice(0, 0, None, k)
    } else {
        pooled
    };
    let d2 = crate::svgd::sq_dists(&sub, &sub);
    let n = sub.size()[0];
    let idx = Tensor::triu_indices(n, n, 1, (Kind::Int64, tch::Device::Cpu));
    let upper = d2
        .view([n * n])
        .index_select(0, &(idx.get(0) * n + idx.get(1)));
    let ell2 = upper.median().double_value(&[]).max(1e-12);
    let k = |x: &Tensor, y: &Tensor| (-crate::svgd::sq_dists(x, y) / (2.0 * ell2)).exp();
    let (n, m) = (a.size()[0] as f64, b.size()[0] as f64);
    let kaa = k(&a, &a);
    let kbb = k(&b, &b);
    let kab = k(&a, &b);
    let saa =
        (kaa.sum(Kind::Double).double_value(&[]) - kaa.trace().double_value(&[])) / (n * (n - 1.0));
    let sbb =
        (kbb.sum(Kind::Double).double_value(&[]) - kbb.trace().double_value(&[])) / (m * (m - 1.0));
    let sab = kab.sum(Kind::Double).double_value(&[]) / (n * m);
    saa + sbb - 2.0 * sab
}

/// A full-covariance Gaussian fitted to `x` `[n,d]` (mean, Cholesky factor), f64.
pub struct Gaussian {
    pub mean: Tensor,
    pub chol: Tensor,
}

impl Gaussian {
    pub fn fit(x: &Tensor) -> Gaussian {
        let x = x.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let n = x.size()[0] as f64;
        let d = x.size()[1];
        let mean = x.mean_dim(0, true, Kind::Double);
        let xc = &x - &mean;
        let cov = xc.transpose(0, 1).mm(&xc) / (n - 1.0)
            + Tensor::eye(d, (Kind::Double, tch::Device::Cpu)) * 1e-6;
        let chol = cov.linalg_cholesky(false);
        Gaussian { mean, chol }
    }

    /// `n` samples from the current generator, f32.
    pub fn sample(&self, n: i64) -> Tensor {
        let d = self.mean.size()[1];
        let e = Tensor::randn([n, d], (Kind::Double, tch::Device::Cpu));
        (e.mm(&self.chol.transpose(0, 1)) + &self.mean).to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmd_separates_different_distributions_and_not_equal_ones() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(11);
        let o = (Kind::Float, tch::Device::Cpu);
        let a = Tensor::randn([500, 4], o);
        let b = Tensor::randn([500, 4], o);
        let c = Tensor::randn([500, 4], o) * 1.5 + 0.5;
        let same = mmd2_rbf(&a, &b);
        let diff = mmd2_rbf(&a, &c);
        assert!(same.abs() < 0.01, "same distribution: {same}");
        assert!(diff > 0.05, "different distributions: {diff}");
    }

    #[test]
    fn fitted_gaussian_reproduces_moments() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(12);
        let o = (Kind::Double, tch::Device::Cpu);
        let l = Tensor::from_slice(&[1.0f64, 0.0, 0.8, 0.5]).view([2, 2]);
        let x = Tensor::randn([4000, 2], o).mm(&l.transpose(0, 1)) + 3.0;
        let g = Gaussian::fit(&x);
        let s = g.sample(4000).to_kind(Kind::Double);
        let m = s.mean_dim(0, false, Kind::Double);
        assert!((m - 3.0).abs().max().double_value(&[]) < 0.1);
        let cov_true = l.mm(&l.transpose(0, 1));
        let sc = &s - s.mean_dim(0, true, Kind::Double);
        let cov = sc.transpose(0, 1).mm(&sc) / 3999.0;
        assert!((cov - cov_true).abs().max().double_value(&[]) < 0.1);
    }
}
