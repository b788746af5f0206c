//! Models behind one trait, so one training pipeline, one evaluation and one
//! report serve them all. One file per model.
//!
//! - [`ldc`] — LDC-VAE.
//! - [`vae`] — VAE and CV-VAE (`vae`, `cv-vae`), samples from N(0, I) (or an
//!   ex-post GMM, `baselines.vae_sampler`).
//! - [`wae`] — WAE-MMD (`wae-mmd`, IMQ kernel), samples from N(0, I) (ditto).
//! - [`two_stage`] — two-stage VAE (`two-stage-vae`); the second stage is the
//!   post-training phase.
//! - [`rae`] — RAE-L2, RAE-GP, RAE-SN (`rae-l2`, `rae-gp`, `rae-sn`; [`sn`] has
//!   the spectral normalisation); samples from the ex-post [`gmm`], fitted in
//!   the post-training phase.
//! - [`reference`] — the baselines' per-data-set weights and where each comes from.
//! - [`common`] — what the baselines share (encoder/decoder/optimizer core,
//!   reconstruction losses in the reference's scalings).

use crate::config::Config;
use anyhow::{bail, Result};
use std::collections::HashMap;
use tch::{Device, Tensor};

pub mod common;
pub mod gmm;
pub mod ldc;
pub mod rae;
pub mod reference;
pub mod sn;
pub mod two_stage;
pub mod vae;
pub mod wae;

