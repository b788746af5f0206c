//! The rows of Table 1: a model of the registry plus config overrides.
//!
//! Every model of [`crate::models::REGISTRY`] is a row (its key and title),
//! and [`ROWS`] adds or retitles rows: the same model with other settings
//! (LDC-VAE with the paper's recipe, the RAE-L2 and WAE-MMD with the OT
//! sampler). `reproduce --models` takes row keys; the report finds a run's
//! row from its `config.toml` (the model and the overrides' keys), so a run
//! made by hand with `train --set ...` lands on the same row as one made by
//! `reproduce`.

use crate::models;
use anyhow::{bail, Result};

/// One row of Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Key on the command line (`reproduce --models`) and folder name.
    pub key: &'static str,
    /// Row title in the report.
    pub title: &'static str,
    /// Registry key of the model.
    pub model: &'static str,
    /// `section.key=value` overrides that make the row (applied before the
    /// user's `--set`); a run's config must hold every one of them.
    pub overrides: &'static [&'static str],
    /// Registry key of the model whose paper numbers the row shows, if any.
    pub paper: Option<&'static str>,
}

/// Rows beyond (or retitling) the registry's: the registry's other models are
/// rows as they are.
pub const ROWS: &[Row] = &[
    Row {
        key: "ldc",
        title: "LDC-VAE (OT)",
        model: "ldc",
        overrides: &[],
        paper: Some("ldc"),
    },
    Row {
        key: "ldc-paper",
        title: "LDC-VAE (paper recipe)",
        model: "ldc",
        overrides: &["ldc.recipe=paper"],
        paper: Some("ldc"),
    },
    Row {
        key: "rae-l2-ot",
        title: "RAE-L2 + OT",
        model: "rae-l2",
        overrides: &["sampler.kind=ot"],
        paper: None,
    },
    Row {
        key: "wae-mmd-ot",
        title: "WAE-MMD + OT",
        model: "wae-mmd",
        overrides: &["sampler.kind=ot"],
        paper: None,
    },
];

/// Every row of `table` and the registry: the registry's models in registry
/// order (as `table` defines them, if it does), then `table`'s other rows.
/// This is `reproduce`'s default row list.
pub fn all_rows(table: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = models::REGISTRY
        .iter()
        .map(|m| {
            table
                .iter()
                .find(|r| r.key == m.key)
                .copied()
                .unwrap_or(Row {
                    key: m.key,
                    title: m.title,
                    model: m.key,
                    overrides: &[],
                    paper: m.table1.map(|_| m.key),
                })
        })
        .collect();
    for r in table {
        if !out.iter().any(|o| o.key == r.key) {
            out.push(*r);
        }
    }
    out
}

