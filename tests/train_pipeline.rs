//! The training pipeline end to end on real MNIST (../shared/data), tiny
//! sizes: resume equals an uninterrupted run, a kill at any moment leaves a
//! loadable checkpoint, same seed → same numbers, NaN stops the run clearly.

mod common;

use common::{checkpoint, tiny_overrides};
use ldc_vae::config::Config;
use ldc_vae::models::ldc::PAPER_RECIPE;
use ldc_vae::train::{self, TrainOptions};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tch::Tensor;

fn tiny(extra: &[&str]) -> Config {
    let mut ov = tiny_overrides(&[
        "train.max_steps=12",
        "train.checkpoint_every=4",
        "ldc.sampler_refine_steps=5",
    ]);
    // The SVGD sampler this test was written for (it checks the KDE's τ²).
    ov.extend([PAPER_RECIPE.to_string()]);
    ov.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Some("mnist-cpu"), None, &ov).unwrap()
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

fn step_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn assert_same_state(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut keys: Vec<_> = a.keys().collect();
    keys.sort();
    assert_eq!(a.len(), b.len());
    for k in keys {
        if k == "meta.wall_s" {
            continue;
        }
        assert!(a[k].allclose(&b[k], 0.0, 0.0, true), "tensor `{k}` differs");
    }
}

#[test]
fn resume_equals_uninterrupted_and_same_seed_same_numbers() {
    let _rng = ldc_vae::rng::exclusive();
    let cfg = tiny(&[]);
    let root = tempfile::tempdir().unwrap();
    let full = root.path().join("full");
    let out = train::train(&cfg, &full, &quiet()).unwrap();
    assert!(out.complete);
    assert_eq!(out.progress.step, 12);
    assert_eq!(out.progress.post_step, 5);

    // Same seed again: identical metrics and weights.
    let again = root.path().join("again");
    train::train(&cfg, &again, &quiet()).unwrap();
    assert_eq!(step_lines(&full), step_lines(&again));
    assert_same_state(&checkpoint(&full), &checkpoint(&again));

    // Stop after 5 steps (mid-interval), resume to the end (including the post phase in two parts).
    let parts = root.path().join("parts");
    let o = train::train(
        &cfg,
        &parts,
        &TrainOptions {
            stop_after: Some(5),
            ..quiet()
        },
    )
    .unwrap();
    assert!(!o.complete);
    assert_eq!(o.progress.step, 5);
    let o = train::train(
        &cfg,
        &parts,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert!(o.complete);
    assert_eq!(step_lines(&full), step_lines(&parts));
    assert_same_state(&checkpoint(&full), &checkpoint(&parts));

    // A different seed gives different numbers.
    let other = root.path().join("other");
    train::train(&tiny(&["seed=1"]), &other, &quiet()).unwrap();
    assert_ne!(step_lines(&full), step_lines(&other));

    // Sampler-only continuation of a finished run adds post-training steps.
    let p = train::extend_post_training(&full, 3, None, &[], true).unwrap();
    assert_eq!(p.post_step, 8);

    // `--set` on a sampler-only continuation applies and is recorded in the
    // run's config; keys that would change the saved nets are refused.
    let e =
        train::extend_post_training(&full, 1, None, &["net.width=0.125".into()], true).unwrap_err();
    assert!(format!("{e:#}").contains("net.width=0.125"), "{e:#}");
    let e = train::extend_post_training(&full, 1, None, &["ldc.sampler_net=mlp".into()], true)
        .unwrap_err();
    assert!(format!("{e:#}").contains("ldc.sampler_net"), "{e:#}");
    let before = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let saved_cfg = || ldc_vae::run_dir::read_config(&full, &[]).unwrap();
    // Half the preset's refinement KDE width, and the other leave-one-out choice.
    let (half, loo) = {
        let l = saved_cfg().ldc;
        (l.sampler_refine_kde_scale / 2.0, !l.sampler_leave_one_out)
    };
    let ov = [
        format!("ldc.sampler_refine_kde_scale={half}"),
        format!("ldc.sampler_leave_one_out={loo}"),
    ];
    let p = train::extend_post_training(&full, 2, None, &ov, true).unwrap();
    assert_eq!(p.post_step, 10);
    let saved = saved_cfg();
    assert_eq!(saved.ldc.sampler_refine_kde_scale, half);
    assert_eq!(saved.ldc.sampler_leave_one_out, loo);
    // ... and it took effect: τ² of the new steps is half the earlier steps'.
    let tau2 = |line: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["kde_tau2"].as_f64().unwrap()
    };
    let after = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let new_lines: Vec<&str> = after.lines().skip(before.lines().count()).collect();
    let old_last = before.lines().last().unwrap();
    assert_eq!(new_lines.len(), 2);
    let ratio = tau2(new_lines[0]) / tau2(old_last);
    assert!((0.3..0.7).contains(&ratio), "τ² ratio {ratio}");
}

