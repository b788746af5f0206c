//! `ldc-vae reproduce`: every row of Table 1 (a model plus config overrides,
//! [`crate::rows`]) with the same preset, budget and seed, each evaluated,
//! then one report; with `--seeds N` each row N times (seeds seed, seed+1,
//! ...), with `--epochs` at several budgets. Resumable: finished runs and
//! evaluations are kept.
//!
//! Layout under `OUT` (`OUT/<preset>/` first with several presets):
//! `<row>/`; `<row>/seed<k>/` with N > 1 seeds; `e<E>/<row>[/seed<k>]/` with
//! `--epochs`.

use crate::config::Config;
use crate::eval::run::{evaluate, EvalOptions};
use crate::rows::{self, Row};
use crate::run_dir;
use crate::train::{self, TrainOptions};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Preset shared by every row (data set, width, epochs, seed); several
    /// (comma-separated, e.g. `mnist-cpu,cifar10-cpu,celeba-cpu`) run one after
    /// the other into `OUT/<preset>/` and share one report.
    #[arg(long, default_value = "mnist-cpu", value_delimiter = ',')]
    pub preset: Vec<String>,
    /// Rows to run (comma-separated row or model keys; default: the 8 models
    /// and ldc-paper, rae-l2-ot, wae-mmd-ot).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Train and evaluate each row this many times, with seeds seed, seed+1,
    /// ... (the preset's `seed` plus k) into `<row>/seed<k>/` (1: `<row>/`).
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// Training budgets (comma-separated epoch counts, e.g. `2,4,8,16`): each
    /// row is trained at each into `e<E>/<row>/` (default: the preset's epochs,
    /// in `<row>/`); the report draws the budget curves.
    #[arg(long, value_delimiter = ',')]
    pub epochs: Vec<usize>,
    /// Output folder: one run directory per row and `report/` (default
    /// `runs/reproduce-<preset>`, or `runs/reproduce` for several presets).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Config overrides applied to every row (after the row's own).
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

/// One training and evaluation of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub preset: String,
    pub row: Row,
    /// Seed offset k (the run's seed is the preset's plus k).
    pub seed_k: usize,
    pub epochs: Option<usize>,
    pub dir: PathBuf,
    /// Every override of the run, in order: model, device, the row's, the
    /// user's, epochs, seed.
    pub overrides: Vec<String>,
}

impl Job {
    fn tag(&self) -> String {
        let mut t = format!("{}/{}", self.preset, self.row.key);
        if let Some(e) = self.epochs {
            t += &format!(" e{e}");
        }
        t + &format!(" seed+{}", self.seed_k)
    }
}

/// The output folder.
fn out_dir(a: &ReproduceArgs) -> PathBuf {
    a.out.clone().unwrap_or_else(|| {
        if a.preset.len() > 1 {
            PathBuf::from("runs/reproduce")
        } else {
            PathBuf::from(format!("runs/reproduce-{}", a.preset[0]))
        }
    })
}

/// Every job of `a` with the rows of `table`, each config loaded (so a bad
/// preset, row or override fails before hours of training start).
pub fn plan(a: &ReproduceArgs, table: &[Row]) -> Result<Vec<Job>> {
    let rows: Vec<Row> = if a.models.is_empty() {
        rows::all_rows(table)
    } else {
        a.models
            .iter()
            .map(|m| rows::find(m, table))
            .collect::<Result<_>>()?
    };
    if a.preset.is_empty() {
        bail!("--preset: give at least one preset");
    }
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if a.epochs.contains(&0) {
        bail!("--epochs: every budget must be at least 1 epoch");
    }
    let out = out_dir(a);
    let budgets: Vec<Option<usize>> = if a.epochs.is_empty() {
        vec![None]
    } else {
        a.epochs.iter().map(|&e| Some(e)).collect()
    };
    let mut jobs = Vec::new();
    for preset in &a.preset {
        let base = if a.preset.len() > 1 {
            out.join(preset)
        } else {
            out.clone()
        };
        for &epochs in &budgets {
            for row in &rows {
                let mut ov = vec![format!("model={}", row.model)];
                if let Some(d) = &a.device {
                    ov.push(format!("device={d}"));
                }
                ov.extend(row.overrides.iter().map(|s| s.to_string()));
                ov.extend(a.overrides.iter().cloned());
                if let Some(e) = epochs {
                    ov.push(format!("train.epochs={e}"));
                }
                let what = || format!("row `{}` with preset `{preset}`", row.key);
                let seed0 = Config::load(Some(preset), None, &ov)
                    .with_context(what)?
                    .seed;
                let mut dir = base.clone();
                if let Some(e) = epochs {
                    dir.push(format!("e{e}"));
                }
                dir.push(row.key);
                for k in 0..a.seeds {
                    let mut ov = ov.clone();
                    let mut dir = dir.clone();
                    if a.seeds > 1 {
                        ov.push(format!("seed={}", seed0 + k as u64));
                        Config::load(Some(preset), None, &ov).with_context(what)?;
                        dir.push(format!("seed{k}"));
                    }
                    jobs.push(Job {
                        preset: preset.clone(),
                        row: *row,
                        seed_k: k,
                        epochs,
                        dir,
                        overrides: ov,
                    });
                }
            }
        }
    }
    Ok(jobs)
}

