//! Data-parallel training over MPI (feature `mpi`, issue 8): `mpirun -np 2`
//! against one process on the same global batch, resume across launches, and
//! workers that diverge, die or hang. Needs Open MPI's `mpirun` on PATH
//! (scripts/test.sh installs it); run with `cargo test --release --features mpi
//! --test distributed`.
#![cfg(feature = "mpi")]

mod common;

use common::tiny_overrides;
use ldc_vae::models::ldc::PAPER_RECIPE;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tch::Kind;

const BIN: &str = env!("CARGO_BIN_EXE_ldc-vae");

/// Tiny real-MNIST runs (../shared/data). The learning rate is small for a
/// reason: the pre-BatchNorm conv biases of the reference architecture have an
/// exactly zero gradient, which float rounding makes ±1e-9, and Adam turns
/// that into a full ±lr step whose sign depends on the reduction order. At
/// lr = 1e-6 those steps stay under the 1e-4 tolerance (3e-6 did on most
/// CPUs but gave 2e-4 on the encoder's Φ norm on one); everything else agrees
/// to ~1e-6 whatever the rate. (With PyTorch's init, `net.init = pytorch`, the
/// conv weights are 2.45× smaller than tch's, so the same ±lr bias step moves
/// the pre-BN activations 2.45× more: 1e-5 gave 4e-4 on the encoder's Φ norm.)
fn sets(model: &str, extra: &[&str]) -> Vec<String> {
    let mut v = tiny_overrides(&[
        "train.max_steps=2",
        "train.lr=1e-6",
        "ldc.sampler_refine_steps=2",
        "baselines.two_stage_steps=2",
    ]);
    // The SVGD sampler in both phases: after 2 steps at this rate the encoder's
    // latents are too narrow for the MMD refinement's whitened bank, whose
    // direction is then ~1e-7 and compares only rounding noise between worker counts.
    v.extend([PAPER_RECIPE.to_string()]);
    v.push(format!("model={model}"));
    v.extend(extra.iter().map(|s| s.to_string()));
    v.into_iter().flat_map(|s| ["--set".into(), s]).collect()
}

fn mpirun(np: usize, args: &[String], env: &[(&str, &str)]) -> (Output, Duration) {
    let t = Instant::now();
    let mut c = Command::new("mpirun");
    c.args(["-np", &np.to_string(), "--oversubscribe", BIN])
        .args(args)
        // Open MPI refuses root without these (CI containers run as root).
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect(
        "cannot start `mpirun`: install Open MPI (scripts/test.sh does: Debian openmpi-bin)",
    );
    (out, t.elapsed())
}

fn single(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn train_args(model: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "train".into(),
        "--preset".into(),
        "mnist-cpu".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    a.extend(sets(model, extra));
    a
}

use common::checkpoint as state;

/// The tensors a checkpoint entry is compared with in scale: an optimizer's
/// moments together (`adam_encoder.m`), else one net (`encoder`). A pre-BatchNorm
/// bias has a zero gradient, so its moments hold only rounding noise, which is
/// small next to the gradients of the same net but not next to itself.
fn scale_group(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    if parts[0].starts_with("adam") && parts.len() > 2 {
        format!("{}.{}", parts[0], parts[1])
    } else {
        parts[0].to_string()
    }
}

/// Every tensor of two checkpoints agrees to 1e-4, relative to its group's
/// largest magnitude when that is above 1.
fn assert_close_states(a: &Path, b: &Path, what: &str, skip: &dyn Fn(&str) -> bool) {
    let (a, b) = (state(a), state(b));
    assert_eq!(a.len(), b.len(), "{what}: different checkpoint keys");
    let mut scales: HashMap<String, f64> = HashMap::new();
    for (k, t) in &a {
        if t.numel() > 0 {
            let m = t.to_kind(Kind::Double).abs().max().double_value(&[]);
            let e = scales.entry(scale_group(k)).or_insert(1.0);
            *e = e.max(m);
        }
    }
    for (k, ta) in &a {
        if k == "meta.wall_s" || skip(k) {
            continue;
        }
        let tb = b.get(k).unwrap_or_else(|| panic!("{what}: `{k}` missing"));
        assert_eq!(ta.size(), tb.size(), "{what}: `{k}` shape");
        if ta.numel() == 0 {
            continue;
        }
        let (ta, tb) = (ta.to_kind(Kind::Double), tb.to_kind(Kind::Double));
        let scale = scales[&scale_group(k)];
        let diff = (&ta - &tb).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale,
            "{what}: `{k}` differs by {diff:e} (scale {scale})"
        );
    }
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Same step statistics (Stein direction norms, σ², bandwidths, losses) to 1e-4 relative.
fn assert_close_metrics(a: &Path, b: &Path, what: &str, skip: &dyn Fn(&str) -> bool) {
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len(), "{what}: metrics lines");
    for (x, y) in ma.iter().zip(&mb) {
        if skip(x["kind"].as_str().unwrap_or("")) {
            continue;
        }
        for (k, v) in x.as_object().unwrap() {
            let Some(v) = v.as_f64() else { continue };
            if k == "step" || k == "epoch" {
                continue;
            }
            let w = y[k].as_f64().unwrap();
            assert!(
                (v - w).abs() <= 1e-4 * v.abs().max(1e-3),
                "{what}: {} step {}: `{k}` {v} vs {w}",
                x["kind"],
                x["step"]
            );
        }
    }
}

