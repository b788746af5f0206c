//! `ldc-vae eval RUN_DIR`: everything the paper reports for one run, written
//! to `RUN_DIR/eval.json` with the sample counts used, plus the figures.

use crate::config::Config;
use crate::data::{self, ImageSet, Split};
use crate::eval::feature_metrics::{self, Kid, Manifold, PrecisionRecall};
use crate::eval::{classes, copying, fid, grid, mmd, plots};
use crate::gmm::Gmm;
use crate::models::{self, Generation, Model};
use crate::rng::{reseed, Stream};
use crate::run_dir::{self, EvalSummary, Progress, TrainSummary};
use crate::train;
use anyhow::{Context, Result};
use serde_json::json;
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
    /// Evaluate an unfinished run, marked so in eval.json (else an error).
    pub allow_unfinished: bool,
    /// The real images to score on: the test set (`eval.json`, the report)
    /// or the held-out validation images (`eval-validation.json`, for choices).
    pub on: ScoreOn,
}

impl ScoreOn {
    /// The file an evaluation on this set writes.
    pub fn eval_file(self) -> &'static str {
        match self {
            ScoreOn::Test => run_dir::EVAL,
            ScoreOn::Validation => run_dir::EVAL_VALIDATION,
        }
    }
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

/// The `eval.json` fields that come from the Inception features (FID, KID,
/// precision/recall) and their settings. KID values are raw MMD² (not ×1000).
pub const FID_FIELDS: [&str; 17] = [
    "rec_fid",
    "rec_kid",
    "rec_kid_std",
    "sample_fid",
    "sample_kid",
    "sample_kid_std",
    "sample_precision",
    "sample_recall",
    "sample_fid_gmm",
    "sample_kid_gmm",
    "sample_kid_gmm_std",
    "sample_precision_gmm",
    "sample_recall_gmm",
    "fid_samples",
    "kid_subsets",
    "kid_subset_size",
    "pr_k",
];

fn empty_fid_fields() -> serde_json::Value {
    serde_json::Value::Object(
        FID_FIELDS
            .iter()
            .map(|k| (k.to_string(), json!(null)))
            .collect(),
    )
}

/// Feature-metric fields of an existing `eval.json` made from the same
/// checkpoint (same step counts), so `eval --no-fid` does not throw them away
/// (fields an older `eval.json` lacks stay null).
fn previous_fids(dir: &Path, prog: &Progress, on: ScoreOn) -> Option<serde_json::Value> {
    let prev = EvalSummary::read_named(dir, on.eval_file()).ok()?;
    let same = prev.is_of(prog);
    let prev = serde_json::to_value(prev).ok()?;
    (same && !prev["rec_fid"].is_null()).then(|| {
        let mut out = empty_fid_fields();
        for k in FID_FIELDS {
            out[k] = prev[k].clone();
        }
        out
    })
}

/// Seed of the KID subsets of image set `which` (0 reconstructions, 1 the
/// model's generator, 2 the ex-post GMM).
pub fn kid_seed(seed: u64, which: u64) -> u64 {
    crate::rng::derive(seed, Stream::Eval, 30 + which)
}

/// The test-set reference of an evaluation: FID statistics and activations
/// (both cached, see [`fid::reference_features_with`]) and the real k-NN
/// manifold for precision, built once for every generator.
pub struct ReferenceSet {
    pub reference: fid::Reference,
    pub manifold: Manifold,
}

impl ReferenceSet {
    /// The first `n` test images of the run's data set.
    pub fn load(net: &fid::Inception, cfg: &Config, n: usize) -> Result<Self> {
        let reference = fid::reference_features_with(
            net,
            &cfg.data.dataset,
            Split::Test,
            n,
            data_dir(cfg).as_deref(),
            &fid::default_stats_dir(),
            cfg.eval.fid_batch,
        )?;
        let manifold = Manifold::new(&reference.acts, feature_metrics::PR_K)?;
        Ok(ReferenceSet {
            reference,
            manifold,
        })
    }
}