/// Named scalar statistics of one training step (`loss` first: it is the
/// value checked for NaN/Inf and shown in the progress bar).
#[derive(Debug, Clone, Default)]
pub struct StepStats(pub Vec<(&'static str, f64)>);

impl StepStats {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    /// The first non-finite entry, if any.
    pub fn non_finite(&self) -> Option<(&'static str, f64)> {
        self.0.iter().copied().find(|(_, v)| !v.is_finite())
    }
}

/// Source of training batches for work after the main loop (e.g. the LDC
/// sampler refinement, a GMM fit, a second-stage VAE).
pub trait BatchSource {
    /// Batch `i` of the training data (deterministic in `i`), on the model device.
    fn batch(&mut self, i: u64) -> Tensor;
    /// All training images in order, in chunks, for latent fits.
    fn num_train(&self) -> i64;
    fn chunk(&mut self, start: i64, len: i64) -> Tensor;
}

/// A trainable generative autoencoder.
pub trait Model {
    /// Short name (`ldc`, `vae`, ...), as on the command line.
    fn name(&self) -> &'static str;
    fn latent_dim(&self) -> i64;
    fn device(&self) -> Device;
    /// One training step on `x` (images on the model's device). `step` is the
    /// global 0-based step, used to seed the step's noise.
    fn train_step(&mut self, x: &Tensor, step: u64) -> Result<StepStats>;
    /// Latents of `x` (inference mode, no gradient); stochastic encoders draw
    /// their noise from the current generator.
    fn encode(&self, x: &Tensor) -> Tensor;
    /// Images of latents `z` (inference mode, no gradient), in [0, 1].
    fn decode(&self, z: &Tensor) -> Tensor;
    /// Latents for generation from the model's own sampler or prior.
    fn sample_latents(&self, n: i64) -> Result<Tensor>;
    /// Name of the generation route (`sampler net`, `N(0, I) prior`, `ex-post GMM`).
    fn sampler_name(&self) -> String;
    /// Steps run by [`Model::post_training`] (0 if none), for progress bars.
    fn post_training_steps(&self) -> u64 {
        0
    }
    /// Work after the main loop, resumable from `done` steps; calls `progress`
    /// with stats after each step. Checkpointing happens in the caller.
    fn post_training_step(&mut self, _data: &mut dyn BatchSource, _i: u64) -> Result<StepStats> {
        bail!("{} has no post-training phase", self.name())
    }
    /// Named tensors that make up the whole state (weights, BN statistics,
    /// optimizer moments, banks) for a checkpoint.
    fn state(&self) -> Vec<(String, Tensor)>;
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
    /// Multiply every learning rate by `factor` (NaN rollback, LR plateau).
    fn scale_lr(&mut self, factor: f64);
}

/// Build the model named in `cfg.model` for data of geometry `geo`.
pub fn build(cfg: &Config, device: Device) -> Result<Box<dyn Model>> {
    let model = build_with_tch_init(cfg, device)?;
    if cfg.net.init == "pytorch" {
        crate::nets::init_like_pytorch(&model.state(), cfg.seed);
    }
    Ok(model)
}

/// The model with tch's default initialisation (`net.init = tch`).
fn build_with_tch_init(cfg: &Config, device: Device) -> Result<Box<dyn Model>> {
    let geo = crate::nets::Geometry::for_dataset(&cfg.data.dataset);
    match cfg.model.as_str() {
        "ldc" => Ok(Box::new(ldc::Ldc::new(cfg, geo, device)?)),
        "vae" => Ok(Box::new(vae::Vae::new(cfg, geo, device, false)?)),
        "cv-vae" => Ok(Box::new(vae::Vae::new(cfg, geo, device, true)?)),
        "wae-mmd" => Ok(Box::new(wae::Wae::new(cfg, geo, device)?)),
        "two-stage-vae" => Ok(Box::new(two_stage::TwoStage::new(cfg, geo, device)?)),
        "rae-l2" => Ok(Box::new(rae::Rae::new(cfg, geo, device, rae::RaeKind::L2)?)),
        "rae-gp" => Ok(Box::new(rae::Rae::new(cfg, geo, device, rae::RaeKind::Gp)?)),
        "rae-sn" => Ok(Box::new(rae::Rae::new(cfg, geo, device, rae::RaeKind::Sn)?)),
        other => bail!("unknown model `{other}`"),
    }
}

/// Copy checkpoint tensors into a var store's variables, with clear errors
/// for missing or mis-shaped entries.
pub fn load_var_store(
    vs: &mut tch::nn::VarStore,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        let key = format!("{prefix}.{name}");
        let src = tensors
            .get(&key)
            .ok_or_else(|| anyhow::anyhow!("checkpoint lacks tensor `{key}`"))?;
        if src.size() != var.size() {
            bail!("checkpoint tensor `{key}` has shape {:?}, the model expects {:?} (different preset or width?)", src.size(), var.size());
        }
        var.copy_(src);
    }
    Ok(())
}

/// A var store's variables, prefixed, for a checkpoint.
pub fn var_store_state(vs: &tch::nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::common::testing::tiny_config;
    use super::*;
    use crate::nets::Geometry;

    #[test]
    fn build_knows_every_baseline_and_each_takes_a_step() {
        let _rng = crate::rng::exclusive();
        for name in crate::config::MODELS.iter().filter(|m| **m != "ldc") {
            let c = tiny_config(name);
            let mut m = build(&c, Device::Cpu).unwrap();
            assert_eq!(m.name(), *name);
            let x = Tensor::rand([4, 1, 32, 32], (tch::Kind::Float, Device::Cpu));
            let st = m.train_step(&x, 0).unwrap();
            assert_eq!(st.0[0].0, "loss", "{name}: loss first");
            assert!(st.non_finite().is_none(), "{name}: {st:?}");
        }
    }

    #[test]
    fn celeba_geometry_works_for_the_paths_that_differ() {
        let _rng = crate::rng::exclusive();
        // WAE on CelebA: the WAE-paper reconstruction and input noise; RAE-SN:
        // the spectrally normalised 64×64 decoder with 5×5 kernels.
        for name in ["wae-mmd", "rae-sn"] {
            let mut c = tiny_config(name);
            c.data.dataset = "celeba".into();
            let mut m = build(&c, Device::Cpu).unwrap();
            let g = Geometry::CELEBA;
            let x = Tensor::rand(
                [2, g.channels, g.size, g.size],
                (tch::Kind::Float, Device::Cpu),
            );
            let st = m.train_step(&x, 0).unwrap();
            assert!(st.non_finite().is_none(), "{name}: {st:?}");
            assert_eq!(m.decode(&m.encode(&x)).size(), x.size());
        }
    }

    /// Real-data smoke run (not part of the suite: ~5 minutes on two busy
    /// cores). Run with `cargo test --release --lib real_mnist -- --ignored
    /// --nocapture`. Each baseline trains 300 steps on MNIST (width 1/8,
    /// batch 64), runs its post-training phase, and must reconstruct better
    /// than the mean image and generate finite images.
    #[test]
    #[ignore]
    fn real_mnist_smoke_run_of_every_baseline() {
        let _rng = crate::rng::exclusive();
        use crate::data::{load_split, Split};
        use common::testing::Fixed;
        let train = load_split("mnist", None, Split::Train)
            .unwrap()
            .images
            .narrow(0, 0, 6400);
        let test = load_split("mnist", None, Split::Test)
            .unwrap()
            .images
            .narrow(0, 0, 500);
        let mean_img = train.mean_dim(0, true, tch::Kind::Float);
        let base = test
            .mse_loss(&mean_img.expand_as(&test), tch::Reduction::Mean)
            .double_value(&[]);
        for name in crate::config::MODELS.iter().filter(|m| **m != "ldc") {
            let mut c = tiny_config(name);
            c.net.width = 0.125;
            c.net.latent_dim = 16;
            c.baselines.two_stage_steps = 300;
            c.baselines.two_stage_hidden = 256;
            let mut m = build(&c, Device::Cpu).unwrap();
            let t = std::time::Instant::now();
            let mut last = StepStats::default();
            for s in 0..300u64 {
                let i = (s as i64 * 64) % 6400;
                last = m.train_step(&train.narrow(0, i, 64), s).unwrap();
                assert!(last.non_finite().is_none(), "{name} step {s}: {last:?}");
            }
            let mut src = Fixed(train.shallow_clone());
            let mut post = StepStats::default();
            for i in 0..m.post_training_steps() {
                post = m.post_training_step(&mut src, i).unwrap();
            }
            let rec = m.decode(&m.encode(&test));
            let mse = rec.mse_loss(&test, tch::Reduction::Mean).double_value(&[]);
            crate::rng::reseed(0, crate::rng::Stream::Eval, 0);
            let gen = m.decode(&m.sample_latents(500).unwrap());
            let gen_mean = gen.mean(tch::Kind::Float).double_value(&[]);
            eprintln!(
                "{name}: {:.0?}; last step {:?}; post {:?}; test MSE {mse:.4} (mean image {base:.4}); sample mean {gen_mean:.3} (data {:.3}); sampler {}",
                t.elapsed(), last.0, post.0, test.mean(tch::Kind::Float).double_value(&[]), m.sampler_name()
            );
            assert!(
                mse < 0.8 * base,
                "{name}: test MSE {mse} vs mean-image {base}"
            );
            assert!(bool::try_from(gen.isfinite().all()).unwrap());
        }
    }
}
