//! `ldc-vae table RUNS... [--on validation]`: one Markdown line per evaluated
//! run folder, named by its path, for comparing variants that are not rows
//! of Table 1 (an ablation's `--set` keys): the report would merge them into
//! their model's row. Reads `eval.json` (test) or `eval-validation.json`.

use crate::eval::run::ScoreOn;
use crate::run_dir::{EvalSummary, TrainSummary};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TableArgs {
    /// Run folders, or folders holding evaluated runs (searched 4 levels down).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Which evaluation to read: `test` (eval.json) or `validation`
    /// (eval-validation.json, written by `eval --on validation`).
    #[arg(long, value_enum, default_value = "test")]
    pub on: ScoreOn,
}

/// The Markdown table of the runs under `dirs`, scored on `on`.
pub fn table(dirs: &[PathBuf], on: ScoreOn) -> Result<String> {
    let file = on.eval_file();
    let mut runs = Vec::new();
    for d in dirs {
        if d.join(file).is_file() {
            runs.push(d.clone());
        } else if d.is_dir() {
            crate::eval::report::runs_below_with(d, file, 4, &mut runs)?;
        }
    }
    if runs.is_empty() {
        bail!(
            "no {file} in {} (run `ldc-vae eval RUN --on {}` first)",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            on.as_str()
        );
    }
    let f = |v: Option<f64>, scale: f64, digits: usize| {
        v.map(|v| format!("{:.*}", digits, v * scale))
            .unwrap_or_else(|| "–".into())
    };
    let mut s = format!(
        "Scored on {} images ({file}).\n\n\
         | run | model | val MSE | rec FID | sample FID | sample KID ×10³ | P / R | GMM FID | GMM KID ×10³ | latent k-NN acc | C_T | train s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        on.as_str()
    );
    for r in &runs {
        let e = EvalSummary::read_named(r, file)?;
        let wall = TrainSummary::read(r)
            .ok()
            .and_then(|t| t.counts.wall_s)
            .or(e.train.as_ref().and_then(|t| t.wall_s));
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |\n",
            r.display(),
            e.model,
            f(e.val_mse, 1.0, 5),
            f(e.rec_fid, 1.0, 2),
            f(e.sample_fid, 1.0, 2),
            f(e.sample_kid, 1e3, 1),
            f(e.sample_precision, 1.0, 3),
            f(e.sample_recall, 1.0, 3),
            f(e.sample_fid_gmm, 1.0, 2),
            f(e.sample_kid_gmm, 1e3, 1),
            f(e.latent_knn_acc, 1.0, 3),
            f(e.copying_ct, 1.0, 2),
            f(wall, 1.0, 0),
        );
    }
    Ok(s)
}

pub fn run(a: TableArgs) -> Result<()> {
    print!("{}", table(&a.runs, a.on)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_run_of_the_chosen_evaluation() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("e2/prior-w0");
        let b = root.path().join("e2/base");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let e = |fid: f64, on: &str| {
            format!(
                r#"{{"model": "ldc", "dataset": "mnist", "rec_fid": {fid}, "sample_kid": 0.05,
                    "latent_knn_acc": 0.9, "scored_on": "{on}"}}"#
            )
        };
        std::fs::write(a.join("eval-validation.json"), e(12.5, "validation")).unwrap();
        std::fs::write(b.join("eval-validation.json"), e(20.0, "validation")).unwrap();
        std::fs::write(b.join("eval.json"), e(99.0, "test")).unwrap();
        let t = table(&[root.path().to_path_buf()], ScoreOn::Validation).unwrap();
        assert_eq!(
            t.lines().filter(|l| l.contains("| ldc |")).count(),
            2,
            "{t}"
        );
        assert!(t.contains("| 12.50 |") && t.contains("| 20.00 |") && !t.contains("99.00"));
        assert!(t.contains("| 50.0 |") && t.contains("| 0.900 |"), "{t}");
        let t = table(&[root.path().to_path_buf()], ScoreOn::Test).unwrap();
        assert!(t.contains("99.00") && !t.contains("12.50"));
        let err = table(&[a], ScoreOn::Test).unwrap_err();
        assert!(format!("{err}").contains("eval.json"), "{err}");
    }
}
