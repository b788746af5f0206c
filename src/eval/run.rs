//! `ldc-vae eval RUN_DIR`: everything the paper reports for one run, written
//! to `RUN_DIR/eval.json` with the sample counts used, plus the figures.

use crate::config::Config;
use crate::data::{self, ImageSet, Split};
use crate::eval::{classes, fid, grid, mmd, plots};
use crate::gmm::Gmm;
use crate::models::{self, Generation, Model};
use crate::rng::{reseed, Stream};
use crate::run_dir::{self, EvalSummary, Progress, TrainCounts, TrainSummary};
use crate::train;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

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

/// `f` applied to the first `n` rows of `x` in batches on `device`, results
/// gathered on the CPU.
fn in_batches(
    x: &Tensor,
    n: i64,
    batch: i64,
    device: Device,
    f: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    let _g = tch::no_grad_guard();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        out.push(f(&x.narrow(0, i, len).to_device(device)).to_device(Device::Cpu));
        i += len;
    }
    Tensor::cat(&out, 0)
}

/// Latents of `set`'s first `n` images, in batches, on the CPU.
pub fn encode_set(model: &dyn Model, set: &ImageSet, n: i64, batch: i64) -> Tensor {
    in_batches(&set.images, n, batch, model.device(), |x| model.encode(x))
}

