//! CIFAR-10 binary batches ("cifar-10-batches-bin"): records of 3073 bytes,
//! a label byte (0 to 9) then 3072 pixel bytes (red, green, blue planes of
//! 32×32, row-major), no header.
//!
//! Train = every `data_batch_<k>.bin` in the folder, in order of `k`;
//! Test = `test_batch.bin`. A `cifar-10-batches-bin/` sub-folder (the layout
//! of the official tar.gz) is used when the folder itself has no batches.

use super::{ImageSet, Split};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const RECORD: usize = 3073;

/// Check a batch's bytes; returns the record count.
pub fn check_batch(bytes: &[u8], path: &Path) -> Result<usize> {
    let p = path.display();
    if bytes.is_empty() {
        bail!("{p}: empty file, not a CIFAR-10 batch");
    }
    if bytes.len() % RECORD != 0 {
        bail!(
            "{p}: {} bytes is not a whole number of 3073-byte CIFAR-10 records \
             ({} records and {} bytes left over: truncated or not a CIFAR-10 batch)",
            bytes.len(),
            bytes.len() / RECORD,
            bytes.len() % RECORD
        );
    }
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            bail!(
                "{p}: record {i} has label {}, expected 0 to 9 (not a CIFAR-10 batch? \
                 CIFAR-100 records are 3074 bytes)",
                rec[0]
            );
        }
    }
    Ok(bytes.len() / RECORD)
}

/// Read one batch into u8 images `[N, 3, 32, 32]` and int64 labels `[N]`.
pub fn read_batch_u8(path: &Path) -> Result<(Tensor, Tensor)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = check_batch(&bytes, path)? as i64;
    let all = Tensor::from_slice(&bytes).view([n, RECORD as i64]);
    let labels = all.select(1, 0).to_kind(Kind::Int64);
    let images = all.narrow(1, 1, 3072).contiguous().view([n, 3, 32, 32]);
    Ok((images, labels))
}

/// The folder holding the batches: `dir`, or `dir/cifar-10-batches-bin`.
fn batch_dir(dir: &Path) -> PathBuf {
    let sub = dir.join("cifar-10-batches-bin");
    if !has_batches(dir) && has_batches(&sub) {
        sub
    } else {
        dir.to_path_buf()
    }
}

fn has_batches(dir: &Path) -> bool {
    dir.join("test_batch.bin").is_file() || !train_files(dir).unwrap_or_default().is_empty()
}

/// `data_batch_<k>.bin` files in `dir`, sorted by `k`.
pub fn train_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<(u64, PathBuf)> = Vec::new();
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in rd {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(k) = name
            .strip_prefix("data_batch_")
            .and_then(|s| s.strip_suffix(".bin"))
        {
            if let Ok(k) = k.parse::<u64>() {
                v.push((k, e.path()));
            }
        }
    }
    v.sort();
    Ok(v.into_iter().map(|(_, p)| p).collect())
}

/// The batch files of a split.
pub fn split_files(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let dir = batch_dir(dir);
    match split {
        Split::Train => {
            let v = train_files(&dir)?;
            if v.is_empty() {
                bail!(
                    "{}: missing file: no data_batch_*.bin in this folder",
                    dir.display()
                );
            }
            Ok(v)
        }
        Split::Test => {
            let p = dir.join("test_batch.bin");
            if !p.is_file() {
                bail!("{}: missing file", p.display());
            }
            Ok(vec![p])
        }
    }
}

/// One split as u8 `[N, 3, 32, 32]` and labels.
pub fn load_split_u8(dir: &Path, split: Split) -> Result<(Tensor, Tensor)> {
    let mut imgs = Vec::new();
    let mut labs = Vec::new();
    for f in split_files(dir, split)? {
        let (i, l) = read_batch_u8(&f)?;
        imgs.push(i);
        labs.push(l);
    }
    if imgs.len() == 1 {
        return Ok((imgs.pop().unwrap(), labs.pop().unwrap()));
    }
    Ok((Tensor::cat(&imgs, 0), Tensor::cat(&labs, 0)))
}

/// One split as float `[N, 3, 32, 32]` in [0, 1] with labels.
pub fn load_split(dir: &Path, split: Split) -> Result<ImageSet> {
    let (images, labels) = load_split_u8(dir, split)?;
    Ok(ImageSet {
        images: super::u8_to_unit(&images),
        labels: Some(labels),
    })
}

/// Class names in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; RECORD];
        r[0] = label;
        // Red plane pixel (0, 1) marks the channel order.
        r[1 + 1] = 200;
        r
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn data_cifar_small_batches() {
        let t = tempfile::tempdir().unwrap();
        let b1: Vec<u8> = [record(3, 10), record(7, 20)].concat();
        let b2: Vec<u8> = record(9, 30);
        std::fs::write(t.path().join("data_batch_1.bin"), &b1).unwrap();
        std::fs::write(t.path().join("data_batch_2.bin"), &b2).unwrap();
        std::fs::write(t.path().join("test_batch.bin"), record(0, 0)).unwrap();
        let s = load_split(t.path(), Split::Train).unwrap();
        assert_eq!(s.images.size(), [3, 3, 32, 32]);
        let l: Vec<i64> = Vec::try_from(s.labels.unwrap()).unwrap();
        assert_eq!(l, [3, 7, 9]);
        assert!((s.images.double_value(&[0, 0, 0, 1]) - 200.0 / 255.0).abs() < 1e-6);
        assert!((s.images.double_value(&[2, 2, 31, 31]) - 30.0 / 255.0).abs() < 1e-6);
        assert_eq!(load_split(t.path(), Split::Test).unwrap().len(), 1);
    }

    #[test]
    fn data_cifar_truncated() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("test_batch.bin");
        let b: Vec<u8> = [record(1, 1), record(2, 2)].concat();
        std::fs::write(&p, &b[..RECORD + 100]).unwrap();
        let e = err_of(load_split(t.path(), Split::Test));
        assert!(
            e.contains("not a whole number of 3073-byte") && e.contains("100 bytes left over"),
            "{e}"
        );
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn data_cifar_bad_label_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let e = err_of(load_split(t.path(), Split::Test));
        assert!(e.contains("test_batch.bin: missing file"), "{e}");
        let e = err_of(load_split(t.path(), Split::Train));
        assert!(e.contains("no data_batch_*.bin"), "{e}");
        let p = t.path().join("test_batch.bin");
        std::fs::write(&p, record(42, 0)).unwrap();
        let e = err_of(load_split(t.path(), Split::Test));
        assert!(
            e.contains("record 0 has label 42") && e.contains("test_batch.bin"),
            "{e}"
        );
        std::fs::write(&p, b"").unwrap();
        let e = err_of(load_split(t.path(), Split::Test));
        assert!(e.contains("empty file"), "{e}");
    }
}