#[test]
fn refusing_to_overwrite_and_bad_resume_are_clear_errors() {
    let _rng = ldc_vae::rng::exclusive();
    let cfg = tiny(&["train.max_steps=2", "ldc.sampler_refine_steps=0"]);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    train::train(&cfg, &dir, &quiet()).unwrap();
    let e = train::train(&cfg, &dir, &quiet()).unwrap_err();
    assert!(format!("{e:#}").contains("already holds a run"), "{e:#}");
    // A truncated checkpoint is named in the error.
    let ck = dir.join(ldc_vae::run_dir::CHECKPOINT);
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let e = train::train(
        &cfg,
        &dir,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("checkpoint") && msg.contains("checkpoint.safetensors"),
        "{msg}"
    );
    let e = train::train(
        &cfg,
        &root.path().join("nothing"),
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("config.toml"), "{e:#}");
}

#[test]
fn nan_loss_stops_with_step_and_keeps_last_checkpoint() {
    let _rng = ldc_vae::rng::exclusive();
    // A learning rate of 1e30 blows the weights up to inf within a few steps.
    let cfg = tiny(&[
        "train.lr=1e30",
        "train.max_steps=40",
        "train.checkpoint_every=1",
        "ldc.sampler_refine_steps=0",
    ]);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let e = train::train(&cfg, &dir, &quiet()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("diverged") && msg.contains("step "), "{msg}");
    // The last good checkpoint is still there and loads.
    let (_, p) = ldc_vae::run_dir::read_checkpoint(&dir).unwrap();
    assert!(p.step < 40);

    // rollback: resumes from the checkpoint with a smaller lr instead of stopping.
    let cfg = tiny(&[
        "train.lr=1e30",
        "train.max_steps=40",
        "train.checkpoint_every=1",
        "ldc.sampler_refine_steps=0",
        "train.on_nan=rollback",
        "train.nan_lr_factor=1e-28",
    ]);
    let dir = root.path().join("rollback");
    let o = train::train(&cfg, &dir, &quiet()).unwrap();
    assert!(o.complete, "rollback did not recover");
}

#[test]
fn killed_at_any_moment_leaves_a_loadable_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let bin = env!("CARGO_BIN_EXE_ldc-vae");
    let args = [
        "train",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        "net.width=0.0625",
        "--set",
        "net.channels_last=false",
        "--set",
        "data.train_limit=400",
        "--set",
        "data.val_size=100",
        "--set",
        "train.batch_size=20",
        "--set",
        "train.max_steps=200",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "ldc.sampler_particles=40",
        "--set",
        "ldc.kde_bank=100",
        "--set",
        "threads=1",
        "--log",
        "error",
    ];
    let mut resumed = false;
    for i in 0..4u64 {
        let mut cmd = Command::new(bin);
        if resumed {
            cmd.args(["train", "--resume", dir.to_str().unwrap(), "--log", "error"]);
        } else {
            cmd.args(args);
        }
        let before = ldc_vae::run_dir::read_checkpoint(&dir)
            .map(|(_, p)| p.step)
            .unwrap_or(0);
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until this process has written checkpoints, then kill it at an
        // arbitrary moment (checkpoints are written every step, so likely mid-write).
        let t0 = std::time::Instant::now();
        while ldc_vae::run_dir::read_checkpoint(&dir)
            .map(|(_, p)| p.step)
            .unwrap_or(0)
            <= before + 1
        {
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "training wrote no checkpoint in 180 s"
            );
            assert!(child.try_wait().unwrap().is_none(), "training exited early");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(37 * i + 11));
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        let (t, p) =
            ldc_vae::run_dir::read_checkpoint(&dir).expect("checkpoint unreadable after kill");
        assert!(t.contains_key("encoder.fc.weight"));
        assert!(p.step > before && p.step <= 200);
        resumed = true;
    }
    assert!(resumed, "no checkpoint was ever written");
}

