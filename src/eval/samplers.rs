//! The sampler-target comparison of DESIGN.md §1.8, redone on a trained run:
//! each target trains a fresh sampler alone against the same frozen
//! encoder/decoder, then is scored by latent MMD² to the encoder's test
//! latents, beside the ex-post Gaussian, with a sample grid per target.

use crate::data::{self, Split};
use crate::eval::run::{decode_all, encode_set};
use crate::eval::{grid, mmd};
use crate::models::ldc::{Ldc, SamplerPhase, SamplerTarget};
use crate::models::Model;
use crate::nets::Geometry;
use crate::rng::{reseed, Stream};
use crate::train::{self, Batches};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::path::Path;

pub struct TargetResult {
    pub target: String,
    pub mmd2: f64,
    pub sampler_std: f64,
    pub grid: String,
}

/// Train a fresh sampler per target for `steps` steps on the frozen nets of
/// `run_dir`; write grids and `sampler-targets.md`/`.json` into `out`.
pub fn compare(
    run_dir: &Path,
    targets: &[String],
    steps: u64,
    kde_scale: Option<f64>,
    out: &Path,
    quiet: bool,
) -> Result<Vec<TargetResult>> {
    let (mut cfg, _, _) = train::load_run(run_dir, None)?;
    if cfg.model != "ldc" {
        bail!(
            "{} is a `{}` run; sampler targets exist only for ldc",
            run_dir.display(),
            cfg.model
        );
    }
    std::fs::create_dir_all(out)?;
    let dev = crate::util::parse_device(&cfg.device)?;
    let (tensors, _) = train::read_checkpoint(run_dir)?;
    let data = train::load_train_data(&cfg)?;
    let test = data::load_split(
        &cfg.data.dataset,
        (!cfg.data.dir.is_empty()).then(|| Path::new(&cfg.data.dir)),
        Split::Test,
    )?;
    let nl = (cfg.eval.latent_samples as i64).min(test.len());
    let mut results = Vec::new();

    // Reference sets, the same for every target.
    let mut base = Ldc::new(&cfg, Geometry::for_dataset(&cfg.data.dataset), dev)?;
    base.load_state(&tensors)?;
    reseed(cfg.seed, Stream::Eval, 10);
    let z_test = encode_set(&base, &test, nl, 250);
    reseed(cfg.seed, Stream::Eval, 11);
    let z_train = encode_set(&base, &data.train, (5 * nl).min(data.train.len()), 250);
    let gauss = mmd::Gaussian::fit(&z_train);
    reseed(cfg.seed, Stream::Eval, 13);
    let z_gauss = gauss.sample(nl);
    let mmd_gauss = mmd::mmd2_rbf(&z_test, &z_gauss);
    grid::save_grid(
        &decode_all(&base, &z_gauss.narrow(0, 0, 100), 250),
        10,
        &out.join("gaussian.png"),
    )?;
    results.push(TargetResult {
        target: "ex-post Gaussian".into(),
        mmd2: mmd_gauss,
        sampler_std: f64::NAN,
        grid: "gaussian.png".into(),
    });

    for t in targets {
        let target = SamplerTarget::parse(t)?;
        cfg.ldc.sampler_target = t.clone();
        cfg.ldc.kde_scale = kde_scale.unwrap_or(cfg.ldc.kde_scale);
        let mut m = Ldc::new(&cfg, Geometry::for_dataset(&cfg.data.dataset), dev)?;
        m.load_state(&tensors)?;
        m.reset_sampler(target, cfg.seed, cfg.sampler_lr());
        let mut batches = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, dev);
        batches.epoch_offset = 1 << 21;
        let pb = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(steps)
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap(),
        );
        pb.set_prefix(format!("sampler {t}"));
        let mut last_std = f64::NAN;
        for i in 0..steps {
            let x = batches.get(i);
            let s = m.sampler_only_step(&x, (1u64 << 41) + i, SamplerPhase::Joint)?;
            if let Some((k, v)) = s.non_finite() {
                bail!("target {t}, step {i}: `{k}` is {v}");
            }
            last_std = s.get("sampler_std").unwrap_or(f64::NAN);
            pb.inc(1);
        }
        pb.finish_and_clear();
        reseed(cfg.seed, Stream::Eval, 12);
        let z = crate::eval::run::sample_latents(&m, nl, 250)?;
        let mmd2 = mmd::mmd2_rbf(&z_test, &z);
        let name = format!("sampler_{t}.png");
        grid::save_grid(
            &decode_all(&m, &z.narrow(0, 0, 100), 250),
            10,
            &out.join(&name),
        )?;
        tracing::info!("target {t}: latent MMD² {mmd2:.4} (ex-post Gaussian {mmd_gauss:.4})");
        results.push(TargetResult {
            target: t.clone(),
            mmd2,
            sampler_std: last_std,
            grid: name,
        });
    }

    let mut md = String::new();
    writeln!(
        md,
        "# Sampler targets on the frozen nets of `{}`\n",
        run_dir.display()
    )?;
    writeln!(md, "Each sampler trained alone for {steps} steps (batch {}, {} particles, kde_scale {}); latent MMD² (RBF, median bandwidth, unbiased) between {nl} encoder latents of test images and {nl} latents of each generator.\n", cfg.train.batch_size, cfg.ldc.sampler_particles, kde_scale.unwrap_or(cfg.ldc.kde_scale))?;
    writeln!(
        md,
        "| generator | MMD² | ratio to Gaussian | samples |\n|---|---|---|---|"
    )?;
    for r in &results {
        writeln!(
            md,
            "| {} | {:.4} | {:.2} | ![]({}) |",
            r.target,
            r.mmd2,
            r.mmd2 / mmd_gauss,
            r.grid
        )?;
    }
    crate::util::write_atomic(&out.join("sampler-targets.md"), md.as_bytes())?;
    let json: Vec<_> = results.iter().map(|r| serde_json::json!({"target": r.target, "mmd2": r.mmd2, "sampler_std": r.sampler_std, "grid": r.grid})).collect();
    crate::util::write_atomic(
        &out.join("sampler-targets.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(results)
}
