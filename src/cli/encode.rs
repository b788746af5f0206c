//! `ldc-vae encode RUN --out latents.npy`: the encoder latents of a split's
//! images as a NumPy `.npy` file (`[n, latent_dim]` float32), and their
//! labels as `<stem>.labels.npy` (int64) beside it when the data set has them.
//!
//! The files are written with `ndarray-npy` (a maintained crate for the
//! `.npy` format over `ndarray`, whose 0.16 `tch` already depends on) rather
//! than a hand-made header, through a temp file and a rename.

use crate::data::{self, ImageSet, Split};
use crate::rng::{reseed, Stream};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncodeSplit {
    /// The test split.
    Test,
    /// The images the model was trained on (`data.train_limit` applied).
    Train,
    /// The validation images held out of the training split (`data.val_size`).
    Val,
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// Run directory written by `ldc-vae train`.
    pub run_dir: PathBuf,
    /// Which images to encode.
    #[arg(long, value_enum, default_value_t = EncodeSplit::Test)]
    pub split: EncodeSplit,
    /// Encode the first N images of the split (default: all of them).
    #[arg(long)]
    pub n: Option<usize>,
    /// The latents file (`.npy`); labels go to `<stem>.labels.npy` beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per encoder pass.
    #[arg(long, default_value_t = 250)]
    pub batch: i64,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Encode with a run whose training is unfinished (else an error naming
    /// the missing phase).
    #[arg(long)]
    pub allow_unfinished: bool,
}

/// `<stem>.labels.npy` beside `out` (`latents.npy` → `latents.labels.npy`).
pub fn labels_path(out: &Path) -> PathBuf {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix(".npy").unwrap_or(&name);
    out.with_file_name(format!("{stem}.labels.npy"))
}

/// `[n, d]` float latents as a float32 `.npy` file (atomically).
pub fn write_latents(path: &Path, z: &Tensor) -> Result<()> {
    let s = z.size();
    if s.len() != 2 {
        bail!("latents must be [n, latent_dim], got {s:?}");
    }
    let v = Vec::<f32>::try_from(z.to_kind(Kind::Float).contiguous().flatten(0, -1))?;
    let a = ndarray::Array2::from_shape_vec((s[0] as usize, s[1] as usize), v)?;
    write_npy(path, &a)
}

/// Integer labels `[n]` as an int64 `.npy` file (atomically).
pub fn write_labels(path: &Path, labels: &Tensor) -> Result<()> {
    let v = Vec::<i64>::try_from(labels.to_kind(Kind::Int64).contiguous().flatten(0, -1))?;
    write_npy(path, &ndarray::Array1::from(v))
}

fn write_npy<A, D>(path: &Path, a: &ndarray::ArrayBase<A, D>) -> Result<()>
where
    A: ndarray::Data,
    A::Elem: ndarray_npy::WritableElement,
    D: ndarray::Dimension,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::util::with_atomic_path(path, |tmp| {
        ndarray_npy::write_npy(tmp, a).with_context(|| format!("cannot write {}", path.display()))
    })
}

/// The run's images of `split`.
fn images_of(cfg: &crate::config::Config, split: EncodeSplit) -> Result<ImageSet> {
    Ok(match split {
        EncodeSplit::Test => {
            let dir = (!cfg.data.dir.is_empty()).then(|| PathBuf::from(&cfg.data.dir));
            data::load_split(&cfg.data.dataset, dir.as_deref(), Split::Test)?
        }
        EncodeSplit::Train => crate::train::load_train_data(cfg)?.train,
        EncodeSplit::Val => crate::train::load_train_data(cfg)?.val,
    })
}

pub fn run(a: EncodeArgs) -> Result<()> {
    crate::run_state::require_finished(&a.run_dir, a.allow_unfinished, "encode with")?;
    let (cfg, model, _) = crate::run_dir::load_run(&a.run_dir, a.device.as_deref())?;
    let set = images_of(&cfg, a.split)?;
    let what = format!("{:?}", a.split).to_lowercase();
    let n = match a.n {
        Some(0) => bail!("--n 0: nothing to encode"),
        Some(n) if n as i64 > set.len() => bail!(
            "--n {n}: the {what} split of this run has {} images",
            set.len()
        ),
        Some(n) => n as i64,
        None => set.len(),
    };
    if set.is_empty() {
        bail!("the {what} split of this run has no images");
    }
    // Stochastic encoders draw their noise from the evaluation stream, as `eval`.
    reseed(cfg.seed, Stream::Eval, 10);
    let z = crate::eval::run::encode_set(model.as_ref(), &set, n, a.batch.max(1));
    write_latents(&a.out, &z)?;
    println!(
        "wrote {} ({n} × {} float32 latents of the {what} split)",
        a.out.display(),
        z.size()[1]
    );
    let lp = labels_path(&a.out);
    match &set.labels {
        Some(l) => {
            write_labels(&lp, &l.narrow(0, 0, n))?;
            println!("wrote {} ({n} int64 labels)", lp.display());
        }
        None if lp.exists() => {
            // An older file there would pair other labels with these latents.
            std::fs::remove_file(&lp)
                .with_context(|| format!("cannot remove the stale {}", lp.display()))?;
            println!("removed {} (this data set has no labels)", lp.display());
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_npy_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let z = Tensor::from_slice(&[0.5f32, -1.25, 3.0, 1e-7, f32::MAX, -0.0]).view([3, 2]);
        let p = t.path().join("sub/latents.npy");
        write_latents(&p, &z.to_kind(Kind::Double)).unwrap();
        let back: ndarray::Array2<f32> = ndarray_npy::read_npy(&p).unwrap();
        assert_eq!(back.shape(), [3, 2]);
        assert_eq!(
            back.iter().copied().collect::<Vec<_>>(),
            Vec::<f32>::try_from(z.flatten(0, -1)).unwrap()
        );
        let lp = labels_path(&p);
        assert_eq!(lp, t.path().join("sub/latents.labels.npy"));
        write_labels(&lp, &Tensor::from_slice(&[2i64, 0, 9])).unwrap();
        let l: ndarray::Array1<i64> = ndarray_npy::read_npy(&lp).unwrap();
        assert_eq!(l.to_vec(), [2, 0, 9]);
        // No temp files left beside them.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(labels_path(Path::new("z")), Path::new("z.labels.npy"));
        assert!(write_latents(&p, &Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))).is_err());
    }
}