/// The rows in Table 1's order: the paper's rows in its order, each row of
/// the same model that is not the paper's right after it, then the rest.
pub fn table1_order(table: &[Row]) -> Vec<Row> {
    let all = all_rows(table);
    let mut out: Vec<Row> = Vec::new();
    for (key, _, _) in crate::eval::report::paper_table1() {
        for r in all.iter().filter(|r| r.model == key) {
            if !out.contains(r) {
                out.push(*r);
            }
        }
    }
    for r in all {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The row of `key` (a row key, or a model key or alias) in `table` and the registry.
pub fn find(key: &str, table: &[Row]) -> Result<Row> {
    let all = all_rows(table);
    let canon = models::canonical_key(key);
    match all
        .iter()
        .find(|r| r.key == key)
        .or_else(|| all.iter().find(|r| r.key == canon))
    {
        Some(r) => Ok(*r),
        None => bail!(
            "unknown row `{key}`; rows: {}",
            all.iter().map(|r| r.key).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A run's row as the report shows it (owned: a run of a model the registry
/// does not know gets a row of its own name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowId {
    pub key: String,
    pub title: String,
    /// Registry key whose paper numbers the row shows.
    pub paper: Option<String>,
}

impl From<Row> for RowId {
    fn from(r: Row) -> RowId {
        RowId {
            key: r.key.into(),
            title: r.title.into(),
            paper: r.paper.map(String::from),
        }
    }
}

/// The value at dotted `path` of a TOML table.
fn lookup<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// Whether `config` holds the override `ov` (`section.key=value`): the value
/// compared as TOML (`1` equals `1.0`), else as a bare string.
fn holds(config: &toml::Table, ov: &str) -> bool {
    let Some((k, v)) = ov.split_once('=') else {
        return false;
    };
    let Some(have) = lookup(config, k.trim()) else {
        return false;
    };
    let v = v.trim();
    let want = toml::from_str::<toml::Table>(&format!("x = {v}"))
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()));
    match (have, &want) {
        (toml::Value::Integer(_) | toml::Value::Float(_), _) => {
            let f = |x: &toml::Value| x.as_float().or(x.as_integer().map(|i| i as f64));
            f(have).is_some() && f(have) == f(&want)
        }
        (toml::Value::String(s), toml::Value::String(w)) => s == w,
        (toml::Value::String(s), _) => *s == v,
        _ => *have == want,
    }
}

/// The row of a run: its model from `config.toml`'s text (else `eval_model`,
/// the model `eval.json` names), then the row of that model with the most
/// overrides that the config all holds (the model's own row when none does).
/// The config is read as a plain TOML table, so keys this build does not
/// know are no obstacle.
pub fn row_of_run(config: Option<&str>, eval_model: &str, table: &[Row]) -> RowId {
    let cfg: Option<toml::Table> = config.and_then(|c| toml::from_str(c).ok());
    let model = cfg
        .as_ref()
        .and_then(|t| t.get("model"))
        .and_then(|m| m.as_str())
        .map(models::canonical_key)
        .unwrap_or_else(|| models::canonical_key(eval_model));
    let mut cands: Vec<Row> = all_rows(table)
        .into_iter()
        .filter(|r| r.model == model)
        .collect();
    cands.sort_by_key(|r| std::cmp::Reverse(r.overrides.len()));
    let empty = toml::Table::new();
    let t = cfg.as_ref().unwrap_or(&empty);
    cands
        .into_iter()
        .find(|r| r.overrides.iter().all(|o| holds(t, o)))
        .map(RowId::from)
        .unwrap_or(RowId {
            title: model.clone(),
            key: model,
            paper: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rows_are_the_registry_and_the_extra_rows() {
        let keys: Vec<&str> = all_rows(ROWS).iter().map(|r| r.key).collect();
        assert_eq!(
            keys,
            [
                "ldc",
                "vae",
                "cv-vae",
                "wae-mmd",
                "two-stage-vae",
                "rae-l2",
                "rae-gp",
                "rae-sn",
                "ldc-paper",
                "rae-l2-ot",
                "wae-mmd-ot"
            ]
        );
        assert_eq!(find("ldc", ROWS).unwrap().title, "LDC-VAE (OT)");
        assert_eq!(find("2sae", ROWS).unwrap().key, "two-stage-vae");
        assert_eq!(
            find("rae-l2-ot", ROWS).unwrap().overrides,
            ["sampler.kind=ot"]
        );
        let e = find("nope", ROWS).unwrap_err().to_string();
        assert!(e.contains("wae-mmd-ot"), "{e}");
        // Table 1: the paper's order, each extra row after its model's.
        let order: Vec<&str> = table1_order(ROWS).iter().map(|r| r.key).collect();
        let pos = |k| order.iter().position(|o| *o == k).unwrap();
        assert_eq!(pos("wae-mmd-ot"), pos("wae-mmd") + 1);
        assert_eq!(pos("rae-l2-ot"), pos("rae-l2") + 1);
        assert_eq!(pos("ldc-paper"), pos("ldc") + 1);
        assert_eq!(order[0], "vae");
    }

    #[test]
    fn a_runs_row_comes_from_its_config() {
        let row = |c: Option<&str>, m| row_of_run(c, m, ROWS).key;
        assert_eq!(
            row(Some("model = \"rae-l2\"\n[sampler]\nkind = \"ot\"\n"), "x"),
            "rae-l2-ot"
        );
        assert_eq!(
            row(Some("model = \"rae-l2\"\n[sampler]\nkind = \"gmm\"\n"), "x"),
            "rae-l2"
        );
        assert_eq!(
            row(Some("model = \"ldc\"\n[ldc]\nrecipe = \"paper\"\n"), "vae"),
            "ldc-paper"
        );
        assert_eq!(
            row(Some("model = \"ldc\"\n[ldc]\nrecipe = \"ot\"\n"), "ldc"),
            "ldc"
        );
        // No or unreadable config: the model eval.json names, aliases accepted.
        assert_eq!(row(None, "LDC-VAE"), "ldc");
        assert_eq!(row(Some("not [toml"), "wae"), "wae-mmd");
        let odd = row_of_run(None, "my-model", ROWS);
        assert_eq!(
            (odd.key.as_str(), odd.title.as_str(), odd.paper),
            ("my-model", "my-model", None)
        );
        // Numbers compare as numbers; an injected table with today's keys.
        const T: &[Row] = &[Row {
            key: "vae-b2",
            title: "VAE β=2",
            model: "vae",
            overrides: &["baselines.beta=2", "net.latent_dim=16"],
            paper: None,
        }];
        let c = "model = \"vae\"\n[baselines]\nbeta = 2.0\n[net]\nlatent_dim = 16\n";
        assert_eq!(row_of_run(Some(c), "vae", T).key, "vae-b2");
        assert_eq!(row_of_run(Some(&c.replace("16", "8")), "vae", T).key, "vae");
    }
}
