//! Folders of images (PNG, JPEG and every other format of the `image` crate
//! built in: BMP, GIF, ICO, PNM, QOI, TGA, TIFF, WebP): listing, parallel
//! decoding (rayon, all cores of the global pool) and the generic
//! `load_image_folder` used for FID on generated images.
//!
//! Resizing uses [`FILTER`] (`FilterType::Triangle`): a bilinear filter whose
//! support widens with the down-scaling factor, i.e. antialiased bilinear
//! like PIL's `BILINEAR` / torchvision's `Resize(antialias=True)`.

use super::ImageSet;
use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::DynamicImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The resampling filter of every resize in this crate's data layer.
pub const FILTER: FilterType = FilterType::Triangle;

/// What to do with an image file that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Stop with an error naming the file (the default).
    #[default]
    Fail,
    /// Leave the file out, with a warning naming it.
    Skip,
}

/// Whether `name` has the extension of an image format this build decodes
/// (png, jpg, jpeg, bmp, gif, ico, pnm/ppm/pgm, qoi, tga, tif/tiff, webp;
/// any case).
pub fn is_image_name(name: &str) -> bool {
    image::ImageFormat::from_path(name).is_ok_and(|f| f.reading_enabled())
}

/// The image files (by [`is_image_name`], hidden files left out) and the
/// sub-folders (hidden ones left out) directly in `dir`, each sorted by name.
/// Fails on a missing folder; an empty one is no error here.
pub fn folder_entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    if !dir.is_dir() {
        bail!("{}: missing folder (or not a folder)", dir.display());
    }
    let rd = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for e in rd {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if e.path().is_dir() {
            dirs.push(e.path());
        } else if is_image_name(&name) {
            files.push(e.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    dirs.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok((files, dirs))
}

/// The image files directly in `dir` (not recursive), sorted by file name.
/// Fails on a missing folder or one without images.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let v = folder_entries(dir)?.0;
    if v.is_empty() {
        bail!(
            "{}: empty folder: no images (PNG, JPEG, ...) in it",
            dir.display()
        );
    }
    Ok(v)
}

/// Decode one file (format from its content; from its name only for formats
/// without a signature, such as TGA). JPEGs are decoded in strict mode: a
/// truncated or damaged entropy stream is an error, not an image padded with
/// grey.
pub fn decode_file(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let fmt = image::guess_format(&bytes)
        .ok()
        .or_else(|| {
            image::ImageFormat::from_path(path)
                .ok()
                .filter(|f| *f == image::ImageFormat::Tga)
        })
        .filter(|f| f.reading_enabled())
        .ok_or_else(|| {
            anyhow!(
                "{}: corrupt image: not an image format this build reads (unrecognised header)",
                path.display()
            )
        })?;
    if fmt == image::ImageFormat::Jpeg {
        return decode_jpeg_strict(&bytes)
            .map_err(|e| anyhow!("{}: corrupt image (JPEG): {e}", path.display()));
    }
    image::load_from_memory_with_format(&bytes, fmt)
        .map_err(|e| anyhow!("{}: corrupt image ({fmt:?}): {e}", path.display()))
}

/// A baseline or progressive JPEG, grey or RGB, with zune-jpeg in strict mode.
fn decode_jpeg_strict(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().set_strict_mode(true);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    d.decode_headers()
        .map_err(|e| format!("{e:?}").trim_matches('"').to_string())?;
    let gray = matches!(
        d.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    let out = if gray {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    d.set_options(opts.jpeg_set_out_colorspace(out));
    let px = d
        .decode()
        .map_err(|e| format!("{e:?}").trim_matches('"').to_string())?;
    let (w, h) = d.dimensions().ok_or("no dimensions")?;
    let (w, h) = (w as u32, h as u32);
    let img = if gray {
        image::GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8)
    } else {
        image::RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8)
    };
    img.ok_or_else(|| "decoded buffer has the wrong size".to_string())
}

/// `img` as `channels` (1 or 3) planes, CHW, appended to `out`.
pub fn push_chw(img: &DynamicImage, channels: u32, out: &mut Vec<u8>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if channels == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        let raw = rgb.as_raw();
        let start = out.len();
        out.resize(start + 3 * w * h, 0);
        let (r, rest) = out[start..].split_at_mut(w * h);
        let (g, b) = rest.split_at_mut(w * h);
        for (i, px) in raw.chunks_exact(3).enumerate() {
            r[i] = px[0];
            g[i] = px[1];
            b[i] = px[2];
        }
    }
}

