//! Ex-post density on latents: a K-component full-covariance Gaussian mixture
//! fitted by EM (the RAE paper's sampler, Ghosh et al. 2020 §4), usable by any
//! model (RAE variants sample from it; any model's sampler can be compared
//! with [`fit_gaussian`] or a mixture fitted to its encoder latents).
//!
//! Settings follow the RAE reference implementation
//! (`ParthaEth/Regularized_autoencoders-RAE-`, `my_utility/estimate_density_and_sample.py`,
//! method "GMM": `sklearn.mixture.GaussianMixture(n_components, covariance_type='full',
//! max_iter=2000, tol=1e-3)`, sklearn's default `reg_covar=1e-6`), with k-means++
//! seeding followed by Lloyd iterations (sklearn's default `init_params='kmeans'`).
//!
//! The EM runs on tch tensors in f64: the problem is small (tens of thousands of
//! points in ≤ 128 dimensions, ≤ a few dozen components), libtorch already has
//! batched Cholesky and triangular solves, and no extra crate is needed. f64
//! because the log-densities of well-separated points and the covariance
//! updates lose too much in f32 (log-likelihood changes of 1e-3 are the
//! convergence test).

use crate::rng::{derive, mix, Stream};
use anyhow::{bail, Result};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Covariance floor added to every component's diagonal (sklearn's `reg_covar`).
pub const COV_FLOOR: f64 = 1e-6;
/// Convergence tolerance on the change of the mean per-point log-likelihood
/// (reference: `tol=1e-3`).
pub const DEFAULT_TOL: f64 = 1e-3;
/// Reference: `max_iter=2000`.
pub const DEFAULT_MAX_ITER: usize = 2000;

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// A Gaussian mixture. Parameters are f64, on the device of the data it was
/// fitted on; `chol` holds the lower Cholesky factors of the covariances.
#[derive(Debug)]
pub struct Gmm {
    /// `[K]`, sums to 1.
    pub weights: Tensor,
    /// `[K, d]`.
    pub means: Tensor,
    /// `[K, d, d]`, lower triangular, `Σ_k = L_k L_kᵀ`.
    pub chol: Tensor,
    /// Mean per-point log-likelihood of the training data at the end of the fit.
    pub log_likelihood: f64,
    /// EM iterations run.
    pub iterations: usize,
}

/// A small deterministic uniform generator (SplitMix64) for the k-means++ draws.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = mix(self.0);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Squared distances `[N, K]` between rows of `x` `[N, d]` and `c` `[K, d]`.
fn sq_dists(x: &Tensor, c: &Tensor) -> Tensor {
    (x.square().sum_dim_intlist(1, true, Kind::Double)
        + c.square()
            .sum_dim_intlist(1, false, Kind::Double)
            .unsqueeze(0)
        - x.mm(&c.transpose(0, 1)) * 2.0)
        .clamp_min(0.0)
}

fn all_finite(t: &Tensor) -> bool {
    bool::try_from(t.isfinite().all()).unwrap_or(false)
}

impl Gmm {
    pub fn num_components(&self) -> i64 {
        self.weights.size()[0]
    }
    pub fn dim(&self) -> i64 {
        self.means.size()[1]
    }

    /// Covariances `[K, d, d]`.
    pub fn covariances(&self) -> Tensor {
        self.chol.matmul(&self.chol.transpose(1, 2))
    }

    /// Fit `k` components to the rows of `x` `[N, d]` by EM, with the
    /// reference's tolerance. Deterministic in `seed`.
    pub fn fit(x: &Tensor, k: usize, seed: u64, max_iter: usize) -> Result<Gmm> {
        Self::fit_with_tol(x, k, seed, max_iter, DEFAULT_TOL)
    }

