use crate::eval::run::{evaluate, EvalOptions, ScoreOn};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory written by `ldc-vae train`.
    pub run_dir: PathBuf,
    /// Images for rec and sample FID (paper: 10,000; default: the run's eval.fid_samples).
    #[arg(long)]
    pub fid_samples: Option<usize>,
    /// Skip FID (latent numbers and figures only).
    #[arg(long)]
    pub no_fid: bool,
    /// Skip the t-SNE figure.
    #[arg(long)]
    pub no_tsne: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Evaluate a run whose training is unfinished (eval.json then says
    /// `unfinished` and which phase); else such a run is an error.
    #[arg(long)]
    pub allow_unfinished: bool,
    /// Real images to score against: `test` (the report's numbers, written
    /// to eval.json) or `validation` (the run's held-out training images,
    /// never trained on, written to eval-validation.json with figures named
    /// validation-*.png): make choices on validation, report on test once.
    #[arg(long, value_enum, default_value = "test")]
    pub on: ScoreOn,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let opts = EvalOptions {
        allow_unfinished: a.allow_unfinished,
        fid_samples: a.fid_samples,
        no_fid: a.no_fid,
        no_tsne: a.no_tsne,
        device: a.device,
        quiet: false,
        on: a.on,
    };
    let out = evaluate(&a.run_dir, &opts)?;
    // Keys in alphabetical order, as in the file.
    let json = serde_json::to_value(&out)?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    print!("{}", summary(&json));
    println!("wrote {}", a.run_dir.join(a.on.eval_file()).display());
    Ok(())
}

/// The feature-space numbers of an `eval.json`, one line per metric, the
/// model's generator beside the ex-post GMM (KID printed ×10³).
fn summary(e: &serde_json::Value) -> String {
    let f = |k: &str, scale: f64, d: usize| {
        e[k].as_f64()
            .map(|v| format!("{:.d$}", scale * v))
            .unwrap_or_else(|| "–".into())
    };
    let mut s = String::new();
    if !e["rec_fid"].is_null() {
        s += &format!(
            "FID ({} images): rec {}, sample {}, ex-post GMM {}\n",
            e["fid_samples"],
            f("rec_fid", 1.0, 2),
            f("sample_fid", 1.0, 2),
            f("sample_fid_gmm", 1.0, 2)
        );
        s += &format!(
            "KID ×10³ ({} subsets of {}): rec {}, sample {}, ex-post GMM {}\n",
            e["kid_subsets"],
            e["kid_subset_size"],
            f("rec_kid", 1e3, 2),
            f("sample_kid", 1e3, 2),
            f("sample_kid_gmm", 1e3, 2)
        );
        s += &format!(
            "precision / recall (k = {}): sample {} / {}, ex-post GMM {} / {}\n",
            e["pr_k"],
            f("sample_precision", 1.0, 3),
            f("sample_recall", 1.0, 3),
            f("sample_precision_gmm", 1.0, 3),
            f("sample_recall_gmm", 1.0, 3)
        );
    }
    if !e["class_tv"].is_null() {
        s += &format!(
            "class TV to the test images: sample {}, ex-post GMM {}\n",
            f("class_tv", 1.0, 3),
            f("class_tv_gmm", 1.0, 3)
        );
    }
    if !e["latent_knn_acc"].is_null() {
        s += &format!(
            "latent class structure: {}-NN accuracy of test latents {}\n",
            e["latent_knn_k"],
            f("latent_knn_acc", 1.0, 3)
        );
    }
    s
}

#[derive(Args, Debug)]
pub struct CompareSamplersArgs {
    /// A finished `ldc` run directory.
    pub run_dir: PathBuf,
    /// Sampler steps per target.
    #[arg(long, default_value_t = 1200)]
    pub steps: u64,
    /// Targets to compare (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aggregate_kde,mixture,paired,encoder_particles"
    )]
    pub targets: Vec<String>,
    /// KDE width for aggregate_kde (default: the run's ldc.kde_scale).
    #[arg(long)]
    pub kde_scale: Option<f64>,
    /// Output folder (default RUN_DIR/sampler-targets, or RUN_DIR/sampler-study with --variant).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The sampler study (issue 14) instead of the target comparison: one fresh
    /// sampler per variant, `NAME:KEY=VALUE,KEY=VALUE` with `ldc.` keys (prefix
    /// optional), trained --steps refinement steps; repeat the flag per variant.
    #[arg(long = "variant", value_name = "NAME:KEY=VALUE,...")]
    pub variants: Vec<String>,
    /// Also score each generator's N decoded samples by FID, KID and
    /// precision/recall against the first N images of `--on` (validation by default) (off by default:
    /// the Inception pass costs ~0.2 s an image on a CPU); with --variant, N
    /// must not exceed the run's eval.latent_samples.
    #[arg(long, value_name = "N")]
    pub fid: Option<usize>,
    /// With --variant: skip the reference rows (ex-post GMM, Gaussian, the
    /// run's own sampler), which are the same on every call for a run.
    #[arg(long)]
    pub no_references: bool,
    /// The images every generator is scored against (latent MMD², classes,
    /// FID/KID/P-R): `validation`, the run's held-out training images (the
    /// last `data.val_size`; choose here), or `test` (report only).
    #[arg(long, value_enum, default_value = "validation")]
    pub on: crate::eval::run::ScoreOn,
}

pub fn run_compare(a: CompareSamplersArgs) -> Result<()> {
    if !a.variants.is_empty() {
        let variants = a
            .variants
            .iter()
            .map(|v| crate::eval::samplers::Variant::parse(v))
            .collect::<Result<Vec<_>>>()?;
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| a.run_dir.join("sampler-study"));
        let rows = crate::eval::samplers::study(
            &a.run_dir,
            &variants,
            a.steps,
            &out,
            false,
            a.fid,
            !a.no_references,
            a.on,
        )?;
        for r in rows {
            let fid = match (r.fid, r.kid, r.precision, r.recall) {
                (Some(f), Some(k), Some(p), Some(rc)) => {
                    format!("  FID {f:.2}  KID×10³ {:.2}  P {p:.3} R {rc:.3}", 1e3 * k)
                }
                _ => String::new(),
            };
            println!(
                "{:<28} MMD² {:.4}  latent P {:.3} R {:.3}  class TV {:.3}  {:?}{fid}",
                r.name, r.mmd2, r.latent_precision, r.latent_recall, r.class_tv, r.classes
            );
        }
        println!("wrote {}", out.join("sampler-study.md").display());
        return Ok(());
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run_dir.join("sampler-targets"));
    let res = crate::eval::samplers::compare(
        &a.run_dir,
        &a.targets,
        a.steps,
        a.kde_scale,
        &out,
        false,
        a.fid,
        a.on,
    )?;
    let opt = |v: Option<f64>, scale: f64, d: usize| {
        v.map(|x| format!("{:.d$}", scale * x))
            .unwrap_or_else(|| "–".into())
    };
    for r in res {
        let sc = r.scores.as_ref();
        println!(
            "{:<20} MMD² {:.4}  class TV {}  FID {}  KID×10³ {}  precision {}  recall {}",
            r.target,
            r.mmd2,
            opt(r.class_tv, 1.0, 3),
            opt(sc.map(|s| s.fid), 1.0, 2),
            opt(sc.map(|s| s.kid.mean), 1e3, 2),
            opt(sc.and_then(|s| s.pr).map(|p| p.precision), 1.0, 3),
            opt(sc.and_then(|s| s.pr).map(|p| p.recall), 1.0, 3),
        );
    }
    println!("wrote {}", out.join("sampler-targets.md").display());
    Ok(())
}