/// Result of decoding one file: its original size and the preprocessed CHW bytes.
pub type Decoded = Result<((u32, u32), Vec<u8>)>;

/// Decode and preprocess `files` in parallel (order kept). `prep` maps a
/// decoded image to its final form or fails (naming the file).
pub fn decode_all<F>(files: &[PathBuf], channels: u32, prep: F) -> Vec<Decoded>
where
    F: Fn(&Path, DynamicImage) -> Result<DynamicImage> + Sync,
{
    files
        .par_iter()
        .map(|p| {
            let img = decode_file(p)?;
            let dims = (img.width(), img.height());
            let img = prep(p, img)?;
            let mut v = Vec::with_capacity((channels * img.width() * img.height()) as usize);
            push_chw(&img, channels, &mut v);
            Ok((dims, v))
        })
        .collect()
}

/// The largest centred square of `img`, resized to `size`×`size` with [`FILTER`].
pub fn center_square_resize(img: DynamicImage, size: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let s = w.min(h);
    let img = if w != h {
        img.crop_imm((w - s) / 2, (h - s) / 2, s, s)
    } else {
        img
    };
    if s == size {
        img
    } else {
        img.resize_exact(size, size, FILTER)
    }
}

/// Every PNG/JPEG directly in `dir` (sorted by name) as float `[N, channels,
/// size, size]` in [0, 1], no labels. All images must have the same size; a
/// non-square image is centre-cropped to a square, then resized with
/// [`FILTER`] when its side differs from `size`. Corrupt files fail, naming
/// the file.
pub fn load_image_folder(dir: &Path, size: u32, channels: u32) -> Result<ImageSet> {
    load_image_folder_opts(dir, size, channels, OnCorrupt::Fail)
}

