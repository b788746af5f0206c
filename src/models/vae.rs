//! VAE (Kingma & Welling) and CV-VAE (constant-variance VAE, Ghosh et al. 2020
//! §2), with the RAE reference's architecture and loss
//! (`models/std_vae/get_vae_given_enc_dec.py`, `models/std_vae/loss_functions.py`).
//!
//! - Encoder: the DESIGN §2 conv trunk; its final Linear has 2·d outputs, the
//!   mean μ and a raw head `r` with `log σ = 5·tanh(r)` (the reference's
//!   separate `Dense(d, tanh)` head scaled by 5; one Linear with 2·d outputs is
//!   the same function class as two Linears on the same features). Stored as
//!   log-variance `2 log σ = 10·tanh(r)`. CV-VAE has no variance head: σ is the
//!   constant `cv_vae_std` (reference `constant_sigma` 0.7).
//! - Reparameterization `z = μ + σ·ε`, ε drawn from the run's encoder-noise
//!   stream at the step (exact resume).
//! - Loss (batch mean), paper Eq. 5 with the reference's reconstruction term:
//!   `Σ_pixels mean_channels (x − D(z))² + β · KL(N(μ, σ²) ‖ N(0, I))`,
//!   `KL = ½ Σ_d (σ² + μ² − 1 − log σ²)`. The reconstruction is the reference's
//!   (Keras `mse` over the channel axis, summed over H and W): the sum of
//!   squared errors per image for MNIST, a third of it for RGB. β per data set:
//!   `reference.rs` (MNIST VAE 0.312, CV-VAE 0.039).
//! - Generation: z ~ N(0, I) (the prior); with `baselines.vae_sampler = gmm`, from the
//!   ex-post GMM fitted on the training latents in the post-training phase.
//! - `encode`: μ (default, `baselines.vae_encode = mean`, like the reference's
//!   `encoder.predict`) or a posterior draw (`sample`).

use super::common::{core_and_latents, pixel_sum_channel_mean, Core, PriorOrExPost};
use super::reference::check_weight;
use super::{Baseline, Model, Spec, StepStats};
use crate::nets::Geometry;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// VAE and CV-VAE weights (TOML section `[baselines]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VaeConfig {
    /// VAE / CV-VAE KL weight β (reference `embedding_weight`; the two models
    /// have different reference values). −1 (the default,
    /// [`super::reference::BASELINE_REFERENCE`]): the RAE reference
    /// implementation's value for the run's data set and model; any value ≥ 0
    /// overrides it.
    pub vae_beta: f64,
    /// CV-VAE fixed encoder standard deviation (reference `constant_sigma`; −1 = reference).
    pub cv_vae_std: f64,
}

/// How the VAE-family models encode and generate (TOML section `[baselines]`,
/// after the other baselines' keys): `vae_encode` is VAE, CV-VAE and 2-stage
/// VAE's, `vae_sampler` VAE, CV-VAE and WAE-MMD's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteConfig {
    /// What `encode` returns for the Gaussian-encoder models (VAE, CV-VAE,
    /// 2-stage VAE): `mean` (μ, as the reference's `encoder.predict`) or
    /// `sample` (μ + σ·ε, a draw of the aggregate posterior).
    pub vae_encode: VaeEncode,
    /// Generation route of VAE, CV-VAE and WAE-MMD: `prior` (N(0, I), the
    /// models' own) or `gmm` (the ex-post GMM of the RAE baselines, fitted on
    /// the training latents μ(x) / E(x) in the post-training phase; the RAE
    /// reference evaluates its VAE-family models this way too).
    pub vae_sampler: VaeSampler,
}

/// `baselines.vae_encode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeEncode {
    Mean,
    Sample,
}

/// `baselines.vae_sampler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeSampler {
    Prior,
    Gmm,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            vae_beta: super::reference::BASELINE_REFERENCE,
            cv_vae_std: super::reference::BASELINE_REFERENCE,
        }
    }
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            vae_encode: VaeEncode::Mean,
            vae_sampler: VaeSampler::Prior,
        }
    }
}

impl VaeSampler {
    /// The generation route this option names.
    pub fn route(self, spec: &Spec) -> PriorOrExPost {
        match self {
            VaeSampler::Prior => PriorOrExPost::Prior,
            VaeSampler::Gmm => PriorOrExPost::ex_post(spec),
        }
    }
}

impl VaeConfig {
    pub fn validate(&self) -> Result<()> {
        check_weight("baselines.vae_beta", self.vae_beta)?;
        if self.cv_vae_std != super::reference::BASELINE_REFERENCE {
            crate::util::positive("baselines.cv_vae_std", self.cv_vae_std)?;
        }
        Ok(())
    }
}

