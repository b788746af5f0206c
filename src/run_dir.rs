//! The run folder: the one module that knows its file names and formats.
//! `train` writes it, `eval`, `sample`, `compare-samplers` and `report` read it.
//!
//! A run folder holds
//! - [`CONFIG`] — the effective config (TOML), written before training starts;
//! - [`METRICS`] — one JSON object per step, epoch and post-training step
//!   ([`Metrics`]), truncated back to the checkpoint on resume;
//! - [`CHECKPOINT`] — the whole state (weights, BN statistics, optimizer
//!   moments, banks) plus the counters of [`Progress`], written atomically,
//!   with a digest of its tensors checked on load ([`crate::checkpoint_file`]);
//! - [`SUMMARY`] — [`TrainSummary`], written when training is complete (both
//!   phases; its absence marks an unfinished run, [`crate::run_state::status`]);
//! - `config-changes.json` — config changes forced on a resume
//!   ([`crate::run_state::CONFIG_CHANGES`]);
//! - [`EVAL`] — [`EvalSummary`], written by `ldc-vae eval`, with the figures
//!   it lists (`recon.png`, `samples.png`, `tsne.png`, `loss.png`, ...).
//!
//! Every file is written atomically (a temp file and a rename), so a kill at
//! any moment leaves the previous version or the new one, never a torn file.
//! JSON files are written with their keys in alphabetical order (the order of
//! a `serde_json::Value` object), as they always were.

use crate::config::Config;
use crate::dist;
use crate::models::Model;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use tch::Tensor;

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.jsonl";
pub const SUMMARY: &str = "summary.json";
pub const EVAL: &str = "eval.json";
/// `eval --on validation`: the same fields scored on the run's held-out
/// validation images (for choices; `eval.json` is the test-set report).
pub const EVAL_VALIDATION: &str = "eval-validation.json";

/// Counters saved with the weights.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Main-loop steps done.
    pub step: u64,
    /// Post-training steps done.
    pub post_step: u64,
    /// Validation MSE of the last finished epoch (NaN if none yet).
    pub val_mse: f64,
    pub wall_s: f64,
    /// Main-loop steps of the whole run (0: unknown, a checkpoint written
    /// before the totals were saved).
    pub total_steps: u64,
    /// Post-training steps of the whole run as configured (0: none, or unknown).
    pub post_total: u64,
}

// ------------------------------------------------------------------ config

/// The run's saved config.
pub fn read_config(dir: &Path, overrides: &[String]) -> Result<Config> {
    Config::load(None, Some(&dir.join(CONFIG)), overrides)
}

/// Save the effective config (rank 0 only; the caller holds the barrier).
pub fn write_config(dir: &Path, cfg: &Config) -> Result<()> {
    crate::util::write_atomic(&dir.join(CONFIG), cfg.to_toml().as_bytes())
}

// -------------------------------------------------------------- checkpoint

/// Write the whole state atomically. Under MPI rank 0 writes and every worker
/// waits until it has (they may read it back on a NaN rollback).
pub fn save_checkpoint(dir: &Path, model: &dyn Model, p: &Progress) -> Result<()> {
    if dist::is_root() {
        write_checkpoint(dir, model, p)?;
    }
    dist::barrier();
    Ok(())
}

fn write_checkpoint(dir: &Path, model: &dyn Model, p: &Progress) -> Result<()> {
    let mut tensors = model.state();
    tensors.push(("meta.step".into(), Tensor::from(p.step as i64)));
    tensors.push(("meta.post_step".into(), Tensor::from(p.post_step as i64)));
    tensors.push(("meta.val_mse".into(), Tensor::from(p.val_mse)));
    tensors.push(("meta.wall_s".into(), Tensor::from(p.wall_s)));
    tensors.push((
        "meta.total_steps".into(),
        Tensor::from(p.total_steps as i64),
    ));
    tensors.push(("meta.post_total".into(), Tensor::from(p.post_total as i64)));
    let path = dir.join(CHECKPOINT);
    crate::util::with_atomic_path(&path, |tmp| crate::checkpoint_file::write(tmp, &tensors))
}

