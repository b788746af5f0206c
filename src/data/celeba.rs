//! CelebA, aligned and cropped (`img_align_celeba/`, 178×218 JPEGs).
//!
//! Preprocessing (the common VAE/GAN one): centre crop 140×140 (offsets 19
//! across, 39 down), resize to 64×64 with [`images::FILTER`] (antialiased
//! bilinear, `FilterType::Triangle`), RGB.
//!
//! Split: CelebA's standard partition when `list_eval_partition.txt` (`NAME
//! 0|1|2` per line: train, validation, test) lies beside the images, in the
//! data-set folder or its `Eval/` folder: partition 0 is Train, 2 is Test, the
//! validation partition 1 is not used (our validation images come out of
//! Train, `data.val_size`). Without that file, or when it puts none of the
//! images present in one of the two partitions (a subset such as the first
//! 5,000 files, all in partition 0), the fallback: files sorted by name, the
//! last `n / 10` are Test, the rest Train; for the 5,000-image subset in
//! `shared/data` that is 4,500 / 500. [`SplitSource`] says which was used.
//!
//! Cache: the first load decodes every JPEG (rayon, all cores) and saves the
//! preprocessed u8 tensor of all files to `celeba-64x64-<dir>-<key>.u8` in
//! `celeba-cache/` under the user cache folder ([`super::cache`]: keyed by
//! the folder's path and every file's name, size and mtime; rebuilt when they
//! change or the file does not check out; never under the data folder).

use super::cache::{self, Request};
pub use super::cache::{hex, user_cache_root, CacheMode, CacheOutcome};
use super::images::{self, OnCorrupt};
use super::{ImageSet, Split};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const SRC_W: u32 = 178;
pub const SRC_H: u32 = 218;
pub const CROP: u32 = 140;
pub const SIZE: u32 = 64;
/// sha256 of `img_align_celeba_sha256.txt` for the 5,000-image subset in `shared/data`.
pub const SUBSET_LIST_SHA256: &str =
    "6feb28799c2ccec23d418495ea8346bdc369b736c0a2617449fb21fc8c6f28eb";

const PREP_TAG: &str = "celeba crop=140 size=64 filter=triangle rgb v1";

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub on_corrupt: OnCorrupt,
    pub cache: CacheMode,
}

/// Every file, preprocessed: u8 `[K, 3, 64, 64]` for the `K` files kept.
pub struct Decoded {
    pub files: Vec<PathBuf>,
    /// One flag per file: false for a corrupt file that was skipped.
    pub kept: Vec<bool>,
    pub pixels: Tensor,
    pub outcome: CacheOutcome,
    /// The split of each file.
    pub split: SplitAssignment,
}

/// CelebA's standard partition file.
pub const PARTITION_FILE: &str = "list_eval_partition.txt";

/// Where a split came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitSource {
    /// The standard partition, read from this file.
    Standard(PathBuf),
    /// The fallback (last tenth by name = Test), and why.
    LastTenth(String),
}

/// Train/test assignment of every file of a CelebA folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitAssignment {
    /// Per file (sorted by name): its split, `None` for the standard
    /// validation partition.
    pub of_file: Vec<Option<Split>>,
    pub source: SplitSource,
}

impl SplitAssignment {
    /// Files in `split`.
    pub fn count(&self, split: Split) -> usize {
        self.of_file.iter().filter(|s| **s == Some(split)).count()
    }

    /// One sentence for reports: which split, how many files in each part.
    pub fn describe(&self) -> String {
        let (tr, te) = (self.count(Split::Train), self.count(Split::Test));
        match &self.source {
            SplitSource::Standard(p) => format!(
                "CelebA's standard partition ({}): {tr} train (partition 0), {te} test (partition 2); \
                 the validation partition is not used",
                p.display()
            ),
            SplitSource::LastTenth(why) => format!(
                "fallback split ({why}): files sorted by name, the last tenth is the test split: \
                 {tr} train, {te} test"
            ),
        }
    }
}