/// Which real images generators are scored against (issue 26): choices are
/// made on validation images held out of the training split (the last
/// `data.val_size` training images, never trained on); the test set is for
/// reporting only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreOn {
    Validation,
    Test,
}

impl ScoreOn {
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreOn::Validation => "validation",
            ScoreOn::Test => "test",
        }
    }

    /// The images of this set for a run's config (validation: its held-out
    /// training images; test: the test split).
    pub fn images(self, cfg: &Config) -> Result<ImageSet> {
        match self {
            ScoreOn::Validation => {
                let v = train::load_train_data(cfg)?.val;
                if v.len() < 2 {
                    anyhow::bail!(
                        "the run holds out {} validation images (`data.val_size`): too few to \
                         score on; score on the test set (`--on test`) or train with a larger \
                         `data.val_size`",
                        v.len()
                    );
                }
                Ok(v)
            }
            ScoreOn::Test => {
                data::load_split(&cfg.data.dataset, data_dir(cfg).as_deref(), Split::Test)
            }
        }
    }
}

impl ReferenceSet {
    /// The first `n` images of `on` (validation: at most `data.val_size`,
    /// an error beyond). Validation activations are cached like the test
    /// set's, keyed by the data set, `val_size` and `n`.
    pub fn load_on(net: &fid::Inception, cfg: &Config, n: usize, on: ScoreOn) -> Result<Self> {
        if on == ScoreOn::Test {
            return Self::load(net, cfg, n);
        }
        let val = on.images(cfg)?;
        if n as i64 > val.len() {
            anyhow::bail!(
                "scoring on {n} validation images, but the run holds out only {} \
                 (`data.val_size`; they must not have been trained on): ask for at most {} \
                 images, or use `--on test`",
                val.len(),
                val.len()
            );
        }
        let key = data::split_identity(&cfg.data.dataset, data_dir(cfg).as_deref(), Split::Train)?;
        let sha = fid::sha256_file(net.path())?;
        let path = fid::default_stats_dir().join(format!(
            "{key}-val{}-n{n}-{}.acts.safetensors",
            cfg.data.val_size,
            &sha[..sha.len().min(16)]
        ));
        let acts = match fid::load_activations(&path) {
            Ok(a) if a.size() == [n as i64, fid::FID_DIMS] => {
                tracing::info!("validation activations from cache {}", path.display());
                a
            }
            _ => {
                tracing::info!("computing Inception activations of {n} validation images");
                let a =
                    net.activations(&val.images.narrow(0, 0, n as i64), cfg.eval.fid_batch, true)?;
                if let Err(e) = fid::save_activations(&a, &path) {
                    tracing::warn!("{e:#}: validation activations not cached");
                }
                a
            }
        };
        let stats = fid::FidStats::from_activations(&acts)?;
        let manifold = Manifold::new(&acts, feature_metrics::PR_K)?;
        Ok(ReferenceSet {
            reference: fid::Reference { stats, acts },
            manifold,
        })
    }
}

/// FID, KID and (when asked) precision/recall of one image set.
#[derive(Debug, Clone)]
pub struct Scores {
    pub fid: f64,
    pub kid: Kid,
    pub pr: Option<PrecisionRecall>,
}

impl Scores {
    /// `{"fid", "kid", "kid_std", "precision", "recall"}` (null when absent).
    pub fn json(&self) -> serde_json::Value {
        json!({
            "fid": self.fid,
            "kid": self.kid.mean,
            "kid_std": self.kid.std,
            "precision": self.pr.map(|p| p.precision),
            "recall": self.pr.map(|p| p.recall),
        })
    }

    /// The same keys, all null.
    pub fn json_null() -> serde_json::Value {
        json!({"fid": null, "kid": null, "kid_std": null, "precision": null, "recall": null})
    }

    fn pr_text(&self) -> String {
        self.pr
            .map(|p| format!("{:.3}/{:.3}", p.precision, p.recall))
            .unwrap_or_else(|| "–".into())
    }
}