/// Read a checkpoint into named tensors, with a clear error on a bad file.
pub fn read_checkpoint(dir: &Path) -> Result<(HashMap<String, Tensor>, Progress)> {
    let path = dir.join(CHECKPOINT);
    if !path.exists() {
        bail!(
            "no checkpoint at {} (was this run started?)",
            path.display()
        );
    }
    let tensors: HashMap<String, Tensor> = crate::checkpoint_file::read(&path)
        .with_context(|| format!("{}: unreadable or truncated checkpoint", path.display()))?
        .0
        .into_iter()
        .collect();
    let get = |k: &str| {
        tensors
            .get(k)
            .with_context(|| format!("{}: checkpoint lacks `{k}`", path.display()))
    };
    // Counters added later: 0 (unknown) in older checkpoints.
    let opt = |k: &str| tensors.get(k).map_or(0, |t| t.int64_value(&[]) as u64);
    let p = Progress {
        step: get("meta.step")?.int64_value(&[]) as u64,
        post_step: get("meta.post_step")?.int64_value(&[]) as u64,
        val_mse: get("meta.val_mse")?.double_value(&[]),
        wall_s: get("meta.wall_s")?.double_value(&[]),
        total_steps: opt("meta.total_steps"),
        post_total: opt("meta.post_total"),
    };
    Ok((tensors, p))
}

/// Load the checkpoint's state into `model`; returns its counters.
pub fn restore(dir: &Path, model: &mut dyn Model) -> Result<Progress> {
    let (tensors, p) = read_checkpoint(dir)?;
    model
        .load_state(&tensors)
        .with_context(|| format!("loading {}", dir.join(CHECKPOINT).display()))?;
    Ok(p)
}

/// Load a finished or partial run: its config and a model with the checkpoint's state.
pub fn load_run(dir: &Path, device: Option<&str>) -> Result<(Config, Box<dyn Model>, Progress)> {
    let mut cfg = read_config(dir, &[])?;
    if let Some(d) = device {
        cfg.device = d.to_string();
    }
    let dev = crate::util::parse_device(&cfg.device)?;
    crate::util::set_threads(cfg.threads);
    let mut model = cfg.build_model(dev)?;
    let p = restore(dir, model.as_mut())?;
    Ok((cfg, model, p))
}

// ----------------------------------------------------------------- metrics

/// Append-only metrics log, truncated back to a checkpoint on resume.
pub struct Metrics {
    /// None on MPI workers other than rank 0.
    file: Option<std::fs::File>,
}

/// Kind of a line of `metrics.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Step,
    Epoch,
    Post,
}

impl Line {
    fn as_str(self) -> &'static str {
        match self {
            Line::Step => "step",
            Line::Epoch => "epoch",
            Line::Post => "post",
        }
    }
}

impl Metrics {
    /// Open for appending. With `keep_through_step`, first drop the lines
    /// written after the checkpoint at (`step`, `keep_post_through`).
    pub fn open(
        dir: &Path,
        keep_through_step: Option<u64>,
        keep_post_through: u64,
    ) -> Result<Metrics> {
        if !dist::is_root() {
            return Ok(Metrics { file: None });
        }
        let path = dir.join(METRICS);
        if let Some(step) = keep_through_step {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let kept: String = text
                .lines()
                .filter(|l| {
                    let v: serde_json::Value = match serde_json::from_str(l) {
                        Ok(v) => v,
                        Err(_) => return false,
                    };
                    match v["kind"].as_str() {
                        Some("post") => v["step"].as_u64().is_some_and(|s| s < keep_post_through),
                        Some("epoch") => v["step"].as_u64().is_some_and(|s| s <= step),
                        _ => v["step"].as_u64().is_some_and(|s| s < step),
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect();
            crate::util::write_atomic(&path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Metrics { file: Some(file) })
    }

    /// Append one line (rank 0 only; a no-op elsewhere).
    pub fn write(
        &mut self,
        kind: Line,
        step: u64,
        epoch: Option<u64>,
        stats: &[(&str, f64)],
    ) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.as_str().into());
        obj.insert("step".into(), step.into());
        if let Some(e) = epoch {
            obj.insert("epoch".into(), e.into());
        }
        for (k, v) in stats {
            obj.insert(
                (*k).into(),
                serde_json::Number::from_f64(*v)
                    .map(Into::into)
                    .unwrap_or(serde_json::Value::Null),
            );
        }
        writeln!(file, "{}", serde_json::Value::Object(obj))
            .with_context(|| format!("cannot append to {METRICS}"))
    }
}

// --------------------------------------------------------------- summaries

/// `summary.json`: what a complete training run ended with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainSummary {
    pub model: String,
    pub dataset: String,
    pub preset: Option<String>,
    #[serde(default)]
    pub complete: bool,
    /// Steps, post-training steps, epochs and wall time: the same keys as
    /// `eval.json`'s `train` (one level, as they always were).
    #[serde(flatten)]
    pub counts: TrainCounts,
    /// Validation MSE (null when it was not finite).
    pub val_mse: Option<f64>,
    pub device: Option<String>,
    /// MPI workers that trained the run.
    pub workers: Option<usize>,
}

/// The training counters of a run (`summary.json`, and `eval.json`'s `train`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainCounts {
    pub steps: Option<u64>,
    pub post_steps: Option<u64>,
    pub epochs: Option<f64>,
    pub wall_s: Option<f64>,
}