/// Decode latents in batches, images on the CPU.
pub fn decode_all(model: &dyn Model, z: &Tensor, batch: i64) -> Tensor {
    in_batches(z, z.size()[0], batch, model.device(), |z| model.decode(z))
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

/// The FIDs of an earlier evaluation of this same checkpoint (same step
/// counts), so `eval --no-fid` does not throw them away.
fn previous_fids(dir: &Path, prog: &Progress) -> Option<Fids> {
    let prev = EvalSummary::read(dir).ok()?;
    (prev.is_of(prog) && prev.rec_fid.is_some()).then_some(Fids {
        rec_fid: prev.rec_fid,
        sample_fid: prev.sample_fid,
        sample_fid_gmm: prev.sample_fid_gmm,
        fid_samples: prev.fid_samples,
    })
}

/// The FID fields of `eval.json`.
#[derive(Debug, Clone, Default)]
struct Fids {
    rec_fid: Option<f64>,
    sample_fid: Option<f64>,
    sample_fid_gmm: Option<f64>,
    fid_samples: Option<u64>,
}

/// Evaluate the run in `dir`; returns what it wrote to `eval.json`.
pub fn evaluate(dir: &Path, opts: &EvalOptions) -> Result<EvalSummary> {
    let (cfg, model, prog) = run_dir::load_run(dir, opts.device.as_deref())?;
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
    // Ex-post GMM (the RAE route), fitted on the same training latents.
    let b = &cfg.baselines.gmm;
    let gmm = Gmm::fit_with_tol(
        &z_train,
        b.gmm_components,
        cfg.seed,
        b.gmm_max_iter,
        b.gmm_tol,
    )
    .context("fitting the ex-post GMM on the training latents")?;
    reseed(cfg.seed, Stream::Eval, 15);
    let z_gmm = gmm.sample(nl).to_device(Device::Cpu);
    let mmd_gmm = mmd::mmd2_rbf(&z_test, &z_gmm);
    tracing::info!(
        "latent MMD² to encoder test latents: {} {mmd_model:.4}, ex-post Gaussian {mmd_gauss:.4}, ex-post GMM {mmd_gmm:.4}",
        model.sampler_name()
    );
    let model_is_gmm = model.generation() == Generation::ExPostGmm;

    // Figures: reconstructions and samples (Fig. 3), latent t-SNE (Fig. 2), curves.
    let nrec = 32.min(test.len());
    reseed(cfg.seed, Stream::Eval, 14);
    let xr = test.images.narrow(0, 0, nrec);
    let rec = decode_all(model, &encode_set(model, &test, nrec, batch), batch);
    grid::save_recon_grid(&xr, &rec, 8, &dir.join("recon.png"))?;
    let samples = decode_all(model, &z_model.narrow(0, 0, 100.min(nl)), batch);
    grid::save_grid(&samples, 10, &dir.join("samples.png"))?;
    let mut figures: BTreeMap<String, String> =
        [("recon", "recon.png"), ("samples", "samples.png")]
            .into_iter()
            .map(|(k, f)| (k.to_string(), f.to_string()))
            .collect();
    if !model_is_gmm {
        let s = decode_all(model, &z_gmm.narrow(0, 0, 100.min(nl)), batch);
        grid::save_grid(&s, 10, &dir.join("samples_gmm.png"))?;
        figures.insert("samples_gmm".into(), "samples_gmm.png".into());
    }
    if !opts.no_tsne {
        let t = std::time::Instant::now();
        plots::tsne_scatter(
            &z_test,
            &z_model,
            "encoder (test images)",
            &model.sampler_name(),
            &format!(
                "{}: latent space (t-SNE of {nl} + {nl} points)",
                model.name()
            ),
            &dir.join("tsne.png"),
            cfg.seed,
        )?;
        tracing::info!("t-SNE figure in {:.0} s", t.elapsed().as_secs_f64());
        figures.insert("tsne".into(), "tsne.png".into());
    }
    let keys = models::info(model.name())?.loss_curves;
    if plots::loss_curves(&dir.join(run_dir::METRICS), keys, &dir.join("loss.png")).is_ok() {
        figures.insert("loss".into(), "loss.png".into());
    }

    // FID as pytorch-fid (DESIGN §4): reconstructions of the first N test images
    // and N generated images, each against the first N test images.
    let nfid = opts
        .fid_samples
        .unwrap_or(cfg.eval.fid_samples)
        .min(test.len() as usize);
    let mut fids = Fids::default();
    if opts.no_fid {
        // Keep the FIDs of an earlier evaluation of this same checkpoint.
        if let Some(prev) = previous_fids(dir, &prog) {
            fids = prev;
        }
    }
    if !opts.no_fid {
        let dev = model.device();
        let net = fid::Inception::load_on(&fid::default_weights_path()?, dev)?;
        let fb = cfg.eval.fid_batch;
        let reference = fid::reference_stats_with(
            &net,
            &cfg.data.dataset,
            Split::Test,
            nfid,
            data_dir(&cfg).as_deref(),
            &fid::default_stats_dir(),
            fb,
        )?;
        let n = nfid as i64;
        reseed(cfg.seed, Stream::Eval, 20);
        let rec = decode_all(model, &encode_set(model, &test, n, batch), batch);
        let rec_fid = fid::frechet_distance(&net.stats(&rec, fb, !opts.quiet)?, &reference)?;
        drop(rec);
        reseed(cfg.seed, Stream::Eval, 21);
        let gen = decode_all(model, &sample_latents(model, n, batch)?, batch);
        let sample_fid = fid::frechet_distance(&net.stats(&gen, fb, !opts.quiet)?, &reference)?;
        drop(gen);
        let gmm_fid = if model_is_gmm {
            None
        } else {
            reseed(cfg.seed, Stream::Eval, 22);
            let gen = decode_all(model, &gmm.sample(n).to_device(Device::Cpu), batch);
            Some(fid::frechet_distance(
                &net.stats(&gen, fb, !opts.quiet)?,
                &reference,
            )?)
        };
        tracing::info!("FID ({nfid} images): rec {rec_fid:.2}, sample {sample_fid:.2}, ex-post GMM {gmm_fid:?}");
        fids = Fids {
            rec_fid: Some(rec_fid),
            sample_fid: Some(sample_fid),
            sample_fid_gmm: gmm_fid,
            fid_samples: Some(nfid as u64),
        };
    }

    // Which classes the generated images fall into (cosine 1-NN on labelled
    // training images): a number for "diverse digits, not one class repeated".
    let mut class_hist = None;
    if let Some(labels) = &trainset.labels {
        let k = labels.max().int64_value(&[]) + 1;
        let m = 10_000.min(trainset.len());
        let refs = trainset.images.narrow(0, 0, m);
        let lab = labels.narrow(0, 0, m);
        let ns = 1000.min(nl);
        let sampler_imgs = decode_all(model, &z_model.narrow(0, 0, ns), batch);
        let gmm_imgs = decode_all(model, &z_gmm.narrow(0, 0, ns), batch);
        let hist = json!({
            "images": ns,
            "sampler": classes::histogram(&classes::nearest_neighbour_labels(&sampler_imgs, &refs, &lab), k),
            "ex_post_gmm": classes::histogram(&classes::nearest_neighbour_labels(&gmm_imgs, &refs, &lab), k),
            "test_images": classes::histogram(&classes::nearest_neighbour_labels(&test.images.narrow(0, 0, ns), &refs, &lab), k),
        });
        tracing::info!("classes of generated images (cosine 1-NN): {hist}");
        class_hist = Some(hist);
    }

    let summary = TrainSummary::read(dir).ok();
    let preset = if cfg.preset.is_empty() {
        summary.as_ref().and_then(|s| s.preset.clone())
    } else {
        Some(cfg.preset.clone())
    };
    let out = EvalSummary {
        model: model.name().into(),
        dataset: cfg.data.dataset.clone(),
        preset,
        sampler: Some(model.sampler_name()),
        val_mse: Some(prog.val_mse),
        test_mse: Some(test_mse),
        latent_mmd2: Some(mmd_model),
        latent_mmd2_gaussian: Some(mmd_gauss),
        latent_mmd2_gmm: Some(mmd_gmm),
        latent_samples: Some(nl as u64),
        sample_classes: class_hist,
        rec_fid: fids.rec_fid,
        sample_fid: fids.sample_fid,
        sample_fid_gmm: fids.sample_fid_gmm,
        fid_samples: fids.fid_samples,
        train: Some(TrainCounts {
            steps: Some(prog.step),
            post_steps: Some(prog.post_step),
            epochs: summary.and_then(|s| s.epochs),
            wall_s: Some(prog.wall_s),
        }),
        figures,
    };
    out.write(dir)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_fid_keeps_fids_of_the_same_checkpoint_only() {
        let dir = tempfile::tempdir().unwrap();
        let eval = json!({"model": "ldc", "dataset": "mnist", "rec_fid": 12.5, "sample_fid": 30.0,
                          "sample_fid_gmm": null, "fid_samples": 100, "train": {"steps": 5, "post_steps": 2}});
        std::fs::write(dir.path().join(run_dir::EVAL), eval.to_string()).unwrap();
        let same = Progress {
            step: 5,
            post_step: 2,
            ..Default::default()
        };
        let kept = previous_fids(dir.path(), &same).expect("same checkpoint keeps its FIDs");
        assert_eq!(kept.rec_fid, Some(12.5));
        assert_eq!(kept.fid_samples, Some(100));
        let later = Progress {
            step: 5,
            post_step: 3,
            ..Default::default()
        };
        assert!(
            previous_fids(dir.path(), &later).is_none(),
            "a newer checkpoint must not inherit stale FIDs"
        );
    }
}
