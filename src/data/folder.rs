//! `data.dataset = "folder"`: any folder of images (every format of
//! [`images::is_image_name`]), `data.dir`.
//!
//! Layout, one of:
//! - `DIR/train/` and `DIR/test/`: the split as given;
//! - `DIR/<class>/...`: one sub-folder per class;
//! - images directly in `DIR`: no labels.
//!
//! `train/` and `test/` may each hold images directly or class sub-folders
//! (both the same way). Labels come from the class sub-folders' names,
//! sorted: the first is 0, ..., the last K−1 (classes of `train/` and `test/`
//! together); sub-folders without images are not classes, and deeper folders
//! are not read. Without `train/` + `test/`, the test split is
//! `data.test_fraction` of each class's images (rounded, at least one image
//! overall, never a class's last), drawn with a fixed seed: every run on a
//! folder shares one test set. Each split's images come in a fixed shuffled
//! order, so the validation images (the last `data.val_size` of the training
//! split) and the first test images that `eval` uses mix the classes.
//!
//! Preprocessing: an optional centre crop of `data.center_crop` pixels
//! square, then (`data.resize = true`, the default) the largest centred
//! square resized to `data.image_size` with [`images::FILTER`]; with
//! `data.resize = false` the images (after the crop) must all be
//! `data.image_size` square. Grey or RGB (`data.channels`), in [0, 1].
//!
//! The decoded images are cached like CelebA's ([`super::cache`], in
//! `folder-cache/`), keyed by the folder's files and the preprocessing. The
//! load settings live in the run's config; [`register`] records them for the
//! data folder when a config is read (`Config::from_toml_str`), and the
//! loaders of [`super`], which take a data set name and a folder, look them
//! up ([`registered`]).

use super::cache::{self, CacheMode, CacheOutcome, Request};
use super::images::{self, OnCorrupt};
use super::{ImageSet, Split};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::Tensor;

/// Default `data.test_fraction`.
pub const DEFAULT_TEST_FRACTION: f64 = 0.1;
/// Seed of the test split and of each split's order (not the run's seed).
const SPLIT_SEED: u64 = 0x5eed_f01d;

/// How a folder's images are loaded (`data.*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct FolderOptions {
    /// Side of the square images the nets see (`data.image_size`).
    pub image_size: u32,
    /// 1 (grey) or 3 (RGB) (`data.channels`).
    pub channels: u32,
    /// Side of the centre crop before resizing, 0 = none (`data.center_crop`).
    pub center_crop: u32,
    /// Resize to `image_size` (`data.resize`); else every image must have that size.
    pub resize: bool,
    /// Test share without `train/` + `test/` (`data.test_fraction`).
    pub test_fraction: f64,
}

impl FolderOptions {
    /// The preprocessing, for cache keys.
    fn prep_tag(&self) -> String {
        format!(
            "folder size={} channels={} crop={} resize={} filter=triangle v1",
            self.image_size, self.channels, self.center_crop, self.resize
        )
    }
}

fn registry() -> &'static Mutex<Vec<(PathBuf, FolderOptions)>> {
    static R: std::sync::OnceLock<Mutex<Vec<(PathBuf, FolderOptions)>>> =
        std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

/// Record the load settings of the folder `dir` (the latest wins).
pub fn register(dir: &Path, o: &FolderOptions) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|(d, _)| d != dir);
    r.push((dir.to_path_buf(), o.clone()));
}

/// The load settings registered for `dir` (or for the same folder by another path).
pub fn registered(dir: &Path) -> Result<FolderOptions> {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    r.iter()
        .rev()
        .find(|(d, _)| d == dir)
        .or_else(|| {
            let c = canon(dir)?;
            r.iter().rev().find(|(d, _)| canon(d).as_ref() == Some(&c))
        })
        .map(|(_, o)| o.clone())
        .with_context(|| {
            format!(
                "{}: the `folder` data set's load settings (data.image_size, data.channels, ...) \
                 come from a run's config; use a run config with data.dataset = \"folder\" and \
                 data.dir = \"{}\"",
                dir.display(),
                dir.display()
            )
        })
}

/// How a folder is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `train/` and `test/` sub-folders.
    TrainTest,
    /// Split by `data.test_fraction`.
    Fraction,
}

