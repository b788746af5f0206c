//! The sampler-target comparison of DESIGN.md §1.8, redone on a trained run:
//! each target trains a fresh sampler alone against the same frozen
//! encoder/decoder, then is scored by latent MMD² to the encoder's test
//! latents, beside the ex-post Gaussian and the ex-post GMM, with a sample
//! grid and the class histogram's total-variation distance to the test
//! images' per generator. With `fid = Some(N)` each generator's N decoded
//! samples also get FID, KID and precision/recall against the first N test
//! images (one network pass per generator; the test set's activations come
//! from the cache `ldc-vae eval` fills). Every generator also gets the
//! data-copying statistic C_T ([`copying`]) of its latents against the
//! training latents, the test images' latents held out, as `ldc-vae eval`.

use crate::data;
use crate::eval::copying::{self, Copying, CopyingTest};
use crate::eval::run::{
    decode_all, encode_set, kid_seed, score_images, ReferenceSet, ScoreOn, Scores,
};
use crate::eval::{classes, fid, grid, mmd};
use crate::gmm::Gmm;
use crate::models::ldc::{Ldc, SamplerPhase, SamplerTarget};
use crate::models::Model;
use crate::rng::{reseed, Stream};
use crate::run_dir;
use crate::train::{self, Batches};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::path::Path;
use tch::{Device, Tensor};

pub struct TargetResult {
    pub target: String,
    pub mmd2: f64,
    pub sampler_std: f64,
    pub grid: String,
    /// Cosine 1-NN class histogram of up to 1,000 decoded samples (labelled
    /// data sets only).
    pub class_hist: Option<Vec<i64>>,
    /// Its total-variation distance to the test images' histogram.
    pub class_tv: Option<f64>,
    /// FID, KID and precision/recall at the `fid` images asked for.
    pub scores: Option<Scores>,
    /// Data-copying C_T of the generator's latents (see [`copying`]).
    pub copying: Copying,
}

/// The data-copying test of `ldc-vae eval` on these latents: training
/// latents partitioned into cells, the test images' latents held out.
fn copying_test(seed: u64, z_train: &Tensor, z_test: &Tensor) -> CopyingTest {
    let opts = copying::CopyingOptions::for_size(
        z_test.size()[0],
        crate::rng::derive(seed, Stream::Eval, 40),
    );
    CopyingTest::new(z_train, z_test, opts)
}

/// What each generator is judged by besides latent MMD² (see [`TargetResult`]).
struct Judged {
    class_hist: Option<Vec<i64>>,
    class_tv: Option<f64>,
    scores: Option<Scores>,
}

/// Feature-space scoring of each generator's decoded samples.
struct Scorer {
    net: fid::Inception,
    reference: ReferenceSet,
    n: i64,
}

impl Scorer {
    /// `None` without `fid`; else the network and the first `min(n, test)`
    /// test images' reference (cached statistics and activations).
    fn new(
        fid: Option<usize>,
        cfg: &crate::config::Config,
        dev: Device,
        held_len: i64,
        on: ScoreOn,
    ) -> Result<Option<Self>> {
        let Some(n) = fid else { return Ok(None) };
        let n = n.min(held_len as usize);
        let net = fid::Inception::load_on(&fid::default_weights_path()?, dev)?;
        let reference = ReferenceSet::load_on(&net, cfg, n, on)?;
        Ok(Some(Scorer {
            net,
            reference,
            n: n as i64,
        }))
    }

    /// FID, KID and precision/recall of the decoded first `n` latents of `z`
    /// (every generator's KID subsets drawn from one seed, so they compare on
    /// the same draws).
    fn score_latents(
        &self,
        m: &dyn Model,
        z: &Tensor,
        seed: u64,
        fid_batch: i64,
        quiet: bool,
    ) -> Result<Scores> {
        if z.size()[0] < self.n {
            bail!(
                "--fid {} asks for more images than the {} latents drawn per generator (eval.latent_samples)",
                self.n,
                z.size()[0]
            );
        }
        let imgs = decode_all(m, &z.narrow(0, 0, self.n), 250);
        score_images(
            &self.net,
            &imgs,
            &self.reference,
            true,
            kid_seed(seed, 1),
            fid_batch,
            !quiet,
        )
    }
}

