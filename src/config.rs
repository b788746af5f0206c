//! Run configuration: TOML presets shipped in `configs/`, user TOML files and
//! `--set key=value` overrides, validated before anything runs.
//!
//! Every section has defaults (DESIGN.md §1 for LDC-VAE), so a preset only
//! states what differs. Unknown keys and out-of-range values are errors that
//! name the key. The effective config is written into every run directory.

use crate::models::{self, BaselineConfig, Spec};
pub use crate::samplers::{SamplerConfig, SamplerKind};
use crate::util::{at_least, in_range, positive};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::data::config::DataConfig;
pub use crate::models::ldc::{
    KdeBandwidthRule, LdcConfig, RefineBank, SamplerBandwidth, SamplerKernel, SamplerNetKind,
    SamplerTarget, ScoreBn, Sigma2, Sigma2Rule,
};
pub use crate::models::ldc_recipe::Recipe;
pub use crate::models::reference::BASELINE_REFERENCE;
pub use crate::models::vae::{VaeEncode, VaeSampler};
pub use crate::nets::{NetConfig, NetInit, NoiseInput};

/// Presets shipped with the binary (the files in `configs/`).
pub const PRESETS: &[(&str, &str)] = &[
    ("mnist-cpu", include_str!("../configs/mnist-cpu.toml")),
    ("mnist", include_str!("../configs/mnist.toml")),
    ("celeba", include_str!("../configs/celeba.toml")),
    ("cifar10", include_str!("../configs/cifar10.toml")),
    ("celeba-cpu", include_str!("../configs/celeba-cpu.toml")),
    ("cifar10-cpu", include_str!("../configs/cifar10-cpu.toml")),
];

pub const DEFAULT_PRESET: &str = "mnist-cpu";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed for weights, noise and data order. Same seed, same device → same numbers.
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `cuda:local` (one GPU per MPI worker).
    pub device: String,
    /// Intra-op threads for libtorch on CPU; 0 = all cores.
    pub threads: usize,
    /// Which model `train` builds: a key of [`models::REGISTRY`] (ldc, vae,
    /// cv-vae, wae-mmd, two-stage-vae, rae-l2, rae-gp, rae-sn).
    pub model: String,
    /// The preset this config started from (set by `--preset`; shown in reports).
    pub preset: String,
    pub data: DataConfig,
    pub net: NetConfig,
    pub train: TrainConfig,
    pub ldc: LdcConfig,
    pub baselines: BaselineConfig,
    /// The generation route fitted after training (crate::samplers).
    pub sampler: SamplerConfig,
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Stop after this many steps (0 = run all epochs).
    pub max_steps: u64,
    pub batch_size: i64,
    /// Adam learning rate of encoder/decoder (DESIGN §1.9: 5e-4, 1e-3 for CelebA).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Checkpoint every N steps (0 = only at the end of each epoch and of the run).
    pub checkpoint_every: u64,
    /// stop | rollback: what a NaN/Inf loss does.
    pub on_nan: OnNan,
    /// Learning-rate factor applied on each rollback.
    pub nan_lr_factor: f64,
    /// ReduceLROnPlateau on validation MSE (factor 0.5, patience below); 0 = off.
    pub plateau_patience: usize,
    /// Training-mode BatchNorm statistics per group of `batch_size / bn_groups`
    /// consecutive examples ("ghost" BatchNorm); 1 = the whole batch. A run on K
    /// MPI workers normalises per worker shard, i.e. uses `bn_groups = K`, and
    /// records it (docs/DISTRIBUTED.md).
    pub bn_groups: usize,
    /// TensorBoard event files in the run folder: the scalars of
    /// `metrics.jsonl` and a sample grid per epoch (`crate::train::tensorboard`).
    pub tensorboard: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Generated images for sample FID (paper: 10,000) and test images for rec FID.
    pub fid_samples: usize,
    /// Latents per side for the latent-consistency MMD and t-SNE (paper: 2,000).
    pub latent_samples: usize,
    /// Batch size of the Inception forward.
    pub fid_batch: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            device: "cpu".into(),
            threads: 0,
            model: "ldc".into(),
            preset: String::new(),
            data: DataConfig::default(),
            net: NetConfig::default(),
            train: TrainConfig::default(),
            ldc: LdcConfig::default(),
            baselines: BaselineConfig::default(),
            sampler: SamplerConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            max_steps: 0,
            batch_size: 100,
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            checkpoint_every: 0,
            on_nan: OnNan::Stop,
            nan_lr_factor: 0.5,
            plateau_patience: 0,
            bn_groups: 1,
            tensorboard: true,
        }
    }
}