/// `eval.json` as written by `ldc-vae eval`. Every field but `model` and
/// `dataset` may be missing or null (older or partial evaluations: serde reads
/// a missing `Option` as `None`), and every field is written, null or not.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EvalSummary {
    pub model: String,
    pub dataset: String,
    /// Source, split and preprocessing of the data ([`crate::data::describe`]);
    /// absent in eval.json files written before it existed.
    #[serde(default)]
    pub data_note: Option<String>,
    pub preset: Option<String>,
    /// The generation route (`Model::sampler_name`).
    pub sampler: Option<String>,
    pub val_mse: Option<f64>,
    pub test_mse: Option<f64>,
    /// MMD² of encoder test latents vs the model's generator, an ex-post
    /// Gaussian and an ex-post GMM.
    pub latent_mmd2: Option<f64>,
    pub latent_mmd2_gaussian: Option<f64>,
    pub latent_mmd2_gmm: Option<f64>,
    pub latent_samples: Option<u64>,
    /// Class histograms of generated images (cosine 1-NN), when the data has labels.
    pub sample_classes: Option<serde_json::Value>,
    pub rec_fid: Option<f64>,
    pub sample_fid: Option<f64>,
    pub sample_fid_gmm: Option<f64>,
    pub fid_samples: Option<u64>,
    /// KID (raw MMD², not ×1000) of reconstructions, the model's generator
    /// and the ex-post GMM, with their spread over subsets; absent in
    /// eval.json files written before KID existed.
    pub rec_kid: Option<f64>,
    pub rec_kid_std: Option<f64>,
    pub sample_kid: Option<f64>,
    pub sample_kid_std: Option<f64>,
    pub sample_kid_gmm: Option<f64>,
    pub sample_kid_gmm_std: Option<f64>,
    /// k-NN precision and recall in Inception feature space.
    pub sample_precision: Option<f64>,
    pub sample_recall: Option<f64>,
    pub sample_precision_gmm: Option<f64>,
    pub sample_recall_gmm: Option<f64>,
    pub kid_subsets: Option<u64>,
    pub kid_subset_size: Option<u64>,
    pub pr_k: Option<u64>,
    /// Total-variation distance of the generated images' class histogram to
    /// the test images' (model's generator, ex-post GMM).
    pub class_tv: Option<f64>,
    pub class_tv_gmm: Option<f64>,
    /// Data-copying statistic C_T (Meehan et al. 2020) in latent space of the
    /// model's generator and of the ex-post GMM, against the training latents
    /// with test-image latents held out (`crate::eval::copying`): ≪ 0 means
    /// closer to the training latents than held-out data are. Absent in
    /// eval.json files written before it existed.
    #[serde(default)]
    pub copying_ct: Option<f64>,
    #[serde(default)]
    pub copying_ct_gmm: Option<f64>,
    /// The model generator's whole test (C_T, global Z_U, cells, sizes).
    #[serde(default)]
    pub copying: Option<crate::eval::copying::Copying>,
    /// Latent class structure (issue 29): accuracy of classifying the test
    /// latents by a `latent_knn_k`-nearest-neighbour vote of the training
    /// latents (`crate::eval::classes::knn_accuracy`); labelled data only.
    #[serde(default)]
    pub latent_knn_acc: Option<f64>,
    /// The real images everything was scored on: `test` (eval.json) or
    /// `validation` (eval-validation.json); absent in older files (test).
    #[serde(default)]
    pub scored_on: Option<String>,
    #[serde(default)]
    pub latent_knn_k: Option<i64>,
    /// The same vote (leave-one-out) in the 2-D t-SNE map of the test
    /// latents (`tsne_classes.png`): how much of it the map shows.
    #[serde(default)]
    pub tsne_knn_acc: Option<f64>,
    pub train: Option<TrainCounts>,
    /// Evaluated from an unfinished run (`eval --allow-unfinished`), and the
    /// phase it lacked ([`crate::run_state::Unfinished::describe`]).
    #[serde(default)]
    pub unfinished: bool,
    #[serde(default)]
    pub unfinished_phase: Option<String>,
    /// Figure kind (tsne, recon, samples, samples_gmm, loss, ...) → file
    /// name relative to the run folder.
    #[serde(default, deserialize_with = "figures_map")]
    pub figures: BTreeMap<String, String>,
}

