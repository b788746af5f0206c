//! Data sets in their standard public formats, as float tensors in [0, 1],
//! N×C×H×W, with labels where the format has them.
//!
//! - MNIST / Fashion-MNIST: IDX files, raw or gzipped ([`mnist`]), 1×28×28
//!   zero-padded to 1×32×32 by [`load_split`].
//! - CIFAR-10: binary batches ([`cifar`]), 3×32×32.
//! - CelebA: `img_align_celeba/` JPEGs ([`celeba`]), centre crop 140, resized
//!   to 3×64×64, cached on disk after the first pass; the standard partition
//!   (`list_eval_partition.txt`) when present, else the last 10% by name = test.
//! - `folder`: any folder of images, labelled by class sub-folders or not,
//!   split by `train/` + `test/` or a fixed share ([`folder`]).
//! - Any folder of PNG/JPEG images ([`images::load_image_folder`]).
//!
//! [`info`] describes a file or folder (`ldc-vae data info`), [`fetch`] gets a
//! data set into the data directory (`ldc-vae data fetch`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub mod cache;
pub mod celeba;
pub mod cifar;
pub mod config;
pub mod fetch;
pub mod folder;
pub mod images;
pub mod info;
pub mod mnist;

pub use images::{load_image_folder, load_image_folder_opts, OnCorrupt};

/// A set of images in memory (CPU), N×C×H×W float32 in [0, 1].
pub struct ImageSet {
    pub images: Tensor,
    /// Class labels, int64 of length N, where the format has them.
    pub labels: Option<Tensor>,
}

