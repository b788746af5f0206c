//! Runs that differ only in seed, taken together: the report's cells (same
//! row, data set, preset and epochs), their mean ± sample standard deviation,
//! the rule that marks a cell best, and the budget curves (one row at several
//! epoch counts).

use super::report::RunReport;
use crate::rows::RowId;
use crate::run_dir::EvalSummary;
use std::collections::BTreeSet;

/// Mean and spread of one number over the seeds of a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); 0 for one value.
    pub std: f64,
    /// Values (runs) it is made of.
    pub n: usize,
}

impl Stat {
    /// Mean and sample std of the finite values; `None` without any value. If
    /// no value is finite, the first one (NaN, inf) stands alone.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return values.first().map(|&x| Stat {
                mean: x,
                std: 0.0,
                n: 1,
            });
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, std, n })
    }

    /// `71.20` for one value, `71.20 ± 1.30 (3)` for three (`with_n` false: no count).
    pub fn text(&self, digits: usize, with_n: bool) -> String {
        let m = if self.mean.is_finite() {
            format!("{:.digits$}", self.mean)
        } else {
            format!("{}", self.mean)
        };
        match (self.n, with_n) {
            (0 | 1, _) => m,
            (n, true) => format!("{m} ± {:.digits$} ({n})", self.std),
            (_, false) => format!("{m} ± {:.digits$}", self.std),
        }
    }

    pub fn scaled(self, k: f64) -> Stat {
        Stat {
            mean: k * self.mean,
            std: k * self.std,
            n: self.n,
        }
    }
}

/// Text of an optional stat (`–` when absent).
pub fn stat_text(s: Option<Stat>, digits: usize) -> String {
    s.map(|s| s.text(digits, true))
        .unwrap_or_else(|| "–".into())
}

/// "precision / recall" of a cell, each with its spread, the count once.
pub fn pr_text(p: Option<Stat>, r: Option<Stat>) -> String {
    if p.is_none() && r.is_none() {
        return "–".into();
    }
    let t = |s: Option<Stat>| s.map(|s| s.text(2, false)).unwrap_or_else(|| "–".into());
    let n = p.or(r).map(|s| s.n).unwrap_or(1);
    let count = if n > 1 {
        format!(" ({n})")
    } else {
        String::new()
    };
    format!("{} / {}{count}", t(p), t(r))
}

/// Runs that share row, data set, preset and epochs (they differ in seed).
#[derive(Debug, Clone)]
pub struct Cell<'a> {
    pub row: &'a RowId,
    pub dataset: String,
    pub preset: String,
    /// Epochs trained (eval.json's, else the config's), if known.
    pub epochs: Option<f64>,
    pub runs: Vec<&'a RunReport>,
}

fn epochs_key(e: Option<f64>) -> String {
    e.map(|e| format!("{e:.3}")).unwrap_or_default()
}

impl Cell<'_> {
    /// Mean ± std of a number of eval.json over the runs.
    pub fn stat(&self, f: impl Fn(&EvalSummary) -> Option<f64>) -> Option<Stat> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| f(&r.eval)).collect();
        Stat::of(&v)
    }

    /// Seeds (runs) in the cell.
    pub fn n(&self) -> usize {
        self.runs.len()
    }

    /// Same data set, preset and epochs: cells of one column compete.
    pub fn comparable(&self, o: &Cell) -> bool {
        self.dataset == o.dataset
            && self.preset == o.preset
            && epochs_key(self.epochs) == epochs_key(o.epochs)
    }

    /// The distinct texts `f` gives over the runs, joined.
    pub fn distinct(&self, f: impl Fn(&RunReport) -> String) -> String {
        let mut v: Vec<String> = Vec::new();
        for r in &self.runs {
            let t = f(r);
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v.join(", ")
    }

    /// Mean training wall time (seconds).
    pub fn wall(&self) -> Option<Stat> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r.wall_s).collect();
        Stat::of(&v)
    }
}

