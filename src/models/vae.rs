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

use super::common::{pixel_sum_channel_mean, val, Core, PriorOrExPost};
use super::{BatchSource, Model, StepStats};
use crate::config::Config;
use crate::nets::Geometry;
use crate::rng::{reseed, Stream};
use anyhow::Result;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

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
    pub fn new(cfg: &Config, geo: Geometry, device: Device, cv: bool) -> Result<Vae> {
        let w = super::reference::resolve(cfg)?;
        let d = cfg.net.latent_dim;
        let core = Core::new(cfg, geo, device, if cv { d } else { 2 * d }, false);
        Ok(Vae {
            name: if cv { "cv-vae" } else { "vae" },
            core,
            beta: w.latent,
            fixed_std: cv.then_some(w.cv_std),
            encode_mean: cfg.baselines.vae_encode == "mean",
            latents: PriorOrExPost::new(cfg),
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

impl Model for Vae {
    fn name(&self) -> &'static str {
        self.name
    }
    fn latent_dim(&self) -> i64 {
        self.core.latent
    }
    fn device(&self) -> Device {
        self.core.device
    }

    fn train_step(&mut self, x: &Tensor, step: u64) -> Result<StepStats> {
        reseed(self.core.seed, Stream::EncoderNoise, step);
        // Under MPI: this worker's rows of the global batch's noise.
        let eps = crate::dist::randn_rows(
            x.size()[0],
            &[self.core.latent],
            (Kind::Float, self.core.device),
        );
        let (loss, rec, kl, xhat) = self.loss(x, &eps);
        self.core.opt.backward_step(&loss);
        let mse = val(&xhat.detach().mse_loss(x, tch::Reduction::Mean));
        Ok(StepStats(vec![
            ("loss", val(&loss)),
            ("rec", val(&rec)),
            ("kl", val(&kl)),
            ("rec_mse", mse),
        ]))
    }

    fn encode(&self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let (mu, logvar) = self.posterior(&x.to_device(self.core.device), false);
        if self.encode_mean {
            mu
        } else {
            &mu + (logvar * 0.5).exp() * mu.randn_like()
        }
    }

    fn decode(&self, z: &Tensor) -> Tensor {
        self.core.decode(z)
    }

    fn sample_latents(&self, n: i64) -> Result<Tensor> {
        self.latents
            .sample(n, self.core.latent, self.core.device, self.name())
    }

    fn sampler_name(&self) -> String {
        self.latents.name()
    }

    fn post_training_steps(&self) -> u64 {
        self.latents.post_training_steps()
    }

    fn post_training_step(&mut self, data: &mut dyn BatchSource, _i: u64) -> Result<StepStats> {
        let name = self.name();
        let core = &self.core;
        self.latents.fit(data, core.device, name, |x| {
            let _g = tch::no_grad_guard();
            core.encoder
                .forward(x, None, false)
                .narrow(1, 0, core.latent)
        })
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.core.state_with(self.latents.0.as_ref())
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.core.load_state_with(self.latents.0.as_mut(), t)
    }

    fn scale_lr(&mut self, factor: f64) {
        self.core.opt.lr *= factor;
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::*;
    use super::*;

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
            let mut a = Vae::new(&c, Geometry::MNIST, Device::Cpu, cv).unwrap();
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
            let mut b = Vae::new(&c, Geometry::MNIST, Device::Cpu, cv).unwrap();
            assert_round_trip(&mut a, &mut b, &x);
        }
    }

    #[test]
    fn ex_post_gmm_sampler_option() {
        let _rng = crate::rng::exclusive();
        let x = blobs(48, 5);
        let mut c = tiny_config("cv-vae");
        c.baselines.vae_sampler = "gmm".into();
        c.baselines.gmm_components = 2;
        let mut a = Vae::new(&c, Geometry::MNIST, Device::Cpu, true).unwrap();
        assert_eq!(a.post_training_steps(), 1);
        train_fixed(&mut a, &x.narrow(0, 0, 16), 5);
        assert!(a.sample_latents(2).is_err(), "not fitted yet");
        let st = a
            .post_training_step(&mut Fixed(x.shallow_clone()), 0)
            .unwrap();
        assert_eq!(st.get("gmm_points"), Some(48.0));
        assert!(a.sampler_name().contains("GMM"));
        let mut b = Vae::new(&c, Geometry::MNIST, Device::Cpu, true).unwrap();
        let state: HashMap<String, Tensor> = a.state().into_iter().collect();
        b.load_state(&state).unwrap();
        crate::rng::reseed(2, Stream::Eval, 0);
        let za = a.sample_latents(4).unwrap();
        crate::rng::reseed(2, Stream::Eval, 0);
        assert!(za.equal(&b.sample_latents(4).unwrap()));
        assert_eq!(za.size(), vec![4, 4]);
        // The prior route has no post-training phase.
        let p = Vae::new(&tiny_config("vae"), Geometry::MNIST, Device::Cpu, false).unwrap();
        assert_eq!(p.post_training_steps(), 0);
    }
}