/// The registry's build function of `vae`.
pub fn build_vae(spec: &Spec, geo: Geometry, device: Device) -> Result<Box<dyn Model>> {
    Ok(Box::new(Vae::new(spec, geo, device, false)?))
}

/// The registry's build function of `cv-vae`.
pub fn build_cv_vae(spec: &Spec, geo: Geometry, device: Device) -> Result<Box<dyn Model>> {
    Ok(Box::new(Vae::new(spec, geo, device, true)?))
}

/// `KL(N(μ, exp(logvar)) ‖ N(0, I))` per row, `[N]`.
pub fn kl_std_normal(mu: &Tensor, logvar: &Tensor) -> Tensor {
    (logvar.exp() + mu.square() - 1.0 - logvar).sum_dim_intlist(1, false, mu.kind()) * 0.5
}

/// Split a `[N, 2d]` Gaussian-head output into (μ, log-variance) with the
/// reference's bound `log σ = 5·tanh(r)`.
pub fn gaussian_head(h: &Tensor, d: i64) -> (Tensor, Tensor) {
    (h.narrow(1, 0, d), h.narrow(1, d, d).tanh() * 10.0)
}

pub struct Vae {
    name: &'static str,
    core: Core,
    beta: f64,
    /// CV-VAE: constant encoder standard deviation; `None` for the VAE.
    fixed_std: Option<f64>,
    encode_mean: bool,
    /// `baselines.vae_sampler = gmm`: generate from an ex-post GMM instead of the prior.
    latents: PriorOrExPost,
}

impl Vae {
    /// `cv = true` builds the CV-VAE.
    pub fn new(cfg: &Spec, geo: Geometry, device: Device, cv: bool) -> Result<Vae> {
        let w = super::reference::resolve(cfg)?;
        let d = cfg.net.latent_dim;
        let core = Core::new(cfg, geo, device, if cv { d } else { 2 * d }, false);
        let latents = PriorOrExPost::chosen(cfg, &core, cfg.baselines.route.vae_sampler.route(cfg));
        Ok(Vae {
            name: if cv { "cv-vae" } else { "vae" },
            core,
            beta: w.latent,
            fixed_std: cv.then_some(w.cv_std),
            encode_mean: cfg.baselines.route.vae_encode == VaeEncode::Mean,
            latents,
        })
    }

    /// (μ, log-variance) of q(z|x).
    pub fn posterior(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let h = self.core.encoder.forward(x, None, train);
        match self.fixed_std {
            Some(s) => {
                let lv = Tensor::full_like(&h, 2.0 * s.ln());
                (h, lv)
            }
            None => gaussian_head(&h, self.core.latent),
        }
    }

    /// The loss terms on `x` with noise `eps`: (batch loss, recon, KL).
    pub fn loss(&self, x: &Tensor, eps: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let (mu, logvar) = self.posterior(x, true);
        let z = &mu + (&logvar * 0.5).exp() * eps;
        let xhat = self.core.decoder.forward(&z, true);
        let rec = pixel_sum_channel_mean(x, &xhat).mean(Kind::Float);
        let kl = kl_std_normal(&mu, &logvar).mean(Kind::Float);
        let loss = &rec + &kl * self.beta;
        (loss, rec, kl, xhat)
    }
}

