//! Run configuration: TOML presets shipped in `configs/`, user TOML files and
//! `--set key=value` overrides, validated before anything runs.
//!
//! Every section has defaults (DESIGN.md §1 for LDC-VAE), so a preset only
//! states what differs. Unknown keys and out-of-range values are errors that
//! name the key. The effective config is written into every run directory.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// Which model `train` builds: ldc, vae, cv-vae, wae-mmd, two-stage-vae, rae-l2, rae-gp, rae-sn.
    pub model: String,
    /// The preset this config started from (set by `--preset`; shown in reports).
    pub preset: String,
    pub data: DataConfig,
    pub net: NetConfig,
    pub train: TrainConfig,
    pub ldc: LdcConfig,
    pub baselines: BaselineConfig,
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// mnist, fashion-mnist, cifar10, celeba.
    pub dataset: String,
    /// Directory holding the data set; empty = search the usual places
    /// (`$LDC_VAE_DATA`, `./data`, `../shared/data`).
    pub dir: String,
    /// Images held out of the training split for validation MSE.
    pub val_size: usize,
    /// Use at most this many training images (0 = all); for quick runs.
    pub train_limit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Channel multiplier on the RAE widths (128, 256, 512, 1024); 1 = paper.
    pub width: f64,
    /// Latent dimension (paper: 16 MNIST, 64 CelebA, 128 CIFAR-10).
    pub latent_dim: i64,
    /// How the LDC encoder joins its noise conv to the image conv: add | concat.
    pub noise_join: String,
    /// Run the decoder in channels-last memory format (faster transposed convs on CPU).
    pub channels_last: bool,
    /// Weight initialisation of every conv/linear layer: `pytorch` (PyTorch's
    /// defaults, U(±1/√fan_in) for weights and biases) or `tch` (tch's defaults:
    /// Kaiming-uniform with ReLU gain, 2.45× wider, and zero conv biases; the
    /// default before issue 14, ~1.7× higher validation MSE at 1,200 steps).
    pub init: String,
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
    pub on_nan: String,
    /// Learning-rate factor applied on each rollback.
    pub nan_lr_factor: f64,
    /// ReduceLROnPlateau on validation MSE (factor 0.5, patience below); 0 = off.
    pub plateau_patience: usize,
    /// Training-mode BatchNorm statistics per group of `batch_size / bn_groups`
    /// consecutive examples ("ghost" BatchNorm); 1 = the whole batch. A run on K
    /// MPI workers normalises per worker shard, i.e. uses `bn_groups = K`, and
    /// records it (docs/DISTRIBUTED.md).
    pub bn_groups: usize,
}