    pub fn fit_with_tol(x: &Tensor, k: usize, seed: u64, max_iter: usize, tol: f64) -> Result<Gmm> {
        let _g = tch::no_grad_guard();
        if x.dim() != 2 {
            bail!("GMM fit: data must be [N, d], got shape {:?}", x.size());
        }
        let x = x.detach().to_kind(Kind::Double);
        let (n, d) = (x.size()[0], x.size()[1]);
        let k = k as i64;
        if k < 1 || n < k || n < 2 {
            bail!("GMM fit: {n} points cannot fit {k} components");
        }
        if !all_finite(&x) {
            bail!("GMM fit: the data contain non-finite values (NaN/Inf latents)");
        }
        // Initial hard assignment: k-means++ seeding, then Lloyd iterations.
        let labels = kmeans(&x, k, seed, 100);
        let mut resp = labels.one_hot(k).to_kind(Kind::Double);
        let mut gmm = Gmm {
            weights: Tensor::new(),
            means: Tensor::new(),
            chol: Tensor::new(),
            log_likelihood: f64::NEG_INFINITY,
            iterations: 0,
        };
        let mut prev = f64::NEG_INFINITY;
        for it in 0..max_iter.max(1) {
            gmm.m_step(&x, &resp)?;
            let (log_resp, ll) = gmm.e_step(&x);
            if !ll.is_finite() {
                bail!("GMM fit: log-likelihood became {ll} at EM iteration {it} ({k} components, {n} points in {d}-D)");
            }
            resp = log_resp.exp();
            gmm.log_likelihood = ll;
            gmm.iterations = it + 1;
            if (ll - prev).abs() < tol {
                // Final M-step so the parameters match the last responsibilities.
                gmm.m_step(&x, &resp)?;
                gmm.log_likelihood = gmm.e_step(&x).1;
                return Ok(gmm);
            }
            prev = ll;
        }
        bail!(
            "GMM fit did not converge in {max_iter} EM iterations ({k} components, {n} points in {d}-D; \
             last change of the mean log-likelihood {:.3e} > tol {tol:e}); raise the iteration limit or use fewer components",
            (gmm.log_likelihood - prev).abs()
        )
    }

    /// M-step from responsibilities `[N, K]`.
    fn m_step(&mut self, x: &Tensor, resp: &Tensor) -> Result<()> {
        let (n, d) = (x.size()[0], x.size()[1]);
        // sklearn adds 10·eps to the counts so empty components stay finite.
        let nk = resp.sum_dim_intlist(0, false, Kind::Double) + 10.0 * f64::EPSILON; // [K]
        let means = resp.transpose(0, 1).mm(x) / nk.unsqueeze(1); // [K, d]
        let eye = Tensor::eye(d, (Kind::Double, x.device())) * COV_FLOOR;
        // One component at a time: [N, d] temporaries instead of [K, N, d]
        // (50,000 CIFAR latents × 128 dims × 10 components would be 0.5 GB each).
        let covs: Vec<Tensor> = (0..means.size()[0])
            .map(|k| {
                let diff = x - means.get(k).unsqueeze(0); // [N, d]
                let w = resp.select(1, k).unsqueeze(1); // [N, 1]
                (&diff * w).transpose(0, 1).mm(&diff) / nk.get(k) + &eye
            })
            .collect();
        let covs = Tensor::stack(&covs, 0);
        let (chol, info) = covs.linalg_cholesky_ex(false, false);
        if info.abs().sum(Kind::Int64).int64_value(&[]) != 0 || !all_finite(&chol) {
            bail!("GMM fit: a component covariance is not positive definite even with the {COV_FLOOR:e} floor (non-finite or degenerate latents?)");
        }
        self.weights = &nk / n as f64;
        self.means = means;
        self.chol = chol;
        Ok(())
    }

    /// Per-component log-densities plus log-weights, `[N, K]`.
    fn weighted_log_probs(&self, x: &Tensor) -> Tensor {
        let d = self.dim();
        // Mahalanobis distances per component via L y = (x − μ)ᵀ, one component
        // at a time to keep temporaries at [d, N].
        let maha: Vec<Tensor> = (0..self.num_components())
            .map(|k| {
                let diff = (x - self.means.get(k).unsqueeze(0)).transpose(0, 1); // [d, N]
                let y = self
                    .chol
                    .get(k)
                    .linalg_solve_triangular(&diff, false, true, false);
                y.square().sum_dim_intlist(0, false, Kind::Double)
            })
            .collect();
        let maha = Tensor::stack(&maha, 0); // [K, N]
        let logdet = self
            .chol
            .diagonal(0, 1, 2)
            .log()
            .sum_dim_intlist(1, false, Kind::Double)
            * 2.0; // [K]
        let logn = (maha + logdet.unsqueeze(1) + d as f64 * LN_2PI) * -0.5;
        logn.transpose(0, 1) + self.weights.log().unsqueeze(0)
    }