/// Candidate places of [`PARTITION_FILE`] for a data-set folder.
fn partition_candidates(root: &Path) -> Vec<PathBuf> {
    let img = image_dir(root);
    let mut v = vec![
        root.join(PARTITION_FILE),
        root.join("Eval").join(PARTITION_FILE),
        img.join(PARTITION_FILE),
    ];
    if let Some(parent) = img.parent() {
        v.push(parent.join(PARTITION_FILE));
        v.push(parent.join("Eval").join(PARTITION_FILE));
    }
    v.dedup();
    v
}

/// The split of `files` (sorted by name) of the data-set folder `root`: the
/// standard partition when its file is found and covers both splits, else the
/// last-tenth fallback. A partition file that is malformed or lacks one of
/// the images is an error naming it.
pub fn assign_split(root: &Path, files: &[PathBuf]) -> Result<SplitAssignment> {
    let n = files.len();
    let fallback = |why: String| SplitAssignment {
        of_file: (0..n)
            .map(|i| {
                Some(if is_test(i, n) {
                    Split::Test
                } else {
                    Split::Train
                })
            })
            .collect(),
        source: SplitSource::LastTenth(why),
    };
    let Some(path) = partition_candidates(root).into_iter().find(|p| p.is_file()) else {
        return Ok(fallback(format!("no {PARTITION_FILE}")));
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut part = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(name), Some(p), None) = (it.next(), it.next(), it.next()) else {
            bail!(
                "{} line {}: expected `NAME PARTITION`, got `{line}`",
                path.display(),
                i + 1
            );
        };
        let p: u8 = match p {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            _ => bail!(
                "{} line {}: partition must be 0, 1 or 2, got `{p}`",
                path.display(),
                i + 1
            ),
        };
        part.insert(name.to_string(), p);
    }
    let mut of_file = Vec::with_capacity(n);
    for f in files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let p = part.get(name.as_ref()).with_context(|| {
            format!(
                "{}: image {name} is not listed (a different CelebA version? remove the file to use the fallback split)",
                path.display()
            )
        })?;
        of_file.push(match p {
            0 => Some(Split::Train),
            2 => Some(Split::Test),
            _ => None,
        });
    }
    let a = SplitAssignment {
        of_file,
        source: SplitSource::Standard(path.clone()),
    };
    for (split, p) in [(Split::Train, 0), (Split::Test, 2)] {
        if a.count(split) == 0 {
            return Ok(fallback(format!(
                "{} puts none of these {n} images in partition {p}",
                path.display()
            )));
        }
    }
    Ok(a)
}

/// The `img_align_celeba` folder of a data-set folder (or the folder itself
/// when it is named so or holds the JPEGs directly).
pub fn image_dir(root: &Path) -> PathBuf {
    let sub = root.join("img_align_celeba");
    if sub.is_dir() {
        sub
    } else {
        root.to_path_buf()
    }
}

/// Train/test assignment of file `i` of `n` (sorted by name).
pub fn is_test(i: usize, n: usize) -> bool {
    i >= n - n / 10
}

/// Decode every JPEG of `dir` (sorted by name) to u8 CHW 3×64×64.
fn decode(files: &[PathBuf], on_corrupt: OnCorrupt) -> Result<(Vec<bool>, Vec<u8>)> {
    let decoded = images::decode_all(files, 3, |p, img| {
        if (img.width(), img.height()) != (SRC_W, SRC_H) {
            bail!(
                "{}: wrong image size {}x{}: aligned CelebA images are {SRC_W}x{SRC_H}",
                p.display(),
                img.width(),
                img.height()
            );
        }
        // Crop as a view (no copy), then resize straight from it.
        let rgb = img.into_rgb8();
        let view =
            image::imageops::crop_imm(&rgb, (SRC_W - CROP) / 2, (SRC_H - CROP) / 2, CROP, CROP);
        Ok(image::imageops::resize(&*view, SIZE, SIZE, images::FILTER).into())
    });
    let g = cache::gather(decoded, on_corrupt, "CelebA")?;
    Ok((g.kept, g.pixels))
}