/// How σ² of the Gibbs posterior is set each step (DESIGN §1.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Sigma2 {
    Fixed(f64),
    Rule(Sigma2Rule),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Sigma2Rule {
    /// Paper: variance over the batch of the residual norms ||x_j - D(z_j)||.
    BatchNormVar,
    /// Mean over the batch of ||x_j - D(z_j)||².
    BatchSqMean,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LdcConfig {
    /// w in log p(z|x) = -||x-D(z)||²/σ² - (w/2)||z||²; 0 = the paper's literal form.
    pub prior_weight: f64,
    pub sigma2: Sigma2,
    pub sigma2_min: f64,
    /// inference | batch: BN mode of the decoder pass that gives the scores.
    pub score_bn: String,
    /// Noise draws per image (1 = the batch is the particle set).
    pub particles_per_x: i64,
    /// aggregate_kde | mixture | paired | encoder_particles.
    pub sampler_target: String,
    /// FIFO bank of recent encoder particles for the aggregate_kde target.
    pub kde_bank: i64,
    /// τ² = kde_scale · h_bank / 2.
    pub kde_scale: f64,
    /// target | own: bandwidth of the sampler's SVGD kernel.
    pub sampler_bandwidth: String,
    /// n_s, particles per sampler step.
    pub sampler_particles: i64,
    /// Sampler learning rate (default = train.lr).
    pub sampler_lr: f64,
    /// Sampler-only steps on the frozen encoder/decoder after joint training.
    pub sampler_refine_steps: u64,
    pub sampler_refine_kde_scale: f64,
    // ---- The sampler study of issue 14 (docs/SAMPLER-TARGETS.md). Each key's
    // default here is the behaviour before it existed; the presets set the
    // measured best.
    /// Bandwidth rule of the aggregate_kde target, τ² = scale · τ²_rule:
    /// `median` (τ²_rule = h_bank/2, the median heuristic of DESIGN §1.8),
    /// `scott` / `silverman` (the rules of thumb for a d-dim Gaussian KDE on
    /// the bank's per-dimension variance: n^(-2/(d+4)), times (4/(d+2))^(2/(d+4))
    /// for Silverman), `cv` (maximum held-out log-likelihood: the bank's last
    /// 10% against the rest, over a grid of multiples of Scott's τ).
    pub kde_bandwidth: String,
    /// Build the KDE and the sampler's SVGD kernel in the bank's whitened
    /// coordinates (a covariance-shaped KDE; the sampler's loss preconditioned).
    pub kde_whiten: bool,
    /// Bank of the refinement phase: `fifo` (the last `kde_bank` encoder
    /// particles, as in joint training) or `train_set` (the whole training set,
    /// encoded once by the frozen encoder when refinement starts).
    pub refine_bank: String,
    /// `refine_bank = train_set`: encode this many training images (a seeded
    /// random subset; 0 = all). Each sampler step costs O(n_s · size · d):
    /// 59,000 made a step ~10× slower than 10,000.
    pub refine_bank_size: i64,
    /// Annealed refinement: τ starts at (1 + a)·τ and shrinks linearly to τ
    /// over the first half of the refinement steps; 0 = a fixed target.
    pub refine_anneal: f64,
    /// Leave each sampler particle's own term out of its Stein direction:
    /// φ_j ← (n·φ_j − s_j)/(n − 1). The self-term (kernel weight 1) pulls each
    /// particle along its own score with no repulsion, contracting the sampler.
    pub sampler_leave_one_out: bool,
    /// Kernel of the sampler's SVGD: `rbf` exp(-d²/h) or `imq` (1 + d²/h)^(-1/2).
    pub sampler_kernel: String,
    /// Multiplier on the sampler kernel's bandwidth (< 1: more local repulsion).
    pub sampler_h_scale: f64,
    /// Sampler net: `conv` (the RAE encoder on image-shaped noise, the paper's
    /// choice) or `mlp` (a `sampler_noise_dim`-dim Gaussian through three
    /// ReLU layers of `sampler_hidden` units).
    pub sampler_net: String,
    pub sampler_noise_dim: i64,
    pub sampler_hidden: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// The weights below default to −1 (= [`BASELINE_REFERENCE`]): the RAE reference
    /// implementation's value for the run's data set and model, listed with its
    /// source in `src/models/reference.rs`. Any value ≥ 0 overrides it.
    ///
    /// VAE / CV-VAE KL weight β (reference `embedding_weight`; the two models have
    /// different reference values).
    pub vae_beta: f64,
    /// CV-VAE fixed encoder standard deviation (reference `constant_sigma`).
    pub cv_vae_std: f64,
    /// WAE-MMD weight λ (reference `embedding_weight` of the WAE entries).
    pub wae_lambda: f64,
    /// RAE latent penalty β·mean_d(z²) (reference `embedding_weight`; differs
    /// between RAE-L2, RAE-GP and RAE-SN).
    pub rae_beta: f64,
    /// RAE-L2 decoder weight decay (Keras `l2(w)` on the decoder kernels);
    /// RAE-GP gradient-penalty weight.
    pub rae_l2_decay: f64,
    pub rae_gp_weight: f64,
    /// Two-stage VAE: steps of the second stage, its hidden width and number of
    /// hidden layers (Dai & Wipf's `--second-dim 1024`, `--second-depth 3`).
    pub two_stage_steps: u64,
    pub two_stage_hidden: i64,
    pub two_stage_depth: i64,
    /// Ex-post GMM components.
    pub gmm_components: usize,
    /// Ex-post GMM: EM iteration limit and tolerance on the change of the mean
    /// log-likelihood (reference: sklearn `max_iter=2000, tol=1e-3`).
    pub gmm_max_iter: usize,
    pub gmm_tol: f64,
    /// Fit the ex-post GMM on at most this many training latents (a seeded
    /// random subset; 0 = all, as the reference). EM costs O(N·K·d²) per
    /// iteration: ~8 s per iteration for 50,000 CIFAR latents (d = 128) on one
    /// CPU core.
    pub gmm_max_points: usize,
    /// What `encode` returns for the Gaussian-encoder models (VAE, CV-VAE,
    /// 2-stage VAE): `mean` (μ, as the reference's `encoder.predict`) or
    /// `sample` (μ + σ·ε, a draw of the aggregate posterior).
    pub vae_encode: String,
    /// Generation route of VAE, CV-VAE and WAE-MMD: `prior` (N(0, I), the
    /// models' own) or `gmm` (the ex-post GMM of the RAE baselines, fitted on
    /// the training latents μ(x) / E(x) in the post-training phase; the RAE
    /// reference evaluates its VAE-family models this way too).
    pub vae_sampler: String,
}

/// Value of a baseline weight that means "the RAE reference's value".
pub const BASELINE_REFERENCE: f64 = -1.0;

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
            eval: EvalConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "mnist".into(),
            dir: String::new(),
            val_size: 1000,
            train_limit: 0,
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            width: 1.0,
            latent_dim: 16,
            noise_join: "add".into(),
            channels_last: false,
            init: "pytorch".into(),
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
            on_nan: "stop".into(),
            nan_lr_factor: 0.5,
            plateau_patience: 0,
            bn_groups: 1,
        }
    }
}

