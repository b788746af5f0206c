//! The report's tables (Table 1, the runs, latent consistency), each built
//! once and rendered to Markdown and to HTML.

use super::aggregate::{bold_flags, pr_text, stat_text, Cell, Stat};
use super::report::{esc, paper_fid, RunReport, PAPER_DATASETS};
use crate::rows;
use crate::run_dir::EvalSummary;

/// One cell, as Markdown and as (escaped) HTML.
pub struct TCell {
    pub md: String,
    pub html: String,
    /// Left-aligned (text columns).
    pub left: bool,
}

impl TCell {
    /// A number cell, bold (`**` / `<b>`) when `bold`.
    fn num(text: String, bold: bool) -> TCell {
        let (md, html) = if bold {
            (format!("**{text}**"), format!("<b>{}</b>", esc(&text)))
        } else {
            (text.clone(), esc(&text))
        };
        TCell {
            md,
            html,
            left: false,
        }
    }
    fn text(text: &str) -> TCell {
        TCell {
            md: md_escape(text),
            html: esc(text),
            left: true,
        }
    }
}

/// A table with an optional header row of column groups.
pub struct Table {
    /// (group title, columns spanned); empty: no group row.
    pub groups: Vec<(String, usize)>,
    /// Column heads as (HTML text, Markdown text).
    pub heads: Vec<(String, String)>,
    pub rows: Vec<Vec<TCell>>,
}

pub fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Table {
    pub fn markdown(&self) -> String {
        let mut s = String::from("|");
        for (_, h) in &self.heads {
            s += &format!(" {} |", md_escape(h));
        }
        s += "\n|";
        s += &"---|".repeat(self.heads.len());
        s += "\n";
        for r in &self.rows {
            s += "|";
            for c in r {
                s += &format!(" {} |", c.md);
            }
            s += "\n";
        }
        s
    }

    /// The table in a box that scrolls sideways rather than widening the page.
    pub fn html(&self) -> String {
        let mut s = String::from("<div class=\"scroll\"><table>");
        if !self.groups.is_empty() {
            s += "<tr class=\"groups\">";
            for (g, span) in &self.groups {
                s += &format!("<th colspan=\"{span}\">{}</th>", esc(g));
            }
            s += "</tr>";
        }
        s += "<tr>";
        for (h, _) in &self.heads {
            s += &format!("<th>{}</th>", esc(h));
        }
        s += "</tr>\n";
        for r in &self.rows {
            s += "<tr>";
            for c in r {
                let class = if c.left { " class=\"l\"" } else { "" };
                s += &format!("<td{class}>{}</td>", c.html);
            }
            s += "</tr>\n";
        }
        s + "</table></div>\n"
    }
}

pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
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

fn fmt_count(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "–".into())
}

fn fmt_wall(w: Option<Stat>) -> String {
    match w {
        Some(Stat { mean: w, .. }) if w >= 120.0 => format!("{:.1} min", w / 60.0),
        Some(Stat { mean: w, .. }) => format!("{w:.0} s"),
        None => "–".into(),
    }
}

/// Columns of Table 1: the paper's data sets, then any other data set a run used.
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

/// Rows of Table 1: every registry model's own row and every row with runs,
/// in [`rows::table1_order`], then rows of models the registry does not know.
fn table1_rows(cells: &[Cell]) -> Vec<rows::RowId> {
    let mut out: Vec<rows::RowId> = rows::table1_order(rows::ROWS)
        .into_iter()
        .filter(|r| {
            (r.key == r.model && r.overrides.is_empty()) || cells.iter().any(|c| c.row.key == r.key)
        })
        .map(rows::RowId::from)
        .collect();
    for c in cells {
        if !out.iter().any(|r| r.key == c.row.key) {
            out.push(c.row.clone());
        }
    }
    out
}