/// Class histograms of decoded samples by cosine 1-NN on labelled training
/// images, as `ldc-vae eval` computes them.
struct ClassCounter {
    refs: Tensor,
    labels: Tensor,
    k: i64,
    test_hist: Vec<i64>,
    n: i64,
}

impl ClassCounter {
    fn hist(&self, images: &Tensor) -> Vec<i64> {
        classes::histogram(
            &classes::nearest_neighbour_labels(images, &self.refs, &self.labels),
            self.k,
        )
    }
}

/// A finished run with a sampler net, to train fresh samplers on its frozen nets.
struct Frozen {
    cfg: crate::config::Config,
    dev: tch::Device,
    tensors: std::collections::HashMap<String, tch::Tensor>,
    data: train::TrainData,
    /// The images generators are scored against: validation (default) or test.
    test: data::ImageSet,
}

/// Read the run in `run_dir` (an error saying `what` exists only for ldc if its
/// model has no sampler net) and its data; create `out`.
fn frozen(run_dir: &Path, out: &Path, what: &str, on: ScoreOn) -> Result<Frozen> {
    let (cfg, _, _) = run_dir::load_run(run_dir, None)?;
    if !crate::models::info(&cfg.model)?.sampler_net {
        bail!(
            "{} is a `{}` run; {what} only for ldc",
            run_dir.display(),
            cfg.model
        );
    }
    std::fs::create_dir_all(out)?;
    let dev = crate::util::parse_device(&cfg.device)?;
    let (tensors, _) = run_dir::read_checkpoint(run_dir)?;
    let data = train::load_train_data(&cfg)?;
    let test = on.images(&cfg)?;
    Ok(Frozen {
        cfg,
        dev,
        tensors,
        data,
        test,
    })
}