pub fn run(a: ReproduceArgs) -> Result<()> {
    let jobs = plan(&a, rows::ROWS)?;
    let out = out_dir(&a);
    let mut runs = Vec::new();
    for j in &jobs {
        runs.push(run_one(&a, j)?);
    }
    crate::eval::report::write_report(&runs, &out.join("report"))?;
    println!("report: {}", out.join("report/report.html").display());
    Ok(())
}

/// Train (or resume) and evaluate one job; finished steps are kept.
fn run_one(a: &ReproduceArgs, j: &Job) -> Result<PathBuf> {
    let cfg = Config::load(Some(&j.preset), None, &j.overrides)?;
    let (tag, dir) = (j.tag(), j.dir.as_path());
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
    evaluate_once(a, &tag, dir)?;
    Ok(dir.to_path_buf())
}

fn evaluate_once(a: &ReproduceArgs, tag: &str, dir: &Path) -> Result<()> {
    if dir.join(run_dir::EVAL).exists() {
        eprintln!(
            "[reproduce] {tag}: evaluation already done ({})",
            dir.join(run_dir::EVAL).display()
        );
        return Ok(());
    }
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
            on: crate::eval::run::ScoreOn::Test,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ReproduceArgs,
    }

    fn args(v: &[&str]) -> ReproduceArgs {
        Cli::try_parse_from(std::iter::once("reproduce").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    /// A row whose override exists on this branch (the real extra rows need
    /// keys the lead adds on main).
    const T: &[Row] = &[Row {
        key: "vae-wide",
        title: "VAE, latent 32",
        model: "vae",
        overrides: &["net.latent_dim=32"],
        paper: None,
    }];

    #[test]
    fn seeds_and_budgets_lay_out_folders() {
        let a = args(&[
            "--models",
            "vae-wide,rae-l2",
            "--seeds",
            "2",
            "--epochs",
            "2,4",
            "--out",
            "o",
            "--set",
            "seed=7",
        ]);
        let jobs = plan(&a, T).unwrap();
        let dirs: Vec<String> = jobs.iter().map(|j| j.dir.display().to_string()).collect();
        assert_eq!(
            dirs,
            [
                "o/e2/vae-wide/seed0",
                "o/e2/vae-wide/seed1",
                "o/e2/rae-l2/seed0",
                "o/e2/rae-l2/seed1",
                "o/e4/vae-wide/seed0",
                "o/e4/vae-wide/seed1",
                "o/e4/rae-l2/seed0",
                "o/e4/rae-l2/seed1",
            ]
        );
        let j = &jobs[1];
        assert_eq!(
            j.overrides,
            [
                "model=vae",
                "net.latent_dim=32",
                "seed=7",
                "train.epochs=2",
                "seed=8"
            ]
        );
        let cfg = Config::load(Some("mnist-cpu"), None, &j.overrides).unwrap();
        assert_eq!((cfg.seed, cfg.train.epochs, cfg.net.latent_dim), (8, 2, 32));
        // One seed, no budgets: today's layout and overrides.
        let jobs = plan(&args(&["--models", "ldc", "--out", "o"]), T).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].dir.to_str().unwrap(), &jobs[0].overrides[..]),
            ("o/ldc", &["model=ldc".to_string()][..])
        );
        // Several presets: one folder each.
        let jobs = plan(
            &args(&[
                "--preset",
                "mnist-cpu,cifar10-cpu",
                "--models",
                "vae",
                "--seeds",
                "3",
            ]),
            T,
        )
        .unwrap();
        assert_eq!(
            jobs[5].dir,
            PathBuf::from("runs/reproduce/cifar10-cpu/vae/seed2")
        );
        assert_eq!(jobs[5].overrides.last().unwrap(), "seed=2");
    }

    #[test]
    fn default_rows_and_errors() {
        let a = args(&["--out", "o"]);
        // The default: the registry's 8 models, then the extra rows, whose
        // keys (ldc.recipe, sampler.kind) this build may not know yet.
        match plan(&a, rows::ROWS) {
            Ok(jobs) => assert_eq!(jobs.len(), 11),
            Err(e) => assert!(format!("{e:#}").contains("row `ldc-paper`"), "{e:#}"),
        }
        let jobs = plan(&a, T).unwrap();
        assert_eq!(jobs.len(), 9);
        assert_eq!(jobs[8].dir, PathBuf::from("o/vae-wide"));
        for bad in [
            &["--models", "nope"][..],
            &["--seeds", "0"],
            &["--epochs", "0,2"],
            &["--models", "vae", "--set", "train.nope=1"],
        ] {
            assert!(plan(&args(bad), T).is_err(), "{bad:?}");
        }
    }
}
