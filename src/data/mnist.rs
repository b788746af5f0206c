//! MNIST / Fashion-MNIST IDX files, raw or gzipped.

use super::{ImageSet, Split};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

fn read_maybe_gz(base: &Path) -> Result<(Vec<u8>, std::path::PathBuf)> {
    let gz = base.with_file_name(format!(
        "{}.gz",
        base.file_name().unwrap().to_string_lossy()
    ));
    if gz.exists() {
        let f =
            std::fs::File::open(&gz).with_context(|| format!("cannot open {}", gz.display()))?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::io::BufReader::new(f))
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt or truncated gzip stream", gz.display()))?;
        Ok((out, gz))
    } else {
        let out = std::fs::read(base).with_context(|| format!("cannot read {}", base.display()))?;
        Ok((out, base.to_path_buf()))
    }
}

pub fn load_split(dir: &Path, split: Split, pad_to_32: bool) -> Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let (img, ip) = read_maybe_gz(&dir.join(format!("{prefix}-images-idx3-ubyte")))?;
    let (lab, lp) = read_maybe_gz(&dir.join(format!("{prefix}-labels-idx1-ubyte")))?;
    let be = |b: &[u8], o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
    if img.len() < 16 || be(&img, 0) != 2051 {
        bail!("{}: not an IDX image file (bad magic)", ip.display());
    }
    let (n, h, w) = (be(&img, 4), be(&img, 8), be(&img, 12));
    if img.len() != 16 + n * h * w {
        bail!(
            "{}: header says {n} images of {h}x{w} but the file has {} bytes",
            ip.display(),
            img.len()
        );
    }
    if lab.len() < 8 || be(&lab, 0) != 2049 || lab.len() != 8 + be(&lab, 4) || be(&lab, 4) != n {
        bail!("{}: bad IDX label file", lp.display());
    }
    let images = Tensor::from_slice(&img[16..])
        .view([n as i64, 1, h as i64, w as i64])
        .to_kind(Kind::Float)
        / 255.0;
    let images = if pad_to_32 && h == 28 && w == 28 {
        images.constant_pad_nd([2, 2, 2, 2])
    } else {
        images
    };
    let labels = Tensor::from_slice(&lab[8..]).to_kind(Kind::Int64);
    Ok(ImageSet {
        images,
        labels: Some(labels),
    })
}