/// Train a fresh sampler per target for `steps` steps on the frozen nets of
/// `run_dir`; write grids and `sampler-targets.md`/`.json` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    run_dir: &Path,
    targets: &[String],
    steps: u64,
    kde_scale: Option<f64>,
    out: &Path,
    quiet: bool,
    fid: Option<usize>,
    on: ScoreOn,
) -> Result<Vec<TargetResult>> {
    let Frozen {
        cfg,
        dev,
        tensors,
        data,
        test,
    } = frozen(run_dir, out, "sampler targets exist", on)?;
    // DESIGN §1.8's comparison is of the SVGD sampler's targets in the joint
    // phase: the paper's recipe, whatever the run's (an OT run's objective
    // needs the fixed training-set bank, not the FIFO one these steps feed).
    let mut cfg = crate::config::Config::from_toml_str(
        &cfg.to_toml(),
        &[crate::models::ldc::PAPER_RECIPE.to_string()],
    )?;
    let nl = (cfg.eval.latent_samples as i64).min(test.len());
    let mut results = Vec::new();

    // Reference sets, the same for every target.
    let mut base = Ldc::new(&cfg.spec(), cfg.geometry(), dev)?;
    base.load_frozen_nets(&tensors)?;
    reseed(cfg.seed, Stream::Eval, 10);
    let z_test = encode_set(&base, &test, nl, 250);
    reseed(cfg.seed, Stream::Eval, 11);
    let z_train = encode_set(&base, &data.train, (5 * nl).min(data.train.len()), 250);
    let copy_test = copying_test(cfg.seed, &z_train, &z_test);
    let classes = data.train.labels.as_ref().map(|labels| {
        let m = 10_000.min(data.train.len());
        let ns = 1000.min(nl);
        let mut c = ClassCounter {
            refs: data.train.images.narrow(0, 0, m),
            labels: labels.narrow(0, 0, m),
            k: labels.max().int64_value(&[]) + 1,
            test_hist: Vec::new(),
            n: ns,
        };
        c.test_hist = c.hist(&test.images.narrow(0, 0, ns));
        c
    });
    let scorer = Scorer::new(fid, &cfg, dev, test.len(), on)?;
    // Class TV on the latents already drawn; FID/KID/P-R on `n` fresh ones,
    // drawn after reseeding to `fid_stream` (the counter `ldc-vae eval` uses
    // for the same generator, so the numbers match its eval.json).
    let judge = |m: &dyn Model,
                 z: &Tensor,
                 fid_stream: u64,
                 draw: &dyn Fn(i64) -> Result<Tensor>,
                 which: u64|
     -> Result<Judged> {
        let (hist, tv) = match &classes {
            Some(c) => {
                let h = c.hist(&decode_all(m, &z.narrow(0, 0, c.n.min(z.size()[0])), 250));
                let tv = classes::total_variation(&h, &c.test_hist);
                (Some(h), tv)
            }
            None => (None, None),
        };
        let scores = match &scorer {
            Some(sc) => {
                reseed(cfg.seed, Stream::Eval, fid_stream);
                let imgs = decode_all(m, &draw(sc.n)?, 250);
                Some(score_images(
                    &sc.net,
                    &imgs,
                    &sc.reference,
                    true,
                    kid_seed(cfg.seed, which),
                    cfg.eval.fid_batch,
                    !quiet,
                )?)
            }
            None => None,
        };
        Ok(Judged {
            class_hist: hist,
            class_tv: tv,
            scores,
        })
    };

    let gauss = mmd::Gaussian::fit(&z_train);
    reseed(cfg.seed, Stream::Eval, 13);
    let z_gauss = gauss.sample(nl);
    let mmd_gauss = mmd::mmd2_rbf(&z_test, &z_gauss);
    grid::save_grid(
        &decode_all(&base, &z_gauss.narrow(0, 0, 100), 250),
        10,
        &out.join("gaussian.png"),
    )?;
    let j = judge(&base, &z_gauss, 23, &|n| Ok(gauss.sample(n)), 3)?;
    results.push(TargetResult {
        target: "ex-post Gaussian".into(),
        mmd2: mmd_gauss,
        sampler_std: f64::NAN,
        grid: "gaussian.png".into(),
        class_hist: j.class_hist,
        class_tv: j.class_tv,
        scores: j.scores,
        copying: copy_test.score(&z_gauss),
    });
    // The ex-post GMM (the RAE route), fitted as `ldc-vae eval` fits it: the
    // yardstick the issue-14 sampler has to reach.
    let gmm = fit_expost_gmm(&cfg, &z_train)?;
    reseed(cfg.seed, Stream::Eval, 15);
    let z_gmm = gmm.sample(nl).to_device(Device::Cpu);
    let mmd_gmm = mmd::mmd2_rbf(&z_test, &z_gmm);
    grid::save_grid(
        &decode_all(&base, &z_gmm.narrow(0, 0, 100), 250),
        10,
        &out.join("gmm.png"),
    )?;
    let j = judge(
        &base,
        &z_gmm,
        22,
        &|n| Ok(gmm.sample(n).to_device(Device::Cpu)),
        2,
    )?;
    results.push(TargetResult {
        target: "ex-post GMM".into(),
        mmd2: mmd_gmm,
        sampler_std: f64::NAN,
        grid: "gmm.png".into(),
        class_hist: j.class_hist,
        class_tv: j.class_tv,
        scores: j.scores,
        copying: copy_test.score(&z_gmm),
    });

    for t in targets {
        let target = SamplerTarget::parse(t)?;
        cfg.ldc.sampler_target = target;
        cfg.ldc.kde_scale = kde_scale.unwrap_or(cfg.ldc.kde_scale);
        let mut m = Ldc::new(&cfg.spec(), cfg.geometry(), dev)?;
        m.load_frozen_nets(&tensors)?;
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
        let j = judge(
            &m,
            &z,
            21,
            &|n| crate::eval::run::sample_latents(&m, n, 250),
            1,
        )?;
        results.push(TargetResult {
            target: t.clone(),
            mmd2,
            sampler_std: last_std,
            grid: name,
            class_hist: j.class_hist,
            class_tv: j.class_tv,
            scores: j.scores,
            copying: copy_test.score(&z),
        });
    }

    let mut md = String::new();
    writeln!(
        md,
        "# Sampler targets on the frozen nets of `{}`\n",
        run_dir.display()
    )?;
    writeln!(
        md,
        "Scored on **{} images** ({}).\n",
        on.as_str(),
        on_note(on)
    )?;
    writeln!(md, "Each sampler trained alone for {steps} steps with the paper's SVGD recipe (`ldc.recipe = paper`; batch {}, {} particles, kde_scale {}); latent MMD² (RBF, median bandwidth, unbiased) between {nl} encoder latents of {} images and {nl} latents of each generator.\n", cfg.train.batch_size, cfg.ldc.sampler_particles, kde_scale.unwrap_or(cfg.ldc.kde_scale), on.as_str())?;
    if let Some(c) = &classes {
        writeln!(md, "Class TV = total-variation distance between the class histograms (cosine 1-NN on labelled training images) of {} decoded samples and of {} test images.\n", c.n, c.n)?;
    }
    if let Some(k) = results
        .iter()
        .find_map(|r| r.scores.as_ref().map(|s| s.kid))
    {
        let n = scorer.as_ref().map(|s| s.n).unwrap_or(0);
        writeln!(md, "FID, KID and precision/recall (k = {}) from the Inception features of {n} decoded samples per generator against the first {n} {} images; KID ×10³, mean ± std over {} random subset(s) of {} (one subset = the whole sets, the exact unbiased estimate).\n", crate::eval::feature_metrics::PR_K, on.as_str(), k.subsets, k.subset_size)?;
    }
    writeln!(
        md,
        "{}\n",
        copying_note(copy_test.cells(), nl, z_train.size()[0])
    )?;
    writeln!(
        md,
        "| generator | MMD² | ratio to Gaussian | FID | KID ×10³ | precision | recall | class TV | C_T | samples |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let opt =
        |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into());
    for r in &results {
        let sc = r.scores.as_ref();
        writeln!(
            md,
            "| {} | {:.4} | {:.2} | {} | {} | {} | {} | {} | {} | ![]({}) |",
            r.target,
            r.mmd2,
            r.mmd2 / mmd_gauss,
            opt(sc.map(|s| s.fid), 2),
            sc.map(|s| format!("{:.2} ± {:.2}", 1e3 * s.kid.mean, 1e3 * s.kid.std))
                .unwrap_or_else(|| "–".into()),
            opt(sc.and_then(|s| s.pr).map(|p| p.precision), 3),
            opt(sc.and_then(|s| s.pr).map(|p| p.recall), 3),
            opt(r.class_tv, 3),
            fmt_ct(&r.copying),
            r.grid
        )?;
    }
    crate::util::write_atomic(&out.join("sampler-targets.md"), md.as_bytes())?;
    let json: Vec<_> = results
        .iter()
        .map(|r| {
            let sc = r.scores.as_ref().map(|s| s.json()).unwrap_or_else(Scores::json_null);
            serde_json::json!({"target": r.target, "mmd2": r.mmd2, "sampler_std": r.sampler_std, "grid": r.grid,
                "class_hist": r.class_hist, "class_tv": r.class_tv,
                "fid": sc["fid"], "kid": sc["kid"], "kid_std": sc["kid_std"],
                "precision": sc["precision"], "recall": sc["recall"],
                "fid_samples": scorer.as_ref().map(|s| s.n), "scored_on": on.as_str(),
                "copying_ct": r.copying.ct, "copying": r.copying})
        })
        .collect();
    crate::util::write_atomic(
        &out.join("sampler-targets.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(results)
}

/// What the scoring set is, for the tables.
fn on_note(on: ScoreOn) -> &'static str {
    match on {
        ScoreOn::Validation => {
            "the last `data.val_size` images of the training split, held out of training: \
             choices are made here, the test set is kept for reporting"
        }
        ScoreOn::Test => "the test split: for reporting, not for choosing",
    }
}

/// One sampler variant of the study (issue 14): a name and `ldc.*` overrides.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub overrides: Vec<String>,
}