    /// E-step: log-responsibilities `[N, K]` and the mean log-likelihood.
    fn e_step(&self, x: &Tensor) -> (Tensor, f64) {
        let wlp = self.weighted_log_probs(x);
        let lse = wlp.logsumexp([1], true);
        let ll = lse.mean(Kind::Double).double_value(&[]);
        (wlp - lse, ll)
    }

    /// Log-density of each row of `x` `[N, d]`, `[N]` f64.
    pub fn log_prob(&self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let x = x
            .detach()
            .to_device(self.means.device())
            .to_kind(Kind::Double);
        self.weighted_log_probs(&x).logsumexp([1], false)
    }

    /// `n` samples `[n, d]` (f32, on the mixture's device), drawn from the
    /// current libtorch generator (reseed it for reproducible draws).
    pub fn sample(&self, n: i64) -> Tensor {
        let _g = tch::no_grad_guard();
        let dev = self.means.device();
        let d = self.dim();
        let idx = self.weights.multinomial(n, true);
        let eps = Tensor::randn([n, d, 1], (Kind::Double, dev));
        let mu = self.means.index_select(0, &idx);
        let l = self.chol.index_select(0, &idx);
        (mu + l.bmm(&eps).squeeze_dim(2)).to_kind(Kind::Float)
    }

    /// Named tensors for a checkpoint.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("{prefix}.weights"), self.weights.shallow_clone()),
            (format!("{prefix}.means"), self.means.shallow_clone()),
            (format!("{prefix}.chol"), self.chol.shallow_clone()),
            (
                format!("{prefix}.log_likelihood"),
                Tensor::from(self.log_likelihood),
            ),
        ]
    }

    /// Whether a checkpoint holds a mixture under `prefix`.
    pub fn in_state(prefix: &str, t: &HashMap<String, Tensor>) -> bool {
        t.contains_key(&format!("{prefix}.weights"))
    }

    /// Restore from tensors written by [`Gmm::state`], onto `device`.
    pub fn load_state(prefix: &str, t: &HashMap<String, Tensor>, device: Device) -> Result<Gmm> {
        let get = |k: &str| -> Result<Tensor> {
            let key = format!("{prefix}.{k}");
            Ok(t.get(&key)
                .ok_or_else(|| anyhow::anyhow!("checkpoint lacks tensor `{key}`"))?
                .to_device(device)
                .to_kind(Kind::Double))
        };
        let (weights, means, chol) = (get("weights")?, get("means")?, get("chol")?);
        let (k, d) = (weights.size()[0], means.size().get(1).copied().unwrap_or(0));
        if means.size() != [k, d] || chol.size() != [k, d, d] {
            bail!("checkpoint mixture `{prefix}` has inconsistent shapes: weights {:?}, means {:?}, chol {:?}", weights.size(), means.size(), chol.size());
        }
        let log_likelihood = get("log_likelihood")
            .map(|t| t.double_value(&[]))
            .unwrap_or(f64::NAN);
        Ok(Gmm {
            weights,
            means,
            chol,
            log_likelihood,
            iterations: 0,
        })
    }
}

/// At most `max` rows of `x` (all if `max` is 0 or ≥ N): a random subset,
/// deterministic in `seed`, in their original order.
pub fn subsample(x: &Tensor, max: usize, seed: u64) -> Tensor {
    let n = x.size()[0] as usize;
    if max == 0 || max >= n {
        return x.shallow_clone();
    }
    let mut idx: Vec<i64> = crate::rng::permutation(n, seed, 0x6d6d)[..max].to_vec();
    idx.sort_unstable();
    x.index_select(0, &Tensor::from_slice(&idx).to_device(x.device()))
}

/// The maximum-likelihood Gaussian (K = 1) of the rows of `x`, with the
/// covariance floor: the ex-post Gaussian any sampler is compared with.
pub fn fit_gaussian(x: &Tensor) -> Result<Gmm> {
    let _g = tch::no_grad_guard();
    let x = x.detach().to_kind(Kind::Double);
    let n = x.size()[0];
    if x.dim() != 2 || n < 2 {
        bail!(
            "Gaussian fit: need [N ≥ 2, d] data, got shape {:?}",
            x.size()
        );
    }
    if !all_finite(&x) {
        bail!("Gaussian fit: the data contain non-finite values");
    }
    let resp = Tensor::ones([n, 1], (Kind::Double, x.device()));
    let mut g = Gmm {
        weights: Tensor::new(),
        means: Tensor::new(),
        chol: Tensor::new(),
        log_likelihood: 0.0,
        iterations: 1,
    };
    g.m_step(&x, &resp)?;
    g.log_likelihood = g.e_step(&x).1;
    Ok(g)
}

