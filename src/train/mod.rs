//! The one training pipeline every model uses: data order, steps, metrics,
//! validation, checkpoints, resume, NaN handling, Ctrl-C. What the run folder
//! holds and how each file is written is [`crate::run_dir`]'s business.

mod data;
pub mod tensorboard;

pub use data::{load_train_data, reconstruction_mse, Batches, TrainData};

use crate::config::{Config, OnNan};
use crate::dist;
use crate::models::{self, Model, StepStats};
use crate::run_dir::{self, Line, Metrics, Progress, TrainCounts, TrainSummary};
use crate::run_state::{self, KeyChange};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// `--set` overrides for more sampler-only steps on a finished run: only
/// `ldc.*` keys that leave the saved nets loadable (not `ldc.sampler_net` and
/// its sizes) and `threads`; applied to the run's `config.toml`, so the run
/// records the settings its later steps used. Returns the keys that changed
/// (for `config-changes.json`).
fn apply_sampler_overrides(dir: &Path, overrides: &[String]) -> Result<Vec<KeyChange>> {
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
    let cfg_path = dir.join(run_dir::CONFIG);
    let old = run_dir::read_config(dir, &[])?;
    let cfg = run_dir::read_config(dir, overrides)
        .with_context(|| format!("applying --set to {}", cfg_path.display()))?;
    run_dir::write_config(dir, &cfg)?;
    tracing::info!("{}: {} recorded", cfg_path.display(), overrides.join(", "));
    Ok(run_state::config_diff(&old, &cfg))
}

/// Options of one `train` invocation beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the run directory's checkpoint.
    pub resume: bool,
    /// With `resume`: accept config keys that change the run's trajectory
    /// (recorded in `config-changes.json`); without it they are an error.
    pub force_config: bool,
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
    cfg.validate()?;
    (models::info(&cfg.model)?.check)(&cfg.spec(), k)?;
    Ok(cfg)
}

/// Check the run directory for a new run or a resume: on a resume, the keys
/// of `cfg` that differ from the saved config and change the trajectory
/// (an error unless `force`; [`run_state::check_resume_config`]).
fn prepare_dir(cfg: &Config, dir: &Path, resume: bool, force: bool) -> Result<Vec<KeyChange>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run directory {}", dir.display()))?;
    if resume {
        let saved = run_dir::read_config(dir, &[])?;
        return run_state::check_resume_config(dir, &saved, cfg, force);
    }
    if dir.join(run_dir::CHECKPOINT).exists() {
        bail!(
            "{} already holds a run; use --resume to continue it, or another --out",
            dir.display()
        );
    }
    Ok(Vec::new())
}

/// What the main loop and the post-training loop share: the run folder, its
/// metrics log, the wall clock (continued across resumes) and Ctrl-C.
struct Session<'a> {
    cfg: &'a Config,
    dir: &'a Path,
    metrics: Metrics,
    interrupted: Arc<AtomicBool>,
    t0: Instant,
    wall0: f64,
    /// Hide progress bars (tests, MPI workers other than rank 0).
    quiet: bool,
    /// TensorBoard event file (`train.tensorboard`, rank 0).
    tb: Option<tensorboard::EventWriter>,
}

/// A new TensorBoard event file in `dir` when the config asks for one (rank
/// 0); a folder it cannot be created in is a warning.
fn open_tensorboard(cfg: &Config, dir: &Path) -> Option<tensorboard::EventWriter> {
    if !cfg.train.tensorboard || !dist::is_root() {
        return None;
    }
    tensorboard::EventWriter::create(dir)
        .map_err(|e| tracing::warn!("no TensorBoard events: {e:#}"))
        .ok()
}

