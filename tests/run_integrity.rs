//! Issue 28, runs you cannot corrupt, through the real binary: a run killed
//! (SIGKILL) in its post-training phase resumes bit-identical to an
//! uninterrupted one; `train --resume` refuses keys that change the
//! trajectory unless `--force-config`, which is recorded and reported;
//! `eval`, `sample` and `report` refuse an unfinished run unless
//! `--allow-unfinished`, which marks it; a NaN in the post-training phase
//! follows `train.on_nan`; a checkpoint with a flipped byte is an error naming
//! the file; nothing is written under a data folder.

mod common;

use common::tiny_overrides;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

const BIN: &str = env!("CARGO_BIN_EXE_ldc-vae");

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `--set` pairs of a tiny run of `mnist-cpu` with `extra` on top.
fn sets(extra: &[&str]) -> Vec<String> {
    tiny_overrides(extra)
        .into_iter()
        .flat_map(|o| ["--set".to_string(), o])
        .collect()
}

fn cmd(args: &[String]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).args(["--log", "warn"]);
    c
}

fn run(args: &[String]) -> Output {
    cmd(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[String]) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed:\n{}", text(&o));
    text(&o)
}

fn fails(args: &[String]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail:\n{}", text(&o));
    text(&o)
}

fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = s(&["train", "--out", dir.to_str().unwrap()]);
    a.extend(sets(extra));
    a
}

fn metrics_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// `metrics.jsonl` with wall-time fields left out (none is written today;
/// any key naming time would be).
fn metrics_sans_time(dir: &Path) -> Vec<serde_json::Value> {
    metrics_lines(dir)
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.retain(|k, _| !(k.contains("wall") || k.contains("time") || k.ends_with("_s")));
            v
        })
        .collect()
}

fn checkpoint(dir: &Path) -> HashMap<String, Tensor> {
    ldc_vae::run_dir::read_checkpoint(dir).unwrap().0
}

/// Every tensor equal (NaN equal to NaN), `meta.wall_s` aside.
fn assert_same_checkpoint(a: &Path, b: &Path, what: &str) {
    let (a, b) = (checkpoint(a), checkpoint(b));
    let mut ka: Vec<&String> = a.keys().collect();
    let mut kb: Vec<&String> = b.keys().collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb, "{what}: checkpoint keys");
    for k in ka {
        if k == "meta.wall_s" {
            continue;
        }
        let (x, y) = (&a[k], &b[k]);
        let same = x.equal(y)
            || (x.is_floating_point() && x.size() == y.size() && x.allclose(y, 0.0, 0.0, true));
        assert!(same, "{what}: tensor `{k}` differs");
    }
}

/// Post-training lines in `metrics.jsonl` so far.
fn post_lines(dir: &Path) -> usize {
    metrics_lines(dir)
        .iter()
        .filter(|l| l.contains("\"kind\":\"post\""))
        .count()
}

/// Item 2: for each configuration, an uninterrupted run; the same run
/// killed (SIGKILL) once `metrics.jsonl` shows it inside the post-training
/// phase, then `train --resume`: every checkpoint tensor and every metrics
/// line the same.
#[test]
fn killed_in_the_post_training_phase_resumes_bit_identical() {
    let root = tempfile::tempdir().unwrap();
    let post = 80;
    let cases: [(&str, Vec<String>); 3] = [
        (
            "ldc (ot recipe)",
            s(&[
                &format!("ldc.sampler_refine_steps={post}"),
                "ldc.refine_bank_size=200",
                "ldc.sampler_hidden=64",
            ]),
        ),
        (
            "ldc (paper recipe)",
            s(&[
                "ldc.recipe=paper",
                &format!("ldc.sampler_refine_steps={post}"),
            ]),
        ),
        (
            "rae-l2 + sampler.kind=ot",
            s(&[
                "model=rae-l2",
                "sampler.kind=ot",
                &format!("sampler.steps={post}"),
                "sampler.particles=40",
                "sampler.bank_size=200",
                "sampler.hidden=64",
            ]),
        ),
    ];
    for (i, (what, extra)) in cases.iter().enumerate() {
        let mut ov = vec!["train.max_steps=6", "train.checkpoint_every=1"];
        ov.extend(extra.iter().map(String::as_str));
        let full = root.path().join(format!("full{i}"));
        let killed = root.path().join(format!("killed{i}"));
        ok(&train_args(&full, &ov));

        let mut child = cmd(&train_args(&killed, &ov))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while post_lines(&killed) < 3 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{what}: training ended before it could be killed in the post-training phase"
            );
            assert!(t0.elapsed() < Duration::from_secs(300), "{what}: hung");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (_, p) = ldc_vae::run_dir::read_checkpoint(&killed).unwrap();
        assert!(
            p.step == 6 && p.post_step > 0 && p.post_step < post,
            "{what}: killed at step {} post-training step {}: not inside the post-training phase",
            p.step,
            p.post_step
        );
        assert!(!killed.join("summary.json").exists());
        ok(&s(&["train", "--resume", killed.to_str().unwrap()]));
        assert_same_checkpoint(&full, &killed, what);
        let (mf, mk) = (metrics_sans_time(&full), metrics_sans_time(&killed));
        assert_eq!(mf.len(), 6 + post as usize, "{what}: metrics lines");
        assert_eq!(mf, mk, "{what}: metrics.jsonl differs");
    }
}