/// [`load_image_folder`] with a choice for corrupt files.
pub fn load_image_folder_opts(
    dir: &Path,
    size: u32,
    channels: u32,
    on_corrupt: OnCorrupt,
) -> Result<ImageSet> {
    if channels != 1 && channels != 3 {
        bail!("load_image_folder: channels must be 1 or 3, not {channels}");
    }
    if size == 0 {
        bail!("load_image_folder: size must be positive");
    }
    let files = list_images(dir)?;
    let decoded = decode_all(&files, channels, |_, img| {
        Ok(center_square_resize(img, size))
    });
    let per = (channels * size * size) as usize;
    let mut out = Vec::with_capacity(files.len() * per);
    let mut first: Option<(PathBuf, (u32, u32))> = None;
    let mut skipped = Vec::new();
    for (p, d) in files.iter().zip(decoded) {
        match d {
            Ok((dims, px)) => {
                match &first {
                    None => first = Some((p.clone(), dims)),
                    Some((fp, fd)) if *fd != dims => bail!(
                        "{}: wrong image size {}x{}: the folder's first image {} is {}x{}, \
                         and all images must have the same size",
                        p.display(),
                        dims.0,
                        dims.1,
                        fp.display(),
                        fd.0,
                        fd.1
                    ),
                    _ => {}
                }
                out.extend_from_slice(&px);
            }
            Err(e) if on_corrupt == OnCorrupt::Skip => {
                tracing::warn!("skipping {e:#}");
                skipped.push(p.clone());
            }
            Err(e) => return Err(e),
        }
    }
    if first.is_none() {
        bail!(
            "{}: no image in the folder could be decoded ({} skipped)",
            dir.display(),
            skipped.len()
        );
    }
    let n = (out.len() / per) as i64;
    let s = size as i64;
    let images = super::u8_to_unit(&Tensor::from_slice(&out).view([n, channels as i64, s, s]));
    Ok(ImageSet {
        images,
        labels: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tch::Kind;

    /// Write a `w`×`h` RGB image with a gradient to `path` (format from extension).
    pub fn write_image(path: &Path, w: u32, h: u32) {
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 128]));
        img.save(path).unwrap();
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn data_folder_loads_png_and_jpeg() {
        let t = tempfile::tempdir().unwrap();
        write_image(&t.path().join("b.png"), 40, 40);
        write_image(&t.path().join("a.jpg"), 40, 40);
        std::fs::write(t.path().join("notes.txt"), "not an image").unwrap();
        let s = load_image_folder(t.path(), 32, 3).unwrap();
        assert_eq!(s.images.size(), [2, 3, 32, 32]);
        assert!(s.labels.is_none());
        let g = load_image_folder(t.path(), 40, 1).unwrap();
        assert_eq!(g.images.size(), [2, 1, 40, 40]);
        // b.png (second) is lossless: blue channel is 128 everywhere.
        let b = s.images.get(1).get(2).mean(Kind::Double).double_value(&[]);
        assert!((b - 128.0 / 255.0).abs() < 1e-3, "{b}");
    }

    #[test]
    fn data_folder_empty_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let e = err_of(load_image_folder(t.path(), 32, 3));
        assert!(
            e.contains("empty folder") && e.contains(&t.path().display().to_string()),
            "{e}"
        );
        let e = err_of(load_image_folder(&t.path().join("nope"), 32, 3));
        assert!(e.contains("missing folder") && e.contains("nope"), "{e}");
    }

    #[test]
    fn data_folder_corrupt_jpeg_fail_or_skip() {
        let t = tempfile::tempdir().unwrap();
        write_image(&t.path().join("a.png"), 16, 16);
        write_image(&t.path().join("c.jpg"), 16, 16);
        // Garbage with a JPEG name, and a JPEG cut short in its header.
        std::fs::write(t.path().join("b.jpg"), b"this is not a jpeg at all").unwrap();
        let good = std::fs::read(t.path().join("c.jpg")).unwrap();
        std::fs::write(t.path().join("d.jpg"), &good[..20]).unwrap();
        let e = err_of(load_image_folder(t.path(), 16, 3));
        assert!(e.contains("corrupt image") && e.contains("b.jpg"), "{e}");
        let s = load_image_folder_opts(t.path(), 16, 3, OnCorrupt::Skip).unwrap();
        assert_eq!(s.len(), 2);
        std::fs::remove_file(t.path().join("b.jpg")).unwrap();
        std::fs::remove_file(t.path().join("d.jpg")).unwrap();
        // A JPEG cut in its entropy-coded data (a lenient decoder pads it with grey).
        write_image(&t.path().join("e.jpg"), 160, 160);
        let b = std::fs::read(t.path().join("e.jpg")).unwrap();
        std::fs::write(t.path().join("e.jpg"), &b[..b.len() * 2 / 3]).unwrap();
        let e = err_of(load_image_folder(t.path(), 16, 3));
        assert!(e.contains("corrupt image") && e.contains("e.jpg"), "{e}");
        std::fs::remove_file(t.path().join("e.jpg")).unwrap();
        std::fs::write(t.path().join("d.jpg"), &good[..20]).unwrap();
        let e = err_of(load_image_folder(t.path(), 16, 3));
        assert!(e.contains("corrupt image") && e.contains("d.jpg"), "{e}");
    }

    #[test]
    fn data_folder_wrong_image_size() {
        let t = tempfile::tempdir().unwrap();
        write_image(&t.path().join("a.png"), 32, 32);
        write_image(&t.path().join("b.png"), 20, 32);
        let e = err_of(load_image_folder(t.path(), 32, 3));
        assert!(
            e.contains("wrong image size 20x32") && e.contains("b.png"),
            "{e}"
        );
        let e = err_of(load_image_folder(t.path(), 32, 2));
        assert!(e.contains("channels must be 1 or 3"), "{e}");
    }
}
