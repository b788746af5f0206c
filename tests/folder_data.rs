//! Issue 29 through the real binary: a tiny run on `data.dataset = "folder"`
//! (600 generated 32×32 PNGs in two class sub-folders) trains, evaluates and
//! reports; its TensorBoard event file parses back (TFRecord lengths, both
//! CRCs, the Event protobufs) to exactly the values of `metrics.jsonl`;
//! `encode` writes latents and labels that NumPy reads (the peers' Python,
//! `$LDC_VAE_PEERS_PYTHON`); an empty folder, a corrupt image and mixed
//! sizes without a resize are errors naming the folder or the files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_ldc-vae");

/// A scratch folder under cargo's target tmp dir (kept for the test binary's
/// life: the shared run lives in one).
fn scratch() -> PathBuf {
    let t = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    t.keep()
}

fn run(args: &[&str], cache: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--log", "warn"])
        // Decoded-image caches of these folders stay out of the user's cache.
        .env("LDC_VAE_CACHE", cache)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str], cache: &Path) -> String {
    let o = run(args, cache);
    assert!(o.status.success(), "{args:?} failed:\n{}", text(&o));
    text(&o)
}

fn fails(args: &[&str], cache: &Path) -> String {
    let o = run(args, cache);
    assert!(!o.status.success(), "{args:?} should fail:\n{}", text(&o));
    text(&o)
}

/// A 32×32 RGB image of stripes, horizontal (class `h`) or vertical (`v`),
/// in a colour and phase of its own.
fn stripes(path: &Path, vertical: bool, i: u32) {
    let col = [
        (i * 37 % 200 + 55) as u8,
        (i * 91 % 200 + 55) as u8,
        (i * 53 % 200) as u8,
    ];
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        let t = if vertical { x } else { y };
        if (t + i % 8) / 4 % 2 == 1 {
            image::Rgb(col)
        } else {
            image::Rgb([20, 20, 20])
        }
    });
    img.save(path).unwrap();
}

/// `DIR/h/` and `DIR/v/`, 300 PNGs each.
fn class_folder(dir: &Path) {
    for (c, vertical) in [("h", false), ("v", true)] {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        for i in 0..300 {
            stripes(&dir.join(c).join(format!("{i:03}.png")), vertical, i);
        }
    }
}

/// `train` arguments of a tiny run on the folder `data`.
fn train_args(out: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "train".to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    let dir = format!("data.dir={}", data.display());
    let folder = ["data.dataset=folder", dir.as_str(), "data.image_size=32"];
    for o in common::tiny_overrides(&folder).iter().chain(
        extra
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        a.push("--set".into());
        a.push(o.clone());
    }
    a
}

struct Trained {
    root: PathBuf,
    run: PathBuf,
    cache: PathBuf,
}

/// The one tiny run the tests share (trained once per test binary).
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let root = scratch();
        let data = root.join("images");
        class_folder(&data);
        let (run_dir, cache) = (root.join("run"), root.join("cache"));
        let a = train_args(&run_dir, &data, &[]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&a, &cache);
        Trained {
            root,
            run: run_dir,
            cache,
        }
    })
}