/// The preset's OT sampler, refined in two parts (`train --resume RUN --only
/// sampler --steps 3`, twice), ends bit-identical to one refinement of 6
/// steps: the bank's dual potential travels with the checkpoint (with it
/// reset to zero at the second part the sampler would differ).
#[test]
fn ot_refinement_in_two_parts_equals_one() {
    let _rng = ldc_vae::rng::exclusive();
    let ov = tiny_overrides(&["train.max_steps=4", "ldc.sampler_refine_steps=0"]);
    let cfg = Config::load(Some("mnist-cpu"), None, &ov).unwrap();
    assert_eq!(
        cfg.ldc.sampler_objective,
        ldc_vae::models::ldc::SamplerObjective::Ot,
        "the preset's sampler"
    );
    let root = tempfile::tempdir().unwrap();
    let (one, two) = (root.path().join("one"), root.path().join("two"));
    for d in [&one, &two] {
        assert!(train::train(&cfg, d, &quiet()).unwrap().complete);
    }
    assert_eq!(
        train::extend_post_training(&one, 6, None, &[], true)
            .unwrap()
            .post_step,
        6
    );
    train::extend_post_training(&two, 3, None, &[], true).unwrap();
    let mid = checkpoint(&two);
    let g = mid
        .get("ot_potential")
        .expect("the checkpoint holds the potential");
    assert!(g.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0);
    train::extend_post_training(&two, 3, None, &[], true).unwrap();
    assert_same_state(&checkpoint(&one), &checkpoint(&two));
}

/// `eval --on validation` scores on the run's held-out validation images and
/// writes `eval-validation.json` (figures `validation-*.png`) beside the test
/// set's `eval.json`, which it leaves alone (issue 27's protocol).
#[test]
fn eval_on_validation_writes_its_own_file() {
    use ldc_vae::eval::run::{evaluate, EvalOptions, ScoreOn};
    let _rng = ldc_vae::rng::exclusive();
    let ov = tiny_overrides(&["model=rae-l2", "train.max_steps=4"]);
    let cfg = Config::load(Some("mnist-cpu"), None, &ov).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    assert!(train::train(&cfg, &dir, &quiet()).unwrap().complete);
    let opts = |on| EvalOptions {
        fid_samples: None,
        no_fid: true,
        no_tsne: true,
        device: None,
        quiet: true,
        allow_unfinished: false,
        on,
    };
    let test = evaluate(&dir, &opts(ScoreOn::Test)).unwrap();
    let before = std::fs::read(dir.join("eval.json")).unwrap();
    let val = evaluate(&dir, &opts(ScoreOn::Validation)).unwrap();
    assert_eq!(std::fs::read(dir.join("eval.json")).unwrap(), before);
    let read = ldc_vae::run_dir::EvalSummary::read_named(&dir, "eval-validation.json").unwrap();
    // (serde_json's float parsing may differ from the written value in the last digit.)
    assert_eq!(
        (read.scored_on, read.test_mse),
        (val.scored_on.clone(), val.test_mse)
    );
    assert_eq!(test.scored_on.as_deref(), Some("test"));
    assert_eq!(val.scored_on.as_deref(), Some("validation"));
    // Other images: other reconstruction errors; 100 held-out images scored.
    assert_ne!(test.test_mse, val.test_mse);
    assert_eq!(val.latent_samples, Some(100));
    assert_eq!(val.figures["recon"], "validation-recon.png");
    assert!(dir.join("validation-recon.png").exists());
    assert!(val.latent_knn_acc.is_some_and(|a| (0.0..=1.0).contains(&a)));
}
