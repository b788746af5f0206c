//! `ldc-vae data info`: what a data file or folder holds.
//!
//! Recognised: an IDX file (images or labels, raw or gzipped), a CIFAR-10
//! `.bin` batch, a data-set folder (MNIST-style IDX files, CIFAR-10 batches,
//! CelebA with `img_align_celeba/`), and any folder of PNG/JPEG images.
//! Pixel statistics are in levels of 0 to 255 over the stored pixels (MNIST
//! at 28×28, not padded; CelebA after its 64×64 preprocessing).

use super::{celeba, cifar, images, mnist, OnCorrupt, Split};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// One part of a data set: a split, or the one file.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub name: String,
    /// Files it was read from.
    pub files: Vec<PathBuf>,
    pub count: i64,
    /// (C, H, W) of an image; `None` for a label file.
    pub shape: Option<[i64; 3]>,
    /// Count per label 0..=max, where there are labels.
    pub label_counts: Option<Vec<i64>>,
    /// Per-channel pixel mean and standard deviation, 0 to 255.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub path: PathBuf,
    pub format: String,
    pub parts: Vec<Part>,
    /// Extra facts (class names, checksums, cache use).
    pub notes: Vec<String>,
}

/// Per-channel mean and std (0-255) of a u8 `[N, C, H, W]` tensor, in f64,
/// 4096 images at a time.
pub fn channel_stats(t: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let s = t.size();
    let (n, c) = (s[0], s[1]);
    let count = (n * s[2] * s[3]) as f64;
    let mut sum = Tensor::zeros([c], (Kind::Double, tch::Device::Cpu));
    let mut sq = Tensor::zeros([c], (Kind::Double, tch::Device::Cpu));
    let dims = [0i64, 2, 3];
    let mut i = 0;
    while i < n {
        let k = (n - i).min(4096);
        let x = t.narrow(0, i, k).to_kind(Kind::Double);
        sum += x.sum_dim_intlist(dims.as_slice(), false, Kind::Double);
        sq += (&x * &x).sum_dim_intlist(dims.as_slice(), false, Kind::Double);
        i += k;
    }
    let sum: Vec<f64> = Vec::try_from(sum).unwrap();
    let sq: Vec<f64> = Vec::try_from(sq).unwrap();
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / count - m * m).max(0.0).sqrt())
        .collect();
    (mean, std)
}

fn label_counts(labels: &Tensor) -> Vec<i64> {
    if labels.numel() == 0 {
        return vec![];
    }
    Vec::try_from(labels.to_kind(Kind::Int64).bincount::<Tensor>(None, 0)).unwrap()
}

fn image_part(name: &str, files: Vec<PathBuf>, images: &Tensor, labels: Option<&Tensor>) -> Part {
    let s = images.size();
    let (mean, std) = if s[0] > 0 {
        channel_stats(images)
    } else {
        (vec![], vec![])
    };
    Part {
        name: name.to_string(),
        files,
        count: s[0],
        shape: Some([s[1], s[2], s[3]]),
        label_counts: labels.map(label_counts),
        mean,
        std,
    }
}

/// Describe a file or folder (corrupt images fail).
pub fn info(path: &Path) -> Result<Info> {
    info_opts(path, OnCorrupt::Fail)
}

/// [`info`] with a choice for corrupt images (CelebA and image folders).
pub fn info_opts(path: &Path, on_corrupt: OnCorrupt) -> Result<Info> {
    if !path.exists() {
        bail!("{}: missing file or folder", path.display());
    }
    if path.is_dir() {
        dir_info(path, on_corrupt)
    } else {
        file_info(path)
    }
}