/// Every image of a folder with its class and split.
#[derive(Debug, Clone)]
pub struct Listing {
    pub root: PathBuf,
    pub layout: Layout,
    /// The images, sorted by path below the root (`train/` before `test/`).
    pub files: Vec<PathBuf>,
    /// Sorted class names (empty: no labels).
    pub classes: Vec<String>,
    /// Class index of each file (all 0 without classes).
    pub class_of: Vec<i64>,
    pub split_of: Vec<Split>,
}

impl Listing {
    /// Indices into `files` of `split`, in the split's fixed shuffled order.
    pub fn split_indices(&self, split: Split) -> Vec<usize> {
        let idx: Vec<usize> = (0..self.files.len())
            .filter(|&i| self.split_of[i] == split)
            .collect();
        let code = match split {
            Split::Train => 1 << 32,
            Split::Test => 2 << 32,
        };
        crate::rng::permutation(idx.len(), SPLIT_SEED, code)
            .into_iter()
            .map(|p| idx[p as usize])
            .collect()
    }
}

/// The images of one folder: directly in it (class `None`) or in class
/// sub-folders, sorted by path.
fn list_part(dir: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    let (files, dirs) = images::folder_entries(dir)?;
    let mut classes = Vec::new();
    for d in dirs {
        let f = images::folder_entries(&d)?.0;
        if !f.is_empty() {
            classes.push((d, f));
        }
    }
    let name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    if let (Some(f), Some((d, _))) = (files.first(), classes.first()) {
        bail!(
            "{}: images both directly in the folder ({}) and in class sub-folders ({}/): put \
             every image in a class sub-folder (labelled), or none (unlabelled)",
            dir.display(),
            name(f),
            name(d)
        );
    }
    if files.is_empty() && classes.is_empty() {
        bail!(
            "{}: empty folder: no images (PNG, JPEG, ...) in it or in its sub-folders",
            dir.display()
        );
    }
    let mut out: Vec<(PathBuf, Option<String>)> = files.into_iter().map(|f| (f, None)).collect();
    for (d, fs) in classes {
        let c = name(&d);
        out.extend(fs.into_iter().map(|f| (f, Some(c.clone()))));
    }
    Ok(out)
}

/// The images of `root`, their classes and splits.
pub fn list(root: &Path, test_fraction: f64) -> Result<Listing> {
    if !root.is_dir() {
        bail!(
            "{}: missing folder (data.dir of data set `folder`)",
            root.display()
        );
    }
    let (tr, te) = (root.join("train"), root.join("test"));
    let (layout, parts) = if tr.is_dir() || te.is_dir() {
        if !(tr.is_dir() && te.is_dir()) {
            let (has, lacks) = if tr.is_dir() { (tr, te) } else { (te, tr) };
            bail!(
                "{}: has {}/ but no {}/: a folder split in advance holds both",
                root.display(),
                has.file_name().unwrap_or_default().to_string_lossy(),
                lacks.file_name().unwrap_or_default().to_string_lossy()
            );
        }
        let a = list_part(&tr)?;
        let b = list_part(&te)?;
        if a[0].1.is_some() != b[0].1.is_some() {
            bail!(
                "{}: train/ and test/ must both hold class sub-folders, or both images directly",
                root.display()
            );
        }
        let n = a.len();
        let parts: Vec<_> = a.into_iter().chain(b).enumerate().collect();
        let split = |i: usize| if i < n { Split::Train } else { Split::Test };
        (
            Layout::TrainTest,
            parts
                .into_iter()
                .map(|(i, (f, c))| (f, c, Some(split(i))))
                .collect::<Vec<_>>(),
        )
    } else {
        let parts = list_part(root)?;
        (
            Layout::Fraction,
            parts.into_iter().map(|(f, c)| (f, c, None)).collect(),
        )
    };
    let mut classes: Vec<String> = parts.iter().filter_map(|p| p.1.clone()).collect();
    classes.sort();
    classes.dedup();
    let class_of: Vec<i64> = parts
        .iter()
        .map(|p| {
            p.1.as_ref()
                .map_or(0, |c| classes.binary_search(c).unwrap() as i64)
        })
        .collect();
    let split_of = match layout {
        Layout::TrainTest => parts.iter().map(|p| p.2.unwrap()).collect(),
        Layout::Fraction => assign_split(root, &class_of, classes.len().max(1), test_fraction)?,
    };
    Ok(Listing {
        root: root.to_path_buf(),
        layout,
        files: parts.into_iter().map(|p| p.0).collect(),
        classes,
        class_of,
        split_of,
    })
}

