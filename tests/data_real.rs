//! Loader tests on the real data in `shared/data` (found by
//! `find_dataset_dir`, which searches `CARGO_MANIFEST_DIR/../shared/data`).
//! Load times are printed; run with `--nocapture` to see them.

use ldc_vae::data::{self, celeba, cifar, mnist, Split};
use std::path::PathBuf;
use std::time::Instant;
use tch::Kind;

/// CPU seconds (user + system, all threads) of this process so far, from
/// /proc (Linux; 0 elsewhere). The machine may be shared, so wall times
/// alone say little.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of the file are utime and stime, in clock ticks (100 Hz).
    if f.len() > 13 {
        (f[11] + f[12]) / 100.0
    } else {
        0.0
    }
}

fn dir(name: &str) -> PathBuf {
    data::find_dataset_dir(name, None).unwrap_or_else(|e| panic!("{e:#}"))
}

fn hist(labels: &tch::Tensor) -> Vec<i64> {
    Vec::try_from(labels.bincount::<tch::Tensor>(None, 10)).unwrap()
}

#[test]
fn data_real_mnist() {
    let d = dir("mnist");
    let t0 = Instant::now();
    let (train, train_l) = mnist::load_split_u8(&d, Split::Train).unwrap();
    eprintln!(
        "MNIST train (gz) u8 load: {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(train.size(), [60000, 1, 28, 28]);
    assert_eq!(
        hist(&train_l),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    let mean = train
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    assert!((mean - 33.318).abs() < 1e-3, "{mean}");

    let (t0, c0) = (Instant::now(), cpu_s());
    let s = data::load_split("mnist", None, Split::Train).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "MNIST train (gz) float, padded load_split: {secs:.3} s ({:.2} s CPU)",
        cpu_s() - c0
    );
    assert_eq!(s.images.size(), [60000, 1, 32, 32]);
    assert_eq!(s.images.kind(), Kind::Float);
    // Padding adds zeros: sum is unchanged.
    let m = s.images.sum(Kind::Double).double_value(&[]) / (60000.0 * 784.0) * 255.0;
    assert!((m - 33.318).abs() < 1e-3, "{m}");

    let t = data::load_split("mnist", None, Split::Test).unwrap();
    assert_eq!(t.len(), 10000);
    assert_eq!(
        hist(t.labels.as_ref().unwrap()),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let m = t.images.sum(Kind::Double).double_value(&[]) / (10000.0 * 784.0) * 255.0;
    assert!((m - 33.791).abs() < 1e-3, "{m}");
}

#[test]
fn data_real_mnist_checksums() {
    let d = dir("mnist");
    let r = ldc_vae::data::fetch::verify("mnist", &d).unwrap();
    assert!(r.contains("sha256"), "{r}");
}

#[test]
fn data_real_cifar10() {
    let d = dir("cifar10");
    assert_eq!(cifar::split_files(&d, Split::Train).unwrap().len(), 1);
    let t0 = Instant::now();
    let tr = data::load_split("cifar10", None, Split::Train).unwrap();
    eprintln!("CIFAR-10 train load: {:.3} s", t0.elapsed().as_secs_f64());
    let te = data::load_split("cifar10", None, Split::Test).unwrap();
    assert_eq!(tr.images.size(), [10000, 3, 32, 32]);
    assert_eq!(te.images.size(), [10000, 3, 32, 32]);
    let first = |s: &data::ImageSet| -> Vec<i64> {
        Vec::try_from(s.labels.as_ref().unwrap().narrow(0, 0, 12)).unwrap()
    };
    assert_eq!(first(&tr), [6, 9, 9, 4, 1, 1, 2, 7, 8, 3, 4, 7]);
    assert_eq!(first(&te), [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9]);
    assert_eq!(hist(tr.labels.as_ref().unwrap()), [1000; 10]);
    assert_eq!(hist(te.labels.as_ref().unwrap()), [1000; 10]);
    for (s, want) in [
        (&tr, [125.82, 123.19, 114.00]),
        (&te, [125.99, 123.69, 114.85]),
    ] {
        let m: Vec<f64> = Vec::try_from(
            s.images
                .to_kind(Kind::Double)
                .mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double)
                * 255.0,
        )
        .unwrap();
        for c in 0..3 {
            assert!(
                (m[c] - want[c]).abs() < 0.006,
                "channel {c}: {} vs {}",
                m[c],
                want[c]
            );
        }
    }
}

#[test]
fn data_real_celeba() {
    let d = dir("celeba");
    let img = celeba::image_dir(&d);
    let t0 = Instant::now();
    let h = celeba::list_hash(&img).unwrap();
    eprintln!("CelebA sha256 list: {:.3} s", t0.elapsed().as_secs_f64());
    assert_eq!(h, celeba::SUBSET_LIST_SHA256);
    let listed = std::fs::read_to_string(d.join("img_align_celeba_sha256.txt")).unwrap();
    assert_eq!(listed, celeba::sha256_list(&img).unwrap());

    // A private cache folder, so the test measures a first and a cached load
    // and leaves shared/data alone.
    let cache = tempfile::tempdir().unwrap();
    let o = celeba::Options {
        cache: celeba::CacheMode::Dir(cache.path().into()),
        ..Default::default()
    };
    let (t0, c0) = (Instant::now(), cpu_s());
    let a = celeba::load_all(&d, &o).unwrap();
    eprintln!(
        "CelebA first load (decode 5000 JPEGs): {:.3} s ({:.2} s CPU)",
        t0.elapsed().as_secs_f64(),
        cpu_s() - c0
    );
    assert!(
        matches!(a.outcome, celeba::CacheOutcome::Built(_)),
        "{:?}",
        a.outcome
    );
    let t0 = Instant::now();
    let b = celeba::load_all(&d, &o).unwrap();
    eprintln!("CelebA cached load: {:.3} s", t0.elapsed().as_secs_f64());
    assert!(
        matches!(b.outcome, celeba::CacheOutcome::Hit(_)),
        "{:?}",
        b.outcome
    );
    assert_eq!(a.pixels.size(), [5000, 3, 64, 64]);
    assert!(a.pixels.equal(&b.pixels));
    let tr = celeba::load_split(&d, Split::Train, &o).unwrap();
    let te = celeba::load_split(&d, Split::Test, &o).unwrap();
    assert_eq!((tr.len(), te.len()), (4500, 500));
    assert_eq!(tr.shape(), (3, 64, 64));
    let (mn, mx) = (
        tr.images.min().double_value(&[]),
        tr.images.max().double_value(&[]),
    );
    assert!(
        (0.0..0.05).contains(&mn) && (0.95..=1.0).contains(&mx),
        "{mn} {mx}"
    );
    // Faces: the mean is mid-grey-ish and red-heavy.
    let m: Vec<f64> = Vec::try_from(tr.images.to_kind(Kind::Double).mean_dim(
        [0i64, 2, 3].as_slice(),
        false,
        Kind::Double,
    ))
    .unwrap();
    eprintln!("CelebA train channel means: {m:?}");
    assert!(
        m[0] > m[2] && m.iter().all(|&x| (0.25..0.75).contains(&x)),
        "{m:?}"
    );
}