impl ImageSet {
    pub fn len(&self) -> i64 {
        self.images.size()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image shape (C, H, W).
    pub fn shape(&self) -> (i64, i64, i64) {
        let s = self.images.size();
        (s[1], s[2], s[3])
    }
    /// Rows `start..end` (a view, no copy).
    pub fn slice(&self, start: i64, end: i64) -> ImageSet {
        ImageSet {
            images: self.images.narrow(0, start, end - start),
            labels: self
                .labels
                .as_ref()
                .map(|l| l.narrow(0, start, end - start)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Where a data set is looked for: `dir` if given, then `$LDC_VAE_DATA`,
/// `./data`, `../shared/data` (relative to the working directory and to the
/// crate), `/usr/share/datasets` (Debian packages), each with the data set's
/// sub-folder.
/// The `folder` data set is `dir` itself (required).
pub fn find_dataset_dir(dataset: &str, dir: Option<&Path>) -> Result<PathBuf> {
    let sub = match dataset {
        "mnist" => "mnist",
        "fashion-mnist" => "fashion-mnist",
        "cifar10" => "cifar10",
        "celeba" => "celeba",
        "folder" => {
            let d = dir.context("data set `folder` needs its folder: set `data.dir`")?;
            if !d.is_dir() {
                bail!(
                    "{}: missing folder (data.dir of data set `folder`)",
                    d.display()
                );
            }
            return Ok(d.to_path_buf());
        }
        other => {
            bail!("unknown data set `{other}` (mnist, fashion-mnist, cifar10, celeba, folder)")
        }
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(d) = dir {
        roots.push(d.to_path_buf());
    }
    if let Ok(d) = std::env::var("LDC_VAE_DATA") {
        roots.push(PathBuf::from(d));
    }
    roots.push(PathBuf::from("data"));
    roots.push(PathBuf::from("../shared/data"));
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    // Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist.
    roots.push(PathBuf::from("/usr/share/datasets"));
    for r in &roots {
        for cand in [r.join(sub), r.clone()] {
            if looks_like(dataset, &cand) {
                return Ok(cand);
            }
        }
    }
    bail!(
        "data set `{dataset}` not found (looked in {}); run `ldc-vae data fetch {dataset}`",
        roots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn looks_like(dataset: &str, dir: &Path) -> bool {
    match dataset {
        "mnist" | "fashion-mnist" => {
            dir.join("train-images-idx3-ubyte.gz").exists()
                || dir.join("train-images-idx3-ubyte").exists()
        }
        "cifar10" => {
            dir.join("test_batch.bin").exists()
                || dir.join("data_batch_1.bin").exists()
                || dir.join("cifar-10-batches-bin/test_batch.bin").exists()
        }
        "celeba" => dir.join("img_align_celeba").is_dir(),
        _ => false,
    }
}

/// u8 pixels to float32 in [0, 1] (`x / 255`), one conversion pass and one
/// in-place division.
pub fn u8_to_unit(t: &Tensor) -> Tensor {
    let mut f = t.to_kind(tch::Kind::Float);
    f /= 255.0;
    f
}

/// u8 `[N, C, H, W]` to float32 in [0, 1], zero-padded by `pad` pixels on
/// every side, without an intermediate unpadded float copy.
pub fn u8_to_unit_padded(t: &Tensor, pad: i64) -> Tensor {
    if pad == 0 {
        return u8_to_unit(t);
    }
    let s = t.size();
    let mut out = Tensor::zeros(
        [s[0], s[1], s[2] + 2 * pad, s[3] + 2 * pad],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    out.narrow(2, pad, s[2]).narrow(3, pad, s[3]).copy_(t);
    out /= 255.0;
    out
}

/// One paragraph for reports: where the data came from, the split used and
/// the preprocessing (DESIGN §4; RAE's for CelebA and CIFAR-10).
pub fn describe(dataset: &str, dir: Option<&Path>) -> Result<String> {
    let root = find_dataset_dir(dataset, dir)?;
    Ok(match dataset {
        "mnist" | "fashion-mnist" => format!(
            "{dataset} from {}: the standard 60,000 / 10,000 train/test IDX files; 28×28 grey levels \
             in [0, 1], zero-padded to 32×32 for the RAE architecture",
            root.display()
        ),
        "cifar10" => {
            let names = |split| -> Result<String> {
                Ok(cifar::split_files(&root, split)?
                    .iter()
                    .map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", "))
            };
            format!(
                "CIFAR-10 binary batches from {}: train = {}, test = {} (the official test batch); \
                 32×32 RGB in [0, 1], no cropping, flipping or normalisation (as RAE)",
                root.display(),
                names(Split::Train)?,
                names(Split::Test)?
            )
        }
        "celeba" => {
            let img = celeba::image_dir(&root);
            let files = images::list_images(&img)?;
            let a = celeba::assign_split(&root, &files)?;
            format!(
                "CelebA aligned JPEGs from {} ({} files); {}; centre crop 140×140, resized to 64×64 \
                 (antialiased bilinear), RGB in [0, 1] (as RAE/WAE)",
                img.display(),
                files.len(),
                a.describe()
            )
        }
        "folder" => folder::describe(&root, &folder::registered(&root)?)?,
        other => bail!("unknown data set `{other}`"),
    })
}

/// A name for a data set's split that changes when the images in it change,
/// for cache keys (FID reference statistics): the data set's name for MNIST
/// and CIFAR-10 (fixed standard test sets), `celeba-<hash>` for CelebA, whose
/// test split depends on the folder (subset or full set, partition file),
/// `folder-<hash>` for an image folder (its files, sizes and load settings,
/// [`folder::split_identity`]).
pub fn split_identity(dataset: &str, dir: Option<&Path>, split: Split) -> Result<String> {
    if dataset == "folder" {
        let root = find_dataset_dir(dataset, dir)?;
        return folder::split_identity(&root, &folder::registered(&root)?, split);
    }
    if dataset != "celeba" {
        return Ok(dataset.to_string());
    }
    let root = find_dataset_dir(dataset, dir)?;
    let files = images::list_images(&celeba::image_dir(&root))?;
    let a = celeba::assign_split(&root, &files)?;
    let mut names = String::new();
    for (f, s) in files.iter().zip(&a.of_file) {
        if *s == Some(split) {
            names += &f.file_name().unwrap_or_default().to_string_lossy();
            names.push('\n');
        }
    }
    let h = cache::hex(&<sha2::Sha256 as sha2::Digest>::digest(names.as_bytes()));
    Ok(format!("celeba-{}", &h[..8]))
}

/// Options of [`load_split_opts`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Corrupt image files (CelebA): fail (default) or skip with a warning.
    pub on_corrupt: OnCorrupt,
    /// Where the decoded-image caches live (CelebA, `folder`).
    pub celeba_cache: celeba::CacheMode,
}

/// Load one split of a data set, ready for the conv nets (MNIST padded to 32×32).
pub fn load_split(dataset: &str, dir: Option<&Path>, split: Split) -> Result<ImageSet> {
    load_split_opts(dataset, dir, split, &LoadOptions::default())
}

/// [`load_split`] with options.
pub fn load_split_opts(
    dataset: &str,
    dir: Option<&Path>,
    split: Split,
    opts: &LoadOptions,
) -> Result<ImageSet> {
    let root = find_dataset_dir(dataset, dir)?;
    let r = match dataset {
        "mnist" | "fashion-mnist" => mnist::load_split(&root, split, true).and_then(|s| {
            if s.shape() != (1, 32, 32) {
                let (iname, _) = mnist::split_names(split);
                let f = mnist::find_file(&root, iname)?;
                let sz = s.images.size();
                bail!(
                    "{}: wrong image size {}x{}: {dataset} images are 28x28",
                    f.display(),
                    sz[2],
                    sz[3]
                );
            }
            Ok(s)
        }),
        "cifar10" => cifar::load_split(&root, split),
        "celeba" => {
            let o = celeba::Options {
                on_corrupt: opts.on_corrupt,
                cache: opts.celeba_cache.clone(),
            };
            celeba::load_split(&root, split, &o)
        }
        "folder" => folder::registered(&root).and_then(|o| {
            folder::load_split(&root, split, &o, &opts.celeba_cache, opts.on_corrupt)
        }),
        other => bail!("unknown data set `{other}`"),
    };
    r.with_context(|| format!("loading {dataset} ({split:?}) from {}", root.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn data_load_split_wrong_mnist_image_size() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("mnist");
        std::fs::create_dir(&d).unwrap();
        let img = idx(mnist::IMAGES_MAGIC, &[2, 20, 20], &[7u8; 800]);
        std::fs::write(d.join("train-images-idx3-ubyte"), img).unwrap();
        std::fs::write(
            d.join("train-labels-idx1-ubyte"),
            idx(mnist::LABELS_MAGIC, &[2], &[1, 2]),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            load_split("mnist", Some(t.path()), Split::Train)
                .err()
                .unwrap()
        );
        assert!(
            e.contains("wrong image size 20x20") && e.contains("train-images-idx3-ubyte"),
            "{e}"
        );
    }

    #[test]
    fn data_load_split_unknown_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            load_split("imagenet", Some(t.path()), Split::Train)
                .err()
                .unwrap()
        );
        assert!(e.contains("unknown data set `imagenet`"), "{e}");
    }

    #[test]
    fn data_u8_to_unit_padded_matches_pad() {
        let u = Tensor::from_slice(&[0u8, 51, 102, 255]).view([1, 1, 2, 2]);
        let a = u8_to_unit_padded(&u, 2);
        let b = (u.to_kind(tch::Kind::Float) / 255.0).constant_pad_nd([2, 2, 2, 2]);
        assert!(a.equal(&b));
    }
}
