//! `ldc-vae reproduce`: every model of Table 1 with the same preset, budget and
//! seed, each evaluated, then one report. Resumable: finished runs and
//! evaluations are kept.

use crate::config::Config;
use crate::eval::run::{evaluate, EvalOptions};
use crate::models;
use crate::run_dir;
use crate::train::{self, TrainOptions};
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Preset shared by every model (data set, width, epochs, seed); several
    /// (comma-separated, e.g. `mnist-cpu,cifar10-cpu,celeba-cpu`) run one after
    /// the other into `OUT/<preset>/` and share one report.
    #[arg(long, default_value = "mnist-cpu", value_delimiter = ',')]
    pub preset: Vec<String>,
    /// Models to run (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Output folder: one run directory per model and `report/` (default
    /// `runs/reproduce-<preset>`, or `runs/reproduce` for several presets).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Config overrides applied to every model.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Images for FID (default: the preset's eval.fid_samples).
    #[arg(long)]
    pub fid_samples: Option<usize>,
    /// Skip FID (latent numbers and figures only).
    #[arg(long)]
    pub no_fid: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
}

pub fn run(a: ReproduceArgs) -> Result<()> {
    let models: Vec<String> = if a.models.is_empty() {
        models::keys().map(String::from).collect()
    } else {
        a.models.clone()
    };
    for m in &models {
        models::info(m)?;
    }
    if a.preset.is_empty() {
        bail!("--preset: give at least one preset");
    }
    // Every preset must load before hours of training start.
    for p in &a.preset {
        Config::load(Some(p), None, &a.overrides)?;
    }
    let several = a.preset.len() > 1;
    let out = a.out.clone().unwrap_or_else(|| {
        if several {
            PathBuf::from("runs/reproduce")
        } else {
            PathBuf::from(format!("runs/reproduce-{}", a.preset[0]))
        }
    });
    let mut runs = Vec::new();
    for preset in &a.preset {
        let base = if several {
            out.join(preset)
        } else {
            out.clone()
        };
        for m in &models {
            runs.push(run_one(&a, preset, m, &base.join(m))?);
        }
    }
    crate::eval::report::write_report(&runs, &out.join("report"))?;
    println!("report: {}", out.join("report/report.html").display());
    Ok(())
}

/// Train (or resume) and evaluate one model of one preset in `dir`; finished
/// steps are kept.
fn run_one(a: &ReproduceArgs, preset: &str, m: &str, dir: &Path) -> Result<PathBuf> {
    let mut ov = vec![format!("model={m}")];
    if let Some(d) = &a.device {
        ov.push(format!("device={d}"));
    }
    ov.extend(a.overrides.iter().cloned());
    let cfg = Config::load(Some(preset), None, &ov)?;
    let tag = format!("{preset}/{m}");
    if dir.join(run_dir::SUMMARY).exists() {
        eprintln!(
            "[reproduce] {tag}: training already complete in {}",
            dir.display()
        );
    } else {
        let resume = dir.join(run_dir::CHECKPOINT).exists();
        eprintln!(
            "[reproduce] {tag}: {} training in {}",
            if resume { "resuming" } else { "starting" },
            dir.display()
        );
        let o = train::train(
            &cfg,
            dir,
            &TrainOptions {
                resume,
                ..Default::default()
            },
        )?;
        if !o.complete {
            bail!("training of {tag} was interrupted; rerun the same command to resume");
        }
    }
    if dir.join(run_dir::EVAL).exists() {
        eprintln!(
            "[reproduce] {tag}: evaluation already done ({})",
            dir.join(run_dir::EVAL).display()
        );
    } else {
        eprintln!("[reproduce] {tag}: evaluating");
        evaluate(
            dir,
            &EvalOptions {
                allow_unfinished: false,
                fid_samples: a.fid_samples,
                no_fid: a.no_fid,
                no_tsne: false,
                device: a.device.clone(),
                quiet: false,
            },
        )?;
    }
    Ok(dir.to_path_buf())
}
