//! Data sets in their standard public formats, as float tensors in [0, 1],
//! N×C×H×W, with labels where the format has them.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub mod mnist;

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
/// crate), each with the data set's sub-folder.
pub fn find_dataset_dir(dataset: &str, dir: Option<&Path>) -> Result<PathBuf> {
    let sub = match dataset {
        "mnist" => "mnist",
        "fashion-mnist" => "fashion-mnist",
        "cifar10" => "cifar10",
        "celeba" => "celeba",
        other => bail!("unknown data set `{other}` (mnist, fashion-mnist, cifar10, celeba)"),
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
        "cifar10" => dir.join("test_batch.bin").exists(),
        "celeba" => dir.join("img_align_celeba").is_dir(),
        _ => false,
    }
}

/// Load one split of a data set, ready for the conv nets (MNIST padded to 32×32).
pub fn load_split(dataset: &str, dir: Option<&Path>, split: Split) -> Result<ImageSet> {
    let root = find_dataset_dir(dataset, dir)?;
    match dataset {
        "mnist" | "fashion-mnist" => mnist::load_split(&root, split, true)
            .with_context(|| format!("loading {dataset} from {}", root.display())),
        other => bail!("loading `{other}` is not implemented yet"),
    }
}
