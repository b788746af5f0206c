//! What a run folder says about its own history (issue 28): which config
//! keys changed on a resume ([`CONFIG_CHANGES`]), and whether training is
//! finished ([`status`]). The file formats of the rest of the folder are
//! [`crate::run_dir`]'s.

use crate::config::Config;
use crate::run_dir::{self, EvalSummary, TrainSummary};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// `config-changes.json`: every config change a run went through after it
/// started (`train --resume --force-config`, `train --only sampler --set`).
pub const CONFIG_CHANGES: &str = "config-changes.json";

/// Keys that may change on `train --resume` without `--force-config`: they
/// change how a run is computed, not what — `threads` (libtorch's intra-op
/// threads), `train.checkpoint_every` (how often the state is saved),
/// `device` (a run may continue on another machine) — or are read only by
/// `eval` (`eval.*`). A key ending in `.*` stands for its whole section.
pub const RESUME_MAY_CHANGE: [&str; 4] = ["threads", "train.checkpoint_every", "device", "eval.*"];

fn may_change(key: &str) -> bool {
    RESUME_MAY_CHANGE
        .iter()
        .any(|k| match k.strip_suffix(".*") {
            Some(section) => key
                .strip_prefix(section)
                .is_some_and(|r| r.starts_with('.')),
            None => *k == key,
        })
}

/// One changed key, its values as TOML writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyChange {
    pub key: String,
    pub old: String,
    pub new: String,
}