impl Default for LdcConfig {
    fn default() -> Self {
        LdcConfig {
            prior_weight: 1.0,
            sigma2: Sigma2::Rule(Sigma2Rule::BatchNormVar),
            sigma2_min: 1e-4,
            score_bn: "inference".into(),
            particles_per_x: 1,
            sampler_target: "aggregate_kde".into(),
            kde_bank: 1000,
            kde_scale: 1.0,
            sampler_bandwidth: "target".into(),
            sampler_particles: 400,
            sampler_lr: 0.0,
            sampler_refine_steps: 0,
            sampler_refine_kde_scale: 0.5,
            kde_bandwidth: "median".into(),
            kde_whiten: false,
            refine_bank: "fifo".into(),
            refine_bank_size: 10_000,
            refine_anneal: 0.0,
            sampler_leave_one_out: false,
            sampler_kernel: "rbf".into(),
            sampler_h_scale: 1.0,
            sampler_net: "conv".into(),
            sampler_noise_dim: 32,
            sampler_hidden: 256,
        }
    }
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            vae_beta: BASELINE_REFERENCE,
            cv_vae_std: BASELINE_REFERENCE,
            wae_lambda: BASELINE_REFERENCE,
            rae_beta: BASELINE_REFERENCE,
            rae_l2_decay: BASELINE_REFERENCE,
            rae_gp_weight: BASELINE_REFERENCE,
            two_stage_steps: 2000,
            two_stage_hidden: 1024,
            two_stage_depth: 3,
            gmm_components: 10,
            gmm_max_iter: 2000,
            gmm_tol: 1e-3,
            gmm_max_points: 0,
            vae_encode: "mean".into(),
            vae_sampler: "prior".into(),
        }
    }
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

pub const MODELS: &[&str] = &[
    "ldc",
    "vae",
    "cv-vae",
    "wae-mmd",
    "two-stage-vae",
    "rae-l2",
    "rae-gp",
    "rae-sn",
];

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if !allowed.contains(&value) {
        bail!(
            "config key `{key}`: `{value}` is not one of {}",
            allowed.join(", ")
        );
    }
    Ok(())
}

fn positive(key: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        bail!("config key `{key}` must be a finite number > 0 (got {value})");
    }
    Ok(())
}