/// `train.on_nan`: what a NaN/Inf loss does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnNan {
    /// Stop with an error naming the last good checkpoint.
    Stop,
    /// Reload the last checkpoint and scale the learning rates by `nan_lr_factor`.
    Rollback,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            fid_samples: 10_000,
            latent_samples: 2000,
            fid_batch: 50,
        }
    }
}

pub(crate) fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if !allowed.contains(&value) {
        bail!(
            "config key `{key}`: `{value}` is not one of {}",
            allowed.join(", ")
        );
    }
    Ok(())
}

impl Config {
    /// The named preset, or an error listing the ones that exist.
    pub fn preset(name: &str) -> Result<Config> {
        let text = PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .with_context(|| {
                let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                format!("unknown preset `{name}`; presets: {}", names.join(", "))
            })?;
        let mut cfg =
            Self::from_toml_str(text, &[]).with_context(|| format!("in preset `{name}`"))?;
        cfg.preset = name.to_string();
        Ok(cfg)
    }

    /// Preset or file, then overrides. `file` wins over `preset` when given.
    pub fn load(preset: Option<&str>, file: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?,
            None => {
                let name = preset.unwrap_or(DEFAULT_PRESET);
                let t = PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
                match t {
                    Some(t) => t.to_string(),
                    None => return Self::preset(name),
                }
            }
        };
        let what = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("preset `{}`", preset.unwrap_or(DEFAULT_PRESET)));
        let mut cfg =
            Self::from_toml_str(&text, overrides).with_context(|| format!("config from {what}"))?;
        if file.is_none() {
            cfg.preset = preset.unwrap_or(DEFAULT_PRESET).to_string();
        }
        Ok(cfg)
    }

    /// Parse TOML, apply `key=value` overrides (dotted keys), deserialize, validate.
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Config> {
        let mut value: toml::Value = toml::from_str(text).context("invalid TOML")?;
        let known = toml::Value::try_from(Config::default()).expect("default config serializes");
        check_known_keys(&value, &known, "")?;
        // `ldc.recipe` (models::ldc_recipe): in the file it fills the keys the
        // file does not state; given with --set it overrides the file, and the
        // other --set keys override it, whatever their order.
        let file_recipe = value
            .get("ldc")
            .and_then(|l| l.get("recipe"))
            .and_then(|r| r.as_str())
            .map(Recipe::parse)
            .transpose()?;
        if let Some(r) = file_recipe {
            for (k, v) in r.keys() {
                let stated = value.get("ldc").and_then(|l| l.get(*k)).is_some();
                if !stated {
                    apply_override(&mut value, &known, &format!("ldc.{k}={v}"))?;
                }
            }
        }
        let set_recipe = overrides
            .iter()
            .filter_map(|ov| ov.split_once('='))
            .filter(|(k, _)| k.trim() == "ldc.recipe")
            .map(|(_, v)| Recipe::parse(v.trim().trim_matches('"')))
            .next_back()
            .transpose()?;
        if let Some(r) = set_recipe {
            for ov in r.overrides() {
                apply_override(&mut value, &known, &ov)?;
            }
        }
        for ov in overrides {
            apply_override(&mut value, &known, ov)?;
        }
        let cfg: Config = value.try_into().context("invalid config value")?;
        cfg.validate()?;
        cfg.data.register();
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn validate(&self) -> Result<()> {
        let model = models::info(&self.model).context("config key `model`")?;
        self.data.validate()?;
        if !(self.device == "cpu" || self.device == "cuda" || self.device.starts_with("cuda:")) {
            bail!(
                "config key `device`: `{}` is not cpu, cuda or cuda:N",
                self.device
            );
        }
        self.net.validate()?;
        if self.train.batch_size < 2 {
            bail!(
                "config key `train.batch_size` must be >= 2 (SVGD needs two particles), got {}",
                self.train.batch_size
            );
        }
        if self.train.epochs == 0 && self.train.max_steps == 0 {
            bail!("config keys `train.epochs` and `train.max_steps` are both 0: nothing to train");
        }
        if self.train.bn_groups < 1 || self.train.batch_size % self.train.bn_groups as i64 != 0 {
            bail!(
                "config key `train.bn_groups` ({}) must be >= 1 and divide `train.batch_size` ({})",
                self.train.bn_groups,
                self.train.batch_size
            );
        }
        positive("train.lr", self.train.lr)?;
        in_range("train.beta1", self.train.beta1, 0.0, 0.999_999)?;
        in_range("train.beta2", self.train.beta2, 0.0, 0.999_999)?;
        positive("train.nan_lr_factor", self.train.nan_lr_factor)?;
        in_range("train.nan_lr_factor", self.train.nan_lr_factor, 0.0, 1.0)?;
        self.ldc.validate()?;
        let ppx = self.ldc.particles_per_x;
        if ppx > 1 && self.train.batch_size % ppx != 0 {
            bail!(
                "config key `ldc.particles_per_x` ({ppx}) must divide `train.batch_size` ({})",
                self.train.batch_size
            );
        }
        self.baselines.validate()?;
        self.sampler.validate()?;
        if self.model == "ldc" && self.sampler.kind != SamplerKind::Model {
            bail!(
                "config key `sampler.kind = {}`: LDC-VAE trains its own sampler net, chosen by \
                 `ldc.recipe` (ot, the same OT sampler as `sampler.kind = ot`, or paper); its \
                 ex-post GMM is evaluated beside it anyway",
                self.sampler.kind
            );
        }
        if self.model == "two-stage-vae" && self.sampler.kind != SamplerKind::Model {
            bail!(
                "config key `sampler.kind = {}`: the 2-stage VAE generates through its second stage",
                self.sampler.kind
            );
        }
        at_least("eval.fid_samples", self.eval.fid_samples as i64, 2)?;
        at_least("eval.latent_samples", self.eval.latent_samples as i64, 2)?;
        if self.eval.fid_batch < 1 {
            bail!("config key `eval.fid_batch` must be >= 1");
        }
        (model.check)(&self.spec(), 1)
    }

    /// What the model of this config is built from.
    pub fn spec(&self) -> Spec<'_> {
        Spec {
            model: &self.model,
            seed: self.seed,
            dataset: &self.data.dataset,
            geometry: self.geometry(),
            net: &self.net,
            lr: self.train.lr,
            beta1: self.train.beta1,
            beta2: self.train.beta2,
            bn_groups: self.train.bn_groups,
            ldc: &self.ldc,
            baselines: &self.baselines,
            sampler: &self.sampler,
        }
    }

    /// Image geometry of the nets: the data set's, or for `folder` the CIFAR-10
    /// nets' kernels at 32 px and the CelebA nets' at 64 px, with
    /// `data.channels` (validated: 32 or 64).
    pub fn geometry(&self) -> crate::nets::Geometry {
        use crate::nets::Geometry;
        if self.data.dataset != "folder" {
            return Geometry::for_dataset(&self.data.dataset);
        }
        let base = if self.data.image_size == 64 {
            Geometry::CELEBA
        } else {
            Geometry::CIFAR10
        };
        Geometry {
            channels: self.data.channels as i64,
            ..base
        }
    }

    /// The model of this config, freshly initialised, on `device`.
    pub fn build_model(&self, device: tch::Device) -> Result<Box<dyn models::Model>> {
        models::build(&self.spec(), device)
    }

    /// Sampler learning rate, defaulting to the encoder/decoder one.
    pub fn sampler_lr(&self) -> f64 {
        self.ldc.sampler_lr(self.train.lr)
    }
}