#[test]
fn folder_run_trains_evaluates_and_reports() {
    let t = trained();
    let run = t.run.to_str().unwrap();
    let cfg = std::fs::read_to_string(t.run.join("config.toml")).unwrap();
    assert!(cfg.contains("dataset = \"folder\""), "{cfg}");
    ok(&["eval", run, "--no-fid", "--no-tsne"], &t.cache);
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(e["dataset"], "folder");
    let note = e["data_note"].as_str().unwrap();
    assert!(
        note.contains("600 files") && note.contains("2 classes") && note.contains("60 test"),
        "{note}"
    );
    // Labels from the sub-folders: the class histogram of samples is there.
    assert!(e["sample_classes"].is_object(), "{}", e["sample_classes"]);
    let rep = t.root.join("report");
    ok(&["report", run, "--out", rep.to_str().unwrap()], &t.cache);
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(
        md.contains("image folder") && md.contains("on folder"),
        "{md}"
    );
    // The decoded images were cached in LDC_VAE_CACHE, nothing beside the images.
    assert_eq!(
        std::fs::read_dir(t.cache.join("folder-cache"))
            .unwrap()
            .count(),
        1
    );
    let names: Vec<_> = std::fs::read_dir(t.root.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

// ------------------------------------------------------------ TensorBoard

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let x = b[*i];
        *i += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// A protobuf message's fields: (number, varint value or raw bytes).
fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let k = varint(b, &mut i);
        let (num, wire) = (k >> 3, k & 7);
        match wire {
            0 => out.push((num, varint(b, &mut i), vec![])),
            1 => {
                out.push((num, 0, b[i..i + 8].to_vec()));
                i += 8;
            }
            2 => {
                let n = varint(b, &mut i) as usize;
                out.push((num, 0, b[i..i + n].to_vec()));
                i += n;
            }
            5 => {
                out.push((num, 0, b[i..i + 4].to_vec()));
                i += 4;
            }
            w => panic!("wire type {w}"),
        }
    }
    out
}

/// TFRecord's masked CRC32C, as its spec writes it.
#[allow(clippy::manual_rotate)]
fn masked_crc(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(b);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

/// The records of a TFRecord file, every length and CRC checked.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let len_bytes = &b[i..i + 8];
        let n = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap());
        assert_eq!(
            crc,
            masked_crc(len_bytes),
            "length CRC of record {}",
            out.len()
        );
        let data = &b[i + 12..i + 12 + n];
        let crc = u32::from_le_bytes(b[i + 12 + n..i + 16 + n].try_into().unwrap());
        assert_eq!(crc, masked_crc(data), "data CRC of record {}", out.len());
        out.push(data.to_vec());
        i += 16 + n;
    }
    assert_eq!(i, b.len());
    out
}

#[test]
fn tensorboard_events_hold_every_metrics_value() {
    let t = trained();
    let ev: Vec<PathBuf> = std::fs::read_dir(&t.run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let recs = records(&ev[0]);
    // (tag, step) → value; images: (tag, step, PNG bytes).
    let mut scalars = std::collections::HashMap::new();
    let mut images = Vec::new();
    for (j, r) in recs.iter().enumerate() {
        let f = fields(r);
        let step = f.iter().find(|x| x.0 == 2).map_or(0, |x| x.1);
        assert!(f.iter().any(|x| x.0 == 1 && x.2.len() == 8), "wall_time");
        if j == 0 {
            let v = f.iter().find(|x| x.0 == 3).expect("file_version first");
            assert_eq!(v.2, b"brain.Event:2");
            continue;
        }
        let summary = &f.iter().find(|x| x.0 == 5).expect("a summary").2;
        for (_, _, value) in fields(summary).into_iter().filter(|x| x.0 == 1) {
            let vf = fields(&value);
            let tag = String::from_utf8(vf.iter().find(|x| x.0 == 1).unwrap().2.clone()).unwrap();
            if let Some(s) = vf.iter().find(|x| x.0 == 2) {
                let v = f32::from_le_bytes(s.2.clone().try_into().unwrap());
                assert!(scalars.insert((tag, step), v).is_none(), "a scalar twice");
            } else {
                let img = fields(&vf.iter().find(|x| x.0 == 4).unwrap().2);
                let png = img.iter().find(|x| x.0 == 4).unwrap().2.clone();
                images.push((tag, step, png));
            }
        }
    }
    let mut n = 0;
    for line in std::fs::read_to_string(t.run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        let prefix = if v["kind"] == "post" { "post/" } else { "" };
        for (k, x) in v.as_object().unwrap() {
            if ["kind", "step", "epoch"].contains(&k.as_str()) {
                continue;
            }
            let want = x.as_f64().map_or(f32::NAN, |x| x as f32);
            let got = scalars
                .remove(&(format!("{prefix}{k}"), step))
                .unwrap_or_else(|| panic!("no scalar {prefix}{k} at step {step}"));
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{k}@{step}: {got} vs {want}"
            );
            n += 1;
        }
    }
    assert!(n > 100, "{n} values");
    assert!(
        scalars.is_empty(),
        "scalars not in metrics.jsonl: {:?}",
        scalars.keys().take(5).collect::<Vec<_>>()
    );
    // One sample grid per epoch (one epoch: 20 steps), a PNG of 8×8 images.
    assert_eq!(images.len(), 1);
    let (tag, step, png) = &images[0];
    assert_eq!((tag.as_str(), *step), ("samples", 20));
    let g = image::load_from_memory(png).unwrap();
    assert_eq!((g.width(), g.height()), (8 * 34 + 2, 8 * 34 + 2));
}