/// All files of a CelebA folder, preprocessed, from the cache when possible.
pub fn load_all(root: &Path, opts: &Options) -> Result<Decoded> {
    let dir = image_dir(root);
    let files = images::list_images(&dir)?;
    let split = assign_split(root, &files)?;
    let key = cache::listing_key(PREP_TAG, &dir, &files)?;
    // One prefix per folder (hash of its absolute path), one key per content.
    let req = Request {
        files: &files,
        key: &key,
        name: format!(
            "celeba-64x64-{}-{}.u8",
            cache::folder_hash(&dir),
            &key[..16]
        ),
        dims: [3, SIZE, SIZE],
        mode: &opts.cache,
        sub: "celeba-cache",
        what: "CelebA",
        on_corrupt: opts.on_corrupt,
    };
    let (kept, pixels, outcome) = cache::load(&req, || decode(&files, opts.on_corrupt))?;
    Ok(Decoded {
        files,
        kept,
        pixels,
        outcome,
        split,
    })
}

/// Indices (into the kept rows) of a split.
fn split_rows(kept: &[bool], assign: &SplitAssignment, split: Split) -> Vec<i64> {
    let mut row = 0i64;
    let mut v = Vec::new();
    for (&k, s) in kept.iter().zip(&assign.of_file) {
        if k {
            if *s == Some(split) {
                v.push(row);
            }
            row += 1;
        }
    }
    v
}

/// One split as u8 `[N, 3, 64, 64]`.
pub fn split_u8(d: &Decoded, split: Split) -> Tensor {
    let rows = split_rows(&d.kept, &d.split, split);
    if rows.len() as i64 == d.pixels.size()[0] {
        return d.pixels.shallow_clone();
    }
    d.pixels.index_select(0, &Tensor::from_slice(&rows))
}

/// One split as float `[N, 3, 64, 64]` in [0, 1], no labels.
pub fn load_split(root: &Path, split: Split, opts: &Options) -> Result<ImageSet> {
    let d = load_all(root, opts)?;
    let images = super::u8_to_unit(&split_u8(&d, split));
    Ok(ImageSet {
        images,
        labels: None,
    })
}

/// The sha256 list of a folder's images, in the form of
/// `img_align_celeba_sha256.txt` (`NAME SHA256HEX\n`, sorted by name).
pub fn sha256_list(dir: &Path) -> Result<String> {
    let files = images::list_images(dir)?;
    let lines: Vec<String> = files
        .par_iter()
        .map(|f| {
            let b = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            Ok(format!("{name} {}\n", hex(&Sha256::digest(&b))))
        })
        .collect::<Result<_>>()?;
    Ok(lines.concat())
}

