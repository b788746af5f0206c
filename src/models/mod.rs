//! Models behind one trait, so one training pipeline, one evaluation and one
//! report serve them all. One file per model, each with its knobs (a config
//! struct at the top of the file) and one line in [`REGISTRY`].
//!
//! - [`ldc`] — LDC-VAE.
//! - [`vae`] — VAE and CV-VAE (`vae`, `cv-vae`), samples from N(0, I) (or an
//!   ex-post GMM, `baselines.vae_sampler`).
//! - [`wae`] — WAE-MMD (`wae-mmd`, IMQ kernel), samples from N(0, I) (ditto).
//! - [`two_stage`] — two-stage VAE (`two-stage-vae`); the second stage is the
//!   post-training phase.
//! - [`rae`] — RAE-L2, RAE-GP, RAE-SN (`rae-l2`, `rae-gp`, `rae-sn`; the
//!   spectral normalisation is [`crate::nets::sn`]); samples from the ex-post
//!   GMM of [`expost`], fitted in the post-training phase.
//! - [`reference`] — the baselines' per-data-set weights and where each comes from.
//! - [`common`] — what the baselines share (encoder/decoder/optimizer core,
//!   reconstruction losses in the reference's scalings, the [`Baseline`] trait).
//!
//! Models do not read the run config ([`crate::config::Config`]) itself: they
//! are built from a [`Spec`], the parts of it a model reads, so the config can
//! be assembled from the models' sections and check them against the registry.

use crate::nets::{Geometry, NetConfig};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Device, Tensor};

pub mod common;
pub mod expost;
pub mod ldc;
pub mod ldc_recipe;
pub mod rae;
pub mod reference;
pub mod two_stage;
pub mod vae;
pub mod wae;

pub use common::Baseline;

/// One model of the registry.
pub struct ModelInfo {
    /// The name on the command line, in configs and in `eval.json`.
    pub key: &'static str,
    /// Row title in reports (the paper's name where it has one).
    pub title: &'static str,
    /// Other spellings a report accepts for `key`.
    pub aliases: &'static [&'static str],
    pub build: fn(&Spec, Geometry, Device) -> Result<Box<dyn Model>>,
    /// The model's row of the paper's Table 1, if it has one.
    pub table1: Option<Table1Row>,
    /// Generates through a trained sampler net (`train --only sampler`,
    /// `compare-samplers`).
    pub sampler_net: bool,
    /// Metrics drawn in `loss.png`.
    pub loss_curves: &'static [&'static str],
    /// Checks of the config this model needs beyond each section's own, for
    /// a run on `workers` MPI workers.
    pub check: fn(&Spec, usize) -> Result<()>,
}

/// A row of the paper's Table 1.
#[derive(Debug, Clone, Copy)]
pub struct Table1Row {
    /// Position of the row in the paper's table.
    pub position: u8,
    /// [Rec, Sample] FID for MNIST, CELEBA, CIFAR10.
    pub fid: [f64; 6],
}

fn no_check(_: &Spec, _: usize) -> Result<()> {
    Ok(())
}

const fn table1(position: u8, fid: [f64; 6]) -> Option<Table1Row> {
    Some(Table1Row { position, fid })
}