/// The runs grouped into cells, in the order of each cell's first run.
pub fn cells(runs: &[RunReport]) -> Vec<Cell<'_>> {
    let mut out: Vec<Cell> = Vec::new();
    for r in runs {
        let dataset = r.eval.dataset.to_lowercase();
        let preset = r.eval.preset.clone().unwrap_or_default();
        let found = out.iter_mut().find(|c| {
            c.row.key == r.row.key
                && c.dataset == dataset
                && c.preset == preset
                && epochs_key(c.epochs) == epochs_key(r.epochs)
        });
        match found {
            Some(c) => c.runs.push(r),
            None => out.push(Cell {
                row: &r.row,
                dataset,
                preset,
                epochs: r.epochs,
                runs: vec![r],
            }),
        }
    }
    out
}

/// The index of the candidate that is clearly best: its mean beats the
/// runner-up's by more than the larger of the two standard deviations, and
/// both have at least two seeds. `None` with fewer than two candidates, with a
/// one-seed candidate among the two best, or when the lead is within the spread.
pub fn clear_best(cands: &[Option<Stat>], lower_is_better: bool) -> Option<usize> {
    let mut v: Vec<(usize, Stat)> = cands
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.filter(|s| s.mean.is_finite()).map(|s| (i, s)))
        .collect();
    v.sort_by(|a, b| {
        let o = a.1.mean.total_cmp(&b.1.mean);
        if lower_is_better {
            o
        } else {
            o.reverse()
        }
    });
    let (&(i, best), &(_, next)) = (v.first()?, v.get(1)?);
    let gap = (next.mean - best.mean).abs();
    (best.n >= 2 && next.n >= 2 && gap > best.std.max(next.std)).then_some(i)
}

/// Which cells are bold for the number `f`: [`clear_best`] within each set of
/// comparable cells. Returns one flag per cell.
pub fn bold_flags(
    cells: &[Cell],
    f: impl Fn(&EvalSummary) -> Option<f64>,
    lower_is_better: bool,
) -> Vec<bool> {
    let mut flags = vec![false; cells.len()];
    let mut done = vec![false; cells.len()];
    for i in 0..cells.len() {
        if done[i] {
            continue;
        }
        let idx: Vec<usize> = (i..cells.len())
            .filter(|&j| cells[j].comparable(&cells[i]))
            .collect();
        let stats: Vec<Option<Stat>> = idx.iter().map(|&j| cells[j].stat(&f)).collect();
        if let Some(b) = clear_best(&stats, lower_is_better) {
            flags[idx[b]] = true;
        }
        for j in idx {
            done[j] = true;
        }
    }
    flags
}

/// The note under a table with bold cells.
pub fn bold_note(cells: &[Cell]) -> String {
    let mut s = String::from(
        "Cells: runs of the same row, data set, preset and epochs that differ only in seed; \
         several seeds show mean ± sample standard deviation (number of seeds). Bold: the best \
         mean of its column (among cells of the same data set, preset and epochs) when it beats \
         the runner-up's by more than the larger of the two standard deviations; otherwise no \
         cell of that column is bold.",
    );
    if cells.iter().any(|c| c.n() == 1) {
        s += " A value alone is a single run (one seed: no difference is called, never bold; \
               `reproduce --seeds N` gives the spread).";
    }
    s
}

/// One point of a budget curve: a cell.
#[derive(Debug, Clone)]
pub struct BudgetPoint {
    pub epochs: f64,
    pub wall_s: Option<Stat>,
    pub rec: Option<Stat>,
    pub sample: Option<Stat>,
}

/// One row's curve on one data set and preset.
#[derive(Debug, Clone)]
pub struct BudgetLine {
    pub label: String,
    /// The panel: data set and preset.
    pub panel: String,
    pub points: Vec<BudgetPoint>,
}