#[test]
fn tensorboard_can_be_turned_off() {
    let t = trained();
    let out = t.root.join("run-no-tb");
    let a = train_args(
        &out,
        &t.root.join("images"),
        &["train.tensorboard=false", "ldc.sampler_refine_steps=2"],
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    ok(&a, &t.cache);
    let any = std::fs::read_dir(&out).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("events.")
    });
    assert!(!any);
}

// ----------------------------------------------------------------- encode

#[test]
fn encode_writes_npy_that_numpy_reads() {
    let python = ldc_vae::bench::peers_python().unwrap_or_else(|e| {
        panic!("the encode test reads the .npy files with NumPy through the peers' Python: {e:#}")
    });
    let t = trained();
    let run = t.run.to_str().unwrap();
    let out = t.root.join("latents");
    let z = out.join("test.npy");
    let s = ok(&["encode", run, "--out", z.to_str().unwrap()], &t.cache);
    assert!(s.contains("test.labels.npy"), "{s}");
    let v = out.join("val.npy");
    ok(
        &[
            "encode",
            run,
            "--split",
            "val",
            "--n",
            "7",
            "--out",
            v.to_str().unwrap(),
        ],
        &t.cache,
    );
    let tr = out.join("train.npy");
    ok(
        &[
            "encode",
            run,
            "--split",
            "train",
            "--out",
            tr.to_str().unwrap(),
        ],
        &t.cache,
    );
    let script = format!(
        "import numpy as np\n\
         for stem, n in [('test', 60), ('val', 7), ('train', 400)]:\n\
         \x20   z = np.load(r'{d}/' + stem + '.npy'); l = np.load(r'{d}/' + stem + '.labels.npy')\n\
         \x20   assert z.shape == (n, 16) and z.dtype == np.float32, (stem, z.shape, z.dtype)\n\
         \x20   assert l.shape == (n,) and l.dtype == np.int64, (stem, l.shape, l.dtype)\n\
         \x20   assert np.isfinite(z).all() and set(l.tolist()) <= {{0, 1}}\n\
         \x20   print(stem, z.shape, np.bincount(l).tolist(), float(z[0, 0]))\n",
        d = out.display()
    );
    let o = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "numpy could not read them:\n{}",
        text(&o)
    );
    let got = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(got.contains("test (60, 16) [30, 30]"), "{got}");
    // NumPy's first value is ours.
    let ours: ndarray::Array2<f32> = ndarray_npy::read_npy(&z).unwrap();
    let first: f32 = got
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first, ours[[0, 0]]);
    // Too many asked for; an unfinished run refused, as eval does.
    let e = fails(
        &["encode", run, "--n", "61", "--out", z.to_str().unwrap()],
        &t.cache,
    );
    assert!(e.contains("--n 61") && e.contains("60 images"), "{e}");
    let copy = t.root.join("unfinished");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.toml", "checkpoint.safetensors", "metrics.jsonl"] {
        std::fs::copy(t.run.join(f), copy.join(f)).unwrap();
    }
    let e = fails(
        &[
            "encode",
            copy.to_str().unwrap(),
            "--out",
            z.to_str().unwrap(),
        ],
        &t.cache,
    );
    assert!(
        e.contains("unfinished") && e.contains("--allow-unfinished"),
        "{e}"
    );
}

