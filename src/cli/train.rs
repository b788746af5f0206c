use crate::config::Config;
use crate::train::{self, TrainOptions};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Named preset: mnist-cpu (default), mnist, cifar10, celeba (paper width, for a GPU),
    /// cifar10-cpu, celeba-cpu.
    #[arg(long)]
    pub preset: Option<String>,
    /// TOML config file (instead of a preset); see configs/ for the keys.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Model: ldc, vae, cv-vae, wae-mmd, two-stage-vae, rae-l2, rae-gp, rae-sn.
    #[arg(long)]
    pub model: Option<String>,
    /// Override any config key, e.g. `--set ldc.kde_scale=0.5 --set train.epochs=3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory (default runs/<model>-<preset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda, cuda:N, or cuda:local (under mpirun: the GPU of the worker's local rank); overrides the preset.
    #[arg(long)]
    pub device: Option<String>,
    /// Seed (overrides the preset).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue the run in this directory from its checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// With --resume: train only this part further (`sampler`: the LDC sampler on the frozen encoder/decoder).
    #[arg(long, requires = "resume")]
    pub only: Option<String>,
    /// With --only sampler: number of extra sampler steps.
    #[arg(long, requires = "only")]
    pub steps: Option<u64>,
    /// With --resume: continue although `--set` (or --seed, --model) changes keys that change
    /// the run's trajectory (seed, train.*, data.*, net.*, ldc.*, sampler.*, ...); the
    /// change is recorded in the run's config-changes.json and shown in its report.
    /// `threads`, `device`, `train.checkpoint_every` and `eval.*` may change without it.
    #[arg(long, requires = "resume")]
    pub force_config: bool,
    /// Stop (with a checkpoint) after this many steps in this invocation.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Skip the post-training phase (LDC sampler refinement, GMM fit, second stage).
    #[arg(long)]
    pub skip_post: bool,
}

pub fn run(a: TrainArgs) -> Result<()> {
    if let (Some(dir), Some(only)) = (&a.resume, &a.only) {
        if only != "sampler" {
            bail!("--only `{only}`: only `sampler` can be trained alone");
        }
        let steps = a.steps.unwrap_or(1000);
        let p = train::extend_post_training(dir, steps, a.device.as_deref(), &a.overrides, false)?;
        println!(
            "sampler trained {steps} more steps ({} post-training steps in all); checkpoint in {}",
            p.post_step,
            dir.display()
        );
        return Ok(());
    }
    let (cfg, dir) = match &a.resume {
        Some(dir) => {
            // Checked against the saved config by `train` (refused unless --force-config).
            let mut ov = Vec::new();
            if let Some(m) = &a.model {
                ov.push(format!("model={m}"));
            }
            if let Some(s) = a.seed {
                ov.push(format!("seed={s}"));
            }
            ov.extend(a.overrides.iter().cloned());
            if let Some(d) = &a.device {
                ov.push(format!("device={d}"));
            }
            (
                Config::load(None, Some(&dir.join(crate::run_dir::CONFIG)), &ov)?,
                dir.clone(),
            )
        }
        None => {
            let mut ov = Vec::new();
            if let Some(m) = &a.model {
                ov.push(format!("model={m}"));
            }
            if let Some(d) = &a.device {
                ov.push(format!("device={d}"));
            }
            if let Some(s) = a.seed {
                ov.push(format!("seed={s}"));
            }
            ov.extend(a.overrides.iter().cloned());
            let cfg = Config::load(a.preset.as_deref(), a.config.as_deref(), &ov)?;
            let name = a
                .preset
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_PRESET.into());
            let dir = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", cfg.model, name)));
            (cfg, dir)
        }
    };
    let opts = TrainOptions {
        resume: a.resume.is_some(),
        force_config: a.force_config,
        stop_after: a.stop_after,
        skip_post: a.skip_post,
        quiet: false,
    };
    let out = train::train(&cfg, &dir, &opts)?;
    if !crate::dist::is_root() {
        return Ok(());
    }
    if out.complete {
        println!(
            "trained {} for {} steps (+{} post-training) in {:.0} s; validation MSE {:.5}; run in {}",
            cfg.model, out.progress.step, out.progress.post_step, out.progress.wall_s, out.progress.val_mse, dir.display()
        );
    } else if !out.interrupted {
        let at = if out.progress.step < out.progress.total_steps {
            format!("step {}", out.progress.step)
        } else {
            format!(
                "step {}, before the post-training phase (--skip-post)",
                out.progress.step
            )
        };
        println!(
            "stopped at {at}; the run is unfinished: continue with `ldc-vae train --resume {}`",
            dir.display()
        );
    }
    Ok(())
}