fn file_info(path: &Path) -> Result<Info> {
    let (bytes, gz) = mnist::read_maybe_gz(path)?;
    let gzs = if gz { ", gzipped" } else { "" };
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let is_bin = name.ends_with(".bin");
    let looks_idx = bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08;
    if !is_bin && (gz || looks_idx || name.contains("idx")) {
        let idx = mnist::parse_idx(bytes, gz, path)?;
        let d = idx.dims.clone();
        let files = vec![path.to_path_buf()];
        let part = match d.len() {
            1 => {
                let l = Tensor::from_slice(idx.data());
                Part {
                    name,
                    files,
                    count: d[0] as i64,
                    shape: None,
                    label_counts: Some(label_counts(&l)),
                    mean: vec![],
                    std: vec![],
                }
            }
            3 => {
                let t =
                    Tensor::from_slice(idx.data()).view([d[0] as i64, 1, d[1] as i64, d[2] as i64]);
                image_part(&name, files, &t, None)
            }
            _ => bail!(
                "{}: IDX file with dimensions {d:?}: neither images nor labels",
                path.display()
            ),
        };
        let what = if d.len() == 1 { "labels" } else { "images" };
        return Ok(Info {
            path: path.to_path_buf(),
            format: format!("IDX {what} (u8{gzs})"),
            parts: vec![part],
            notes: vec![],
        });
    }
    if is_bin || (!bytes.is_empty() && bytes.len() % cifar::RECORD == 0) {
        let (images, labels) = cifar::read_batch_u8(path)?;
        return Ok(Info {
            path: path.to_path_buf(),
            format: "CIFAR-10 binary batch".into(),
            parts: vec![image_part(
                &name,
                vec![path.to_path_buf()],
                &images,
                Some(&labels),
            )],
            notes: vec![format!("classes: {}", cifar::CLASSES.join(", "))],
        });
    }
    if images::is_image_name(&name) {
        let img = images::decode_file(path)?;
        let c = if img.color().has_color() { 3 } else { 1 };
        let mut v = Vec::new();
        images::push_chw(&img, c, &mut v);
        let t = Tensor::from_slice(&v).view([1, c as i64, img.height() as i64, img.width() as i64]);
        return Ok(Info {
            path: path.to_path_buf(),
            format: format!(
                "single image ({:?})",
                image::guess_format(&std::fs::read(path)?).ok()
            ),
            parts: vec![image_part(&name, vec![path.to_path_buf()], &t, None)],
            notes: vec![],
        });
    }
    bail!(
        "{}: unrecognised format: not an IDX file (magic 0x{:02x}{:02x}...), not a CIFAR-10 batch \
         ({} bytes is not a multiple of 3073), not a PNG/JPEG",
        path.display(),
        bytes.first().copied().unwrap_or(0),
        bytes.get(1).copied().unwrap_or(0),
        bytes.len()
    )
}