/// Items 1 and 3: resume refuses keys that change the trajectory and
/// records forced ones; an unfinished run (joint phase or post-training
/// phase missing) is refused by eval, sample and report, and marked with
/// --allow-unfinished.
#[test]
fn unfinished_runs_and_config_changes_are_refused_or_marked() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let ad = a.to_str().unwrap();
    let ov = [
        "train.max_steps=6",
        "ldc.sampler_refine_steps=4",
        "ldc.refine_bank_size=200",
        "eval.latent_samples=100",
    ];
    let mut first = train_args(&a, &ov);
    first.extend(s(&["--stop-after", "3"]));
    let out = ok(&first);
    assert!(out.contains("unfinished"), "{out}");

    // The joint phase is missing.
    let resume_cmd = format!("ldc-vae train --resume {ad}");
    for c in [
        s(&["eval", ad, "--no-fid", "--no-tsne"]),
        s(&[
            "sample",
            ad,
            "--n",
            "4",
            "--out",
            root.path().join("g.png").to_str().unwrap(),
        ]),
    ] {
        let e = fails(&c);
        assert!(
            e.contains("joint training stopped at step 3 of 6")
                && e.contains(&resume_cmd)
                && e.contains("--allow-unfinished"),
            "{c:?}: {e}"
        );
    }
    ok(&s(&[
        "eval",
        ad,
        "--no-fid",
        "--no-tsne",
        "--allow-unfinished",
    ]));
    let e = ldc_vae::run_dir::EvalSummary::read(&a).unwrap();
    assert!(e.unfinished);
    assert_eq!(
        e.unfinished_phase.as_deref(),
        Some("joint training stopped at step 3 of 6")
    );
    let rep = root.path().join("report");
    let repd = rep.to_str().unwrap();
    let e = fails(&s(&["report", ad, "--out", repd]));
    assert!(e.contains("unfinished") && e.contains(&resume_cmd), "{e}");
    ok(&s(&["report", ad, "--out", repd, "--allow-unfinished"]));
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(md.contains("| a (unfinished) |"), "{md}");
    assert!(md.contains("paper Fig. 3 (unfinished)"), "{md}");
    assert!(
        md.contains("(unfinished: joint training stopped at step 3 of 6)"),
        "{md}"
    );

    // Resume with a key that changes the trajectory: refused, naming it.
    let mut r = s(&["train", "--resume", ad]);
    r.extend(s(&["--set", "train.lr=0.1", "--set", "threads=1"]));
    let e = fails(&r);
    assert!(
        e.contains("train.lr: 0.0005 -> 0.1") && e.contains("--force-config"),
        "{e}"
    );
    assert!(!e.contains("threads:"), "{e}");
    let e = fails(&s(&["train", "--resume", ad, "--seed", "3"]));
    assert!(e.contains("seed: 0 -> 3"), "{e}");
    // Allowed keys pass; --force-config records the rest.
    let mut r = s(&["train", "--resume", ad, "--force-config"]);
    r.extend(s(&[
        "--set",
        "train.max_steps=8",
        "--set",
        "train.checkpoint_every=2",
    ]));
    ok(&r);
    let changes = ldc_vae::run_state::read_changes(&a).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].step, changes[0].post_step), (3, 0));
    let keys: Vec<&str> = changes[0].keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["train.max_steps"]);
    assert_eq!(
        (
            changes[0].keys[0].old.as_str(),
            changes[0].keys[0].new.as_str()
        ),
        ("6", "8")
    );
    assert!(ldc_vae::run_state::status(&a).unwrap().is_none());
    assert_eq!(
        ldc_vae::run_dir::read_checkpoint(&a).unwrap().1.step,
        8,
        "the forced key took effect"
    );
    // The run is finished: the stale unfinished evaluation is refused by
    // report until evaluated again; then the report shows the change.
    let e = fails(&s(&["report", ad, "--out", repd]));
    assert!(
        e.contains("eval.json was made from the unfinished run"),
        "{e}"
    );
    ok(&s(&["eval", ad, "--no-fid", "--no-tsne"]));
    assert!(!ldc_vae::run_dir::EvalSummary::read(&a).unwrap().unfinished);
    ok(&s(&["report", ad, "--out", repd]));
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(
        md.contains("config changed at step 3: train.max_steps"),
        "{md}"
    );
    assert!(!md.contains("(unfinished"), "{md}");

    // The post-training phase is missing (--skip-post).
    let b = root.path().join("b");
    let mut t = train_args(&b, &ov);
    t.push("--skip-post".into());
    ok(&t);
    let e = fails(&s(&["eval", b.to_str().unwrap(), "--no-fid", "--no-tsne"]));
    assert!(
        e.contains("post-training phase stopped at step 0 of 4")
            && e.contains(&format!("ldc-vae train --resume {}", b.display())),
        "{e}"
    );
    ok(&s(&["train", "--resume", b.to_str().unwrap()]));
    assert!(ldc_vae::run_state::status(&b).unwrap().is_none());
}