impl Baseline for Vae {
    fn key(&self) -> &'static str {
        self.name
    }
    core_and_latents!();

    fn step(&mut self, x: &Tensor, step: u64) -> Result<StepStats> {
        let eps = self.core.encoder_noise(x.size()[0], step);
        let (loss, rec, kl, xhat) = self.loss(x, &eps);
        Ok(self
            .core
            .step_on(&loss, &[("rec", &rec), ("kl", &kl)], x, &xhat))
    }

    fn encode_here(&self, x: &Tensor) -> Tensor {
        let (mu, logvar) = self.posterior(x, false);
        if self.encode_mean {
            mu
        } else {
            &mu + (logvar * 0.5).exp() * mu.randn_like()
        }
    }

    /// The ex-post density is fitted on the means μ(x).
    fn fit_latents(&self, x: &Tensor) -> Tensor {
        self.core
            .encoder
            .forward(x, None, false)
            .narrow(1, 0, self.core.latent)
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::*;
    use super::*;
    use crate::rng::Stream;
    use std::collections::HashMap;

    #[test]
    fn kl_matches_the_closed_form_by_hand() {
        let _rng = crate::rng::exclusive();
        let mu = Tensor::from_slice(&[0.5f64, -1.0, 0.0, 2.0]).view([2, 2]);
        let logvar = Tensor::from_slice(&[0.0f64, 2.0f64.ln(), -1.0, 0.3]).view([2, 2]);
        // Row 0: ½[(1 + 0.25 − 1 − 0) + (2 + 1 − 1 − ln 2)]; row 1: ½[(e⁻¹ + 0 − 1 + 1) + (e^0.3 + 4 − 1 − 0.3)].
        let r0 = 0.5 * (0.25 + (2.0 - 2f64.ln()));
        let r1 = 0.5 * ((-1f64).exp() + (0.3f64.exp() + 4.0 - 1.0 - 0.3));
        let kl = Vec::<f64>::try_from(kl_std_normal(&mu, &logvar)).unwrap();
        assert!(
            (kl[0] - r0).abs() < 1e-12 && (kl[1] - r1).abs() < 1e-12,
            "{kl:?}"
        );
        // And against a Monte-Carlo estimate of E_q[log q − log p] for one row.
        tch::manual_seed(0);
        let (m, s) = (0.7f64, 0.4f64);
        let e = Tensor::randn([400_000], (Kind::Double, Device::Cpu));
        let z = &e * s + m;
        let logq = -e.square() * 0.5 - s.ln();
        let logp = -z.square() * 0.5;
        let mc = (logq - logp).mean(Kind::Double).double_value(&[]);
        let cf = kl_std_normal(
            &Tensor::from_slice(&[m]).view([1, 1]),
            &Tensor::from_slice(&[2.0 * s.ln()]).view([1, 1]),
        )
        .double_value(&[0]);
        assert!((mc - cf).abs() < 5e-3, "{mc} vs {cf}");
    }

    #[test]
    fn reconstruction_term_is_the_reference_scaling() {
        let _rng = crate::rng::exclusive();
        let x = Tensor::zeros([1, 3, 2, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::ones([1, 3, 2, 2], (Kind::Float, Device::Cpu));
        // 12 unit errors: channel mean 1 per pixel, summed over 4 pixels.
        assert_eq!(pixel_sum_channel_mean(&x, &y).double_value(&[0]), 4.0);
    }

    #[test]
    fn vae_and_cv_vae_train_sample_and_round_trip() {
        let _rng = crate::rng::exclusive();
        let x = blobs(16, 2);
        for cv in [false, true] {
            let c = tiny_config(if cv { "cv-vae" } else { "vae" });
            let mut a = Vae::new(&c.spec(), Geometry::MNIST, Device::Cpu, cv).unwrap();
            assert_eq!(a.beta, if cv { 0.039 } else { 0.312 });
            let (first, last) = train_fixed(&mut a, &x, 30);
            assert!(last < 0.7 * first, "cv={cv}: {first} -> {last}");
            let z = a.sample_latents(6).unwrap();
            assert_eq!(z.size(), vec![6, 4]);
            assert_eq!(a.decode(&z).size(), vec![6, 1, 32, 32]);
            let e1 = a.encode(&x.narrow(0, 0, 3));
            assert_eq!(e1.size(), vec![3, 4]);
            assert!(
                e1.equal(&a.encode(&x.narrow(0, 0, 3))),
                "mean encoding is deterministic"
            );
            let mut b = Vae::new(&c.spec(), Geometry::MNIST, Device::Cpu, cv).unwrap();
            assert_round_trip(&mut a, &mut b, &x);
        }
    }

    #[test]
    fn ex_post_gmm_sampler_option() {
        let _rng = crate::rng::exclusive();
        let x = blobs(48, 5);
        let mut c = tiny_config("cv-vae");
        c.baselines.route.vae_sampler = VaeSampler::Gmm;
        c.baselines.gmm.gmm_components = 2;
        let mut a = Vae::new(&c.spec(), Geometry::MNIST, Device::Cpu, true).unwrap();
        assert_eq!(a.post_training_steps(), 1);
        train_fixed(&mut a, &x.narrow(0, 0, 16), 5);
        assert!(a.sample_latents(2).is_err(), "not fitted yet");
        let st = a
            .post_training_step(&mut Fixed(x.shallow_clone()), 0)
            .unwrap();
        assert_eq!(st.get("gmm_points"), Some(48.0));
        assert!(a.sampler_name().contains("GMM"));
        let mut b = Vae::new(&c.spec(), Geometry::MNIST, Device::Cpu, true).unwrap();
        let state: HashMap<String, Tensor> = a.state().into_iter().collect();
        b.load_state(&state).unwrap();
        crate::rng::reseed(2, Stream::Eval, 0);
        let za = a.sample_latents(4).unwrap();
        crate::rng::reseed(2, Stream::Eval, 0);
        assert!(za.equal(&b.sample_latents(4).unwrap()));
        assert_eq!(za.size(), vec![4, 4]);
        // The prior route has no post-training phase.
        let p = Vae::new(
            &tiny_config("vae").spec(),
            Geometry::MNIST,
            Device::Cpu,
            false,
        )
        .unwrap();
        assert_eq!(p.post_training_steps(), 0);
    }
}