/// Score `images` against `reference` from one pass of the network: FID
/// (exactly as `Inception::stats` + `frechet_distance`), KID (default subsets,
/// drawn from `kid_seed`) and, when `with_pr`, precision/recall (k = 3).
pub fn score_images(
    net: &fid::Inception,
    images: &Tensor,
    reference: &ReferenceSet,
    with_pr: bool,
    kid_seed: u64,
    batch: i64,
    progress: bool,
) -> Result<Scores> {
    let acts = net.activations(images, batch, progress)?;
    score_activations(&acts, reference, with_pr, kid_seed)
}

/// [`score_images`] on activations already computed.
pub fn score_activations(
    acts: &Tensor,
    reference: &ReferenceSet,
    with_pr: bool,
    kid_seed: u64,
) -> Result<Scores> {
    let r = &reference.reference;
    let fid = fid::frechet_distance(&fid::FidStats::from_activations(acts)?, &r.stats)?;
    let kid = feature_metrics::kid_default(acts, &r.acts, kid_seed)?;
    let pr = if with_pr {
        Some(feature_metrics::precision_recall_against(
            &reference.manifold,
            &r.acts,
            acts,
        )?)
    } else {
        None
    };
    Ok(Scores { fid, kid, pr })
}

/// Evaluate the run in `dir`; returns what it wrote to `eval.json`.
pub fn evaluate(dir: &Path, opts: &EvalOptions) -> Result<EvalSummary> {
    let unfinished = crate::run_state::require_finished(dir, opts.allow_unfinished, "evaluate")?;
    let (cfg, model, prog) = run_dir::load_run(dir, opts.device.as_deref())?;
    let model = model.as_ref();
    // "test" below is the set scored on: the test split, or with `--on
    // validation` the held-out validation images.
    let test = opts.on.images(&cfg)?;
    // Figures of a validation evaluation are kept apart from the report's.
    let fig = |name: &str| match opts.on {
        ScoreOn::Test => name.to_string(),
        ScoreOn::Validation => format!("validation-{name}"),
    };
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
    // Class structure of the latent space (issue 29): test latents classified
    // by their nearest training latents (labelled data only).
    let latent_knn_acc = match (&test.labels, &trainset.labels) {
        (Some(tl), Some(rl)) => {
            let acc = classes::knn_accuracy(
                &z_test,
                &tl.narrow(0, 0, nl),
                &z_train,
                &rl.narrow(0, 0, z_train.size()[0]),
                classes::LATENT_KNN_K,
            );
            tracing::info!(
                "latent {}-NN accuracy (test latents by {} training latents): {acc:.3}",
                classes::LATENT_KNN_K,
                z_train.size()[0]
            );
            Some(acc)
        }
        _ => None,
    };
    // Data-copying (Meehan et al. 2020) in latent space: are the generated
    // latents closer to the latents the generator was fitted on than the test
    // images' latents (held out) are? Equal sizes: `nl` generated against `nl`
    // held out. T is the generator's own bank where it has one (LDC-VAE's
    // refinement bank, rebuilt exactly as training encoded it; an ex-post
    // sampler net's): with a noisy encoder (LDC's) another encoding of the
    // same images would hide a replay of the bank, since re-encoding moves a
    // latent about as far as its nearest neighbour. Else (and for the ex-post
    // GMM, fitted on encoded training images) the encoded training images.
    let copy_opts =
        copying::CopyingOptions::for_size(nl, crate::rng::derive(cfg.seed, Stream::Eval, 40));
    let copy_test = copying::CopyingTest::new(&z_train, &z_test, copy_opts);
    let gen_bank = {
        let mut batches =
            train::Batches::new(&trainset, cfg.train.batch_size, cfg.seed, model.device());
        model.generator_bank(&mut batches)?
    };
    let copy_model = match &gen_bank {
        Some(bank) => {
            tracing::info!(
                "data-copying test of the generator against its own bank of {} latents",
                bank.size()[0]
            );
            copying::CopyingTest::new(&bank.to_device(Device::Cpu), &z_test, copy_opts)
                .score(&z_model)
        }
        None => copy_test.score(&z_model),
    };
    let copy_gmm = copy_test.score(&z_gmm);
    tracing::info!(
        "data-copying C_T (latents, {} cells, {} held out, {} training; ≪ 0 = copying): {} {:.2} (global Z_U {:.2}, {} cells kept), ex-post GMM {:.2} (Z_U {:.2}, {} kept)",
        copy_model.cells,
        copy_model.n_held_out,
        copy_model.n_train,
        model.sampler_name(),
        copy_model.ct,
        copy_model.zu,
        copy_model.cells_kept,
        copy_gmm.ct,
        copy_gmm.zu,
        copy_gmm.cells_kept
    );

    // Figures: reconstructions and samples (Fig. 3), latent t-SNE (Fig. 2), curves.
    let nrec = 32.min(test.len());
    reseed(cfg.seed, Stream::Eval, 14);
    let xr = test.images.narrow(0, 0, nrec);
    let rec = decode_all(model, &encode_set(model, &test, nrec, batch), batch);
    grid::save_recon_grid(&xr, &rec, 8, &dir.join(fig("recon.png")))?;
    let samples = decode_all(model, &z_model.narrow(0, 0, 100.min(nl)), batch);
    grid::save_grid(&samples, 10, &dir.join(fig("samples.png")))?;
    let mut figures = json!({"recon": fig("recon.png"), "samples": fig("samples.png")});
    if !model_is_gmm {
        let s = decode_all(model, &z_gmm.narrow(0, 0, 100.min(nl)), batch);
        grid::save_grid(&s, 10, &dir.join(fig("samples_gmm.png")))?;
        figures["samples_gmm"] = json!(fig("samples_gmm.png"));
    }
    let mut tsne_knn_acc = None;
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
            &dir.join(fig("tsne.png")),
            cfg.seed,
        )?;
        tracing::info!("t-SNE figure in {:.0} s", t.elapsed().as_secs_f64());
        figures["tsne"] = json!(fig("tsne.png"));
        // The same encoder latents alone, coloured by class: whether the map
        // shows the class structure the latents keep (issue 29).
        if let Some(tl) = &test.labels {
            let tl = tl.narrow(0, 0, nl);
            let y = plots::tsne_classes(
                &z_test,
                &tl,
                &format!(
                    "{}: encoder latents of {nl} images by class (t-SNE)",
                    model.name()
                ),
                &dir.join(fig("tsne_classes.png")),
                cfg.seed,
            )?;
            let flat: Vec<f32> = y.iter().flat_map(|p| [p[0], p[1]]).collect();
            let map = Tensor::from_slice(&flat).view([-1, 2]);
            let acc = classes::knn_accuracy_loo(&map, &tl, classes::LATENT_KNN_K);
            tracing::info!("t-SNE map: {}-NN accuracy {acc:.3}", classes::LATENT_KNN_K);
            tsne_knn_acc = Some(acc);
            figures["tsne_classes"] = json!(fig("tsne_classes.png"));
        }
    }
    let keys = models::info(model.name())?.loss_curves;
    if plots::loss_curves(
        &dir.join(run_dir::METRICS),
        keys,
        &dir.join(fig("loss.png")),
    )
    .is_ok()
    {
        figures["loss"] = json!(fig("loss.png"));
    }

    // FID as pytorch-fid (DESIGN §4): reconstructions of the first N test images
    // and N generated images, each against the first N test images. Each set
    // goes through the network once; FID, KID and precision/recall all come
    // from those activations (issue 16), and the test set's activations are
    // cached beside its statistics.
    let nfid = opts
        .fid_samples
        .unwrap_or(cfg.eval.fid_samples)
        .min(test.len() as usize);
    let mut fids = empty_fid_fields();
    if opts.no_fid {
        // Keep the FIDs of an earlier evaluation of this same checkpoint.
        if let Some(prev) = previous_fids(dir, &prog, opts.on) {
            fids = prev;
        }
    }
    if !opts.no_fid {
        let t = std::time::Instant::now();
        let dev = model.device();
        let net = fid::Inception::load_on(&fid::default_weights_path()?, dev)?;
        let fb = cfg.eval.fid_batch;
        let reference = ReferenceSet::load_on(&net, &cfg, nfid, opts.on)?;
        let n = nfid as i64;
        let progress = !opts.quiet;
        reseed(cfg.seed, Stream::Eval, 20);
        let rec = decode_all(model, &encode_set(model, &test, n, batch), batch);
        let rec_s = score_images(
            &net,
            &rec,
            &reference,
            false,
            kid_seed(cfg.seed, 0),
            fb,
            progress,
        )?;
        drop(rec);
        reseed(cfg.seed, Stream::Eval, 21);
        let gen = decode_all(model, &sample_latents(model, n, batch)?, batch);
        let sample_s = score_images(
            &net,
            &gen,
            &reference,
            true,
            kid_seed(cfg.seed, 1),
            fb,
            progress,
        )?;
        drop(gen);
        let gmm_s = if model_is_gmm {
            None
        } else {
            reseed(cfg.seed, Stream::Eval, 22);
            let gen = decode_all(model, &gmm.sample(n).to_device(Device::Cpu), batch);
            Some(score_images(
                &net,
                &gen,
                &reference,
                true,
                kid_seed(cfg.seed, 2),
                fb,
                progress,
            )?)
        };
        tracing::info!(
            "FID ({nfid} images): rec {:.2}, sample {:.2}, ex-post GMM {}; KID×10³: rec {:.2}, sample {:.2}, ex-post GMM {}; \
             precision/recall (k={}): sample {}, ex-post GMM {}; in {:.0} s",
            rec_s.fid,
            sample_s.fid,
            gmm_s.as_ref().map(|s| format!("{:.2}", s.fid)).unwrap_or_else(|| "–".into()),
            1e3 * rec_s.kid.mean,
            1e3 * sample_s.kid.mean,
            gmm_s
                .as_ref()
                .map(|s| format!("{:.2}", 1e3 * s.kid.mean))
                .unwrap_or_else(|| "–".into()),
            feature_metrics::PR_K,
            sample_s.pr_text(),
            gmm_s.as_ref().map(|s| s.pr_text()).unwrap_or_else(|| "–".into()),
            t.elapsed().as_secs_f64()
        );
        fids = json!({
            "rec_fid": rec_s.fid,
            "rec_kid": rec_s.kid.mean,
            "rec_kid_std": rec_s.kid.std,
            "sample_fid": sample_s.fid,
            "sample_kid": sample_s.kid.mean,
            "sample_kid_std": sample_s.kid.std,
            "sample_precision": sample_s.pr.map(|p| p.precision),
            "sample_recall": sample_s.pr.map(|p| p.recall),
            "sample_fid_gmm": gmm_s.as_ref().map(|s| s.fid),
            "sample_kid_gmm": gmm_s.as_ref().map(|s| s.kid.mean),
            "sample_kid_gmm_std": gmm_s.as_ref().map(|s| s.kid.std),
            "sample_precision_gmm": gmm_s.as_ref().and_then(|s| s.pr).map(|p| p.precision),
            "sample_recall_gmm": gmm_s.as_ref().and_then(|s| s.pr).map(|p| p.recall),
            "fid_samples": nfid,
            "kid_subsets": rec_s.kid.subsets,
            "kid_subset_size": rec_s.kid.subset_size,
            "pr_k": feature_metrics::PR_K,
        });
    }

    // Which classes the generated images fall into (cosine 1-NN on labelled
    // training images): a number for "diverse digits, not one class repeated".
    let mut class_hist = json!(null);
    let (mut class_tv, mut class_tv_gmm) = (None, None);
    if let Some(labels) = &trainset.labels {
        let k = labels.max().int64_value(&[]) + 1;
        let m = 10_000.min(trainset.len());
        let refs = trainset.images.narrow(0, 0, m);
        let lab = labels.narrow(0, 0, m);
        let ns = 1000.min(nl);
        let sampler_imgs = decode_all(model, &z_model.narrow(0, 0, ns), batch);
        let gmm_imgs = decode_all(model, &z_gmm.narrow(0, 0, ns), batch);
        let hist =
            |x: &Tensor| classes::histogram(&classes::nearest_neighbour_labels(x, &refs, &lab), k);
        let (h_sampler, h_gmm) = (hist(&sampler_imgs), hist(&gmm_imgs));
        let h_test = hist(&test.images.narrow(0, 0, ns));
        class_tv = classes::total_variation(&h_sampler, &h_test);
        class_tv_gmm = classes::total_variation(&h_gmm, &h_test);
        class_hist = json!({
            "images": ns,
            "sampler": h_sampler,
            "ex_post_gmm": h_gmm,
            "test_images": h_test,
            "tv_to_test": {"sampler": class_tv, "ex_post_gmm": class_tv_gmm},
        });
        tracing::info!("classes of generated images (cosine 1-NN): {class_hist}");
    }

    let summary = TrainSummary::read(dir).ok();
    let preset = if cfg.preset.is_empty() {
        summary.as_ref().and_then(|s| s.preset.clone())
    } else {
        Some(cfg.preset.clone())
    };
    let mut out = json!({
        "model": model.name(),
        "dataset": cfg.data.dataset,
        "data_note": data::describe(&cfg.data.dataset, data_dir(&cfg).as_deref()).ok(),
        "preset": preset,
        "sampler": model.sampler_name(),
        "val_mse": prog.val_mse,
        "test_mse": test_mse,
        "latent_mmd2": mmd_model,
        "latent_mmd2_gaussian": mmd_gauss,
        "latent_mmd2_gmm": mmd_gmm,
        "latent_samples": nl,
        "latent_knn_acc": latent_knn_acc,
        "latent_knn_k": latent_knn_acc.map(|_| classes::LATENT_KNN_K),
        "tsne_knn_acc": tsne_knn_acc,
        "scored_on": opts.on.as_str(),
        "sample_classes": class_hist,
        "class_tv": class_tv,
        "class_tv_gmm": class_tv_gmm,
        "copying_ct": copy_model.ct,
        "copying_ct_gmm": copy_gmm.ct,
        "copying": copy_model,
        "unfinished": unfinished.is_some(),
        "unfinished_phase": unfinished.map(|u| u.describe()),
        "train": {"steps": prog.step, "post_steps": prog.post_step, "epochs": summary.and_then(|s| s.counts.epochs), "wall_s": prog.wall_s},
    });
    for k in FID_FIELDS {
        out[k] = fids[k].clone();
    }
    out["figures"] = figures;
    // Through the typed summary, so eval.json holds exactly its fields.
    let out: EvalSummary = serde_json::from_value(out).context("eval.json fields")?;
    out.write_named(dir, opts.on.eval_file())?;
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
        let kept = previous_fids(dir.path(), &same, ScoreOn::Test)
            .expect("same checkpoint keeps its FIDs");
        assert_eq!(kept["rec_fid"], json!(12.5));
        assert_eq!(kept["fid_samples"], json!(100));
        let later = Progress {
            step: 5,
            post_step: 3,
            ..Default::default()
        };
        assert!(
            previous_fids(dir.path(), &later, ScoreOn::Test).is_none(),
            "a newer checkpoint must not inherit stale FIDs"
        );
    }

    /// Every feature-metric field `eval` writes is a field of the typed
    /// `eval.json`, so none is dropped on the way to the file.
    #[test]
    fn eval_summary_has_every_feature_metric_field() {
        let v = serde_json::to_value(EvalSummary::default()).unwrap();
        for k in FID_FIELDS
            .iter()
            .chain(&["class_tv", "class_tv_gmm", "test_mse", "sample_classes"])
            .chain(&["copying_ct", "copying_ct_gmm", "copying"])
            .chain(&["latent_knn_acc", "latent_knn_k"])
        {
            assert!(v.get(k).is_some(), "EvalSummary lacks `{k}`");
        }
    }
}
