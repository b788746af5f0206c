//! The one training pipeline every model uses: data order, steps, metrics,
//! validation, checkpoints (atomic), resume, NaN handling, Ctrl-C.
//!
//! A run directory holds `config.toml` (the effective config), `metrics.jsonl`
//! (one JSON object per step and per epoch), `checkpoint.safetensors` (the whole
//! state: weights, BN statistics, optimizer moments, banks, step counters),
//! `summary.json` and `loss.png`.

use crate::config::Config;
use crate::data::{self, ImageSet, Split};
use crate::dist;
use crate::models::{self, BatchSource, Model, StepStats};
use crate::rng;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.jsonl";
pub const SUMMARY: &str = "summary.json";

/// Training data split into train and validation (last `val_size` training images).
pub struct TrainData {
    pub train: ImageSet,
    pub val: ImageSet,
}

pub fn load_train_data(cfg: &Config) -> Result<TrainData> {
    let dir = (!cfg.data.dir.is_empty()).then(|| PathBuf::from(&cfg.data.dir));
    let all = data::load_split(&cfg.data.dataset, dir.as_deref(), Split::Train)?;
    let n = all.len();
    let val = cfg.data.val_size as i64;
    if val >= n {
        bail!(
            "config key `data.val_size` ({val}) must be smaller than the training set ({n} images)"
        );
    }
    let mut train = all.slice(0, n - val);
    if cfg.data.train_limit > 0 && (cfg.data.train_limit as i64) < train.len() {
        train = train.slice(0, cfg.data.train_limit as i64);
    }
    if train.len() < cfg.train.batch_size {
        bail!(
            "training set ({} images) is smaller than `train.batch_size` ({})",
            train.len(),
            cfg.train.batch_size
        );
    }
    Ok(TrainData {
        train,
        val: all.slice(n - val, n),
    })
}

/// Deterministic batches of a training set: epoch `e` uses permutation (seed, e).
pub struct Batches<'a> {
    pub set: &'a ImageSet,
    pub batch_size: i64,
    pub seed: u64,
    pub device: Device,
    perm_epoch: Option<(u64, Tensor)>,
    /// Offset of the stream of epochs (the post-training phase uses its own).
    pub epoch_offset: u64,
}

impl<'a> Batches<'a> {
    pub fn new(set: &'a ImageSet, batch_size: i64, seed: u64, device: Device) -> Self {
        Batches {
            set,
            batch_size,
            seed,
            device,
            perm_epoch: None,
            epoch_offset: 0,
        }
    }
    pub fn per_epoch(&self) -> u64 {
        (self.set.len() / self.batch_size) as u64
    }
    /// Batch number `i` counted from the start (epoch = i / per_epoch).
    pub fn get(&mut self, i: u64) -> Tensor {
        let spe = self.per_epoch();
        let epoch = i / spe + self.epoch_offset;
        let within = (i % spe) as i64;
        if self.perm_epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let p = rng::permutation(self.set.len() as usize, self.seed, epoch);
            self.perm_epoch = Some((epoch, Tensor::from_slice(&p)));
        }
        let idx = self.perm_epoch.as_ref().unwrap().1.narrow(
            0,
            within * self.batch_size,
            self.batch_size,
        );
        // Under MPI each worker takes its rows of the global batch.
        dist::shard(&self.set.images.index_select(0, &idx)).to_device(self.device)
    }
}

impl BatchSource for Batches<'_> {
    fn batch(&mut self, i: u64) -> Tensor {
        self.get(i)
    }
    fn num_train(&self) -> i64 {
        self.set.len()
    }
    fn chunk(&mut self, start: i64, len: i64) -> Tensor {
        self.set.images.narrow(0, start, len).to_device(self.device)
    }
}