impl Variant {
    /// `name:key=value,key=value` (keys with or without the `ldc.` prefix);
    /// without `name:` the override list names the variant; `baseline` or an
    /// empty list is the run's own settings.
    pub fn parse(s: &str) -> Result<Variant> {
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n.trim().to_string(), r),
            None => (s.trim().to_string(), s),
        };
        let overrides = rest
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty() && *o != "baseline")
            .map(|o| {
                if !o.contains('=') {
                    bail!("variant `{s}`: `{o}` is not KEY=VALUE");
                }
                Ok(if o.starts_with("ldc.") {
                    o.to_string()
                } else {
                    format!("ldc.{o}")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Variant { name, overrides })
    }
}

/// Scores of one generator in the study.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StudyRow {
    pub name: String,
    pub overrides: Vec<String>,
    pub mmd2: f64,
    pub latent_precision: f64,
    pub latent_recall: f64,
    pub class_tv: f64,
    pub classes: Vec<i64>,
    /// Classes of the same latents by their nearest encoder latent of a
    /// labelled test image (whitened): where the generator puts its mass in
    /// latent space, before the decoder. Beside `classes` it tells a missing
    /// cluster (both low) from samples between clusters that decode as a
    /// neighbour (only `classes` low).
    pub latent_classes: Vec<i64>,
    pub sampler_std: f64,
    pub seconds: f64,
    pub grid: String,
    /// With `--fid N`: FID, KID (raw), its spread, and k-NN precision/recall
    /// in Inception feature space of the first N decoded latents.
    pub fid: Option<f64>,
    pub kid: Option<f64>,
    pub kid_std: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Data-copying C_T of the latents (see [`copying`]).
    pub copying: Copying,
}