/// Item 4: a NaN in the post-training phase stops the run (`on_nan = stop`,
/// the last checkpoint kept) or rolls back and goes on (`rollback`).
#[test]
fn nan_in_the_post_training_phase_follows_on_nan() {
    let root = tempfile::tempdir().unwrap();
    let ov = [
        "train.max_steps=4",
        "train.checkpoint_every=1",
        "ldc.sampler_refine_steps=6",
        "ldc.refine_bank_size=200",
    ];
    let stop = root.path().join("stop");
    let o = cmd(&train_args(&stop, &ov))
        .env("LDC_VAE_FAULT", "postnan:0:3")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("training diverged: post-training step 3") && out.contains("checkpoint"),
        "{out}"
    );
    let (_, p) = ldc_vae::run_dir::read_checkpoint(&stop).unwrap();
    assert_eq!((p.step, p.post_step), (4, 3));

    let mut ov2 = ov.to_vec();
    ov2.push("train.on_nan=rollback");
    let rb = root.path().join("rollback");
    let o = cmd(&train_args(&rb, &ov2))
        .env("LDC_VAE_FAULT", "postnan:0:3")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("rolled back to step 4 (post-training step 3)"),
        "{out}"
    );
    assert!(rb.join("summary.json").exists());
    // Each post-training step once in the log: the rolled-back line is gone.
    let steps: Vec<u64> = metrics_sans_time(&rb)
        .iter()
        .filter(|v| v["kind"] == "post")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (0..6).collect::<Vec<_>>());
}

