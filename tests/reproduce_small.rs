//! `ldc-vae reproduce` end to end on tiny CIFAR-10 and CelebA subsets (cut
//! from the real files in `shared/data`): all eight models train a few steps,
//! are evaluated with a real (small) FID, and one report over both presets
//! fills the CelebA and CIFAR-10 cells of Table 1 from the runs; then one
//! model twice (`--seeds 2`), resumed, with mean ± std in its report.

use ldc_vae::data;
use ldc_vae::run_dir::EvalSummary;
use std::path::Path;
use std::process::Command;

const MODELS: [&str; 8] = [
    "ldc",
    "vae",
    "cv-vae",
    "wae-mmd",
    "two-stage-vae",
    "rae-l2",
    "rae-gp",
    "rae-sn",
];

/// `n` records of a CIFAR-10 batch file.
fn cut_cifar(src: &Path, dst: &Path, n: usize) {
    let b = std::fs::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    std::fs::write(dst, &b[..n * data::cifar::RECORD]).unwrap();
}

fn tiny_data(root: &Path) {
    let cifar = data::find_dataset_dir("cifar10", None).unwrap_or_else(|e| panic!("{e:#}"));
    let c = root.join("cifar10");
    std::fs::create_dir_all(&c).unwrap();
    let train = data::cifar::split_files(&cifar, data::Split::Train).unwrap();
    let test = data::cifar::split_files(&cifar, data::Split::Test).unwrap();
    cut_cifar(&train[0], &c.join("data_batch_1.bin"), 120);
    cut_cifar(&test[0], &c.join("test_batch.bin"), 40);

    let celeba = data::find_dataset_dir("celeba", None).unwrap_or_else(|e| panic!("{e:#}"));
    let img = data::celeba::image_dir(&celeba);
    let files = data::images::list_images(&img).unwrap();
    let dst = root.join("celeba/img_align_celeba");
    std::fs::create_dir_all(&dst).unwrap();
    for f in files.iter().take(150) {
        std::fs::copy(f, dst.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn reproduce_cifar10_and_celeba_tiny() {
    let t = tempfile::tempdir().unwrap();
    tiny_data(t.path());
    let weights = ldc_vae::eval::fid::default_weights_path().unwrap_or_else(|e| panic!("{e:#}"));
    let out = t.path().join("out");
    let data_dir = format!("data.dir={}", t.path().display());
    let mut args: Vec<String> = [
        "reproduce",
        "--preset",
        "cifar10-cpu,celeba-cpu",
        "--models",
        // The registry's models (the default adds rows whose keys may be
        // missing from this build: `ldc.recipe`, `sampler.kind`).
        "ldc,vae,cv-vae,wae-mmd,two-stage-vae,rae-l2,rae-gp,rae-sn",
        "--fid-samples",
        "10",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(out.display().to_string());
    for s in [
        data_dir.as_str(),
        "data.val_size=20",
        "train.batch_size=20",
        "train.max_steps=3",
        "ldc.sampler_particles=20",
        "ldc.kde_bank=40",
        "ldc.sampler_refine_steps=2",
        "baselines.two_stage_steps=3",
        "eval.latent_samples=60",
        "threads=1",
    ] {
        args.push("--set".into());
        args.push(s.into());
    }
    // FID statistics of the tiny test splits stay in the temp folder.
    let run_with = |args: &[String]| {
        let o = Command::new(env!("CARGO_BIN_EXE_ldc-vae"))
            .args(args)
            .env("LDC_VAE_FID_WEIGHTS", &weights)
            .env("LDC_VAE_CACHE", t.path().join("cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "reproduce failed:\n{err}");
        err
    };
    let reproduce = || run_with(&args);
    reproduce();

    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report/report.html")).unwrap();
    for (preset, dataset, col) in [
        ("cifar10-cpu", "cifar10", 2usize),
        ("celeba-cpu", "celeba", 1usize),
    ] {
        for m in MODELS {
            let dir = out.join(preset).join(m);
            let e = EvalSummary::read(&dir).unwrap_or_else(|e| panic!("{m}: {e:#}"));
            assert_eq!(e.dataset, dataset);
            assert_eq!(e.fid_samples, Some(10));
            let (rec, sample) = (e.rec_fid.unwrap(), e.sample_fid.unwrap());
            assert!(
                rec.is_finite() && sample.is_finite() && rec > 0.0,
                "{m}: {rec} {sample}"
            );
            assert!(e.rec_kid.is_some() && e.sample_precision.is_some(), "{m}");
            // Table 1's row: columns MNIST, CELEBA, CIFAR10, each Rec | Sample.
            // The run's row from its config (the cifar10/celeba presets give
            // LDC-VAE the paper's recipe, so its row is "LDC-VAE (paper recipe)").
            let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
            let title = ldc_vae::rows::row_of_run(Some(&config), m, ldc_vae::rows::ROWS).title;
            let row = md
                .lines()
                .find(|l| l.starts_with(&format!("| {title} |")))
                .unwrap_or_else(|| panic!("no row {title}"));
            let cells: Vec<&str> = row.split(" | ").collect();
            let rec_cell = cells[1 + 2 * col];
            let sample_cell = cells[2 + 2 * col];
            // One seed: the value alone, never bold.
            assert!(
                rec_cell.starts_with(&format!("{rec:.2} (")),
                "{title} {dataset} rec: {row}"
            );
            assert!(
                sample_cell.starts_with(&format!("{sample:.2}")),
                "{title} {dataset} sample: {row}"
            );
            // MNIST was not run: blank.
            assert!(cells[1].starts_with('–'), "{row}");
            assert!(
                md.contains(&format!("| {preset}-{m} |")),
                "run {preset}-{m} missing from the runs table"
            );
            for f in ["recon.png", "samples.png"] {
                assert!(
                    out.join("report")
                        .join(format!("{preset}-{m}"))
                        .join(f)
                        .is_file(),
                    "{preset}-{m}/{f}"
                );
            }
        }
    }
    // The data paragraph states the split and preprocessing of both sets.
    assert!(
        md.contains("CIFAR-10 binary batches") && md.contains("data_batch_1.bin"),
        "{md}"
    );
    assert!(
        md.contains("CelebA aligned JPEGs")
            && md.contains("fallback split")
            && md.contains("crop 140"),
        "{md}"
    );
    // The HTML embeds every run's figures (recon, samples, t-SNE, ...).
    assert!(html.contains("CELEBA") && html.contains("CIFAR10"));
    assert!(
        html.matches("data:image/png;base64,").count() >= 16 * 3,
        "figures missing from the HTML"
    );
    // The FID reference statistics were cached per data set, in the temp cache.
    let cached: Vec<String> = std::fs::read_dir(t.path().join("cache/fid-stats"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.iter().any(|f| f.starts_with("cifar10-test-n10-")),
        "{cached:?}"
    );
    assert!(
        cached
            .iter()
            .any(|f| f.starts_with("celeba-") && f.contains("-test-n10-")),
        "{cached:?}"
    );

    // Resumable: a second call trains and evaluates nothing.
    let err = reproduce();
    assert_eq!(
        err.matches("training already complete").count(),
        16,
        "{err}"
    );
    assert_eq!(err.matches("evaluation already done").count(), 16, "{err}");

    // Two seeds of one model: `<row>/seed0` and `seed1` with seeds 0 and 1
    // (the preset's plus k), one cell with mean ± std in the report, resumable.
    let out2 = t.path().join("out-seeds");
    let mut args2 = args.clone();
    let at = |a: &[String], k: &str| a.iter().position(|x| x == k).unwrap() + 1;
    args2[at(&args, "--preset")] = "cifar10-cpu".into();
    args2[at(&args, "--models")] = "vae".into();
    args2[at(&args, "--out")] = out2.display().to_string();
    args2.extend(["--seeds".to_string(), "2".to_string()]);
    run_with(&args2);
    let mut fids = Vec::new();
    for k in 0..2u64 {
        let dir = out2.join("vae").join(format!("seed{k}"));
        let cfg = ldc_vae::run_dir::read_config(&dir, &[]).unwrap();
        let preset = ldc_vae::config::Config::load(Some("cifar10-cpu"), None, &[]).unwrap();
        assert_eq!(cfg.seed, preset.seed + k, "seed{k}");
        fids.push(EvalSummary::read(&dir).unwrap().rec_fid.unwrap());
    }
    assert!(!out2.join("vae").join("eval.json").exists());
    let md2 = std::fs::read_to_string(out2.join("report/report.md")).unwrap();
    let row = md2.lines().find(|l| l.starts_with("| VAE |")).unwrap();
    let mean = (fids[0] + fids[1]) / 2.0;
    assert!(
        row.contains(&format!("| {mean:.2} ± ")) && row.contains(" (2) ("),
        "{row} (rec FIDs {fids:?})"
    );
    assert!(
        md2.contains("| seed0, seed1 | VAE | cifar10 | cifar10-cpu | 2 |"),
        "{md2}"
    );
    let err = run_with(&args2);
    assert_eq!(err.matches("training already complete").count(), 2, "{err}");
    assert_eq!(err.matches("evaluation already done").count(), 2, "{err}");
}
