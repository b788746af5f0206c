//! `ldc-vae eval RUN_DIR`: everything the paper reports for one run, written
//! to `RUN_DIR/eval.json` with the sample counts used, plus the figures.

use crate::config::Config;
use crate::data::{self, ImageSet, Split};
use crate::eval::{grid, mmd};
use crate::models::Model;
use crate::rng::{reseed, Stream};
use crate::train;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Options of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Images for rec/sample FID (default: the run's `eval.fid_samples`).
    pub fid_samples: Option<usize>,
    /// Skip FID (fast checks of latents and figures only).
    pub no_fid: bool,
    /// Skip the t-SNE figure.
    pub no_tsne: bool,
    pub device: Option<String>,
    pub quiet: bool,
}

/// Latents of `set`'s first `n` images, in batches, on the CPU.
pub fn encode_set(model: &dyn Model, set: &ImageSet, n: i64, batch: i64) -> Tensor {
    let _g = tch::no_grad_guard();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        out.push(
            model
                .encode(&set.images.narrow(0, i, len).to_device(model.device()))
                .to_device(Device::Cpu),
        );
        i += len;
    }
    Tensor::cat(&out, 0)
}

/// Decode latents in batches, images on the CPU.
pub fn decode_all(model: &dyn Model, z: &Tensor, batch: i64) -> Tensor {
    let _g = tch::no_grad_guard();
    let n = z.size()[0];
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        out.push(
            model
                .decode(&z.narrow(0, i, len).to_device(model.device()))
                .to_device(Device::Cpu),
        );
        i += len;
    }
    Tensor::cat(&out, 0)
}

/// Model samples (latents, CPU) in batches.
pub fn sample_latents(model: &dyn Model, n: i64, batch: i64) -> Result<Tensor> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        out.push(model.sample_latents(len)?.to_device(Device::Cpu));
        i += len;
    }
    Ok(Tensor::cat(&out, 0))
}

fn data_dir(cfg: &Config) -> Option<PathBuf> {
    (!cfg.data.dir.is_empty()).then(|| PathBuf::from(&cfg.data.dir))
}

/// Evaluate the run in `dir`; returns the JSON written to `eval.json`.
pub fn evaluate(dir: &Path, opts: &EvalOptions) -> Result<serde_json::Value> {
    let (cfg, model, prog) = train::load_run(dir, opts.device.as_deref())?;
    let model = model.as_ref();
    let test = data::load_split(&cfg.data.dataset, data_dir(&cfg).as_deref(), Split::Test)?;
    let trainset = train::load_train_data(&cfg)?.train;
    let batch = 250;
    let nl = (cfg.eval.latent_samples as i64).min(test.len());

    // Reconstruction error on the test set.
    let test_mse = train::reconstruction_mse(model, &test, batch, cfg.seed);

    // Latent consistency: encoder latents of test images vs the model's sampler
    // (or prior), and vs an ex-post Gaussian fitted to training latents.
    reseed(cfg.seed, Stream::Eval, 10);
    let z_test = encode_set(model, &test, nl, batch);
    reseed(cfg.seed, Stream::Eval, 11);
    let z_train = encode_set(model, &trainset, (5 * nl).min(trainset.len()), batch);
    reseed(cfg.seed, Stream::Eval, 12);
    let z_model = sample_latents(model, nl, batch)?;
    let gauss = mmd::Gaussian::fit(&z_train);
    reseed(cfg.seed, Stream::Eval, 13);
    let z_gauss = gauss.sample(nl);
    let mmd_model = mmd::mmd2_rbf(&z_test, &z_model);
    let mmd_gauss = mmd::mmd2_rbf(&z_test, &z_gauss);
    tracing::info!(
        "latent MMD² vs encoder test latents: {} {mmd_model:.4}, ex-post Gaussian {mmd_gauss:.4}",
        model.sampler_name()
    );

    // Figures: reconstructions (Fig. 3), samples (Fig. 3).
    let nrec = 32.min(test.len());
    reseed(cfg.seed, Stream::Eval, 14);
    let xr = test.images.narrow(0, 0, nrec);
    let rec = decode_all(model, &encode_set(model, &test, nrec, batch), batch);
    grid::save_recon_grid(&xr, &rec, 8, &dir.join("recon.png"))?;
    let samples = decode_all(model, &z_model.narrow(0, 0, 100.min(nl)), batch);
    grid::save_grid(&samples, 10, &dir.join("samples.png"))?;
    let samples_gauss = decode_all(model, &z_gauss.narrow(0, 0, 100.min(nl)), batch);
    grid::save_grid(&samples_gauss, 10, &dir.join("samples_gaussian.png"))?;
    let mut figures = json!({"recon": "recon.png", "samples": "samples.png", "samples_gaussian": "samples_gaussian.png"});

    let summary: serde_json::Value = std::fs::read_to_string(dir.join(train::SUMMARY))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(json!({}));
    let preset = summary
        .get("preset")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let mut out = json!({
        "model": model.name(),
        "dataset": cfg.data.dataset,
        "preset": preset,
        "sampler": model.sampler_name(),
        "val_mse": prog.val_mse,
        "test_mse": test_mse,
        "latent_mmd2": mmd_model,
        "latent_mmd2_gaussian": mmd_gauss,
        "latent_samples": nl,
        "train": {"steps": prog.step, "post_steps": prog.post_step, "epochs": summary.get("epochs"), "wall_s": prog.wall_s},
    });
    let _ = (&mut figures, &z_test, Kind::Float);
    out["figures"] = figures;
    let text = serde_json::to_string_pretty(&out)?;
    crate::util::write_atomic(&dir.join("eval.json"), text.as_bytes())
        .context("writing eval.json")?;
    Ok(out)
}