/// Item 5: a checkpoint with one flipped byte in its tensor data is an
/// error naming the file; one written without a digest still loads.
#[test]
fn a_flipped_byte_in_a_checkpoint_is_an_error_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    ok(&train_args(
        &dir,
        &[
            "train.max_steps=2",
            "ldc.sampler_refine_steps=1",
            "ldc.refine_bank_size=200",
        ],
    ));
    let ck = dir.join("checkpoint.safetensors");
    let good = std::fs::read(&ck).unwrap();
    let (tensors, _) = ldc_vae::run_dir::read_checkpoint(&dir).unwrap();
    // The tensor data starts after the 8-byte header length and the header.
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let data = 8 + n;
    for at in [data, data + (good.len() - data) / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(&ck, &bad).unwrap();
        let e = format!("{:#}", ldc_vae::run_dir::read_checkpoint(&dir).unwrap_err());
        assert!(
            e.contains(ck.to_str().unwrap()) && e.contains("damaged"),
            "byte {at}: {e}"
        );
    }
    // The binary says so too.
    let e = fails(&s(&[
        "eval",
        dir.to_str().unwrap(),
        "--no-fid",
        "--no-tsne",
    ]));
    assert!(
        e.contains("checkpoint.safetensors") && e.contains("damaged"),
        "{e}"
    );
    // An old checkpoint (no digest) loads, with a note.
    let mut list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&list, &ck).unwrap();
    let (back, p) = ldc_vae::run_dir::read_checkpoint(&dir).unwrap();
    assert_eq!(back.len(), list.len());
    assert_eq!(p.step, 2);
    let o = run(&s(&[
        "sample",
        dir.to_str().unwrap(),
        "--n",
        "4",
        "--out",
        root.path().join("g.png").to_str().unwrap(),
    ]));
    assert!(
        o.status.success() && text(&o).contains("no digest"),
        "{}",
        text(&o)
    );
}

/// Every file under `dir` with its size and modification time.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::metadata(&p).unwrap();
        if md.is_dir() {
            out.extend(tree(&p));
        }
        out.push((p, md.len(), md.modified().unwrap()));
    }
    out.sort();
    out
}

/// Item 6: a CelebA folder (150 real images, copied) is the same before and
/// after training and evaluating; the decoded-image cache is in
/// `LDC_VAE_CACHE`; an unwritable cache (FID statistics included) is a
/// warning, and the run goes on.
#[test]
fn nothing_is_written_under_the_data_folder() {
    let t = tempfile::tempdir().unwrap();
    let celeba =
        ldc_vae::data::find_dataset_dir("celeba", None).unwrap_or_else(|e| panic!("{e:#}"));
    let files =
        ldc_vae::data::images::list_images(&ldc_vae::data::celeba::image_dir(&celeba)).unwrap();
    let data = t.path().join("data");
    let img = data.join("celeba/img_align_celeba");
    std::fs::create_dir_all(&img).unwrap();
    for f in files.iter().take(150) {
        std::fs::copy(f, img.join(f.file_name().unwrap())).unwrap();
    }
    let before = tree(&data);
    let args = |out: &Path| {
        let mut a = s(&[
            "train",
            "--preset",
            "celeba-cpu",
            "--out",
            out.to_str().unwrap(),
        ]);
        for o in [
            format!("data.dir={}", data.display()),
            "data.val_size=20".into(),
            "net.width=0.0625".into(),
            "train.batch_size=20".into(),
            "train.max_steps=2".into(),
            "ldc.sampler_particles=20".into(),
            "ldc.kde_bank=40".into(),
            "ldc.sampler_refine_steps=1".into(),
            "eval.latent_samples=60".into(),
            "threads=1".into(),
        ] {
            a.push("--set".into());
            a.push(o);
        }
        a
    };
    let cache = t.path().join("cache");
    let run_in = |out: &Path, cache: &Path| {
        let o = cmd(&args(out))
            .env("LDC_VAE_CACHE", cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    run_in(&t.path().join("run1"), &cache);
    assert_eq!(tree(&data), before, "training wrote under the data folder");
    let cached: Vec<_> = std::fs::read_dir(cache.join("celeba-cache"))
        .unwrap()
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "the decoded images are cached in LDC_VAE_CACHE"
    );

    // An unwritable cache (a path under a regular file): warnings, no failure.
    let blocker = t.path().join("not-a-folder");
    std::fs::write(&blocker, "x").unwrap();
    let bad = blocker.join("cache");
    let run2 = t.path().join("run2");
    let out = run_in(&run2, &bad);
    assert!(out.contains("CelebA cache not written"), "{out}");
    let o = cmd(&s(&[
        "eval",
        run2.to_str().unwrap(),
        "--fid-samples",
        "4",
        "--no-tsne",
    ]))
    .env("LDC_VAE_CACHE", &bad)
    .output()
    .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("not cached"), "{out}");
    let e = ldc_vae::run_dir::EvalSummary::read(&run2).unwrap();
    assert!(e.rec_fid.is_some_and(f64::is_finite), "{e:?}");
    assert_eq!(
        tree(&data),
        before,
        "evaluation wrote under the data folder"
    );
}