#[test]
fn two_workers_give_the_single_process_stein_directions_and_weights() {
    let root = tempfile::tempdir().unwrap();
    let one = root.path().join("one");
    // One process, BatchNorm statistics per half-batch: what two workers compute.
    let o = single(&train_args("ldc", &one, &["train.bn_groups=2"]));
    assert!(o.status.success(), "{}", text(&o));

    // Two workers, stopped after one step and resumed in a second launch:
    // rank 0 writes the checkpoint, both read it back.
    let two = root.path().join("two");
    let mut first = train_args("ldc", &two, &[]);
    first.extend(["--stop-after".into(), "1".into()]);
    let (o, _) = mpirun(2, &first, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let saved = std::fs::read_to_string(two.join("config.toml")).unwrap();
    assert!(
        saved.contains("bn_groups = 2"),
        "the run records per-worker BatchNorm"
    );
    let resume: Vec<String> = vec!["train".into(), "--resume".into(), two.display().to_string()];
    let (o, _) = mpirun(2, &resume, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert_eq!(
        out.matches("trained ldc for 2 steps").count(),
        1,
        "only rank 0 reports: {out}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["workers"], 2);

    // Joint steps and sampler-only steps: Φ norms, σ², bandwidths agree, and so
    // do all weights, BatchNorm statistics, Adam moments and the KDE bank.
    assert_close_metrics(&one, &two, "ldc", &|_| false);
    assert_close_states(&one, &two, "ldc", &|_| false);

    // The comparison can fail: without per-half BatchNorm the single process differs.
    let whole = root.path().join("whole");
    let o = single(&train_args("ldc", &whole, &[]));
    assert!(o.status.success(), "{}", text(&o));
    let r = std::panic::catch_unwind(|| {
        assert_close_states(&whole, &two, "whole-batch BN", &|_| false)
    });
    assert!(
        r.is_err(),
        "whole-batch BatchNorm should not match two workers"
    );
}

/// What the comparison leaves out for `model`. The two-stage VAE's second
/// stage (post-training phase, `stage2`/`adam_stage2` tensors) reads the
/// stage-one encoder in inference mode, where the rounding-driven ±lr steps of
/// the pre-BN biases (see `sets`) no longer cancel: its latents differ by
/// ~1e-5 relative, and its loss, in the thousands, by ~2e-4 after two Adam
/// steps (measured). It must still run on two workers; stage one is compared.
fn stage2_excluded(model: &str) -> Box<dyn Fn(&str) -> bool> {
    if model == "two-stage-vae" {
        Box::new(|k: &str| k == "post" || k.starts_with("stage2") || k.starts_with("adam_stage2"))
    } else {
        Box::new(|_: &str| false)
    }
}

#[test]
fn every_baseline_trains_on_two_workers() {
    let root = tempfile::tempdir().unwrap();
    for model in ldc_vae::models::keys().filter(|m| *m != "ldc") {
        let one = root.path().join(format!("{model}-one"));
        let two = root.path().join(format!("{model}-two"));
        let o = single(&train_args(model, &one, &["train.bn_groups=2"]));
        assert!(o.status.success(), "{model}: {}", text(&o));
        let (o, _) = mpirun(2, &train_args(model, &two, &[]), &[]);
        assert!(o.status.success(), "{model}: {}", text(&o));
        if model == "wae-mmd" {
            // Its MMD is a pair statistic: on workers it is the mean of the
            // per-shard MMDs, a different objective (docs/DISTRIBUTED.md).
            assert!(two.join("summary.json").exists());
            continue;
        }
        // Means over the batch: averaged gradients are the single-process ones.
        assert_close_metrics(&one, &two, model, &*stage2_excluded(model));
        assert_close_states(&one, &two, model, &*stage2_excluded(model));
    }
}

#[test]
fn a_nan_on_one_worker_stops_every_worker() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nan");
    let (o, took) = mpirun(
        2,
        &train_args("ldc", &dir, &["train.max_steps=6"]),
        &[("LDC_VAE_FAULT", "nan:1:2")],
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        out.contains("training diverged") && out.contains("step 2"),
        "{out}"
    );
    // The last good checkpoint is intact and loadable.
    assert_eq!(ldc_vae::run_dir::read_checkpoint(&dir).unwrap().1.step, 0);
}

/// Two workers where worker 1 meets `fault` at step 2 of 50: the run must
/// end with an error within 60 s; returns its output.
fn run_with_fault(fault: &str, timeout_s: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fault");
    let (o, took) = mpirun(
        2,
        &train_args("ldc", &dir, &["train.max_steps=50"]),
        &[("LDC_VAE_FAULT", fault), ("LDC_VAE_MPI_TIMEOUT", timeout_s)],
    );
    let out = text(&o);
    assert!(!o.status.success(), "{fault}: {out}");
    assert!(
        took < Duration::from_secs(60),
        "{fault}: took {took:?}: {out}"
    );
    out
}

#[test]
fn a_killed_worker_stops_the_others_with_an_error() {
    let out = run_with_fault("kill:1:2", "20");
    // Open MPI notices the death and stops rank 0.
    assert!(
        out.contains("rank 1") && out.contains("signal 9"),
        "the error names the dead worker: {out}"
    );
}

#[test]
fn a_hung_worker_trips_the_watchdog() {
    let out = run_with_fault("hang:1:2", "5");
    assert!(
        out.contains("worker 0 of 2") && out.contains("died or hangs"),
        "{out}"
    );
}