/// Mean squared reconstruction error over a set, in inference mode.
pub fn reconstruction_mse(model: &dyn Model, set: &ImageSet, batch: i64, seed: u64) -> f64 {
    let _g = tch::no_grad_guard();
    rng::reseed(seed, rng::Stream::Eval, 0);
    let mut total = 0.0;
    let n = set.len();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        let x = set.images.narrow(0, i, len).to_device(model.device());
        let r = model.decode(&model.encode(&x));
        total += (r - x).square().sum(Kind::Double).double_value(&[]);
        i += len;
    }
    total / (set.images.numel() as f64)
}

/// Counters saved with the weights.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Main-loop steps done.
    pub step: u64,
    /// Post-training steps done.
    pub post_step: u64,
    /// Validation MSE of the last finished epoch (NaN if none yet).
    pub val_mse: f64,
    pub wall_s: f64,
}

/// Write the whole state atomically: a kill at any moment leaves the previous
/// checkpoint or the new one, never a torn file. Under MPI rank 0 writes and
/// every worker waits until it has (they may read it back on a NaN rollback).
pub fn save_checkpoint(dir: &Path, model: &dyn Model, p: &Progress) -> Result<()> {
    if dist::is_root() {
        write_checkpoint(dir, model, p)?;
    }
    dist::barrier();
    Ok(())
}

fn write_checkpoint(dir: &Path, model: &dyn Model, p: &Progress) -> Result<()> {
    let mut tensors = model.state();
    tensors.push(("meta.step".into(), Tensor::from(p.step as i64)));
    tensors.push(("meta.post_step".into(), Tensor::from(p.post_step as i64)));
    tensors.push(("meta.val_mse".into(), Tensor::from(p.val_mse)));
    tensors.push(("meta.wall_s".into(), Tensor::from(p.wall_s)));
    let cpu: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let path = dir.join(CHECKPOINT);
    crate::util::with_atomic_path(&path, |tmp| {
        Tensor::write_safetensors(&cpu, tmp)
            .with_context(|| format!("cannot write checkpoint {}", tmp.display()))
    })
}

/// Read a checkpoint into named tensors, with a clear error on a bad file.
pub fn read_checkpoint(dir: &Path) -> Result<(HashMap<String, Tensor>, Progress)> {
    let path = dir.join(CHECKPOINT);
    if !path.exists() {
        bail!(
            "no checkpoint at {} (was this run started?)",
            path.display()
        );
    }
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .with_context(|| format!("{}: unreadable or truncated checkpoint", path.display()))?
        .into_iter()
        .collect();
    let get = |k: &str| {
        tensors
            .get(k)
            .with_context(|| format!("{}: checkpoint lacks `{k}`", path.display()))
    };
    let p = Progress {
        step: get("meta.step")?.int64_value(&[]) as u64,
        post_step: get("meta.post_step")?.int64_value(&[]) as u64,
        val_mse: get("meta.val_mse")?.double_value(&[]),
        wall_s: get("meta.wall_s")?.double_value(&[]),
    };
    Ok((tensors, p))
}

/// Load a finished or partial run: its config and a model with the checkpoint's state.
pub fn load_run(dir: &Path, device: Option<&str>) -> Result<(Config, Box<dyn Model>, Progress)> {
    let cfg_path = dir.join(CONFIG);
    let mut cfg = Config::load(None, Some(&cfg_path), &[])?;
    if let Some(d) = device {
        cfg.device = d.to_string();
    }
    let dev = crate::util::parse_device(&cfg.device)?;
    crate::util::set_threads(cfg.threads);
    let mut model = models::build(&cfg, dev)?;
    let (tensors, p) = read_checkpoint(dir)?;
    model
        .load_state(&tensors)
        .with_context(|| format!("loading {}", dir.join(CHECKPOINT).display()))?;
    Ok((cfg, model, p))
}

