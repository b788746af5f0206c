//! Image grids (paper Fig. 3) and single images as PNG.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// `[N,C,H,W]` floats in [0,1] → `[H', W', C]` u8 grid with `ncol` columns and
/// a `pad`-pixel border (value `pad_value`).
pub fn make_grid(images: &Tensor, ncol: i64, pad: i64, pad_value: f64) -> Result<Tensor> {
    let s = images.size();
    if s.len() != 4 || !(s[1] == 1 || s[1] == 3) {
        bail!("make_grid expects [N, 1|3, H, W] images, got {s:?}");
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    if n == 0 {
        bail!("make_grid: no images");
    }
    let ncol = ncol.clamp(1, n);
    let nrow = (n + ncol - 1) / ncol;
    let x = images
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .clamp(0.0, 1.0);
    let total = nrow * ncol;
    let x = if total > n {
        Tensor::cat(
            &[
                x,
                Tensor::full(
                    [total - n, c, h, w],
                    pad_value,
                    (Kind::Float, tch::Device::Cpu),
                ),
            ],
            0,
        )
    } else {
        x
    };
    let x = x
        .pad([pad, 0, pad, 0], "constant", pad_value)
        .view([nrow, ncol, c, h + pad, w + pad]);
    let g = x
        .permute([0, 3, 1, 4, 2])
        .reshape([nrow * (h + pad), ncol * (w + pad), c]);
    let g = g.pad([0, 0, 0, pad, 0, pad], "constant", pad_value);
    Ok((g * 255.0).round().to_kind(Kind::Uint8))
}

/// Save `[N,C,H,W]` images in [0,1] as one PNG grid (atomically).
pub fn save_grid(images: &Tensor, ncol: i64, path: &Path) -> Result<()> {
    let g = make_grid(images, ncol, 2, 1.0)?;
    save_hwc_u8(&g, path)
}

/// Save a `[H,W,C]` u8 tensor (C = 1 or 3) as PNG (atomically).
pub fn save_hwc_u8(g: &Tensor, path: &Path) -> Result<()> {
    let s = g.size();
    let (h, w, c) = (s[0] as u32, s[1] as u32, s[2]);
    let data = Vec::<u8>::try_from(g.contiguous().flatten(0, -1))?;
    crate::util::with_atomic_path(path, |tmp| {
        let res = if c == 1 {
            image::GrayImage::from_raw(w, h, data)
                .context("bad grid buffer")?
                .save_with_format(tmp, image::ImageFormat::Png)
        } else {
            image::RgbImage::from_raw(w, h, data)
                .context("bad grid buffer")?
                .save_with_format(tmp, image::ImageFormat::Png)
        };
        res.with_context(|| format!("cannot write {}", path.display()))
    })
}

/// Save each image of `[N,C,H,W]` as `DIR/{start+i:06}.png` (for FID and other tools).
pub fn save_each(images: &Tensor, dir: &Path, start: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for i in 0..images.size()[0] {
        let img = images.get(i).clamp(0.0, 1.0).permute([1, 2, 0]) * 255.0;
        let img = img.round().to_kind(Kind::Uint8);
        save_hwc_u8(&img, &dir.join(format!("{:06}.png", start + i as usize)))?;
    }
    Ok(())
}

/// Originals above reconstructions, interleaved by rows of `ncol` (Fig. 3):
/// the images of the grid, in order.
pub fn recon_rows(originals: &Tensor, recons: &Tensor, ncol: i64) -> Tensor {
    let n = originals.size()[0].min(recons.size()[0]);
    let mut rows = Vec::new();
    let mut i = 0;
    while i < n {
        let len = ncol.min(n - i);
        rows.push(originals.narrow(0, i, len).to_device(tch::Device::Cpu));
        rows.push(recons.narrow(0, i, len).to_device(tch::Device::Cpu));
        i += len;
    }
    Tensor::cat(&rows, 0)
}

/// [`recon_rows`] saved as one PNG grid.
pub fn save_recon_grid(originals: &Tensor, recons: &Tensor, ncol: i64, path: &Path) -> Result<()> {
    save_grid(&recon_rows(originals, recons, ncol), ncol, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_in_rows_and_columns() {
        // 3 images of 1×2×2 with values 0, 0.5, 1 in a 2-column grid, pad 1.
        let imgs = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 2, 2], (Kind::Float, tch::Device::Cpu)),
                Tensor::full([1, 1, 2, 2], 0.5, (Kind::Float, tch::Device::Cpu)),
                Tensor::ones([1, 1, 2, 2], (Kind::Float, tch::Device::Cpu)),
            ],
            0,
        );
        let g = make_grid(&imgs, 2, 1, 1.0).unwrap();
        assert_eq!(g.size(), vec![7, 7, 1]);
        assert_eq!(g.int64_value(&[1, 1, 0]), 0);
        assert_eq!(g.int64_value(&[1, 4, 0]), 128);
        assert_eq!(g.int64_value(&[4, 1, 0]), 255);
        assert_eq!(g.int64_value(&[0, 0, 0]), 255); // border
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        save_grid(&imgs, 2, &p).unwrap();
        let back = image::open(&p).unwrap();
        assert_eq!((back.width(), back.height()), (2 * 4 + 2, 2 * 4 + 2));
    }
}