impl Session<'_> {
    /// One line of `metrics.jsonl`, mirrored to TensorBoard (whose errors
    /// are a warning and stop its logging, never the run).
    fn log(
        &mut self,
        kind: Line,
        step: u64,
        epoch: Option<u64>,
        stats: &[(&str, f64)],
    ) -> Result<()> {
        self.metrics.write(kind, step, epoch, stats)?;
        let prefix = if kind == Line::Post { "post/" } else { "" };
        self.tb_do(|tb| tb.scalars(step, stats, prefix));
        Ok(())
    }

    fn tb_do(&mut self, f: impl FnOnce(&mut tensorboard::EventWriter) -> Result<()>) {
        if let Some(tb) = self.tb.as_mut() {
            if let Err(e) = f(tb) {
                tracing::warn!("TensorBoard logging stopped: {e:#}");
                self.tb = None;
            }
        }
    }

    /// Checkpoint with the wall clock brought up to date.
    fn checkpoint(&self, model: &dyn Model, prog: &mut Progress) -> Result<()> {
        prog.wall_s = self.wall0 + self.t0.elapsed().as_secs_f64();
        run_dir::save_checkpoint(self.dir, model, prog)
    }

    /// `train.on_nan = rollback` (at most 5 times): reload the last
    /// checkpoint and scale the learning rates down; `Err` (the run stops,
    /// its checkpoint kept) under `stop` or after 5 rollbacks.
    fn rollback(
        &mut self,
        model: &mut dyn Model,
        prog: &mut Progress,
        rollbacks: &mut i32,
        pb: &ProgressBar,
        msg: String,
    ) -> Result<()> {
        let cfg = self.cfg;
        if cfg.train.on_nan != OnNan::Rollback || *rollbacks >= 5 {
            pb.abandon();
            bail!("training diverged: {msg}");
        }
        *rollbacks += 1;
        let p = run_dir::restore(self.dir, model)?;
        let factor = cfg.train.nan_lr_factor.powi(*rollbacks);
        model.scale_lr(factor);
        tracing::warn!(
            "{msg}; rolled back to step {} (post-training step {}) with learning rates ×{factor}",
            p.step,
            p.post_step
        );
        *prog = Progress {
            wall_s: prog.wall_s,
            total_steps: prog.total_steps,
            post_total: prog.post_total,
            ..p
        };
        self.metrics = Metrics::open(self.dir, Some(prog.step), prog.post_step)?;
        Ok(())
    }

    fn interrupted_outcome(&self, pb: &ProgressBar, prog: Progress, what: &str) -> TrainOutcome {
        pb.abandon_with_message("interrupted");
        if dist::is_root() {
            eprintln!(
                "interrupted: checkpoint saved{what}; continue with `ldc-vae train --resume {}`",
                self.dir.display()
            );
        }
        TrainOutcome {
            progress: prog,
            complete: false,
            interrupted: true,
        }
    }

    /// Main-loop steps until `stop_at` (of `total`); `Some` if interrupted.
    fn main_loop(
        &mut self,
        model: &mut dyn Model,
        data: &TrainData,
        prog: &mut Progress,
        stop_at: u64,
        total: u64,
    ) -> Result<Option<TrainOutcome>> {
        let cfg = self.cfg;
        let device = model.device();
        let mut batches = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, device);
        let spe = batches.per_epoch();
        let pb = progress_bar(
            total,
            prog.step,
            self.quiet || prog.step >= total,
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
            let interrupted_now = agree(&mut stats, self.interrupted.load(Ordering::SeqCst));
            if let Some((k, v)) = stats.non_finite() {
                let msg = format!(
                    "step {step}: `{k}` is {v}; the last good checkpoint is {}",
                    self.dir.join(run_dir::CHECKPOINT).display()
                );
                self.rollback(model, prog, &mut rollbacks, &pb, msg)?;
                continue;
            }
            prog.step += 1;
            self.log(Line::Step, step, Some(step / spe), &stats.0)?;
            pb.set_position(prog.step);
            if step % 10 == 0 {
                pb.set_message(fmt_stats(&stats, &["loss", "sigma2", "h", "sampler_h"]));
            }
            let epoch_end = prog.step % spe == 0;
            if epoch_end {
                prog.val_mse = reconstruction_mse(model, &data.val, cfg.train.batch_size, cfg.seed);
                self.log(
                    Line::Epoch,
                    prog.step,
                    Some(prog.step / spe - 1),
                    &[("val_mse", prog.val_mse)],
                )?;
                let at = prog.step;
                self.tb_do(|tb| tensorboard::epoch_grid(tb, model, &data.val, cfg.seed, at));
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
                || every(cfg.train.checkpoint_every, prog.step)
            {
                self.checkpoint(model, prog)?;
            }
            if interrupted_now {
                let at = format!(" at step {}", prog.step);
                return Ok(Some(self.interrupted_outcome(&pb, *prog, &at)));
            }
        }
        pb.finish_and_clear();
        if prog.step % spe != 0 || prog.val_mse.is_nan() {
            // The run did not end on an epoch boundary: measure validation MSE now.
            prog.val_mse = reconstruction_mse(model, &data.val, cfg.train.batch_size, cfg.seed);
        }
        Ok(None)
    }

    /// Post-training steps (e.g. LDC-VAE's sampler-only refinement) until
    /// `target`, checkpointed every `train.checkpoint_every` steps and at the
    /// end; `Some` if interrupted. The one loop of `train` and of
    /// `train --only sampler`.
    fn post_loop(
        &mut self,
        model: &mut dyn Model,
        data: &TrainData,
        prog: &mut Progress,
        target: u64,
        label: &str,
    ) -> Result<Option<TrainOutcome>> {
        if prog.post_step >= target {
            return Ok(None);
        }
        let cfg = self.cfg;
        let pb = progress_bar(
            target,
            prog.post_step,
            self.quiet,
            &format!("{} {label}", model.name()),
        );
        let device = model.device();
        let mut post_batches = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, device);
        post_batches.epoch_offset = 1 << 20;
        let mut rollbacks = 0;
        while prog.post_step < target {
            let i = prog.post_step;
            let mut stats = model
                .post_training_step(&mut post_batches, i)
                .with_context(|| format!("post-training step {i}"))?;
            dist::inject_post_fault(i, &mut stats.0);
            let int_now = agree(&mut stats, self.interrupted.load(Ordering::SeqCst));
            // The joint phase's `train.on_nan` policy.
            if let Some((k, v)) = stats.non_finite() {
                let msg = format!(
                    "post-training step {i}: `{k}` is {v}; the last good checkpoint is {}",
                    self.dir.join(run_dir::CHECKPOINT).display()
                );
                self.rollback(model, prog, &mut rollbacks, &pb, msg)?;
                continue;
            }
            prog.post_step += 1;
            self.log(Line::Post, i, None, &stats.0)?;
            pb.set_position(prog.post_step);
            if i % 10 == 0 {
                pb.set_message(fmt_stats(&stats, &["sampler_std", "sampler_h"]));
            }
            if int_now
                || prog.post_step == target
                || every(cfg.train.checkpoint_every, prog.post_step)
            {
                self.checkpoint(model, prog)?;
            }
            if int_now {
                return Ok(Some(self.interrupted_outcome(&pb, *prog, "")));
            }
        }
        pb.finish_and_clear();
        Ok(None)
    }
}