/// `--set` overrides for more sampler-only steps on a finished run: only
/// `ldc.*` keys that leave the saved nets loadable (not `ldc.sampler_net` and
/// its sizes) and `threads`; applied to the run's `config.toml`, so the run
/// records the settings its later steps used.
fn apply_sampler_overrides(dir: &Path, overrides: &[String]) -> Result<()> {
    const FIXED: [&str; 4] = [
        "ldc.sampler_net",
        "ldc.sampler_noise_dim",
        "ldc.sampler_hidden",
        "ldc.particles_per_x",
    ];
    for o in overrides {
        let key = o.split('=').next().unwrap_or("").trim();
        if !(key.starts_with("ldc.") || key == "threads") || FIXED.contains(&key) {
            bail!(
                "--set {o}: with `--only sampler` only `ldc.*` sampler keys (not {}) and `threads` can change; \
                 the run's nets and data are fixed",
                FIXED.join(", ")
            );
        }
    }
    let cfg_path = dir.join(CONFIG);
    let cfg = Config::load(None, Some(&cfg_path), overrides)
        .with_context(|| format!("applying --set to {}", cfg_path.display()))?;
    crate::util::write_atomic(&cfg_path, cfg.to_toml().as_bytes())?;
    tracing::info!("{}: {} recorded", cfg_path.display(), overrides.join(", "));
    Ok(())
}

/// Append-only metrics log, truncated back to a checkpoint on resume.
struct Metrics {
    /// None on MPI workers other than rank 0.
    file: Option<std::fs::File>,
}

impl Metrics {
    fn open(dir: &Path, keep_through_step: Option<u64>, keep_post_through: u64) -> Result<Metrics> {
        if !dist::is_root() {
            return Ok(Metrics { file: None });
        }
        let path = dir.join(METRICS);
        if let Some(step) = keep_through_step {
            // Drop lines written after the checkpoint we resume from.
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let kept: String = text
                .lines()
                .filter(|l| {
                    let v: serde_json::Value = match serde_json::from_str(l) {
                        Ok(v) => v,
                        Err(_) => return false,
                    };
                    match v["kind"].as_str() {
                        Some("post") => v["step"].as_u64().is_some_and(|s| s < keep_post_through),
                        Some("epoch") => v["step"].as_u64().is_some_and(|s| s <= step),
                        _ => v["step"].as_u64().is_some_and(|s| s < step),
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect();
            crate::util::write_atomic(&path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Metrics { file: Some(file) })
    }

    fn write(
        &mut self,
        kind: &str,
        step: u64,
        epoch: Option<u64>,
        stats: &[(&str, f64)],
    ) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.into());
        obj.insert("step".into(), step.into());
        if let Some(e) = epoch {
            obj.insert("epoch".into(), e.into());
        }
        for (k, v) in stats {
            obj.insert(
                (*k).into(),
                serde_json::Number::from_f64(*v)
                    .map(Into::into)
                    .unwrap_or(serde_json::Value::Null),
            );
        }
        writeln!(file, "{}", serde_json::Value::Object(obj))
            .context("cannot append to metrics.jsonl")
    }
}

/// Options of one `train` invocation beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the run directory's checkpoint.
    pub resume: bool,
    /// Stop (checkpointed) after this many main-loop steps in this invocation;
    /// for tests of resume and for time-boxed sessions.
    pub stop_after: Option<u64>,
    /// Skip the post-training phase (e.g. LDC sampler refinement).
    pub skip_post: bool,
    /// Hide progress bars (tests).
    pub quiet: bool,
}

/// What a `train` call ended with.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub progress: Progress,
    pub complete: bool,
    pub interrupted: bool,
}

fn progress_bar(total: u64, done: u64, quiet: bool, prefix: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{prefix} {bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb.set_position(done);
    pb
}

fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        // A second Ctrl-C while saving falls through to the default (exit).
        let _ = ctrlc::set_handler(move || {
            if g.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
        f
    })
    .clone()
}