/// What tells a cell from the other cells of its row and data set in Table 1
/// (the preset, the epochs), when there are others; `None` when not.
fn config_label(cells: &[Cell], c: &Cell) -> Option<String> {
    let same: Vec<&Cell> = cells
        .iter()
        .filter(|o| o.dataset == c.dataset && o.row.key == c.row.key)
        .collect();
    let presets = same.iter().any(|o| o.preset != c.preset);
    let epochs = same.iter().any(|o| o.epochs != c.epochs);
    let mut parts = Vec::new();
    if presets {
        parts.push(c.preset.clone());
    }
    if epochs {
        parts.push(match c.epochs {
            Some(e) if e.fract() == 0.0 => format!("{e} ep"),
            Some(e) => format!("{e:.2} ep"),
            None => "? ep".into(),
        });
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Table 1: one row per row, Rec and Sample FID per data set; ours (each
/// cell mean ± std over seeds) with the paper's number in brackets.
pub fn table1(runs: &[RunReport], cells: &[Cell]) -> Table {
    let cols = datasets_of(runs);
    let rec_bold = bold_flags(cells, |e| e.rec_fid, true);
    let sample_bold = bold_flags(cells, |e| e.sample_fid, true);
    let mut heads = vec![("Model".to_string(), "Model".to_string())];
    let mut groups = vec![(String::new(), 1)];
    for (_, t) in &cols {
        groups.push((t.clone(), 2));
        heads.push(("Rec".into(), format!("{t} Rec")));
        heads.push(("Sample".into(), format!("{t} Sample")));
    }
    let mut rows_out = Vec::new();
    for row in table1_rows(cells) {
        let mut r = vec![TCell::text(&row.title)];
        for (d, _) in &cols {
            for sample in [false, true] {
                let (mut md, mut html) = (Vec::new(), Vec::new());
                for (i, c) in cells.iter().enumerate() {
                    if c.row.key != row.key || c.dataset != *d {
                        continue;
                    }
                    let (mut text, bold) = if sample {
                        let mut t = stat_text(c.stat(|e| e.sample_fid), 2);
                        if let Some(g) = c.stat(|e| e.sample_fid_gmm) {
                            t += &format!(" · GMM {}", g.text(2, true));
                        }
                        (t, sample_bold[i])
                    } else {
                        (stat_text(c.stat(|e| e.rec_fid), 2), rec_bold[i])
                    };
                    if let Some(l) = config_label(cells, c) {
                        text = format!("{l}: {text}");
                    }
                    let t = TCell::num(text, bold);
                    md.push(t.md);
                    html.push(t.html);
                }
                let paper = row
                    .paper
                    .as_deref()
                    .and_then(|p| paper_fid(p, d))
                    .map(|p| format!("{:.2}", if sample { p.1 } else { p.0 }));
                let ours = |v: Vec<String>, sep| {
                    if v.is_empty() {
                        "–".to_string()
                    } else {
                        v.join(sep)
                    }
                };
                r.push(TCell {
                    md: ours(md, "; ")
                        + &paper
                            .as_ref()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default(),
                    html: format!("<span class=\"ours\">{}</span>", ours(html, "; "))
                        + &paper
                            .map(|p| format!("<br><span class=\"paper\">({p})</span>"))
                            .unwrap_or_default(),
                    left: false,
                });
            }
        }
        rows_out.push(r);
    }
    Table {
        groups,
        heads,
        rows: rows_out,
    }
}

type Metric = fn(&EvalSummary) -> Option<f64>;

/// A number column of the runs table: group, HTML head, Markdown head, the
/// number, its digits and scale, and whether lower is better (bold rule).
struct NumCol {
    group: &'static str,
    head: &'static str,
    md: &'static str,
    f: Metric,
    digits: usize,
    scale: f64,
    lower_is_better: Option<bool>,
}

const fn col(
    group: &'static str,
    head: &'static str,
    md: &'static str,
    f: Metric,
    digits: usize,
    scale: f64,
    lower_is_better: Option<bool>,
) -> NumCol {
    NumCol {
        group,
        head,
        md,
        f,
        digits,
        scale,
        lower_is_better,
    }
}

/// A column of the runs table: a number, a text ([`text_col`]) or precision / recall.
enum Col {
    Num(NumCol),
    Text(&'static str, &'static str, &'static str),
    Pr(&'static str, bool),
}

fn runs_columns() -> Vec<Col> {
    use Col::*;
    const LOW: Option<bool> = Some(true);
    vec![
        Text("run", "Run", "Run"),
        Text("run", "Row", "Model"),
        Text("run", "Data", "Data"),
        Text("run", "Preset", "Preset"),
        Text("run", "Seeds", "Seeds"),
        Text("run", "FID images", "FID images"),
        Num(col(
            "reconstruction",
            "Rec FID",
            "Rec FID",
            |e| e.rec_fid,
            2,
            1.0,
            LOW,
        )),
        Num(col(
            "reconstruction",
            "Rec KID ×10³",
            "Rec KID ×10³",
            |e| e.rec_kid,
            2,
            1e3,
            LOW,
        )),
        Num(col(
            "reconstruction",
            "Val MSE",
            "Val MSE",
            |e| e.val_mse,
            5,
            1.0,
            None,
        )),
        Num(col(
            "latents",
            "Latent k-NN acc",
            "Latent k-NN acc",
            |e| e.latent_knn_acc,
            3,
            1.0,
            None,
        )),
        Text("sampler", "Generator", "Generator"),
        Num(col(
            "sampler",
            "Sample FID",
            "Sample FID",
            |e| e.sample_fid,
            2,
            1.0,
            LOW,
        )),
        Num(col(
            "sampler",
            "Sample KID ×10³",
            "Sample KID ×10³",
            |e| e.sample_kid,
            2,
            1e3,
            LOW,
        )),
        Pr("sampler", false),
        Num(col(
            "sampler",
            "Class TV",
            "Class TV",
            |e| e.class_tv,
            3,
            1.0,
            None,
        )),
        Num(col(
            "sampler",
            "Copying C_T",
            "Copying C_T",
            |e| e.copying_ct,
            2,
            1.0,
            None,
        )),
        Num(col(
            "ex-post GMM",
            "Sample FID",
            "Sample FID (GMM)",
            |e| e.sample_fid_gmm,
            2,
            1.0,
            LOW,
        )),
        Num(col(
            "ex-post GMM",
            "Sample KID ×10³",
            "Sample KID ×10³ (GMM)",
            |e| e.sample_kid_gmm,
            2,
            1e3,
            LOW,
        )),
        Pr("ex-post GMM", true),
        Num(col(
            "ex-post GMM",
            "Class TV",
            "Class TV (GMM)",
            |e| e.class_tv_gmm,
            3,
            1.0,
            None,
        )),
        Num(col(
            "ex-post GMM",
            "Copying C_T",
            "Copying C_T (GMM)",
            |e| e.copying_ct_gmm,
            2,
            1.0,
            None,
        )),
        Text("training", "Steps", "Steps"),
        Text("training", "Epochs", "Epochs"),
        Text("training", "Train time", "Train time"),
    ]
}

/// Text of a text column for a cell (plain; the Run column is linked in HTML).
fn text_col(head: &str, c: &Cell) -> String {
    match head {
        "Run" => c.distinct(|r| r.label()),
        "Row" => c.row.title.clone(),
        "Data" => c.distinct(|r| r.eval.dataset.clone()),
        "Preset" => c.distinct(|r| r.eval.preset.clone().unwrap_or_else(|| "–".into())),
        "Seeds" => c.n().to_string(),
        "FID images" => c.distinct(|r| fmt_count(r.eval.fid_samples)),
        "Generator" => c.distinct(|r| r.eval.sampler.clone().unwrap_or_else(|| "–".into())),
        "Steps" => c.distinct(|r| fmt_count(r.eval.train.as_ref().and_then(|t| t.steps))),
        "Epochs" => c
            .epochs
            .map(|e| format!("{e:.2}"))
            .unwrap_or_else(|| "–".into()),
        "Train time" => fmt_wall(c.wall()),
        _ => unreachable!("no text column {head}"),
    }
}

/// The runs table: one line per cell (its seeds taken together), the columns
/// grouped (run, reconstruction, sampler, ex-post GMM, training).
pub fn runs_table(cells: &[Cell]) -> Table {
    let columns = runs_columns();
    let mut groups: Vec<(String, usize)> = Vec::new();
    let mut heads = Vec::new();
    for c in &columns {
        let (g, h, md) = match c {
            Col::Num(n) => (n.group, n.head, n.md),
            Col::Text(g, h, md) => (*g, *h, *md),
            Col::Pr(g, gmm) => (
                *g,
                "Precision / recall",
                if *gmm {
                    "Precision / recall (GMM)"
                } else {
                    "Precision / recall"
                },
            ),
        };
        match groups.last_mut() {
            Some((last, n)) if last == g => *n += 1,
            _ => groups.push((g.to_string(), 1)),
        }
        heads.push((h.to_string(), md.to_string()));
    }
    let bold: Vec<Vec<bool>> = columns
        .iter()
        .map(|c| match c {
            Col::Num(n) => match n.lower_is_better {
                Some(low) => bold_flags(cells, n.f, low),
                None => vec![false; cells.len()],
            },
            _ => vec![false; cells.len()],
        })
        .collect();
    let rows = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            columns
                .iter()
                .zip(&bold)
                .map(|(col, b)| match col {
                    Col::Num(n) => TCell::num(
                        stat_text(c.stat(n.f).map(|s| s.scaled(n.scale)), n.digits),
                        b[i],
                    ),
                    Col::Pr(_, gmm) => {
                        let (p, r) = if *gmm {
                            (
                                c.stat(|e| e.sample_precision_gmm),
                                c.stat(|e| e.sample_recall_gmm),
                            )
                        } else {
                            (c.stat(|e| e.sample_precision), c.stat(|e| e.sample_recall))
                        };
                        TCell::num(pr_text(p, r), false)
                    }
                    Col::Text("run", "Run", _) => TCell {
                        md: md_escape(&text_col("Run", c)),
                        html: c
                            .runs
                            .iter()
                            .map(|r| format!("<a href=\"#run-{n}\">{n}</a>", n = esc(&r.name)))
                            .collect::<Vec<_>>()
                            .join(", "),
                        left: true,
                    },
                    Col::Text(_, h, _) => {
                        let mut t = TCell::text(&text_col(h, c));
                        t.left = !matches!(
                            *h,
                            "Seeds" | "FID images" | "Steps" | "Epochs" | "Train time"
                        );
                        t
                    }
                })
                .collect()
        })
        .collect();
    Table {
        groups,
        heads,
        rows,
    }
}

/// Latent consistency: one line per run.
pub fn latent_table(runs: &[RunReport]) -> Table {
    let heads = [
        "Run",
        "Model",
        "Latents",
        "MMD² encoder vs generator",
        "vs ex-post Gaussian",
        "vs ex-post GMM",
    ];
    Table {
        groups: Vec::new(),
        heads: heads
            .iter()
            .map(|h| (h.to_string(), h.to_string()))
            .collect(),
        rows: runs
            .iter()
            .map(|r| {
                let e = &r.eval;
                vec![
                    TCell::text(&r.name),
                    TCell::text(&r.row.title),
                    TCell::num(fmt_count(e.latent_samples), false),
                    TCell::num(fmt_mmd(e.latent_mmd2), false),
                    TCell::num(fmt_mmd(e.latent_mmd2_gaussian), false),
                    TCell::num(fmt_mmd(e.latent_mmd2_gmm), false),
                ]
            })
            .collect(),
    }
}