/// `fraction` of each class's files (rounded, never a class's last) to Test.
fn assign_split(root: &Path, class_of: &[i64], k: usize, fraction: f64) -> Result<Vec<Split>> {
    let mut split = vec![Split::Train; class_of.len()];
    for c in 0..k {
        let idx: Vec<usize> = (0..class_of.len())
            .filter(|&i| class_of[i] == c as i64)
            .collect();
        let n_test =
            ((idx.len() as f64 * fraction).round() as usize).min(idx.len().saturating_sub(1));
        let perm = crate::rng::permutation(idx.len(), SPLIT_SEED, c as u64);
        for &p in &perm[..n_test] {
            split[idx[p as usize]] = Split::Test;
        }
    }
    if !split.contains(&Split::Test) {
        bail!(
            "{}: {} images are too few to hold out data.test_fraction = {fraction} of them as \
             the test split; add images, raise data.test_fraction, or split them into train/ \
             and test/ sub-folders",
            root.display(),
            class_of.len()
        );
    }
    Ok(split)
}

/// Name prefix of the cache files of the folder `root` (every preprocessing).
pub fn cache_prefix(root: &Path) -> String {
    format!("folder-{}-", cache::folder_hash(root))
}

/// Remove the folder's decoded-image caches from the user cache folder (for
/// tests that load through the default cache).
pub fn remove_user_caches(root: &Path) {
    let dir = cache::user_cache_root().join("folder-cache");
    let prefix = cache_prefix(root);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A folder's images, preprocessed, from the cache when possible.
pub struct Loaded {
    pub listing: Listing,
    /// One flag per file: false for a corrupt file that was skipped.
    pub kept: Vec<bool>,
    /// u8 `[K, C, S, S]` of the kept files.
    pub pixels: Tensor,
    pub outcome: CacheOutcome,
}

/// Side of an image after the centre crop.
fn cropped(dims: (u32, u32), crop: u32) -> (u32, u32) {
    if crop > 0 {
        (crop, crop)
    } else {
        dims
    }
}

/// Decode and preprocess every file: keep flags and u8 CHW pixels.
fn decode(
    files: &[PathBuf],
    o: &FolderOptions,
    on_corrupt: OnCorrupt,
) -> Result<(Vec<bool>, Vec<u8>)> {
    let (crop, size, resize) = (o.center_crop, o.image_size, o.resize);
    let decoded = images::decode_all(files, o.channels, |p, img| {
        let (w, h) = (img.width(), img.height());
        let img = if crop > 0 {
            if w < crop || h < crop {
                bail!(
                    "{}: image {w}x{h} is smaller than the centre crop (data.center_crop = {crop})",
                    p.display()
                );
            }
            img.crop_imm((w - crop) / 2, (h - crop) / 2, crop, crop)
        } else {
            img
        };
        Ok(if resize {
            images::center_square_resize(img, size)
        } else {
            img
        })
    });
    let cache::Gathered {
        kept,
        pixels: px,
        sizes: dims,
    } = cache::gather(decoded, on_corrupt, "image folder")?;
    if !resize {
        let kept_files: Vec<&PathBuf> = files
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(f, _)| f)
            .collect();
        let d0 = cropped(dims[0], crop);
        if let Some(i) = dims.iter().position(|d| cropped(*d, crop) != d0) {
            let d = cropped(dims[i], crop);
            bail!(
                "{}: image is {}x{}, but {} is {}x{}: the folder's images differ in size and \
                 data.resize = false; set data.resize = true to resize each to data.image_size",
                kept_files[i].display(),
                d.0,
                d.1,
                kept_files[0].display(),
                d0.0,
                d0.1
            );
        }
        if d0 != (size, size) {
            bail!(
                "{}: image is {}x{}, not data.image_size = {size} square, and data.resize = false; \
                 set data.resize = true (or data.image_size, data.center_crop)",
                kept_files[0].display(),
                d0.0,
                d0.1
            );
        }
    }
    Ok((kept, px))
}