fn dir_info(dir: &Path, on_corrupt: OnCorrupt) -> Result<Info> {
    let p = dir.to_path_buf();
    let has = |n: &str| mnist::find_file(dir, n).is_ok();
    if has("train-images-idx3-ubyte") || has("t10k-images-idx3-ubyte") {
        let mut parts = Vec::new();
        for split in [Split::Train, Split::Test] {
            let (iname, lname) = mnist::split_names(split);
            if !has(iname) {
                continue;
            }
            let (images, labels) = mnist::load_split_u8(dir, split)?;
            let files = vec![mnist::find_file(dir, iname)?, mnist::find_file(dir, lname)?];
            parts.push(image_part(split_name(split), files, &images, Some(&labels)));
        }
        let gz = parts[0].files[0].extension().is_some_and(|e| e == "gz");
        let format = format!(
            "MNIST-style IDX data set ({})",
            if gz { "gzipped" } else { "raw" }
        );
        return Ok(Info {
            path: p,
            format,
            parts,
            notes: vec![],
        });
    }
    let cifar_like = dir.join("test_batch.bin").is_file()
        || dir.join("cifar-10-batches-bin").is_dir()
        || !cifar::train_files(dir)?.is_empty();
    if cifar_like {
        let mut parts = Vec::new();
        for split in [Split::Train, Split::Test] {
            let Ok(files) = cifar::split_files(dir, split) else {
                continue;
            };
            let (images, labels) = cifar::load_split_u8(dir, split)?;
            parts.push(image_part(split_name(split), files, &images, Some(&labels)));
        }
        let notes = vec![format!("classes: {}", cifar::CLASSES.join(", "))];
        return Ok(Info {
            path: p,
            format: "CIFAR-10 binary batches".into(),
            parts,
            notes,
        });
    }
    let is_celeba = dir.join("img_align_celeba").is_dir() || dir.ends_with("img_align_celeba");
    if is_celeba {
        let root = if dir.ends_with("img_align_celeba") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        let d = celeba::load_all(
            root,
            &celeba::Options {
                on_corrupt,
                ..Default::default()
            },
        )?;
        let img_dir = celeba::image_dir(root);
        let mut parts = Vec::new();
        for split in [Split::Train, Split::Test] {
            let t = celeba::split_u8(&d, split);
            parts.push(image_part(
                split_name(split),
                vec![img_dir.clone()],
                &t,
                None,
            ));
        }
        let skipped = d.kept.iter().filter(|k| !**k).count();
        let hash = celeba::list_hash(&img_dir)?;
        let mut notes = vec![
            format!(
                "{} JPEGs ({skipped} skipped as corrupt); preprocessed: centre crop 140x140, \
                 resize to 64x64 (Triangle filter); test = last 10% by name",
                d.files.len()
            ),
            format!(
                "sha256 list hash {hash}{}",
                if hash == celeba::SUBSET_LIST_SHA256 {
                    " (the 5,000-image shared/data subset)"
                } else {
                    ""
                }
            ),
        ];
        notes.push(match &d.outcome {
            celeba::CacheOutcome::Hit(c) => format!("cache: {}", c.display()),
            celeba::CacheOutcome::Built(c) => format!("cache built: {}", c.display()),
            celeba::CacheOutcome::Rebuilt { path, reason } => {
                format!("cache rebuilt: {} ({reason})", path.display())
            }
            celeba::CacheOutcome::NotWritten(r) => format!("cache not written: {r}"),
        });
        return Ok(Info {
            path: p,
            format: "CelebA (img_align_celeba JPEGs)".into(),
            parts,
            notes,
        });
    }
    // Any folder of images, at its native size.
    let files = images::list_images(dir).with_context(|| {
        let subs: Vec<&str> = ["mnist", "fashion-mnist", "cifar10", "celeba"]
            .into_iter()
            .filter(|n| super::looks_like(n, &dir.join(n)))
            .collect();
        let hint = if subs.is_empty() {
            String::new()
        } else {
            format!(
                "; it is a data root holding {}: give one of those folders",
                subs.join(", ")
            )
        };
        format!(
            "{}: not a data set folder (no IDX files, CIFAR-10 batches or img_align_celeba/){hint}",
            dir.display()
        )
    })?;
    let first = images::decode_file(&files[0])?;
    let c = if first.color().has_color() { 3 } else { 1 };
    let (w, h) = (first.width(), first.height());
    let decoded = images::decode_all(&files, c, |_, img| Ok(img));
    let mut px = Vec::with_capacity(files.len() * (c * w * h) as usize);
    let mut skipped = 0;
    for (f, d) in files.iter().zip(decoded) {
        let (dims, v) = match d {
            Ok(x) => x,
            Err(e) if on_corrupt == OnCorrupt::Skip => {
                tracing::warn!("skipping {e:#}");
                skipped += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if dims != (w, h) {
            bail!(
                "{}: wrong image size {}x{}: {} is {w}x{h} and all images must have the same size",
                f.display(),
                dims.0,
                dims.1,
                files[0].display()
            );
        }
        px.extend_from_slice(&v);
    }
    let n = (files.len() - skipped) as i64;
    let t = Tensor::from_slice(&px).view([n, c as i64, h as i64, w as i64]);
    let notes = if skipped > 0 {
        vec![format!("{skipped} corrupt images skipped")]
    } else {
        vec![]
    };
    Ok(Info {
        path: p,
        format: "folder of images".into(),
        parts: vec![image_part("all", vec![dir.to_path_buf()], &t, None)],
        notes,
    })
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Test => "test",
    }
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "path:    {}", self.path.display())?;
        writeln!(f, "format:  {}", self.format)?;
        for p in &self.parts {
            writeln!(f, "[{}]", p.name)?;
            if p.files.len() > 1 || p.files.first().is_some_and(|x| x != &self.path) {
                let names: Vec<String> = p.files.iter().map(|x| x.display().to_string()).collect();
                writeln!(f, "  files:  {}", names.join(", "))?;
            }
            match p.shape {
                Some([c, h, w]) => writeln!(f, "  images: {} of {c}x{h}x{w} (CxHxW)", p.count)?,
                None => writeln!(f, "  labels: {}", p.count)?,
            }
            if let Some(lc) = &p.label_counts {
                let s: Vec<String> = lc
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("{i}:{n}"))
                    .collect();
                writeln!(f, "  label histogram: {}", s.join(" "))?;
            }
            if !p.mean.is_empty() {
                let fm = |v: &[f64], k: f64| {
                    let prec = if k == 1.0 { 3 } else { 4 };
                    v.iter()
                        .map(|x| format!("{:.prec$}", x * k))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let ch = if p.mean.len() == 3 { " (R G B)" } else { "" };
                writeln!(
                    f,
                    "  pixel mean{ch}: {} of 255 = {} in [0,1]",
                    fm(&p.mean, 1.0),
                    fm(&p.mean, 1.0 / 255.0)
                )?;
                writeln!(
                    f,
                    "  pixel std{ch}:  {} of 255 = {} in [0,1]",
                    fm(&p.std, 1.0),
                    fm(&p.std, 1.0 / 255.0)
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note:    {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn data_info_small_files() {
        let t = tempfile::tempdir().unwrap();
        // IDX labels.
        let p = t.path().join("labels-idx1-ubyte");
        let mut b = Vec::new();
        b.extend_from_slice(&mnist::LABELS_MAGIC.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&[1, 1, 4]);
        std::fs::write(&p, &b).unwrap();
        let i = info(&p).unwrap();
        assert_eq!(
            i.parts[0].label_counts.as_deref(),
            Some(&[0, 2, 0, 0, 1][..])
        );
        // CIFAR batch: one record of all 51 (mean 51, std 0).
        let p = t.path().join("test_batch.bin");
        let mut r = vec![51u8; cifar::RECORD];
        r[0] = 2;
        std::fs::write(&p, &r).unwrap();
        let i = info(&p).unwrap();
        assert_eq!(i.parts[0].shape, Some([3, 32, 32]));
        assert!((i.parts[0].mean[1] - 51.0).abs() < 1e-9 && i.parts[0].std[2].abs() < 1e-6);
        let text = i.to_string();
        assert!(text.contains("CIFAR-10") && text.contains("2:1"), "{text}");
        // The folder is a CIFAR data set.
        assert_eq!(info(t.path()).unwrap().format, "CIFAR-10 binary batches");
    }

    #[test]
    fn data_info_bad_inputs() {
        let t = tempfile::tempdir().unwrap();
        let e = err_of(info(&t.path().join("nothing")));
        assert!(
            e.contains("missing file or folder") && e.contains("nothing"),
            "{e}"
        );
        let p = t.path().join("weird.dat");
        std::fs::write(&p, b"hello world").unwrap();
        let e = err_of(info(&p));
        assert!(
            e.contains("unrecognised format") && e.contains("weird.dat"),
            "{e}"
        );
        let p = t.path().join("x.bin");
        std::fs::write(&p, vec![0u8; 4000]).unwrap();
        let e = err_of(info(&p));
        assert!(
            e.contains("x.bin") && e.contains("not a whole number of 3073-byte"),
            "{e}"
        );
        let p = t.path().join("y-idx3-ubyte.gz");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0, 0]).unwrap();
        let e = err_of(info(&p));
        assert!(
            e.contains("y-idx3-ubyte.gz") && e.contains("corrupt or truncated gzip"),
            "{e}"
        );
        let e = err_of(info(t.path()));
        assert!(
            e.contains("not a data set folder") && e.contains("empty folder"),
            "{e}"
        );
        std::fs::create_dir(t.path().join("cifar10")).unwrap();
        std::fs::write(t.path().join("cifar10/test_batch.bin"), [0u8; 3073]).unwrap();
        let e = err_of(info(t.path()));
        assert!(e.contains("data root holding cifar10"), "{e}");
    }
}
