//! Two-stage VAE (Dai & Wipf, ICLR 2019). The RAE reference implementation has
//! no two-stage VAE; this follows the authors' code, GitHub
//! `daib13/TwoStageVAE`, `network/two_stage_vae_model.py` (class
//! `TwoStageVaeModel`, with the first stage on the DESIGN §2 architecture like
//! their `Wae` network) and `demo.py` (defaults).
//!
//! Stage one: a Gaussian VAE with a learned, shared decoder standard deviation
//! γ_x = exp(loggamma_x) (a scalar, initialised to 1):
//! `L₁ = KL(N(μ, σ²) ‖ N(0, I)) + Σ_pixels [ (x − x̂)² / (2γ_x²) + log γ_x + ½ log 2π ]`,
//! batch-averaged, β = 1; encoder heads μ and log σ (theirs unbounded; here
//! `5·tanh`-bounded, see [`bounded_logsd`]).
//!
//! Stage two, after the main loop (`post_training_steps` = `baselines.two_stage_steps`):
//! a fully connected VAE on the stage-one latents `z = μ_z(x) + σ_z(x)·ε`
//! (a fresh draw per batch, as their `demo.py`), encoder
//! `z → [Linear(h) → ReLU] × depth → concat(z, ·) → (μ_u, log σ_u)`, decoder
//! `u → [Linear(h) → ReLU] × depth → concat(u, ·) → ẑ` with a learned γ_z;
//! same loss form. Their defaults: `--second-dim 1024`, `--second-depth 3`
//! (our `two_stage_hidden`, `two_stage_depth`), stage two trained twice as
//! many epochs as stage one (`--epochs 400`, `--epochs2 800`), lr 1e-4 for both
//! (here `train.lr`).
//!
//! Generation: u ~ N(0, I), `z = ẑ(u) + γ_z·ε`, image = stage-one decoder(z).

use super::common::{val, Core};
use super::vae::kl_std_normal;
use super::vae::VaeEncode;
use super::{load_var_store, var_store_state, BatchSource, Generation, Model, Spec, StepStats};
use crate::nets::Geometry;
use crate::optim::Adam;
use crate::rng::{reseed, Stream};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

const HALF_LOG_TWO_PI: f64 = 0.918_938_533_204_672_7;

/// Post-training counters are offset so their noise never repeats the main loop's.
const STAGE2_OFFSET: u64 = 1 << 40;

/// Gaussian negative log-likelihood with a shared scale γ = exp(loggamma),
/// summed over all but the batch axis, batch-averaged.
pub fn gaussian_nll(x: &Tensor, xhat: &Tensor, loggamma: &Tensor) -> Tensor {
    let per = ((x - xhat) / loggamma.exp()).square() * 0.5 + loggamma + HALF_LOG_TWO_PI;
    per.flatten(1, -1)
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float)
}

/// `log σ = 5·tanh(r)`: Dai & Wipf's heads are unbounded (`exp(dense)`), but
/// in an end-to-end run (width 1/16, 30 stage-one steps) the unbounded head
/// overflowed in inference mode and the second stage's first loss was inf; the
/// RAE reference bounds its VAE head the same way (`5·tanh`, σ ∈ [e⁻⁵, e⁵]).
pub fn bounded_logsd(raw: &Tensor) -> Tensor {
    raw.tanh() * 5.0
}

/// `[Linear(h) → ReLU] × depth`, then concatenated with the input (their skip).
struct SkipMlp {
    layers: Vec<nn::Linear>,
    head: nn::Linear,
}

impl SkipMlp {
    fn new(p: &nn::Path, input: i64, hidden: i64, depth: i64, out: i64) -> SkipMlp {
        let mut layers = Vec::new();
        let mut d = input;
        for i in 0..depth {
            layers.push(nn::linear(
                p / format!("fc{i}"),
                d,
                hidden,
                Default::default(),
            ));
            d = hidden;
        }
        let head = nn::linear(
            p / "head",
            input + if depth > 0 { hidden } else { 0 },
            out,
            Default::default(),
        );
        SkipMlp { layers, head }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut t = x.shallow_clone();
        for l in &self.layers {
            t = l.forward(&t).relu();
        }
        let cat = if self.layers.is_empty() {
            x.shallow_clone()
        } else {
            Tensor::cat(&[x, &t], -1)
        };
        self.head.forward(&cat)
    }
}

/// The two-stage VAE's knobs (TOML section `[baselines]`): steps of the
/// second stage, its hidden width and number of hidden layers (Dai & Wipf's
/// `--second-dim 1024`, `--second-depth 3`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TwoStageConfig {
    pub two_stage_steps: u64,
    pub two_stage_hidden: i64,
    pub two_stage_depth: i64,
}

impl Default for TwoStageConfig {
    fn default() -> Self {
        TwoStageConfig {
            two_stage_steps: 2000,
            two_stage_hidden: 1024,
            two_stage_depth: 3,
        }
    }
}

impl TwoStageConfig {
    pub fn validate(&self) -> Result<()> {
        crate::util::at_least("baselines.two_stage_hidden", self.two_stage_hidden, 1)?;
        crate::util::at_least("baselines.two_stage_depth", self.two_stage_depth, 0)?;
        Ok(())
    }
}