/// Budget curves: for each row, data set and preset with cells at two or
/// more epoch counts, the cells in epoch order.
pub fn budget_lines(cells: &[Cell]) -> Vec<BudgetLine> {
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for c in cells {
        let k = (c.row.key.clone(), c.dataset.clone(), c.preset.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (row, dataset, preset) in keys {
        let mut pts: Vec<(&Cell, f64)> = cells
            .iter()
            .filter(|c| c.row.key == row && c.dataset == dataset && c.preset == preset)
            .filter_map(|c| c.epochs.filter(|e| *e > 0.0).map(|e| (c, e)))
            .collect();
        let distinct: BTreeSet<String> = pts.iter().map(|p| epochs_key(Some(p.1))).collect();
        if distinct.len() < 2 {
            continue;
        }
        pts.sort_by(|a, b| a.1.total_cmp(&b.1));
        let panel = if preset.is_empty() {
            dataset.to_uppercase()
        } else {
            format!("{} ({preset})", dataset.to_uppercase())
        };
        out.push(BudgetLine {
            label: pts[0].0.row.title.clone(),
            panel,
            points: pts
                .iter()
                .map(|(c, e)| BudgetPoint {
                    epochs: *e,
                    wall_s: c.wall(),
                    rec: c.stat(|e| e.rec_fid),
                    sample: c.stat(|e| e.sample_fid),
                })
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(mean: f64, std: f64, n: usize) -> Option<Stat> {
        Some(Stat { mean, std, n })
    }

    #[test]
    fn mean_and_sample_std_by_hand() {
        // 70, 71, 72.6: mean 71.2; deviations −1.2, −0.2, 1.4; squares 1.44 + 0.04 + 1.96
        // = 3.44; / (3 − 1) = 1.72; √1.72 = 1.31149...
        let st = Stat::of(&[70.0, 71.0, 72.6]).unwrap();
        assert!((st.mean - 71.2).abs() < 1e-12, "{st:?}");
        assert!((st.std - 1.72f64.sqrt()).abs() < 1e-12, "{st:?}");
        assert_eq!(st.n, 3);
        assert_eq!(st.text(1, true), "71.2 ± 1.3 (3)");
        assert_eq!(st.text(2, false), "71.20 ± 1.31");
        // One value: alone, no spread; NaN dropped (and counted out).
        let one = Stat::of(&[5.0, f64::NAN]).unwrap();
        assert_eq!(
            (one.n, one.std, one.text(2, true)),
            (1, 0.0, "5.00".to_string())
        );
        assert_eq!(Stat::of(&[f64::NAN]).unwrap().text(2, true), "NaN");
        assert_eq!(Stat::of(&[]), None);
        assert_eq!(
            Stat::of(&[2.0, 4.0]).unwrap().scaled(10.0).text(0, true),
            "30 ± 14 (2)"
        );
        assert_eq!(
            pr_text(s(0.6, 0.01, 2), s(0.4, 0.02, 2)),
            "0.60 ± 0.01 / 0.40 ± 0.02 (2)"
        );
        assert_eq!(pr_text(s(0.6, 0.0, 1), None), "0.60 / –");
        assert_eq!(pr_text(None, None), "–");
    }

    #[test]
    fn bold_only_beyond_the_spread() {
        // Lead 2.0 with stds 2.5 and 0.5: within the larger spread, no bold.
        assert_eq!(clear_best(&[s(10.0, 2.5, 3), s(12.0, 0.5, 3)], true), None);
        assert_eq!(clear_best(&[s(10.0, 0.5, 3), s(12.0, 2.5, 3)], true), None);
        // Exactly the spread is not beyond it.
        assert_eq!(clear_best(&[s(10.0, 2.0, 3), s(12.0, 0.5, 3)], true), None);
        // Lead 2.0 with stds 1.0 and 0.5: beyond, bold the lower.
        assert_eq!(
            clear_best(&[s(12.0, 0.5, 3), s(10.0, 1.0, 3)], true),
            Some(1)
        );
        // Higher is better: the larger mean.
        assert_eq!(
            clear_best(&[s(0.7, 0.01, 2), s(0.5, 0.01, 2)], false),
            Some(0)
        );
        // Only the runner-up counts: a third cell far behind changes nothing.
        assert_eq!(
            clear_best(
                &[s(10.0, 2.5, 3), None, s(12.0, 0.5, 3), s(50.0, 0.1, 3)],
                true
            ),
            None
        );
        // One seed on either side, or a single candidate: never bold.
        assert_eq!(clear_best(&[s(10.0, 0.0, 1), s(50.0, 0.0, 1)], true), None);
        assert_eq!(clear_best(&[s(10.0, 0.1, 3), s(50.0, 0.0, 1)], true), None);
        assert_eq!(clear_best(&[s(10.0, 0.1, 3)], true), None);
        // Equal means: no lead.
        assert_eq!(clear_best(&[s(10.0, 0.0, 2), s(10.0, 0.0, 2)], true), None);
    }
}