/// `figures` with null entries dropped (and a null map read as empty).
fn figures_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    let m: Option<BTreeMap<String, Option<String>>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// Pretty JSON with the keys in alphabetical order (through a `Value`).
pub fn to_json<T: Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::to_value(v)?)?)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid {what}", path.display()))
}

impl TrainSummary {
    pub fn read(dir: &Path) -> Result<TrainSummary> {
        read_json(&dir.join(SUMMARY), SUMMARY)
    }
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::util::write_atomic(&dir.join(SUMMARY), to_json(self)?.as_bytes())
    }
}

impl EvalSummary {
    pub fn read(dir: &Path) -> Result<EvalSummary> {
        Self::read_named(dir, EVAL)
    }
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_named(dir, EVAL)
    }
    /// [`EvalSummary::read`] of `dir/name` ([`EVAL`] or [`EVAL_VALIDATION`]).
    pub fn read_named(dir: &Path, name: &str) -> Result<EvalSummary> {
        read_json(&dir.join(name), name)
    }
    pub fn write_named(&self, dir: &Path, name: &str) -> Result<()> {
        crate::util::write_atomic(&dir.join(name), to_json(self)?.as_bytes())
            .with_context(|| format!("writing {name}"))
    }
    /// Whether this evaluation was made from the checkpoint at `p`.
    pub fn is_of(&self, p: &Progress) -> bool {
        self.train
            .as_ref()
            .is_some_and(|t| t.steps == Some(p.step) && t.post_steps == Some(p.post_step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_round_trip_and_old_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainSummary {
            model: "ldc".into(),
            dataset: "mnist".into(),
            complete: true,
            counts: TrainCounts {
                steps: Some(60),
                epochs: Some(0.5),
                ..Default::default()
            },
            val_mse: Some(f64::NAN),
            ..Default::default()
        };
        s.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SUMMARY)).unwrap();
        assert!(text.contains("\"val_mse\": null"), "{text}");
        let back = TrainSummary::read(dir.path()).unwrap();
        assert_eq!(back.val_mse, None);
        assert_eq!(back.counts.steps, Some(60));
        assert!(
            text.contains("\"steps\": 60") && !text.contains("counts"),
            "{text}"
        );
        // An eval.json of the base layout, with a null figure and no `test_mse`.
        std::fs::write(
            dir.path().join(EVAL),
            r#"{"model": "vae", "dataset": "mnist", "rec_fid": 3.5, "figures": {"tsne": null, "recon": "recon.png"},
               "train": {"steps": 5, "post_steps": 1}}"#,
        )
        .unwrap();
        let e = EvalSummary::read(dir.path()).unwrap();
        assert_eq!(e.rec_fid, Some(3.5));
        assert_eq!(e.test_mse, None);
        assert_eq!((e.copying_ct, e.copying), (None, None));
        assert_eq!(e.figures.len(), 1);
        let p = Progress {
            step: 5,
            post_step: 1,
            ..Default::default()
        };
        assert!(e.is_of(&p));
        assert!(!e.is_of(&Progress { post_step: 2, ..p }));
        // With the data-copying keys (C_T null when no cell counted).
        std::fs::write(
            dir.path().join(EVAL),
            r#"{"model": "ldc", "dataset": "mnist", "copying_ct": -4.5, "copying_ct_gmm": null,
               "copying": {"ct": -4.5, "zu": -6.25, "cells": 50, "cells_kept": 48, "n_train": 10000,
                           "n_held_out": 2000, "n_generated": 2000}}"#,
        )
        .unwrap();
        let e = EvalSummary::read(dir.path()).unwrap();
        assert_eq!((e.copying_ct, e.copying_ct_gmm), (Some(-4.5), None));
        let c = e.copying.unwrap();
        assert_eq!((c.zu, c.cells_kept, c.n_train), (-6.25, 48, 10000));
        e.write(dir.path()).unwrap();
        assert_eq!(EvalSummary::read(dir.path()).unwrap(), e);
        let e = EvalSummary::read(Path::new("/nonexistent")).unwrap_err();
        assert!(format!("{e:#}").contains("eval.json"), "{e:#}");
    }
}