/// A table cell: C_T (cells kept / cells).
fn fmt_ct(c: &Copying) -> String {
    format!("{:.2} ({}/{})", c.ct, c.cells_kept, c.cells)
}

/// One line on the C_T column of the tables.
fn copying_note(cells: usize, n: i64, n_train: i64) -> String {
    format!("C_T: data-copying statistic (Meehan et al. 2020) of {n} latents per generator against the latents it was fitted on (a sampler net of the study: its own bank, rebuilt as training encoded it; the ex-post densities: {n_train} encoder latents of training images), {n} test-image latents held out, {cells} k-means cells; ≪ 0 (e.g. < −3) = closer to the training latents than held-out data are (copying), ≈ 0 fine, ≫ 0 underfitting; (kept/cells): the cells holding ≥ 20 generated samples, which C_T averages over (a generator collapsed into a few dense cells scores negative too).")
}

/// k-NN precision and recall (Kynkäänniemi et al. 2019, k = 3) of `fake`
/// against `real` (`[n, d]` each), here on latents: the share of fake points
/// inside some real point's k-NN ball, and the converse.
pub fn knn_precision_recall(real: &Tensor, fake: &Tensor, k: i64) -> (f64, f64) {
    let _g = tch::no_grad_guard();
    let radii = |x: &Tensor| crate::svgd::sq_dists(x, x).kthvalue(k + 1, 1, false).0;
    let (rr, rf) = (radii(real), radii(fake));
    let d = crate::svgd::sq_dists(fake, real); // [nf, nr]
    let prec = d
        .le_tensor(&rr.unsqueeze(0))
        .any_dim(1, false)
        .to_kind(tch::Kind::Float)
        .mean(tch::Kind::Float)
        .double_value(&[]);
    let rec = d
        .transpose(0, 1)
        .le_tensor(&rf.unsqueeze(0))
        .any_dim(1, false)
        .to_kind(tch::Kind::Float)
        .mean(tch::Kind::Float)
        .double_value(&[]);
    (prec, rec)
}