/// k-means++ seeding and Lloyd iterations; returns labels `[N]` (i64).
fn kmeans(x: &Tensor, k: i64, seed: u64, iters: usize) -> Tensor {
    let n = x.size()[0];
    let mut rng = Uniform(derive(seed, Stream::Model, 0x6d6d));
    let first = ((rng.next() * n as f64) as i64).min(n - 1);
    let mut centers = x.narrow(0, first, 1);
    let mut d2 = sq_dists(x, &centers).squeeze_dim(1);
    for _ in 1..k {
        // Draw the next center with probability ∝ squared distance to the nearest one.
        let cum = Vec::<f64>::try_from(d2.cumsum(0, Kind::Double)).unwrap();
        let total = *cum.last().unwrap();
        let idx = if total > 0.0 {
            let r = rng.next() * total;
            cum.partition_point(|&c| c <= r).min(n as usize - 1) as i64
        } else {
            ((rng.next() * n as f64) as i64).min(n - 1)
        };
        let c = x.narrow(0, idx, 1);
        d2 = d2.minimum(&sq_dists(x, &c).squeeze_dim(1));
        centers = Tensor::cat(&[&centers, &c], 0);
    }
    let mut labels = sq_dists(x, &centers).argmin(1, false);
    for _ in 0..iters {
        let onehot = labels.one_hot(k).to_kind(Kind::Double);
        let counts = onehot.sum_dim_intlist(0, false, Kind::Double);
        let sums = onehot.transpose(0, 1).mm(x);
        // Empty clusters keep their previous center.
        let keep = counts.eq(0.0).unsqueeze(1);
        centers = centers.where_self(&keep, &(sums / counts.clamp_min(1.0).unsqueeze(1)));
        let new = sq_dists(x, &centers).argmin(1, false);
        if new.equal(&labels) {
            break;
        }
        labels = new;
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::reseed;

    /// 3,000 points from a known 3-component mixture in 2-D.
    fn three_blobs() -> (Tensor, [f64; 3], [[f64; 2]; 3]) {
        tch::set_num_threads(1);
        reseed(11, Stream::Eval, 0);
        let weights = [0.5, 0.3, 0.2];
        let means = [[0.0, 0.0], [6.0, 1.0], [-2.0, 7.0]];
        let chols = [
            [[1.0, 0.0], [0.5, 0.6]],
            [[0.7, 0.0], [0.0, 1.2]],
            [[0.4, 0.0], [-0.3, 0.8]],
        ];
        let mut parts = Vec::new();
        for c in 0..3 {
            let m = (3000.0 * weights[c]) as i64;
            let l = Tensor::from_slice(&chols[c].concat()).view([2, 2]);
            let e = Tensor::randn([m, 2], (Kind::Double, Device::Cpu));
            parts.push(e.mm(&l.transpose(0, 1)) + Tensor::from_slice(&means[c]).unsqueeze(0));
        }
        (Tensor::cat(&parts, 0), weights, means)
    }

    #[test]
    fn em_recovers_a_known_mixture_and_samples_match_its_moments() {
        let _rng = crate::rng::exclusive();
        let (x, weights, means) = three_blobs();
        let g = Gmm::fit(&x, 3, 1, 500).unwrap();
        assert!(g.iterations >= 2);
        let gw = Vec::<f64>::try_from(&g.weights).unwrap();
        let gm = Vec::<f64>::try_from(g.means.flatten(0, -1)).unwrap();
        for c in 0..3 {
            // Match each true component to the nearest fitted mean.
            let j = (0..3)
                .min_by(|&a, &b| {
                    let da =
                        (gm[2 * a] - means[c][0]).powi(2) + (gm[2 * a + 1] - means[c][1]).powi(2);
                    let db =
                        (gm[2 * b] - means[c][0]).powi(2) + (gm[2 * b + 1] - means[c][1]).powi(2);
                    da.partial_cmp(&db).unwrap()
                })
                .unwrap();
            assert!(
                (gm[2 * j] - means[c][0]).abs() < 0.15
                    && (gm[2 * j + 1] - means[c][1]).abs() < 0.15,
                "component {c}: {gm:?}"
            );
            assert!((gw[j] - weights[c]).abs() < 0.02, "weights {gw:?}");
        }
        // The fitted log-likelihood beats a single Gaussian's by a wide margin.
        let one = fit_gaussian(&x).unwrap();
        assert!(
            g.log_likelihood > one.log_likelihood + 0.5,
            "{} vs {}",
            g.log_likelihood,
            one.log_likelihood
        );
        assert!(
            (g.log_prob(&x).mean(Kind::Double).double_value(&[]) - g.log_likelihood).abs() < 1e-9
        );
        // Samples: mean and covariance of the data, within sampling error.
        reseed(3, Stream::Eval, 1);
        let s = g.sample(20_000).to_kind(Kind::Double);
        assert_eq!(s.size(), vec![20_000, 2]);
        let (mx, ms) = (
            x.mean_dim(0, false, Kind::Double),
            s.mean_dim(0, false, Kind::Double),
        );
        assert!(
            (&mx - &ms).abs().max().double_value(&[]) < 0.1,
            "{mx:?} {ms:?}"
        );
        let cov = |t: &Tensor| {
            let c = t - t.mean_dim(0, true, Kind::Double);
            c.transpose(0, 1).mm(&c) / t.size()[0] as f64
        };
        let (cx, cs) = (cov(&x), cov(&s));
        let rel = (&cx - &cs).abs().max().double_value(&[]) / cx.abs().max().double_value(&[]);
        assert!(rel < 0.05, "{cx:?} {cs:?}");
    }

    #[test]
    fn gaussian_fit_is_the_sample_moments_and_state_round_trips() {
        let _rng = crate::rng::exclusive();
        let (x, _, _) = three_blobs();
        let g = fit_gaussian(&x).unwrap();
        let c = &x - x.mean_dim(0, true, Kind::Double);
        let cov = c.transpose(0, 1).mm(&c) / x.size()[0] as f64
            + Tensor::eye(2, (Kind::Double, Device::Cpu)) * COV_FLOOR;
        assert!(g
            .covariances()
            .squeeze_dim(0)
            .allclose(&cov, 1e-9, 1e-9, false));
        // log_prob against the closed form of a 2-D Gaussian at one point.
        let p = Tensor::from_slice(&[1.0f64, 2.0]).view([1, 2]);
        let diff = (&p - &g.means).view([2, 1]);
        let maha = diff
            .transpose(0, 1)
            .mm(&cov.inverse())
            .mm(&diff)
            .double_value(&[0, 0]);
        let want = -0.5 * (maha + cov.det().double_value(&[]).ln() + 2.0 * LN_2PI);
        assert!((g.log_prob(&p).double_value(&[0]) - want).abs() < 1e-9);
        let st: HashMap<String, Tensor> = g.state("gmm").into_iter().collect();
        let back = Gmm::load_state("gmm", &st, Device::Cpu).unwrap();
        assert!(back.log_prob(&x).equal(&g.log_prob(&x)));
        reseed(5, Stream::Eval, 0);
        let a = g.sample(10);
        reseed(5, Stream::Eval, 0);
        assert!(a.equal(&back.sample(10)));
    }

    #[test]
    fn fit_errors_are_clear() {
        let _rng = crate::rng::exclusive();
        let x = Tensor::from_slice(&[0.0f64, f64::NAN, 1.0, 2.0]).view([2, 2]);
        let e = Gmm::fit(&x, 1, 0, 10).unwrap_err();
        assert!(format!("{e}").contains("non-finite"), "{e}");
        let (x, _, _) = three_blobs();
        let e = Gmm::fit_with_tol(&x, 3, 0, 2, 1e-12).unwrap_err();
        assert!(format!("{e}").contains("did not converge"), "{e}");
        assert!(Gmm::fit(&x.narrow(0, 0, 2), 3, 0, 10).is_err());
        let sub = subsample(&x, 100, 4);
        assert_eq!(sub.size(), vec![100, 2]);
        assert!(sub.equal(&subsample(&x, 100, 4)));
        assert!(subsample(&x, 0, 4).equal(&x));
    }
}