fn check_known_keys(value: &toml::Value, known: &toml::Value, prefix: &str) -> Result<()> {
    if let (toml::Value::Table(t), toml::Value::Table(k)) = (value, known) {
        for (key, v) in t {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match k.get(key) {
                None => bail!("unknown config key `{path}`"),
                Some(kv) => check_known_keys(v, kv, &path)?,
            }
        }
    }
    Ok(())
}

fn apply_override(value: &mut toml::Value, known: &toml::Value, ov: &str) -> Result<()> {
    let (key, raw) = ov
        .split_once('=')
        .with_context(|| format!("override `{ov}` is not of the form key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    let parts: Vec<&str> = key.split('.').collect();
    // The key must exist in the schema.
    let mut k = known;
    for p in &parts {
        k = k
            .get(p)
            .with_context(|| format!("unknown config key `{key}`"))?;
    }
    if k.is_table() {
        bail!(
            "config key `{key}` is a section; set one of its keys, e.g. `{key}.{}`",
            k.as_table()
                .unwrap()
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("...")
        );
    }
    // Parse as a TOML value; bare words become strings.
    let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    // Integers given where floats are expected (and vice versa for whole floats).
    let parsed = match (k, parsed) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (_, p) => p,
    };
    let mut cur = value;
    for (i, p) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .with_context(|| format!("config key `{key}`: parent is not a table"))?;
        if i + 1 == parts.len() {
            table.insert(p.to_string(), parsed);
            break;
        }
        cur = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            Config::preset(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_named() {
        let c = Config::load(
            None,
            None,
            &[
                "ldc.kde_scale=0.5".into(),
                "train.lr=1".into(),
                "ldc.sigma2=0.01".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.ldc.kde_scale, 0.5);
        assert_eq!(c.train.lr, 1.0);
        assert_eq!(c.ldc.sigma2, Sigma2::Fixed(0.01));
        let c = Config::load(None, None, &["ldc.sigma2=batch_sq_mean".into()]).unwrap();
        assert_eq!(c.ldc.sigma2, Sigma2::Rule(Sigma2Rule::BatchSqMean));
        let e = Config::load(None, None, &["ldc.kde_scael=0.5".into()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown config key `ldc.kde_scael`"),
            "{e:#}"
        );
        let e = Config::from_toml_str("[train]\nbatchsize = 3\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("train.batchsize"), "{e:#}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (ov, key) in [
            ("train.lr=-1", "train.lr"),
            ("train.batch_size=1", "train.batch_size"),
            ("ldc.sampler_target=bogus", "ldc.sampler_target"),
            ("ldc.kde_scale=0", "ldc.kde_scale"),
            ("net.width=nan", "net.width"),
            ("model=gan", "model"),
            ("train.bn_groups=0", "train.bn_groups"),
            ("train.bn_groups=3", "train.bn_groups"), // batch 100 does not split in 3
            ("net.init=xavier", "net.init"),
            ("ldc.kde_bandwidth=bogus", "ldc.kde_bandwidth"),
            ("ldc.refine_bank=all", "ldc.refine_bank"),
            ("ldc.refine_bank_size=1", "ldc.refine_bank_size"),
            ("ldc.refine_anneal=-1", "ldc.refine_anneal"),
            ("ldc.mmd_bank_batch=1", "ldc.mmd_bank_batch"),
            ("ldc.sampler_refine_lr_end=1.5", "ldc.sampler_refine_lr_end"),
            ("ldc.sampler_kernel=laplace", "ldc.sampler_kernel"),
            ("ldc.sampler_h_scale=0", "ldc.sampler_h_scale"),
            ("ldc.sampler_net=rnn", "ldc.sampler_net"),
            ("ldc.sampler_hidden=0", "ldc.sampler_hidden"),
            ("ldc.ot_epsilon=0", "ldc.ot_epsilon"),
            ("ldc.ot_potential_lr=-1", "ldc.ot_potential_lr"),
            ("ldc.ot_epsilon_start=-1", "ldc.ot_epsilon_start"),
            // The preset's OT sampler on a FIFO bank: nothing fixed to transport onto.
            ("ldc.refine_bank=fifo", "ldc.sampler_objective = ot"),
            ("ldc.joint_sampler=true", "ldc.sampler_objective = ot"),
        ] {
            let e = Config::load(None, None, &[ov.to_string()]).unwrap_err();
            assert!(format!("{e:#}").contains(key), "{ov}: {e:#}");
        }
        let e = Config::load(Some("nope"), None, &[]).unwrap_err();
        assert!(format!("{e:#}").contains("unknown preset `nope`"));
    }

    /// A value that is not one of a key's options names the key and the options
    /// (serde parses the enums; `[baselines]` keys are named though the section
    /// is assembled from the models' structs).
    #[test]
    fn bad_options_name_the_key_and_the_allowed_values() {
        for (ov, key, allowed) in [
            ("net.noise_join=cat", "net.noise_join", "`add` or `concat`"),
            ("net.init=xavier", "net.init", "`pytorch` or `tch`"),
            ("train.on_nan=retry", "train.on_nan", "`stop` or `rollback`"),
            ("ldc.score_bn=no", "ldc.score_bn", "`inference` or `batch`"),
            (
                "ldc.sampler_bandwidth=x",
                "ldc.sampler_bandwidth",
                "`target` or `own`",
            ),
            (
                "ldc.sampler_kernel=x",
                "ldc.sampler_kernel",
                "`rbf` or `imq`",
            ),
            (
                "ldc.sampler_objective=kl",
                "ldc.sampler_objective",
                "`svgd`, `mmd`, `ot`",
            ),
            ("ldc.kde_bandwidth=x", "ldc.kde_bandwidth", "`cv`"),
            (
                "ldc.refine_bank=x",
                "ldc.refine_bank",
                "`fifo` or `train_set`",
            ),
            ("ldc.sampler_net=x", "ldc.sampler_net", "`conv` or `mlp`"),
            (
                "baselines.vae_sampler=x",
                "baselines.vae_sampler",
                "`prior` or `gmm`",
            ),
            (
                "baselines.vae_encode=x",
                "baselines.vae_encode",
                "`mean` or `sample`",
            ),
            (
                "baselines.gmm_components=-1",
                "baselines.gmm_components",
                "usize",
            ),
            ("model=gan", "model", "rae-sn"),
        ] {
            let e = format!(
                "{:#}",
                Config::load(None, None, &[ov.to_string()]).unwrap_err()
            );
            assert!(e.contains(key) && e.contains(allowed), "{ov}: {e}");
        }
        let c = Config::load(None, None, &["baselines.vae_sampler=gmm".into()]).unwrap();
        assert_eq!(c.baselines.route.vae_sampler, VaeSampler::Gmm);
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = Config::preset("mnist-cpu").unwrap();
        let back = Config::from_toml_str(&c.to_toml(), &[]).unwrap();
        assert_eq!(c, back);
    }
}