// ------------------------------------------------------------- bad input

#[test]
fn bad_folders_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let cache = root.join("cache");
    let train = |data: &Path, extra: &[&str]| {
        let a = train_args(&root.join("run"), data, extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails(&a, &cache)
    };
    // Empty (a class folder without images is no class).
    let empty = root.join("empty");
    std::fs::create_dir_all(empty.join("cats")).unwrap();
    let e = train(&empty, &[]);
    assert!(
        e.contains("empty folder") && e.contains(&empty.display().to_string()),
        "{e}"
    );
    // A corrupt image among good ones: named.
    let bad = root.join("corrupt");
    std::fs::create_dir_all(&bad).unwrap();
    for i in 0..30 {
        stripes(&bad.join(format!("{i:02}.png")), i % 2 == 0, i);
    }
    std::fs::write(bad.join("13.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let e = train(&bad, &[]);
    assert!(e.contains("corrupt image") && e.contains("13.png"), "{e}");
    // Mixed sizes without a resize: two files named.
    stripes(&bad.join("13.png"), true, 13);
    image::RgbImage::new(40, 32)
        .save(bad.join("07.png"))
        .unwrap();
    let e = train(&bad, &["data.resize=false"]);
    assert!(
        e.contains("07.png") && e.contains("00.png") && e.contains("differ in size"),
        "{e}"
    );
    // No folder given; a size without nets.
    let e = fails(
        &[
            "train",
            "--out",
            root.join("r").to_str().unwrap(),
            "--set",
            "data.dataset=folder",
            "--set",
            "data.image_size=32",
        ],
        &cache,
    );
    assert!(e.contains("data.dir` is required"), "{e}");
    let e = train(&bad, &["data.image_size=48"]);
    assert!(
        e.contains("data.image_size") && e.contains("64 (the CelebA nets)"),
        "{e}"
    );
}

// -------------------------------------------------------------------- FID

/// FID reference statistics of a folder's test split: computed once, then
/// read from the cache under a key of the folder's files and settings.
#[test]
fn folder_fid_reference_statistics_are_cached_by_identity() {
    use ldc_vae::data::{folder, split_identity, Split};
    use ldc_vae::eval::fid;
    let _rng = ldc_vae::rng::exclusive();
    let t = trained();
    let data = t.root.join("images");
    let cfg = ldc_vae::run_dir::read_config(&t.run, &[]).unwrap(); // registers the folder
    assert_eq!(
        folder::registered(&data).unwrap(),
        cfg.data.folder_options()
    );
    let key = split_identity("folder", Some(&data), Split::Test).unwrap();
    assert!(key.starts_with("folder-"), "{key}");
    let weights = fid::default_weights_path().expect("the FID network (scripts/setup.sh)");
    let net = fid::Inception::load_on(&weights, tch::Device::Cpu).unwrap();
    let dir = t.root.join("fid-stats");
    let a =
        fid::reference_stats_with(&net, "folder", Split::Test, 20, Some(&data), &dir, 10).unwrap();
    let sha = fid::sha256_file(&weights).unwrap();
    let path = fid::reference_stats_path(&key, Split::Test, 20, &sha, &dir);
    assert!(path.is_file(), "{}", path.display());
    let b =
        fid::reference_stats_with(&net, "folder", Split::Test, 20, Some(&data), &dir, 10).unwrap();
    assert!(a.mu.allclose(&b.mu, 0.0, 0.0, false) && a.n == 20);
    // This process loaded the folder through the user's cache folder.
    folder::remove_user_caches(&data);
}