fn in_range(key: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !(value.is_finite() && value >= lo && value <= hi) {
        bail!("config key `{key}` must be in [{lo}, {hi}] (got {value})");
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
        for ov in overrides {
            apply_override(&mut value, &known, ov)?;
        }
        let cfg: Config = value.try_into().context("invalid config value")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn validate(&self) -> Result<()> {
        one_of("model", &self.model, MODELS)?;
        one_of(
            "data.dataset",
            &self.data.dataset,
            &["mnist", "fashion-mnist", "cifar10", "celeba"],
        )?;
        if !(self.device == "cpu" || self.device == "cuda" || self.device.starts_with("cuda:")) {
            bail!(
                "config key `device`: `{}` is not cpu, cuda or cuda:N",
                self.device
            );
        }
        positive("net.width", self.net.width)?;
        if self.net.latent_dim < 1 {
            bail!(
                "config key `net.latent_dim` must be >= 1 (got {})",
                self.net.latent_dim
            );
        }
        one_of("net.noise_join", &self.net.noise_join, &["add", "concat"])?;
        one_of("net.init", &self.net.init, &["pytorch", "tch"])?;
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
        if self.model == "ldc" && self.ldc.sampler_particles % self.train.bn_groups as i64 != 0 {
            bail!(
                "config key `train.bn_groups` ({}) must divide `ldc.sampler_particles` ({})",
                self.train.bn_groups,
                self.ldc.sampler_particles
            );
        }
        positive("train.lr", self.train.lr)?;
        in_range("train.beta1", self.train.beta1, 0.0, 0.999_999)?;
        in_range("train.beta2", self.train.beta2, 0.0, 0.999_999)?;
        one_of("train.on_nan", &self.train.on_nan, &["stop", "rollback"])?;
        positive("train.nan_lr_factor", self.train.nan_lr_factor)?;
        in_range("train.nan_lr_factor", self.train.nan_lr_factor, 0.0, 1.0)?;
        let l = &self.ldc;
        in_range("ldc.prior_weight", l.prior_weight, 0.0, 1e6)?;
        if let Sigma2::Fixed(v) = l.sigma2 {
            positive("ldc.sigma2", v)?;
        }
        positive("ldc.sigma2_min", l.sigma2_min)?;
        one_of("ldc.score_bn", &l.score_bn, &["inference", "batch"])?;
        if l.particles_per_x < 1 {
            bail!(
                "config key `ldc.particles_per_x` must be >= 1 (got {})",
                l.particles_per_x
            );
        }
        if l.particles_per_x > 1 && self.train.batch_size % l.particles_per_x != 0 {
            bail!(
                "config key `ldc.particles_per_x` ({}) must divide `train.batch_size` ({})",
                l.particles_per_x,
                self.train.batch_size
            );
        }
        one_of(
            "ldc.sampler_target",
            &l.sampler_target,
            &["aggregate_kde", "mixture", "paired", "encoder_particles"],
        )?;
        if l.kde_bank < 2 {
            bail!(
                "config key `ldc.kde_bank` must be >= 2 (got {})",
                l.kde_bank
            );
        }
        positive("ldc.kde_scale", l.kde_scale)?;
        positive("ldc.sampler_refine_kde_scale", l.sampler_refine_kde_scale)?;
        one_of(
            "ldc.sampler_bandwidth",
            &l.sampler_bandwidth,
            &["target", "own"],
        )?;
        if l.sampler_particles < 2 {
            bail!(
                "config key `ldc.sampler_particles` must be >= 2 (got {})",
                l.sampler_particles
            );
        }
        in_range("ldc.sampler_lr", l.sampler_lr, 0.0, 1.0)?;
        one_of(
            "ldc.kde_bandwidth",
            &l.kde_bandwidth,
            &["median", "scott", "silverman", "cv"],
        )?;
        one_of("ldc.refine_bank", &l.refine_bank, &["fifo", "train_set"])?;
        if l.refine_bank_size < 0 || l.refine_bank_size == 1 {
            bail!(
                "config key `ldc.refine_bank_size` must be 0 (all) or >= 2 (got {})",
                l.refine_bank_size
            );
        }
        in_range("ldc.refine_anneal", l.refine_anneal, 0.0, 100.0)?;
        one_of("ldc.sampler_kernel", &l.sampler_kernel, &["rbf", "imq"])?;
        positive("ldc.sampler_h_scale", l.sampler_h_scale)?;
        one_of("ldc.sampler_net", &l.sampler_net, &["conv", "mlp"])?;
        if l.sampler_noise_dim < 1 || l.sampler_hidden < 1 {
            bail!(
                "config keys `ldc.sampler_noise_dim` and `ldc.sampler_hidden` must be >= 1 (got {}, {})",
                l.sampler_noise_dim,
                l.sampler_hidden
            );
        }
        let b = &self.baselines;
        let weight = |key: &str, v: f64| -> Result<()> {
            if v == BASELINE_REFERENCE {
                return Ok(());
            }
            if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                bail!("config key `{key}` must be in [0, 1e6], or -1 for the RAE reference value (got {v})");
            }
            Ok(())
        };
        weight("baselines.vae_beta", b.vae_beta)?;
        if b.cv_vae_std != BASELINE_REFERENCE {
            positive("baselines.cv_vae_std", b.cv_vae_std)?;
        }
        weight("baselines.wae_lambda", b.wae_lambda)?;
        weight("baselines.rae_beta", b.rae_beta)?;
        weight("baselines.rae_l2_decay", b.rae_l2_decay)?;
        weight("baselines.rae_gp_weight", b.rae_gp_weight)?;
        if b.gmm_components < 1 {
            bail!("config key `baselines.gmm_components` must be >= 1");
        }
        if b.two_stage_hidden < 1 {
            bail!(
                "config key `baselines.two_stage_hidden` must be >= 1 (got {})",
                b.two_stage_hidden
            );
        }
        if b.two_stage_depth < 0 {
            bail!(
                "config key `baselines.two_stage_depth` must be >= 0 (got {})",
                b.two_stage_depth
            );
        }
        if b.gmm_max_iter < 1 {
            bail!("config key `baselines.gmm_max_iter` must be >= 1");
        }
        positive("baselines.gmm_tol", b.gmm_tol)?;
        one_of("baselines.vae_encode", &b.vae_encode, &["mean", "sample"])?;
        one_of("baselines.vae_sampler", &b.vae_sampler, &["prior", "gmm"])?;
        if self.eval.fid_samples < 2 {
            bail!(
                "config key `eval.fid_samples` must be >= 2 (got {})",
                self.eval.fid_samples
            );
        }
        if self.eval.latent_samples < 2 {
            bail!(
                "config key `eval.latent_samples` must be >= 2 (got {})",
                self.eval.latent_samples
            );
        }
        if self.eval.fid_batch < 1 {
            bail!("config key `eval.fid_batch` must be >= 1");
        }
        Ok(())
    }

    /// Sampler learning rate, defaulting to the encoder/decoder one.
    pub fn sampler_lr(&self) -> f64 {
        if self.ldc.sampler_lr > 0.0 {
            self.ldc.sampler_lr
        } else {
            self.train.lr
        }
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
            ("ldc.sampler_kernel=laplace", "ldc.sampler_kernel"),
            ("ldc.sampler_h_scale=0", "ldc.sampler_h_scale"),
            ("ldc.sampler_net=rnn", "ldc.sampler_net"),
            ("ldc.sampler_hidden=0", "ldc.sampler_hidden"),
        ] {
            let e = Config::load(None, None, &[ov.to_string()]).unwrap_err();
            assert!(format!("{e:#}").contains(key), "{ov}: {e:#}");
        }
        let e = Config::load(Some("nope"), None, &[]).unwrap_err();
        assert!(format!("{e:#}").contains("unknown preset `nope`"));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = Config::preset("mnist-cpu").unwrap();
        let back = Config::from_toml_str(&c.to_toml(), &[]).unwrap();
        assert_eq!(c, back);
    }
}