/// `n > 0` and `step` a multiple of it.
fn every(n: u64, step: u64) -> bool {
    n > 0 && step % n == 0
}

/// [`dist::agree`] on a step's statistics.
fn agree(stats: &mut StepStats, flag: bool) -> bool {
    let mut values: Vec<f64> = stats.0.iter().map(|(_, v)| *v).collect();
    let flag = dist::agree(&mut values, flag);
    for (s, v) in stats.0.iter_mut().zip(values) {
        s.1 = v;
    }
    flag
}

/// Train the model of `cfg` in `dir` (created if needed).
pub fn train(cfg: &Config, dir: &Path, opts: &TrainOptions) -> Result<TrainOutcome> {
    let cfg = &for_workers(cfg)?;
    let device = crate::util::parse_device(&cfg.device)?;
    crate::util::set_threads(cfg.threads);
    let changes = prepare_dir(cfg, dir, opts.resume, opts.force_config)?;

    let data = load_train_data(cfg)?;
    let mut model = cfg.build_model(device)?;
    let model = model.as_mut();
    let mut prog = Progress {
        val_mse: f64::NAN,
        ..Default::default()
    };
    if opts.resume {
        prog = run_dir::restore(dir, model)?;
        tracing::info!(
            "resuming {} at step {} (post-training step {})",
            dir.display(),
            prog.step,
            prog.post_step
        );
    }
    dist::barrier(); // every worker has checked the folder before rank 0 writes
    if dist::is_root() {
        let how = "train --resume --force-config";
        run_state::record_change(dir, prog.step, prog.post_step, changes, how)?;
        run_dir::write_config(dir, cfg)?;
    }
    // Every worker starts from rank 0's state (weights, moments, bank).
    let state = dist::broadcast_state(model.state())?;
    if let Some(state) = state {
        model.load_state(&state)?;
    }
    let mut s = Session {
        cfg,
        dir,
        metrics: Metrics::open(dir, opts.resume.then_some(prog.step), prog.post_step)?,
        interrupted: interrupt_flag(),
        t0: Instant::now(),
        wall0: prog.wall_s,
        quiet: opts.quiet || !dist::is_root(),
        tb: open_tensorboard(cfg, dir),
    };
    let spe = data.train.len() as u64 / cfg.train.batch_size as u64;
    let total = if cfg.train.max_steps > 0 {
        cfg.train.max_steps
    } else {
        cfg.train.epochs as u64 * spe
    };
    prog.total_steps = total;
    prog.post_total = model.post_training_steps();
    // A finished run that trains further is unfinished until it ends again.
    if (prog.step < total || prog.post_step < prog.post_total) && dist::is_root() {
        let _ = std::fs::remove_file(dir.join(run_dir::SUMMARY));
    }
    let stop_at = opts
        .stop_after
        .map(|n| (prog.step + n).min(total))
        .unwrap_or(total);
    if prog.step == 0 && !opts.resume {
        run_dir::save_checkpoint(dir, model, &prog)?; // step 0: a rollback target
    }
    if let Some(out) = s.main_loop(model, &data, &mut prog, stop_at, total)? {
        return Ok(out);
    }
    if prog.step < total {
        return Ok(TrainOutcome {
            progress: prog,
            complete: false,
            interrupted: false,
        });
    }
    let post_total = if opts.skip_post {
        0
    } else {
        model.post_training_steps()
    };
    if let Some(out) = s.post_loop(model, &data, &mut prog, post_total, "post-training")? {
        return Ok(out);
    }
    s.checkpoint(model, &mut prog)?;
    if prog.post_step < prog.post_total {
        // `--skip-post`: no summary, the run stays unfinished.
        return Ok(TrainOutcome {
            progress: prog,
            complete: false,
            interrupted: false,
        });
    }
    if dist::is_root() {
        TrainSummary {
            model: model.name().into(),
            dataset: cfg.data.dataset.clone(),
            preset: (!cfg.preset.is_empty()).then(|| cfg.preset.clone()),
            complete: true,
            counts: TrainCounts {
                steps: Some(prog.step),
                post_steps: Some(prog.post_step),
                epochs: Some(prog.step as f64 / spe as f64),
                wall_s: Some(prog.wall_s),
            },
            val_mse: Some(prog.val_mse),
            device: Some(cfg.device.clone()),
            workers: Some(dist::size()),
        }
        .write(dir)?;
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
    let changes = if overrides.is_empty() {
        Vec::new()
    } else {
        apply_sampler_overrides(dir, overrides)?
    };
    let (cfg, mut model, mut prog) = run_dir::load_run(dir, device)?;
    run_state::record_change(
        dir,
        prog.step,
        prog.post_step,
        changes,
        "train --only sampler --set",
    )?;
    let data = load_train_data(&cfg)?;
    let mut s = Session {
        cfg: &cfg,
        dir,
        // Lines of an earlier extension killed after its last checkpoint go.
        metrics: Metrics::open(dir, Some(prog.step), prog.post_step)?,
        interrupted: interrupt_flag(),
        t0: Instant::now(),
        wall0: prog.wall_s,
        quiet,
        tb: open_tensorboard(&cfg, dir),
    };
    let target = prog.post_step + extra;
    s.post_loop(model.as_mut(), &data, &mut prog, target, "sampler")?;
    Ok(prog)
}