/// Every image of the folder `root`, preprocessed as `o` says.
pub fn load_all(
    root: &Path,
    o: &FolderOptions,
    mode: &CacheMode,
    on_corrupt: OnCorrupt,
) -> Result<Loaded> {
    let listing = list(root, o.test_fraction)?;
    let tag = o.prep_tag();
    let key = cache::listing_key(&tag, root, &listing.files)?;
    let prep = cache::hex(&Sha256::digest(tag.as_bytes()));
    let req = Request {
        files: &listing.files,
        key: &key,
        name: format!("{}{}-{}.u8", cache_prefix(root), &prep[..8], &key[..16]),
        dims: [o.channels, o.image_size, o.image_size],
        mode,
        sub: "folder-cache",
        what: "image folder",
        on_corrupt,
    };
    let (kept, pixels, outcome) = cache::load(&req, || decode(&listing.files, o, on_corrupt))?;
    Ok(Loaded {
        listing,
        kept,
        pixels,
        outcome,
    })
}

/// One split as float `[N, C, S, S]` in [0, 1], labelled when the folder has classes.
pub fn load_split(
    root: &Path,
    split: Split,
    o: &FolderOptions,
    mode: &CacheMode,
    on_corrupt: OnCorrupt,
) -> Result<ImageSet> {
    let d = load_all(root, o, mode, on_corrupt)?;
    // Row of each kept file in `pixels`.
    let mut row = Vec::with_capacity(d.kept.len());
    let mut r = 0i64;
    for &k in &d.kept {
        row.push(k.then_some(r));
        r += k as i64;
    }
    let (rows, labels): (Vec<i64>, Vec<i64>) = d
        .listing
        .split_indices(split)
        .into_iter()
        .filter_map(|i| row[i].map(|r| (r, d.listing.class_of[i])))
        .unzip();
    if rows.is_empty() {
        bail!("{}: no image in the {split:?} split", root.display());
    }
    let images = super::u8_to_unit(&d.pixels.index_select(0, &Tensor::from_slice(&rows)));
    let labels = (!d.listing.classes.is_empty()).then(|| Tensor::from_slice(&labels));
    Ok(ImageSet { images, labels })
}

/// `folder-<hash>`: a name for the cache keys of one split (FID reference
/// statistics) from the split's files in order (paths below the root, sizes)
/// and the load settings.
pub fn split_identity(root: &Path, o: &FolderOptions, split: Split) -> Result<String> {
    let l = list(root, o.test_fraction)?;
    let mut h = Sha256::new();
    h.update(format!("{} test_fraction={}\n", o.prep_tag(), o.test_fraction).as_bytes());
    for i in l.split_indices(split) {
        let f = &l.files[i];
        let len = std::fs::metadata(f)
            .with_context(|| format!("cannot stat {}", f.display()))?
            .len();
        h.update(format!("{}\t{len}\n", cache::relative_name(root, f)).as_bytes());
    }
    Ok(format!("folder-{}", &cache::hex(&h.finalize())[..8]))
}

/// One paragraph for reports: the folder, its layout, split and preprocessing.
pub fn describe(root: &Path, o: &FolderOptions) -> Result<String> {
    let l = list(root, o.test_fraction)?;
    let count = |s| l.split_of.iter().filter(|x| **x == s).count();
    let split = match l.layout {
        Layout::TrainTest => "its train/ and test/ sub-folders".to_string(),
        Layout::Fraction => format!(
            "a fixed random {} of each class held out for testing (data.test_fraction)",
            o.test_fraction
        ),
    };
    let classes = if l.classes.is_empty() {
        "no labels".to_string()
    } else {
        format!(
            "{} classes from sub-folder names ({})",
            l.classes.len(),
            l.classes.join(", ")
        )
    };
    let crop = if o.center_crop > 0 {
        format!("centre crop {0}×{0}, ", o.center_crop)
    } else {
        String::new()
    };
    let size = if o.resize {
        format!(
            "centred square resized to {0}×{0} (antialiased bilinear)",
            o.image_size
        )
    } else {
        format!("{0}×{0}, not resized", o.image_size)
    };
    Ok(format!(
        "image folder {} ({} files; {classes}); split by {split}: {} train, {} test; {crop}{size}, \
         {} in [0, 1]",
        root.display(),
        l.files.len(),
        count(Split::Train),
        count(Split::Test),
        if o.channels == 1 { "grey levels" } else { "RGB" }
    ))
}

#[cfg(test)]
#[path = "folder_tests.rs"]
mod tests;