/// Every model: a new model is a new file and one line here.
pub const REGISTRY: &[ModelInfo] = &[
    ModelInfo {
        key: "ldc",
        title: "LDC-VAE",
        aliases: &["ldc-vae", "ldcvae"],
        build: ldc::build,
        table1: table1(7, [1.02, 4.73, 34.82, 36.84, 49.18, 101.24]),
        sampler_net: true,
        loss_curves: &["loss", "sigma2", "h", "sampler_std"],
        check: ldc::check,
    },
    ModelInfo {
        key: "vae",
        title: "VAE",
        aliases: &[],
        build: vae::build_vae,
        table1: table1(0, [18.26, 19.21, 39.12, 48.12, 57.94, 106.37]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
    ModelInfo {
        key: "cv-vae",
        title: "CV-VAE",
        aliases: &["cvvae"],
        build: vae::build_cv_vae,
        table1: table1(1, [15.15, 33.79, 40.41, 48.87, 37.74, 94.75]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
    ModelInfo {
        key: "wae-mmd",
        title: "WAE-MMD",
        aliases: &["wae"],
        build: wae::build,
        table1: table1(2, [10.03, 20.42, 34.81, 53.67, 35.97, 117.44]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
    ModelInfo {
        key: "two-stage-vae",
        title: "2sAE",
        aliases: &["2sae", "2s-vae", "two-stage", "twostage", "2svae"],
        build: two_stage::build,
        table1: table1(3, [20.31, 18.81, 42.04, 49.70, 62.54, 109.77]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
    ModelInfo {
        key: "rae-l2",
        title: "RAE-L2",
        aliases: &[],
        build: rae::build_l2,
        table1: table1(4, [10.53, 8.69, 43.52, 47.97, 32.24, 74.16]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
    ModelInfo {
        key: "rae-gp",
        title: "RAE-GP",
        aliases: &[],
        build: rae::build_gp,
        table1: table1(6, [14.04, 11.54, 39.71, 45.63, 32.17, 76.33]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
    ModelInfo {
        key: "rae-sn",
        title: "RAE-SN",
        aliases: &[],
        build: rae::build_sn,
        table1: table1(5, [15.65, 11.74, 36.01, 40.95, 27.61, 75.30]),
        sampler_net: false,
        loss_curves: &["loss"],
        check: no_check,
    },
];

/// The registry entry of `key`, or an error listing the models.
pub fn info(key: &str) -> Result<&'static ModelInfo> {
    REGISTRY.iter().find(|m| m.key == key).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown model `{key}`; models: {}",
            keys().collect::<Vec<_>>().join(", ")
        )
    })
}

/// The model keys, in registry order.
pub fn keys() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|m| m.key)
}

/// Canonical key of a model name as written in an `eval.json` (a key or an
/// alias, any case, `_` for `-`); unknown names come back normalised.
pub fn canonical_key(name: &str) -> String {
    let m = name.trim().to_lowercase().replace('_', "-");
    REGISTRY
        .iter()
        .find(|i| i.key == m || i.aliases.contains(&m.as_str()))
        .map(|i| i.key.to_string())
        .unwrap_or(m)
}

/// What a model is built from: the parts of the run config it reads.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Registry key.
    pub model: &'a str,
    pub seed: u64,
    /// Data set name (the baselines' reference weights, [`reference::Family`]).
    pub dataset: &'a str,
    /// Image geometry of the nets (`Config::geometry`).
    pub geometry: Geometry,
    pub net: &'a NetConfig,
    /// Adam settings of every optimizer (`train.lr`, `train.beta1`, `train.beta2`).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Training-mode BatchNorm groups (`train.bn_groups`, ghost BatchNorm).
    pub bn_groups: usize,
    pub ldc: &'a ldc::LdcConfig,
    pub baselines: &'a BaselineConfig,
    /// `[sampler]`: the generation route fitted after training.
    pub sampler: &'a crate::samplers::SamplerConfig,
}

/// The baselines' knobs (TOML section `[baselines]`), each model's beside it.
/// One flat section, as it always was: each key belongs to one model's struct.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BaselineConfig {
    #[serde(flatten)]
    pub vae: vae::VaeConfig,
    #[serde(flatten)]
    pub wae: wae::WaeConfig,
    #[serde(flatten)]
    pub rae: rae::RaeConfig,
    #[serde(flatten)]
    pub two_stage: two_stage::TwoStageConfig,
    #[serde(flatten)]
    pub gmm: expost::GmmConfig,
    #[serde(flatten)]
    pub route: vae::RouteConfig,
}

impl<'de> Deserialize<'de> for BaselineConfig {
    /// Each model's keys into its struct, so that a bad value is reported
    /// with its key (`#[serde(flatten)]` would name only the section).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        Ok(BaselineConfig {
            vae: section_part(&table)?,
            wae: section_part(&table)?,
            rae: section_part(&table)?,
            two_stage: section_part(&table)?,
            gmm: section_part(&table)?,
            route: section_part(&table)?,
        })
    }
}

/// The keys of `[baselines]` that belong to `T`, deserialized, with the
/// failing key named in an error.
fn section_part<T, E>(table: &toml::Table) -> std::result::Result<T, E>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
    E: serde::de::Error,
{
    let known = toml::Table::try_from(T::default()).map_err(E::custom)?;
    let mine: toml::Table = table
        .iter()
        .filter(|(k, _)| known.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    T::deserialize(toml::Value::Table(mine.clone())).map_err(|e| {
        let key = mine.iter().find(|(k, v)| {
            let one = toml::Table::from_iter([((*k).clone(), (*v).clone())]);
            T::deserialize(toml::Value::Table(one)).is_err()
        });
        match key {
            Some((k, _)) => E::custom(format!(
                "config key `baselines.{k}`: {}",
                e.to_string().lines().next().unwrap_or_default()
            )),
            None => E::custom(e),
        }
    })
}

impl BaselineConfig {
    pub fn validate(&self) -> Result<()> {
        self.vae.validate()?;
        self.wae.validate()?;
        self.rae.validate()?;
        self.two_stage.validate()?;
        self.gmm.validate()
    }
}

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

/// How a model generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// A trained sampler net (LDC-VAE).
    SamplerNet,
    /// The N(0, I) prior.
    Prior,
    /// An ex-post GMM fitted on the training latents (RAEs; VAEs and WAE with
    /// `baselines.vae_sampler = gmm`).
    ExPostGmm,
    /// A second-stage VAE on the latents (two-stage VAE).
    SecondStage,
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
    /// The generation route.
    fn generation(&self) -> Generation;
    /// Steps run by [`Model::post_training_step`] (0 if none), for progress bars.
    fn post_training_steps(&self) -> u64 {
        0
    }
    /// Step `i` of the work after the main loop. Checkpointing happens in the caller.
    fn post_training_step(&mut self, _data: &mut dyn BatchSource, _i: u64) -> Result<StepStats> {
        bail!("{} has no post-training phase", self.name())
    }
    /// The latents the model's generator was fitted on, when it has such a
    /// bank (LDC-VAE's refinement bank of encoded training images or its FIFO
    /// bank of encoder particles; an ex-post sampler net's bank), rebuilt
    /// exactly as training built it: the training set of eval's data-copying
    /// test. `None`: the generator's training latents are the encoded
    /// training images themselves (GMMs) or it has none (priors).
    fn generator_bank(&self, _data: &mut dyn BatchSource) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Named tensors that make up the whole state (weights, BN statistics,
    /// optimizer moments, banks) for a checkpoint.
    fn state(&self) -> Vec<(String, Tensor)>;
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
    /// Multiply every learning rate by `factor` (NaN rollback, LR plateau).
    fn scale_lr(&mut self, factor: f64);
}

/// Build the model named in `spec.model`, initialised as `net.init` says.
pub fn build(spec: &Spec, device: Device) -> Result<Box<dyn Model>> {
    let model = (info(spec.model)?.build)(spec, spec.geometry, device)?;
    if spec.net.init == crate::nets::NetInit::Pytorch {
        crate::nets::init_like_pytorch(&model.state(), spec.seed);
    }
    Ok(model)
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

    #[test]
    fn build_knows_every_baseline_and_each_takes_a_step() {
        let _rng = crate::rng::exclusive();
        for name in keys().filter(|m| *m != "ldc") {
            let c = tiny_config(name);
            let mut m = build(&c.spec(), Device::Cpu).unwrap();
            assert_eq!(m.name(), name);
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
            let mut m = build(&c.spec(), Device::Cpu).unwrap();
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
        for name in keys().filter(|m| *m != "ldc") {
            let mut c = tiny_config(name);
            c.net.width = 0.125;
            c.net.latent_dim = 16;
            c.baselines.two_stage.two_stage_steps = 300;
            c.baselines.two_stage.two_stage_hidden = 256;
            let mut m = build(&c.spec(), Device::Cpu).unwrap();
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