/// The registry's build function.
pub fn build(spec: &Spec, geo: Geometry, device: Device) -> Result<Box<dyn Model>> {
    Ok(Box::new(TwoStage::new(spec, geo, device)?))
}

pub struct TwoStage {
    core: Core,
    loggamma_x: Tensor,
    vs2: VarStore,
    enc2: SkipMlp,
    dec2: SkipMlp,
    loggamma_z: Tensor,
    opt2: Adam,
    stage2_steps: u64,
    encode_mean: bool,
}

impl TwoStage {
    pub fn new(cfg: &Spec, geo: Geometry, device: Device) -> Result<TwoStage> {
        let d = cfg.net.latent_dim;
        let b = &cfg.baselines.two_stage;
        let mut core = Core::new(cfg, geo, device, 2 * d, false);
        let loggamma_x = core.vs.root().var("loggamma_x", &[], nn::Init::Const(0.0));
        core.opt = Adam::new(&core.vs, cfg.lr, cfg.beta1, cfg.beta2);
        reseed(cfg.seed, Stream::Init, 2);
        let vs2 = VarStore::new(device);
        let (h, depth) = (b.two_stage_hidden, b.two_stage_depth);
        let enc2 = SkipMlp::new(&(vs2.root() / "encoder"), d, h, depth, 2 * d);
        let dec2 = SkipMlp::new(&(vs2.root() / "decoder"), d, h, depth, d);
        let loggamma_z = vs2.root().var("loggamma_z", &[], nn::Init::Const(0.0));
        let opt2 = Adam::new(&vs2, cfg.lr, cfg.beta1, cfg.beta2);
        Ok(TwoStage {
            core,
            loggamma_x,
            vs2,
            enc2,
            dec2,
            loggamma_z,
            opt2,
            stage2_steps: b.two_stage_steps,
            encode_mean: cfg.baselines.route.vae_encode == VaeEncode::Mean,
        })
    }

    /// Stage-one (μ, log σ).
    fn posterior1(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let h = self.core.encoder.forward(x, None, train);
        let d = self.core.latent;
        (h.narrow(1, 0, d), bounded_logsd(&h.narrow(1, d, d)))
    }

    /// Stage-one loss on `x` with noise `eps`: (loss, KL, NLL, x̂).
    pub fn stage1_loss(&self, x: &Tensor, eps: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let (mu, logsd) = self.posterior1(x, true);
        let z = &mu + logsd.exp() * eps;
        let xhat = self.core.decoder.forward(&z, true);
        let kl = kl_std_normal(&mu, &(&logsd * 2.0)).mean(Kind::Float);
        let nll = gaussian_nll(x, &xhat, &self.loggamma_x);
        (&kl + &nll, kl, nll, xhat)
    }

    /// One stage-two step on stage-one latents `z` with noise `eps`.
    pub fn stage2_step(&mut self, z: &Tensor, eps: &Tensor) -> Vec<(&'static str, f64)> {
        let d = self.core.latent;
        let h = self.enc2.forward(z);
        let (mu, logsd) = (h.narrow(1, 0, d), bounded_logsd(&h.narrow(1, d, d)));
        let u = &mu + logsd.exp() * eps;
        let zhat = self.dec2.forward(&u);
        let kl = kl_std_normal(&mu, &(&logsd * 2.0)).mean(Kind::Float);
        let nll = gaussian_nll(z, &zhat, &self.loggamma_z);
        let loss = &kl + &nll;
        self.opt2.backward_step(&loss);
        vec![
            ("loss", val(&loss)),
            ("kl", val(&kl)),
            ("nll", val(&nll)),
            ("gamma_z", val(&self.loggamma_z.exp())),
        ]
    }
}