fn flatten(v: &toml::Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Every key whose value differs between two configs (flattened, dotted
/// keys, in key order).
pub fn config_diff(old: &Config, new: &Config) -> Vec<KeyChange> {
    let flat = |c: &Config| {
        let mut m = BTreeMap::new();
        flatten(
            &toml::Value::try_from(c).expect("config serializes"),
            "",
            &mut m,
        );
        m
    };
    let (a, b) = (flat(old), flat(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let none = "(unset)".to_string();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| KeyChange {
            key: k.clone(),
            old: a.get(k).unwrap_or(&none).clone(),
            new: b.get(k).unwrap_or(&none).clone(),
        })
        .collect()
}

fn list(changes: &[KeyChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{}: {} -> {}", c.key, c.old, c.new))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The check of `train --resume`: the keys of `new` that differ from the
/// run's saved `old` config and change the run's trajectory. Without `force`
/// any such key is an error listing them; with it they are returned, to be
/// recorded ([`record_change`]).
pub fn check_resume_config(
    dir: &Path,
    old: &Config,
    new: &Config,
    force: bool,
) -> Result<Vec<KeyChange>> {
    let changed: Vec<KeyChange> = config_diff(old, new)
        .into_iter()
        .filter(|c| !may_change(&c.key))
        .collect();
    if !changed.is_empty() && !force {
        bail!(
            "cannot resume {}: these keys differ from its config.toml and would make it another \
             experiment: {}. Start a new run (--out), or pass --force-config to continue this one \
             with them (the change is recorded in {CONFIG_CHANGES} and shown in the report). \
             Keys that may change on a resume: {}",
            dir.display(),
            list(&changed),
            RESUME_MAY_CHANGE.join(", ")
        );
    }
    Ok(changed)
}

/// One entry of [`CONFIG_CHANGES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The checkpoint's counters when the change took effect.
    pub step: u64,
    pub post_step: u64,
    pub keys: Vec<KeyChange>,
    /// Seconds since the Unix epoch.
    pub time_unix: u64,
    /// The command that made it.
    pub how: String,
}

/// The changes recorded in a run folder (none when the file is absent).
pub fn read_changes(dir: &Path) -> Result<Vec<ConfigChange>> {
    let p = dir.join(CONFIG_CHANGES);
    if !p.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid {CONFIG_CHANGES}", p.display()))
}

/// Append a change to the run's [`CONFIG_CHANGES`] (atomically; rank 0 only).
pub fn record_change(
    dir: &Path,
    step: u64,
    post_step: u64,
    keys: Vec<KeyChange>,
    how: &str,
) -> Result<()> {
    if keys.is_empty() || !crate::dist::is_root() {
        return Ok(());
    }
    let mut all = read_changes(dir)?;
    let time_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    tracing::warn!(
        "{}: config changed at step {step} (post-training step {post_step}): {}",
        dir.display(),
        list(&keys)
    );
    all.push(ConfigChange {
        step,
        post_step,
        keys,
        time_unix,
        how: how.to_string(),
    });
    crate::util::write_atomic(
        &dir.join(CONFIG_CHANGES),
        serde_json::to_string_pretty(&all)?.as_bytes(),
    )
}

/// The phase a run still lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The main loop (encoder/decoder, and the sampler with it).
    Joint,
    /// The post-training phase (LDC-VAE's sampler refinement, a sampler
    /// net's training, a GMM fit, the 2-stage VAE's second stage).
    Post,
    /// Both counters are complete but `summary.json` was never written
    /// (killed in the last moment).
    Summary,
}

/// Why a run folder is not finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    pub phase: Phase,
    pub step: u64,
    pub post_step: u64,
    /// 0: unknown (a checkpoint written before the totals were saved).
    pub total_steps: u64,
    pub post_total: u64,
}

impl Unfinished {
    /// One phrase: "joint training stopped at step 5 of 12", ...
    pub fn describe(&self) -> String {
        let of = |n: u64| {
            if n > 0 {
                format!(" of {n}")
            } else {
                String::new()
            }
        };
        match self.phase {
            Phase::Joint => format!(
                "joint training stopped at step {}{}",
                self.step,
                of(self.total_steps)
            ),
            Phase::Post => format!(
                "the post-training phase stopped at step {}{} (after all {} joint steps)",
                self.post_step,
                of(self.post_total),
                self.step
            ),
            Phase::Summary => "its last moment (summary.json was not written)".to_string(),
        }
    }
}

/// `None` when the run in `dir` finished training (its `summary.json`
/// exists), else which phase it lacks, from its checkpoint's counters.
pub fn status(dir: &Path) -> Result<Option<Unfinished>> {
    if TrainSummary::read(dir).is_ok() {
        return Ok(None);
    }
    let (_, p) = run_dir::read_checkpoint(dir)?;
    let phase = if p.total_steps == 0 || p.step < p.total_steps {
        Phase::Joint
    } else if p.post_step < p.post_total {
        Phase::Post
    } else {
        Phase::Summary
    };
    Ok(Some(Unfinished {
        phase,
        step: p.step,
        post_step: p.post_step,
        total_steps: p.total_steps,
        post_total: p.post_total,
    }))
}

/// The check of `eval`, `sample` and `report` (`what`): an unfinished run is
/// an error naming the missing phase and the command that finishes it, unless
/// `allow` (`--allow-unfinished`), when it is returned with a warning.
pub fn require_finished(dir: &Path, allow: bool, what: &str) -> Result<Option<Unfinished>> {
    let Some(u) = status(dir)? else {
        return Ok(None);
    };
    let resume = format!("ldc-vae train --resume {}", dir.display());
    if !allow {
        bail!(
            "{} is unfinished: {}. Finish it with `{resume}`, or pass --allow-unfinished to {what} \
             it as it is (marked unfinished)",
            dir.display(),
            u.describe()
        );
    }
    tracing::warn!(
        "{} is unfinished ({}); going on (--allow-unfinished). `{resume}` finishes it",
        dir.display(),
        u.describe()
    );
    Ok(Some(u))
}

/// The check of `report` on one run folder: a run unfinished now, or an
/// `eval.json` made from an unfinished run, is an error unless `allow`.
pub fn check_report_run(dir: &Path, allow: bool) -> Result<()> {
    if dir.join(run_dir::CHECKPOINT).exists() {
        require_finished(dir, allow, "report")?;
    }
    match EvalSummary::read(dir) {
        Ok(e) if e.unfinished && !allow => bail!(
            "{}: its eval.json was made from the unfinished run ({}); evaluate it again              (`ldc-vae eval {}`) once it is finished, or pass --allow-unfinished",
            dir.display(),
            e.unfinished_phase.as_deref().unwrap_or("unknown phase"),
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// The report's notes on a run: "(unfinished: ...)" when it was evaluated
/// unfinished or is unfinished now (then `eval` is marked so), and one
/// "config changed at step N: keys" per recorded change. A folder without
/// a checkpoint (an `eval.json` alone) counts as finished.
pub fn report_notes(dir: &Path, eval: &mut EvalSummary) -> Vec<String> {
    if !eval.unfinished {
        if let Ok(Some(u)) = status(dir) {
            eval.unfinished = true;
            eval.unfinished_phase = Some(u.describe());
        }
    }
    let mut notes = Vec::new();
    if eval.unfinished {
        notes.push(format!(
            "(unfinished: {})",
            eval.unfinished_phase.as_deref().unwrap_or("training")
        ));
    }
    for c in read_changes(dir).unwrap_or_default() {
        let keys: Vec<&str> = c.keys.iter().map(|k| k.key.as_str()).collect();
        let post = if c.post_step > 0 {
            format!(" (post-training step {})", c.post_step)
        } else {
            String::new()
        };
        notes.push(format!(
            "config changed at step {}{post}: {}",
            c.step,
            keys.join(", ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_config_check_names_changed_keys_and_allows_the_documented_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = Config::load(Some("mnist-cpu"), None, &[]).unwrap();
        let ov = |o: &[&str]| {
            Config::load(
                Some("mnist-cpu"),
                None,
                &o.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
        };
        // Allowed: threads, checkpoint_every, device, eval.*.
        let new = ov(&[
            "threads=3",
            "train.checkpoint_every=7",
            "eval.fid_samples=50",
        ]);
        assert_eq!(config_diff(&old, &new).len(), 3);
        assert!(check_resume_config(dir.path(), &old, &new, false)
            .unwrap()
            .is_empty());
        // Refused, each named with old -> new, whatever its section.
        for (o, key) in [
            ("seed=5", "seed = 0 -> 5"),
            ("train.lr=0.1", "train.lr"),
            ("train.batch_size=50", "train.batch_size"),
            ("data.train_limit=400", "data.train_limit: 0 -> 400"),
            ("net.width=0.125", "net.width"),
            ("ldc.sampler_refine_steps=7", "ldc.sampler_refine_steps"),
            ("sampler.steps=9", "sampler.steps"),
            ("baselines.gmm_components=3", "baselines.gmm_components"),
            ("train.on_nan=rollback", "train.on_nan"),
        ] {
            let new = ov(&[o, "threads=2"]);
            let e = format!(
                "{:#}",
                check_resume_config(dir.path(), &old, &new, false).unwrap_err()
            );
            let key = key.replace(" = ", ": ");
            assert!(e.contains(&key) && e.contains("--force-config"), "{o}: {e}");
            assert!(!e.contains("threads:"), "{o}: allowed key listed: {e}");
            let forced = check_resume_config(dir.path(), &old, &new, true).unwrap();
            assert_eq!(forced.len(), 1, "{o}: {forced:?}");
        }
        // Records append, atomically, and read back.
        let keys = config_diff(&old, &ov(&["train.lr=0.1"]));
        record_change(dir.path(), 12, 0, keys.clone(), "t").unwrap();
        record_change(dir.path(), 12, 3, keys, "t").unwrap();
        let back = read_changes(dir.path()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].post_step, 3);
        assert_eq!(back[0].keys[0].key, "train.lr");
        let mut e = EvalSummary::default();
        let notes = report_notes(dir.path(), &mut e);
        assert_eq!(notes[0], "config changed at step 12: train.lr");
    }
}