/// The sampler study of issue 14 on the frozen encoder/decoder of `run_dir`:
/// for each variant a fresh sampler (seeded as the run's) is trained `steps`
/// refinement steps through the same code path as `train`'s refinement phase
/// (`post_training_step`, so `refine_bank`, annealing etc. apply), then scored
/// beside the ex-post Gaussian and 10-component GMM on the same nets: latent
/// MMD² and k-NN precision/recall against encoder latents of test images (in
/// the whitened coordinates of the training latents), and the class histogram
/// of 1,000 decoded samples (cosine 1-NN) with its TV distance to the test set's.
/// The ex-post GMM (the RAE route) on training latents, fitted as `ldc-vae eval` fits it.
fn fit_expost_gmm(cfg: &crate::config::Config, z_train: &Tensor) -> Result<Gmm> {
    let b = &cfg.baselines;
    Gmm::fit_with_tol(
        z_train,
        b.gmm.gmm_components,
        cfg.seed,
        b.gmm.gmm_max_iter,
        b.gmm.gmm_tol,
    )
    .context("fitting the ex-post GMM on the training latents")
}

#[allow(clippy::too_many_arguments)]
pub fn study(
    run_dir: &Path,
    variants: &[Variant],
    steps: u64,
    out: &Path,
    quiet: bool,
    fid: Option<usize>,
    references: bool,
    on: ScoreOn,
) -> Result<Vec<StudyRow>> {
    use crate::eval::classes;
    let Frozen {
        cfg,
        dev,
        tensors,
        data,
        test,
    } = frozen(run_dir, out, "the sampler study exists", on)?;
    let geo = cfg.geometry();
    let nl = (cfg.eval.latent_samples as i64).min(test.len());
    let mut base = Ldc::new(&cfg.spec(), geo, dev)?;
    base.load_state(&tensors)?;
    reseed(cfg.seed, Stream::Eval, 10);
    let z_test = encode_set(&base, &test, nl, 250);
    reseed(cfg.seed, Stream::Eval, 11);
    let z_train = encode_set(&base, &data.train, (5 * nl).min(data.train.len()), 250);
    let white = crate::svgd::Whitening::fit(&z_train);
    let u_test = white.apply(&z_test);
    let copy_test = copying_test(cfg.seed, &z_train, &z_test);
    // Class histograms by cosine 1-NN on labelled training images (MNIST).
    let labelled = data.train.labels.as_ref().map(|lab| {
        let m = 10_000.min(data.train.len());
        (data.train.images.narrow(0, 0, m), lab.narrow(0, 0, m))
    });
    let nc = 1000.min(nl);
    let hist = |imgs: &Tensor| -> Vec<i64> {
        match &labelled {
            Some((refs, lab)) => {
                let k = lab.max().int64_value(&[]) + 1;
                classes::histogram(&classes::nearest_neighbour_labels(imgs, refs, lab), k)
            }
            None => Vec::new(),
        }
    };
    let test_hist = hist(&test.images.narrow(0, 0, nc));
    // `uz`: the generator's latents, whitened as `u_test`.
    let latent_hist = |uz: &Tensor| -> Vec<i64> {
        match &test.labels {
            Some(lab) => {
                let _g = tch::no_grad_guard();
                let lab = lab.narrow(0, 0, nl).to_device(tch::Device::Cpu);
                let d = crate::svgd::sq_dists(&uz.narrow(0, 0, nc), &u_test)
                    .argmin(1, false)
                    .to_device(tch::Device::Cpu);
                classes::histogram(&lab.index_select(0, &d), lab.max().int64_value(&[]) + 1)
            }
            None => Vec::new(),
        }
    };
    let scorer = Scorer::new(fid, &cfg, dev, test.len(), on)?;
    // `own_bank`: a sampler net, tested for copying against the bank it was
    // fitted on (as `ldc-vae eval` does), not another encoding of the images.
    let score = |name: &str,
                 overrides: Vec<String>,
                 m: &Ldc,
                 z: &Tensor,
                 std: f64,
                 secs: f64,
                 own_bank: bool|
     -> Result<StudyRow> {
        let mmd2 = mmd::mmd2_rbf(&z_test, z);
        let bank = if own_bank {
            let mut b = Batches::new(&data.train, cfg.train.batch_size, cfg.seed, dev);
            m.generator_bank(&mut b)?
        } else {
            None
        };
        let copying = match bank {
            Some(bank) => copying_test(cfg.seed, &bank.to_device(Device::Cpu), &z_test).score(z),
            None => copy_test.score(z),
        };
        let uz = white.apply(z);
        let (p, r) = knn_precision_recall(&u_test, &uz, 3);
        let imgs = decode_all(m, &z.narrow(0, 0, nc), 250);
        let h = hist(&imgs);
        let lh = latent_hist(&uz);
        let tv = if h.is_empty() {
            f64::NAN
        } else {
            classes::total_variation(&h, &test_hist).unwrap_or(f64::NAN)
        };
        let grid_name = format!(
            "study_{}.png",
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        grid::save_grid(&imgs.narrow(0, 0, 100), 10, &out.join(&grid_name))?;
        tracing::info!("{name}: MMD² {mmd2:.4}, latent precision {p:.3}, recall {r:.3}, class TV {tv:.3}, C_T {:.2}, classes {h:?}, latent classes {lh:?}", copying.ct);
        let fs = match &scorer {
            Some(sc) => Some(sc.score_latents(m, z, cfg.seed, cfg.eval.fid_batch, quiet)?),
            None => None,
        };
        if let Some(f) = &fs {
            tracing::info!(
                "{name}: FID {:.2}, KID×10³ {:.2}, precision/recall {:?}",
                f.fid,
                1e3 * f.kid.mean,
                f.pr
            );
        }
        Ok(StudyRow {
            name: name.to_string(),
            overrides,
            mmd2,
            latent_precision: p,
            latent_recall: r,
            class_tv: tv,
            classes: h,
            latent_classes: lh,
            sampler_std: std,
            seconds: secs,
            grid: grid_name,
            fid: fs.as_ref().map(|f| f.fid),
            kid: fs.as_ref().map(|f| f.kid.mean),
            kid_std: fs.as_ref().map(|f| f.kid.std),
            precision: fs.as_ref().and_then(|f| f.pr).map(|p| p.precision),
            recall: fs.as_ref().and_then(|f| f.pr).map(|p| p.recall),
            copying,
        })
    };
    let mut rows = Vec::new();
    // The references (GMM, Gaussian, the run's sampler) are the same for every
    // invocation on these nets; `--no-references` skips their FID passes.
    if references {
        let gmm = fit_expost_gmm(&cfg, &z_train)?;
        reseed(cfg.seed, Stream::Eval, 15);
        let z_gmm = gmm.sample(nl).to_device(dev);
        rows.push(score(
            "ex-post GMM",
            vec![],
            &base,
            &z_gmm,
            f64::NAN,
            0.0,
            false,
        )?);
        let gauss = mmd::Gaussian::fit(&z_train);
        reseed(cfg.seed, Stream::Eval, 13);
        let z_gauss = gauss.sample(nl).to_device(dev);
        rows.push(score(
            "ex-post Gaussian",
            vec![],
            &base,
            &z_gauss,
            f64::NAN,
            0.0,
            false,
        )?);
        // The encoder's own latents of the test images, decoded: how far the
        // decoder and the 1-NN classifier alone move the class histogram
        // (its TV is the floor no generator on these nets can beat).
        rows.push(score(
            &format!(
                "encoder latents of {} images (reconstructions)",
                on.as_str()
            ),
            vec![],
            &base,
            &z_test,
            f64::NAN,
            0.0,
            false,
        )?);
        reseed(cfg.seed, Stream::Eval, 12);
        let z_own = crate::eval::run::sample_latents(&base, nl, 250)?;
        rows.push(score(
            "the run's own sampler",
            vec![],
            &base,
            &z_own,
            f64::NAN,
            0.0,
            true,
        )?);
    }

    for v in variants {
        // --steps first, so a variant's own `sampler_refine_steps` wins.
        let mut ov = vec![format!("ldc.sampler_refine_steps={steps}")];
        ov.extend(v.overrides.iter().cloned());
        let vcfg = crate::config::Config::load(None, Some(&run_dir.join(run_dir::CONFIG)), &ov)
            .with_context(|| format!("variant `{}`", v.name))?;
        let target = vcfg.ldc.sampler_target;
        let vsteps = vcfg.ldc.sampler_refine_steps;
        let mut m = Ldc::new(&vcfg.spec(), geo, dev)?;
        m.load_frozen_nets(&tensors)?;
        m.reset_sampler(target, vcfg.seed, vcfg.sampler_lr());
        let mut batches = Batches::new(&data.train, vcfg.train.batch_size, vcfg.seed, dev);
        batches.epoch_offset = 1 << 21;
        let pb = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(vsteps)
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap(),
        );
        pb.set_prefix(v.name.clone());
        let t0 = std::time::Instant::now();
        let mut last_std = f64::NAN;
        for i in 0..vsteps {
            let s = m.post_training_step(&mut batches, i)?;
            if let Some((k, val)) = s.non_finite() {
                bail!("variant {}, step {i}: `{k}` is {val}", v.name);
            }
            last_std = s.get("sampler_std").unwrap_or(f64::NAN);
            pb.inc(1);
        }
        pb.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        reseed(cfg.seed, Stream::Eval, 12);
        let z = crate::eval::run::sample_latents(&m, nl, 250)?;
        rows.push(score(
            &v.name,
            v.overrides.clone(),
            &m,
            &z,
            last_std,
            secs,
            true,
        )?);
    }

    let mut md = String::new();
    writeln!(
        md,
        "# Sampler study on the frozen nets of `{}`\n",
        run_dir.display()
    )?;
    writeln!(
        md,
        "Scored on **{o} images** ({}).\n",
        on_note(on),
        o = on.as_str()
    )?;
    writeln!(md, "Each variant: a fresh sampler trained {steps} refinement steps (batch {}) with the run's settings plus the variant's overrides. Latent MMD² (RBF, median bandwidth) and k-NN precision/recall (k = 3, whitened latents) against {nl} encoder latents of {o} images; classes of {nc} decoded samples by cosine 1-NN on training images, TV distance to the {o} images' histogram {test_hist:?}; latent classes: the label of each latent's nearest (whitened) encoder latent of a labelled {o} image.\n", cfg.train.batch_size, o = on.as_str())?;
    if let Some(sc) = &scorer {
        writeln!(md, "FID, KID ×10³ and precision/recall (k = {}) in Inception feature space: the first {n} decoded latents of each generator against the first {n} {} images.\n", crate::eval::feature_metrics::PR_K, on.as_str(), n = sc.n)?;
    }
    writeln!(
        md,
        "{}\n",
        copying_note(copy_test.cells(), nl, z_train.size()[0])
    )?;
    writeln!(md, "| generator | overrides | MMD² | latent precision | latent recall | class TV | C_T | classes | latent classes | FID | KID ×10³ | precision | recall | s | samples |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    let opt = |v: Option<f64>, scale: f64, d: usize| {
        v.map(|x| format!("{:.d$}", scale * x))
            .unwrap_or_else(|| "–".into())
    };
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.3} | {:.3} | {:.3} | {} | {:?} | {:?} | {} | {} | {} | {} | {:.0} | ![]({}) |",
            r.name,
            r.overrides.join(" "),
            r.mmd2,
            r.latent_precision,
            r.latent_recall,
            r.class_tv,
            fmt_ct(&r.copying),
            r.classes,
            r.latent_classes,
            opt(r.fid, 1.0, 2),
            opt(r.kid, 1e3, 2),
            opt(r.precision, 1.0, 3),
            opt(r.recall, 1.0, 3),
            r.seconds,
            r.grid
        )?;
    }
    crate::util::write_atomic(&out.join("sampler-study.md"), md.as_bytes())?;
    crate::util::write_atomic(
        &out.join("sampler-study.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    Ok(rows)
}