impl Model for TwoStage {
    fn name(&self) -> &'static str {
        "two-stage-vae"
    }
    fn latent_dim(&self) -> i64 {
        self.core.latent
    }
    fn device(&self) -> Device {
        self.core.device
    }

    fn train_step(&mut self, x: &Tensor, step: u64) -> Result<StepStats> {
        let eps = self.core.encoder_noise(x.size()[0], step);
        let (loss, kl, nll, xhat) = self.stage1_loss(x, &eps);
        self.core.opt.backward_step(&loss);
        let mse = val(&xhat.detach().mse_loss(x, tch::Reduction::Mean));
        Ok(StepStats(vec![
            ("loss", val(&loss)),
            ("kl", val(&kl)),
            ("nll", val(&nll)),
            ("gamma_x", val(&self.loggamma_x.exp())),
            ("rec_mse", mse),
        ]))
    }

    fn encode(&self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let (mu, logsd) = self.posterior1(&x.to_device(self.core.device), false);
        if self.encode_mean {
            mu
        } else {
            &mu + logsd.exp() * mu.randn_like()
        }
    }

    fn decode(&self, z: &Tensor) -> Tensor {
        self.core.decode(z)
    }

    fn sample_latents(&self, n: i64) -> Result<Tensor> {
        if self.opt2.step == 0 {
            bail!("two-stage-vae samples through its second stage, which the post-training phase trains; it has not run yet");
        }
        let _g = tch::no_grad_guard();
        let u = Tensor::randn([n, self.core.latent], (Kind::Float, self.core.device));
        let zhat = self.dec2.forward(&u);
        Ok(&zhat + zhat.randn_like() * self.loggamma_z.exp())
    }

    fn sampler_name(&self) -> String {
        "N(0, I) → second-stage VAE decoder".into()
    }

    fn generation(&self) -> Generation {
        Generation::SecondStage
    }

    fn post_training_steps(&self) -> u64 {
        self.stage2_steps
    }

    fn post_training_step(&mut self, data: &mut dyn BatchSource, i: u64) -> Result<StepStats> {
        let x = data.batch(i).to_device(self.core.device);
        reseed(self.core.seed, Stream::EncoderNoise, STAGE2_OFFSET + i);
        let z = {
            let _g = tch::no_grad_guard();
            let (mu, logsd) = self.posterior1(&x, false);
            let e =
                crate::dist::randn_rows(mu.size()[0], &[mu.size()[1]], (mu.kind(), mu.device()));
            &mu + logsd.exp() * e
        };
        reseed(self.core.seed, Stream::SamplerNoise, STAGE2_OFFSET + i);
        let eps = crate::dist::randn_rows(z.size()[0], &[z.size()[1]], (z.kind(), z.device()));
        Ok(StepStats(self.stage2_step(&z, &eps)))
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut v = self.core.state();
        v.extend(var_store_state(&self.vs2, "stage2"));
        v.extend(self.opt2.state("adam_stage2"));
        v
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.core.load_state(t)?;
        load_var_store(&mut self.vs2, "stage2", t)?;
        self.opt2.load_state("adam_stage2", t)
    }

    fn scale_lr(&mut self, factor: f64) {
        self.core.opt.lr *= factor;
        self.opt2.lr *= factor;
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::*;
    use super::*;

    #[test]
    fn gaussian_nll_matches_the_density_by_hand() {
        let _rng = crate::rng::exclusive();
        let x = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let m = Tensor::from_slice(&[0.5f32, 2.5]).view([1, 2]);
        let lg = Tensor::from(0.3f32.ln());
        // −log N(x; m, 0.3²) summed over both coordinates.
        let want: f64 = [0.5f64, -0.5]
            .iter()
            .map(|r| r * r / (2.0 * 0.09) + 0.3f64.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln())
            .sum();
        assert!((gaussian_nll(&x, &m, &lg).double_value(&[]) - want).abs() < 1e-5);
    }

    #[test]
    fn both_stages_train_then_sample_and_round_trip() {
        let _rng = crate::rng::exclusive();
        let x = blobs(48, 4);
        let mut c = tiny_config("two-stage-vae");
        c.baselines.two_stage.two_stage_hidden = 32;
        c.baselines.two_stage.two_stage_steps = 40;
        let mut a = TwoStage::new(&c.spec(), Geometry::MNIST, Device::Cpu).unwrap();
        // The NLL is dominated by its constant (½ log 2π per pixel) until γ_x
        // has shrunk, so check the loss falls and the reconstruction error
        // falls clearly.
        let xb = x.narrow(0, 0, 16);
        let (mut loss, mut mse) = (Vec::new(), Vec::new());
        for s in 0..30 {
            let st = a.train_step(&xb, s).unwrap();
            assert!(st.non_finite().is_none(), "{st:?}");
            loss.push(st.get("loss").unwrap());
            mse.push(st.get("rec_mse").unwrap());
        }
        assert!(
            loss[29] < loss[0],
            "stage one loss: {} -> {}",
            loss[0],
            loss[29]
        );
        assert!(
            mse[29] < 0.7 * mse[0],
            "stage one mse: {} -> {}",
            mse[0],
            mse[29]
        );
        assert!(a.sample_latents(2).is_err(), "no samples before stage two");
        let mut src = Fixed(x.shallow_clone());
        assert_eq!(a.post_training_steps(), 40);
        let mut losses = Vec::new();
        for i in 0..40 {
            let st = a.post_training_step(&mut src, i).unwrap();
            assert!(st.non_finite().is_none(), "{st:?}");
            losses.push(st.get("loss").unwrap());
        }
        let head: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let tail: f64 = losses[35..].iter().sum::<f64>() / 5.0;
        assert!(tail < head, "stage two: {head} -> {tail}");
        let z = a.sample_latents(6).unwrap();
        assert_eq!(z.size(), vec![6, 4]);
        assert_eq!(a.decode(&z).size(), vec![6, 1, 32, 32]);
        assert_eq!(a.encode(&x.narrow(0, 0, 2)).size(), vec![2, 4]);
        let mut b = TwoStage::new(&c.spec(), Geometry::MNIST, Device::Cpu).unwrap();
        assert_round_trip(&mut a, &mut b, &x.narrow(0, 0, 16));
        reseed(1, Stream::Eval, 0);
        let za = a.sample_latents(3).unwrap();
        reseed(1, Stream::Eval, 0);
        assert!(za.equal(&b.sample_latents(3).unwrap()));
    }
}