/// sha256 (hex) of [`sha256_list`].
pub fn list_hash(dir: &Path) -> Result<String> {
    Ok(hex(&Sha256::digest(sha256_list(dir)?.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::tests::write_image;

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A small fake CelebA folder: `n` JPEGs of 178×218.
    fn fake(n: usize) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("img_align_celeba");
        std::fs::create_dir(&d).unwrap();
        for i in 0..n {
            write_image(&d.join(format!("{:06}.jpg", i + 1)), SRC_W, SRC_H);
        }
        t
    }

    fn opts(cache: &Path) -> Options {
        Options {
            on_corrupt: OnCorrupt::Fail,
            cache: CacheMode::Dir(cache.to_path_buf()),
        }
    }

    #[test]
    fn data_celeba_small_split_and_cache() {
        let t = fake(12);
        let c = tempfile::tempdir().unwrap();
        let o = opts(c.path());
        let d = load_all(t.path(), &o).unwrap();
        assert!(
            matches!(d.outcome, CacheOutcome::Built(_)),
            "{:?}",
            d.outcome
        );
        assert_eq!(d.pixels.size(), [12, 3, 64, 64]);
        let d2 = load_all(t.path(), &o).unwrap();
        assert!(
            matches!(d2.outcome, CacheOutcome::Hit(_)),
            "{:?}",
            d2.outcome
        );
        assert!(d.pixels.equal(&d2.pixels));
        assert_eq!(load_split(t.path(), Split::Train, &o).unwrap().len(), 11);
        assert_eq!(load_split(t.path(), Split::Test, &o).unwrap().len(), 1);
        // Changing the folder changes the key: rebuilt, not a hit.
        write_image(&t.path().join("img_align_celeba/000099.jpg"), SRC_W, SRC_H);
        let d3 = load_all(t.path(), &o).unwrap();
        assert!(
            matches!(d3.outcome, CacheOutcome::Built(_)),
            "{:?}",
            d3.outcome
        );
        assert_eq!(d3.pixels.size()[0], 13);
        // The old cache file was removed.
        assert_eq!(std::fs::read_dir(c.path()).unwrap().count(), 1);
    }

    #[test]
    fn data_celeba_standard_partition_and_fallback() {
        let t = fake(12);
        let c = tempfile::tempdir().unwrap();
        let o = opts(c.path());
        let d = load_all(t.path(), &o).unwrap();
        match &d.split.source {
            SplitSource::LastTenth(why) => {
                assert!(why.contains("no list_eval_partition.txt"), "{why}")
            }
            s => panic!("{s:?}"),
        }
        // Standard partition (a full-set file also lists images not present):
        // 1-7 train, 8 validation, 9-10 test, 11-12 train.
        let part = t.path().join(PARTITION_FILE);
        let line = |i: usize, p: u8| format!("{i:06}.jpg {p}\n");
        let mut text: String = (1..=7).map(|i| line(i, 0)).collect();
        text += &line(8, 1);
        text += &(9..=10).map(|i| line(i, 2)).collect::<String>();
        text += &(11..=13).map(|i| line(i, 0)).collect::<String>();
        std::fs::write(&part, &text).unwrap();
        let d = load_all(t.path(), &o).unwrap();
        assert!(
            matches!(d.outcome, CacheOutcome::Hit(_)),
            "the split is not part of the cache key"
        );
        assert_eq!(d.split.source, SplitSource::Standard(part.clone()));
        assert_eq!(
            (d.split.count(Split::Train), d.split.count(Split::Test)),
            (9, 2)
        );
        let te = load_split(t.path(), Split::Test, &o).unwrap();
        assert!(te
            .images
            .equal(&crate::data::u8_to_unit(&d.pixels.narrow(0, 8, 2))));
        assert_eq!(load_split(t.path(), Split::Train, &o).unwrap().len(), 9);
        assert!(
            d.split.describe().contains("standard partition"),
            "{}",
            d.split.describe()
        );
        // A subset the file puts wholly in partition 0: the fallback, saying why.
        std::fs::write(&part, (1..=12).map(|i| line(i, 0)).collect::<String>()).unwrap();
        let d = load_all(t.path(), &o).unwrap();
        match &d.split.source {
            SplitSource::LastTenth(why) => {
                assert!(
                    why.contains("none of these 12 images in partition 2"),
                    "{why}"
                )
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(
            (d.split.count(Split::Train), d.split.count(Split::Test)),
            (11, 1)
        );
        // Malformed lines and unlisted images are errors naming the file.
        std::fs::write(&part, "000001.jpg 0\n000002.jpg x\n").unwrap();
        let e = err_of(load_all(t.path(), &o));
        assert!(
            e.contains(PARTITION_FILE) && e.contains("line 2") && e.contains("0, 1 or 2"),
            "{e}"
        );
        std::fs::write(&part, "000001.jpg 0\n000002.jpg 2\n").unwrap();
        let e = err_of(load_all(t.path(), &o));
        assert!(
            e.contains(PARTITION_FILE) && e.contains("000003.jpg is not listed"),
            "{e}"
        );
    }

    /// Every file under `dir` with its size and mtime.
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

    /// Issue 28: the cache goes to the user cache folder, keyed by the data
    /// folder; nothing is written under the data folder.
    #[test]
    fn data_celeba_through_load_split_writes_nothing_in_data_dir() {
        let t = fake(10);
        let root = t.path().join("celeba");
        std::fs::create_dir(&root).unwrap();
        std::fs::rename(
            t.path().join("img_align_celeba"),
            root.join("img_align_celeba"),
        )
        .unwrap();
        let before = tree(t.path());
        let s = crate::data::load_split("celeba", Some(t.path()), Split::Train).unwrap();
        assert_eq!(s.images.size(), [9, 3, 64, 64]);
        assert!(s.labels.is_none());
        let te = crate::data::load_split("celeba", Some(t.path()), Split::Test).unwrap();
        assert_eq!(te.len(), 1);
        assert_eq!(tree(t.path()), before, "the data folder changed");
        // The second load came from the cache, in the user cache folder.
        let d = load_all(&root, &Options::default()).unwrap();
        let CacheOutcome::Hit(p) = &d.outcome else {
            panic!("not cached: {:?}", d.outcome)
        };
        assert!(p.starts_with(user_cache_root()), "{}", p.display());
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn data_celeba_unreadable_cache_is_rebuilt() {
        let t = fake(3);
        let c = tempfile::tempdir().unwrap();
        let o = opts(c.path());
        let d = load_all(t.path(), &o).unwrap();
        let CacheOutcome::Built(p) = d.outcome else {
            panic!("{:?}", d.outcome)
        };
        let mut flipped = std::fs::read(&p).unwrap();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let cut = std::fs::read(&p).unwrap()[..100].to_vec();
        for garbage in [b"garbage".to_vec(), cut, flipped] {
            std::fs::write(&p, garbage).unwrap();
            let d2 = load_all(t.path(), &o).unwrap();
            match &d2.outcome {
                CacheOutcome::Rebuilt { path, reason } => {
                    assert_eq!(path, &p);
                    assert!(reason.contains(&p.display().to_string()), "{reason}");
                    assert!(
                        reason.contains("bad magic")
                            || reason.contains("truncated")
                            || reason.contains("checksum mismatch"),
                        "{reason}"
                    );
                }
                o => panic!("{o:?}"),
            }
            assert!(d2.pixels.equal(&d.pixels));
            assert!(matches!(
                load_all(t.path(), &o).unwrap().outcome,
                CacheOutcome::Hit(_)
            ));
        }
    }

    #[test]
    fn data_celeba_corrupt_jpeg_fail_or_skip() {
        let t = fake(4);
        let bad = t.path().join("img_align_celeba/000002.jpg");
        let good = std::fs::read(&bad).unwrap();
        std::fs::write(&bad, &good[..good.len() * 2 / 3]).unwrap();
        let c = tempfile::tempdir().unwrap();
        let e = err_of(load_all(t.path(), &opts(c.path())));
        assert!(
            e.contains("corrupt image") && e.contains("000002.jpg"),
            "{e}"
        );
        let skip = Options {
            on_corrupt: OnCorrupt::Skip,
            cache: CacheMode::Dir(c.path().into()),
        };
        let d = load_all(t.path(), &skip).unwrap();
        assert_eq!(d.kept, [true, false, true, true]);
        assert_eq!(d.pixels.size()[0], 3);
        // The cache remembers the skipped file; failing mode still names it.
        let e = err_of(load_all(t.path(), &opts(c.path())));
        assert!(
            e.contains("corrupt image") && e.contains("000002.jpg"),
            "{e}"
        );
    }

    #[test]
    fn data_celeba_wrong_image_size_and_empty() {
        let t = fake(2);
        write_image(&t.path().join("img_align_celeba/000003.jpg"), 100, 120);
        let c = tempfile::tempdir().unwrap();
        let e = err_of(load_all(t.path(), &opts(c.path())));
        assert!(
            e.contains("wrong image size 100x120") && e.contains("000003.jpg"),
            "{e}"
        );
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("img_align_celeba")).unwrap();
        let e = err_of(load_all(t.path(), &opts(c.path())));
        assert!(
            e.contains("empty folder") && e.contains("img_align_celeba"),
            "{e}"
        );
    }
}