fn fmt_stats(s: &StepStats, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| s.get(k).map(|v| format!("{k}={v:.4}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cfg` as K MPI workers run it: BatchNorm per worker shard (`train.bn_groups`
/// a multiple of K; 1 becomes K), and batch and sampler particles that split
/// evenly. The identity with one worker.
pub fn for_workers(cfg: &Config) -> Result<Config> {
    let k = dist::size();
    let mut cfg = cfg.clone();
    if k == 1 {
        return Ok(cfg);
    }
    if cfg.train.bn_groups == 1 {
        cfg.train.bn_groups = k;
    }
    if cfg.train.bn_groups % k != 0 {
        bail!(
            "config key `train.bn_groups` ({}) must be a multiple of the number of MPI workers ({k})",
            cfg.train.bn_groups
        );
    }
    if cfg.train.batch_size % k as i64 != 0 {
        bail!(
            "`train.batch_size` ({}) must be divisible by the number of MPI workers ({k})",
            cfg.train.batch_size
        );
    }
    if cfg.model == "ldc" && matches!(cfg.ldc.sampler_target.as_str(), "mixture" | "paired") {
        bail!(
            "`ldc.sampler_target = {}` needs every image of the batch on every worker; on MPI use aggregate_kde or encoder_particles",
            cfg.ldc.sampler_target
        );
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Train the model of `cfg` in `dir` (created if needed).
pub fn train(cfg: &Config, dir: &Path, opts: &TrainOptions) -> Result<TrainOutcome> {
    let cfg = &for_workers(cfg)?;
    crate::nets::set_bn_groups(cfg.train.bn_groups);
    let root = dist::is_root();
    let device = crate::util::parse_device(&cfg.device)?;
    crate::util::set_threads(cfg.threads);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run directory {}", dir.display()))?;
    let cfg_path = dir.join(CONFIG);
    if opts.resume {
        let saved = Config::load(None, Some(&cfg_path), &[])?;
        if saved.model != cfg.model
            || saved.net != cfg.net
            || saved.data.dataset != cfg.data.dataset
        {
            bail!(
                "cannot resume {}: its model/net/data config differs from the one given",
                dir.display()
            );
        }
    } else if dir.join(CHECKPOINT).exists() {
        bail!(
            "{} already holds a run; use --resume to continue it, or another --out",
            dir.display()
        );
    }
    dist::barrier(); // every worker has checked before rank 0 writes
    if root {
        crate::util::write_atomic(&cfg_path, cfg.to_toml().as_bytes())?;
    }

    let data = load_train_data(cfg)?;
    let mut model = models::build(cfg, device)?;
    let mut prog = Progress {
        val_mse: f64::NAN,
        ..Default::default()
    };
    if opts.resume {
        let (tensors, p) = read_checkpoint(dir)?;
        model.load_state(&tensors)?;
        prog = p;
        tracing::info!(
            "resuming {} at step {} (post-training step {})",
            dir.display(),
            p.step,
            p.post_step
        );
    }
    // Every worker starts from rank 0's state (weights, moments, bank).
    dist::broadcast_state(model.as_mut())?;
    let mut metrics = Metrics::open(dir, opts.resume.then_some(prog.step), prog.post_step)?;
    let mut batches = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, device);
    let spe = batches.per_epoch();
    let total = if cfg.train.max_steps > 0 {
        cfg.train.max_steps
    } else {
        cfg.train.epochs as u64 * spe
    };
    let stop_at = opts
        .stop_after
        .map(|n| (prog.step + n).min(total))
        .unwrap_or(total);
    let interrupted = interrupt_flag();
    let t0 = Instant::now();
    let wall0 = prog.wall_s;
    let wall = |t0: &Instant| wall0 + t0.elapsed().as_secs_f64();
    let keys = ["loss", "sigma2", "h", "sampler_h"];

    if prog.step == 0 && !opts.resume {
        save_checkpoint(dir, model.as_ref(), &prog)?; // step 0: a rollback target
    }
    let quiet = opts.quiet || !root;
    let pb = progress_bar(
        total,
        prog.step,
        quiet || prog.step >= total,
        &format!("train {}", model.name()),
    );
    let mut rollbacks = 0;
    let mut best_val = f64::INFINITY;
    let mut bad_epochs = 0;
    while prog.step < stop_at {
        let step = prog.step;
        let mut x = batches.get(step);
        dist::inject_fault(step, &mut x);
        let mut stats = model
            .train_step(&x, step)
            .with_context(|| format!("training step {step}"))?;
        // Workers agree on the step's statistics (a NaN anywhere stops all) and on Ctrl-C.
        let interrupted_now = dist::agree(&mut stats, interrupted.load(Ordering::SeqCst));
        if let Some((k, v)) = stats.non_finite() {
            let msg = format!(
                "step {step}: `{k}` is {v}; the last good checkpoint is {}",
                dir.join(CHECKPOINT).display()
            );
            if cfg.train.on_nan == "rollback" && rollbacks < 5 {
                rollbacks += 1;
                let (tensors, p) = read_checkpoint(dir)?;
                model.load_state(&tensors)?;
                model.scale_lr(cfg.train.nan_lr_factor.powi(rollbacks));
                tracing::warn!(
                    "{msg}; rolled back to step {} with learning rates ×{}",
                    p.step,
                    cfg.train.nan_lr_factor.powi(rollbacks)
                );
                prog = Progress {
                    wall_s: prog.wall_s,
                    ..p
                };
                metrics = Metrics::open(dir, Some(prog.step), prog.post_step)?;
                continue;
            }
            pb.abandon();
            bail!("training diverged: {msg}");
        }
        prog.step += 1;
        metrics.write("step", step, Some(step / spe), &stats.0)?;
        pb.set_position(prog.step);
        if step % 10 == 0 {
            pb.set_message(fmt_stats(&stats, &keys));
        }
        let epoch_end = prog.step % spe == 0;
        if epoch_end {
            prog.val_mse =
                reconstruction_mse(model.as_ref(), &data.val, cfg.train.batch_size, cfg.seed);
            metrics.write(
                "epoch",
                prog.step,
                Some(prog.step / spe - 1),
                &[("val_mse", prog.val_mse)],
            )?;
            tracing::info!(
                "epoch {} done: validation MSE {:.5}",
                prog.step / spe,
                prog.val_mse
            );
            if cfg.train.plateau_patience > 0 {
                if prog.val_mse < best_val {
                    best_val = prog.val_mse;
                    bad_epochs = 0;
                } else {
                    bad_epochs += 1;
                    if bad_epochs >= cfg.train.plateau_patience {
                        model.scale_lr(0.5);
                        bad_epochs = 0;
                        tracing::info!("validation MSE plateaued: learning rates halved");
                    }
                }
            }
        }
        if epoch_end
            || interrupted_now
            || prog.step == stop_at
            || (cfg.train.checkpoint_every > 0 && prog.step % cfg.train.checkpoint_every == 0)
        {
            prog.wall_s = wall(&t0);
            save_checkpoint(dir, model.as_ref(), &prog)?;
        }
        if interrupted_now {
            pb.abandon_with_message("interrupted");
            if root {
                eprintln!("interrupted: checkpoint saved at step {}; continue with `ldc-vae train --resume {}`", prog.step, dir.display());
            }
            return Ok(TrainOutcome {
                progress: prog,
                complete: false,
                interrupted: true,
            });
        }
    }
    pb.finish_and_clear();
    if prog.step % spe != 0 || prog.val_mse.is_nan() {
        // The run did not end on an epoch boundary: measure validation MSE now.
        prog.val_mse =
            reconstruction_mse(model.as_ref(), &data.val, cfg.train.batch_size, cfg.seed);
    }
    if prog.step < total {
        return Ok(TrainOutcome {
            progress: prog,
            complete: false,
            interrupted: false,
        });
    }

    // Work after the main loop (e.g. LDC-VAE's sampler-only refinement).
    let post_total = if opts.skip_post {
        0
    } else {
        model.post_training_steps()
    };
    if prog.post_step < post_total {
        let pb = progress_bar(
            post_total,
            prog.post_step,
            quiet,
            &format!("{} post-training", model.name()),
        );
        let mut post_batches = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, device);
        post_batches.epoch_offset = 1 << 20;
        while prog.post_step < post_total {
            let i = prog.post_step;
            let mut stats = model
                .post_training_step(&mut post_batches, i)
                .with_context(|| format!("post-training step {i}"))?;
            let int_now = dist::agree(&mut stats, interrupted.load(Ordering::SeqCst));
            if let Some((k, v)) = stats.non_finite() {
                bail!(
                    "post-training step {i}: `{k}` is {v}; last good checkpoint kept at {}",
                    dir.join(CHECKPOINT).display()
                );
            }
            prog.post_step += 1;
            metrics.write("post", i, None, &stats.0)?;
            pb.set_position(prog.post_step);
            if i % 10 == 0 {
                pb.set_message(fmt_stats(&stats, &["sampler_std", "sampler_h"]));
            }
            if int_now
                || prog.post_step == post_total
                || (cfg.train.checkpoint_every > 0
                    && prog.post_step % cfg.train.checkpoint_every == 0)
            {
                prog.wall_s = wall(&t0);
                save_checkpoint(dir, model.as_ref(), &prog)?;
            }
            if int_now {
                pb.abandon_with_message("interrupted");
                if root {
                    eprintln!(
                        "interrupted: checkpoint saved; continue with `ldc-vae train --resume {}`",
                        dir.display()
                    );
                }
                return Ok(TrainOutcome {
                    progress: prog,
                    complete: false,
                    interrupted: true,
                });
            }
        }
        pb.finish_and_clear();
    }
    prog.wall_s = wall(&t0);
    save_checkpoint(dir, model.as_ref(), &prog)?;
    let summary = serde_json::json!({
        "model": model.name(),
        "dataset": cfg.data.dataset,
        "preset": (!cfg.preset.is_empty()).then_some(&cfg.preset),
        "complete": true,
        "steps": prog.step,
        "post_steps": prog.post_step,
        "epochs": prog.step as f64 / spe as f64,
        "val_mse": prog.val_mse,
        "wall_s": prog.wall_s,
        "device": cfg.device,
        "workers": dist::size(),
    });
    if root {
        crate::util::write_atomic(
            &dir.join(SUMMARY),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
    }
    Ok(TrainOutcome {
        progress: prog,
        complete: true,
        interrupted: false,
    })
}

/// Continue only the post-training phase (e.g. `--only sampler --steps N`)
/// of a finished run for `extra` more steps.
pub fn extend_post_training(
    dir: &Path,
    extra: u64,
    device: Option<&str>,
    overrides: &[String],
    quiet: bool,
) -> Result<Progress> {
    if dist::size() > 1 {
        bail!("`train --only sampler` runs in one process; start it without mpirun");
    }
    if !overrides.is_empty() {
        apply_sampler_overrides(dir, overrides)?;
    }
    let (cfg, mut model, mut prog) = load_run(dir, device)?;
    let data = load_train_data(&cfg)?;
    let dev = model.device();
    let mut post_batches = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, dev);
    post_batches.epoch_offset = 1 << 20;
    let mut metrics = Metrics::open(dir, None, 0)?;
    let target = prog.post_step + extra;
    let pb = progress_bar(
        target,
        prog.post_step,
        quiet,
        &format!("{} sampler", model.name()),
    );
    let t0 = Instant::now();
    let wall0 = prog.wall_s;
    while prog.post_step < target {
        let i = prog.post_step;
        let stats = model.post_training_step(&mut post_batches, i)?;
        if let Some((k, v)) = stats.non_finite() {
            bail!("post-training step {i}: `{k}` is {v}");
        }
        metrics.write("post", i, None, &stats.0)?;
        prog.post_step += 1;
        pb.set_position(prog.post_step);
        if cfg.train.checkpoint_every > 0 && prog.post_step % cfg.train.checkpoint_every == 0 {
            prog.wall_s = wall0 + t0.elapsed().as_secs_f64();
            save_checkpoint(dir, model.as_ref(), &prog)?;
        }
    }
    pb.finish_and_clear();
    prog.wall_s = wall0 + t0.elapsed().as_secs_f64();
    save_checkpoint(dir, model.as_ref(), &prog)?;
    Ok(prog)
}
