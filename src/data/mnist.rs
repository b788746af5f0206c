//! MNIST / Fashion-MNIST IDX files, raw or gzipped.
//!
//! IDX (all integers big-endian): two zero bytes, a type byte (only `0x08`,
//! unsigned byte, is used by MNIST), a byte with the number of dimensions,
//! then one `u32` per dimension, then the data. Images are `[N, rows, cols]`
//! (magic 2051 = `0x00000803`), labels `[N]` (magic 2049 = `0x00000801`).
//!
//! Files are recognised as gzip by their first two bytes (`1f 8b`), not by
//! their name, so a `.gz` that is really raw (or the reverse) still loads.

use super::{ImageSet, Split};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// IDX magic of an image file (`[N, rows, cols]` of u8).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of a label file (`[N]` of u8).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// A parsed IDX file of unsigned bytes.
#[derive(Debug)]
pub struct Idx {
    /// The magic number as read (`0x0000_08_<ndims>`).
    pub magic: u32,
    /// Dimensions from the header, outermost first.
    pub dims: Vec<usize>,
    /// The whole (decompressed) file; the data starts at `data_offset`.
    pub bytes: Vec<u8>,
    pub data_offset: usize,
    /// Whether the file on disk was gzip-compressed.
    pub gzipped: bool,
}

impl Idx {
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data_offset..]
    }
}

/// Read a whole file, gunzipping it when it starts with the gzip magic.
/// Returns the bytes and whether the file was gzipped.
pub fn read_maybe_gz(path: &Path) -> Result<(Vec<u8>, bool)> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        // The gzip trailer holds the uncompressed size mod 2^32: a good capacity hint.
        let hint = if raw.len() >= 4 {
            u32::from_le_bytes(raw[raw.len() - 4..].try_into().unwrap()) as usize
        } else {
            0
        };
        let mut out = Vec::with_capacity(hint.min(1 << 31));
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt or truncated gzip stream", path.display()))?;
        Ok((out, true))
    } else {
        Ok((raw, false))
    }
}

/// Parse the IDX header of `bytes` (read from `path`, named in errors) and
/// check that the data length matches the dimensions exactly.
pub fn parse_idx(bytes: Vec<u8>, gzipped: bool, path: &Path) -> Result<Idx> {
    let p = path.display();
    if bytes.len() < 4 {
        bail!(
            "{p}: truncated IDX file: {} bytes, shorter than the 4-byte magic number",
            bytes.len()
        );
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] == 0 || bytes[3] > 4 {
        let hint = if bytes[0] != 0 || bytes[1] != 0 {
            " (not an IDX file)"
        } else if bytes[2] != 0x08 {
            " (only IDX type 0x08, unsigned bytes, is supported)"
        } else {
            ""
        };
        bail!(
            "{p}: wrong magic number 0x{magic:08x}{hint}; expected 0x{IMAGES_MAGIC:08x} \
             (2051, images) or 0x{LABELS_MAGIC:08x} (2049, labels)"
        );
    }
    let ndims = bytes[3] as usize;
    let data_offset = 4 + 4 * ndims;
    if bytes.len() < data_offset {
        bail!(
            "{p}: truncated IDX file: {} bytes, shorter than its {data_offset}-byte header",
            bytes.len()
        );
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let have = bytes.len() - data_offset;
    let what = |dims: &[usize]| match dims {
        [n] => format!("{n} labels"),
        [n, h, w] => format!("{n} images of {h}x{w}"),
        d => format!("dimensions {d:?}"),
    };
    match expected {
        None => bail!("{p}: header dimensions {dims:?} overflow"),
        Some(e) if have < e => {
            let per = e / dims[0].max(1);
            let whole = have.checked_div(per).unwrap_or(0);
            bail!(
                "{p}: truncated: the header says {} ({e} data bytes) but the file has only \
                 {have} data bytes ({whole} complete items); the count disagrees with the data",
                what(&dims)
            )
        }
        Some(e) if have > e => bail!(
            "{p}: the header says {} ({e} data bytes) but the file has {have} data bytes \
             ({} extra); the count disagrees with the data",
            what(&dims),
            have - e
        ),
        _ => {}
    }
    Ok(Idx {
        magic,
        dims,
        bytes,
        data_offset,
        gzipped,
    })
}

/// Read and parse an IDX file (raw or gzipped).
pub fn read_idx(path: &Path) -> Result<Idx> {
    let (bytes, gz) = read_maybe_gz(path)?;
    parse_idx(bytes, gz, path)
}

/// Read an IDX image file into a u8 tensor `[N, 1, H, W]`.
pub fn read_images_u8(path: &Path) -> Result<Tensor> {
    let idx = read_idx(path)?;
    if idx.magic != IMAGES_MAGIC {
        bail!(
            "{}: wrong magic number 0x{:08x} for an image file; expected 0x{IMAGES_MAGIC:08x} (2051)",
            path.display(),
            idx.magic
        );
    }
    let d = &idx.dims;
    Ok(Tensor::from_slice(idx.data()).view([d[0] as i64, 1, d[1] as i64, d[2] as i64]))
}

/// Read an IDX label file into an int64 tensor `[N]` (any byte value).
pub fn read_labels(path: &Path) -> Result<Tensor> {
    let idx = read_idx(path)?;
    if idx.magic != LABELS_MAGIC {
        bail!(
            "{}: wrong magic number 0x{:08x} for a label file; expected 0x{LABELS_MAGIC:08x} (2049)",
            path.display(),
            idx.magic
        );
    }
    Ok(Tensor::from_slice(idx.data()).to_kind(Kind::Int64))
}

/// The file for `name` in `dir`: `name.gz`, else `name`, else the variant with
/// a dot (`train-images.idx3-ubyte`, as some mirrors spell it), gzipped or not.
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    let cands = [
        format!("{name}.gz"),
        name.to_string(),
        format!("{dotted}.gz"),
        dotted.clone(),
    ];
    for c in &cands {
        let p = dir.join(c);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{}: missing file (also looked for {name}.gz and {dotted})",
        dir.join(name).display()
    )
}

/// File stems of a split: (images, labels).
pub fn split_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// One split as u8 images `[N, 1, 28, 28]` and int64 labels `[N]`.
pub fn load_split_u8(dir: &Path, split: Split) -> Result<(Tensor, Tensor)> {
    let (iname, lname) = split_names(split);
    let ip = find_file(dir, iname)?;
    let lp = find_file(dir, lname)?;
    let images = read_images_u8(&ip)?;
    let labels = read_labels(&lp)?;
    let (n, nl) = (images.size()[0], labels.size()[0]);
    if n != nl {
        bail!(
            "{}: {nl} labels, but {} has {n} images; the counts disagree",
            lp.display(),
            ip.display()
        );
    }
    Ok((images, labels))
}

/// Load one split as float `[N, 1, H, W]` in [0, 1] (28×28 zero-padded to
/// 32×32 when `pad_to_32`), with labels.
pub fn load_split(dir: &Path, split: Split, pad_to_32: bool) -> Result<ImageSet> {
    let (images, labels) = load_split_u8(dir, split)?;
    let s = images.size();
    let pad = if pad_to_32 && s[2] == 28 && s[3] == 28 {
        2
    } else {
        0
    };
    let images = super::u8_to_unit_padded(&images, pad);
    Ok(ImageSet {
        images,
        labels: Some(labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, h: u32, w: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, n, h, w] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [LABELS_MAGIC, labels.len() as u32] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(labels);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write_split(dir: &Path, n: u32, gzip: bool) {
        let pixels: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let (img, lab) = (idx_images(n, 28, 28, &pixels), idx_labels(&labels));
        if gzip {
            std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&img)).unwrap();
            std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz(&lab)).unwrap();
        } else {
            std::fs::write(dir.join("train-images-idx3-ubyte"), img).unwrap();
            std::fs::write(dir.join("train-labels-idx1-ubyte"), lab).unwrap();
        }
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn data_idx_small_raw_and_gz_roundtrip() {
        for gzip in [false, true] {
            let t = tempfile::tempdir().unwrap();
            write_split(t.path(), 3, gzip);
            let s = load_split(t.path(), Split::Train, true).unwrap();
            assert_eq!(s.images.size(), [3, 1, 32, 32]);
            let l: Vec<i64> = Vec::try_from(s.labels.unwrap()).unwrap();
            assert_eq!(l, [0, 1, 2]);
            // pixel (0, 0) of image 0 is byte 0 -> padded to (2, 2).
            let v = s.images.double_value(&[0, 0, 2, 3]);
            assert!((v - 1.0 / 255.0).abs() < 1e-6);
            assert!(s.images.max().double_value(&[]) <= 1.0);
        }
    }

    #[test]
    fn data_idx_missing_file() {
        let t = tempfile::tempdir().unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("missing file") && e.contains("train-images-idx3-ubyte"),
            "{e}"
        );
    }

    #[test]
    fn data_idx_wrong_magic() {
        let t = tempfile::tempdir().unwrap();
        write_split(t.path(), 2, false);
        let p = t.path().join("train-images-idx3-ubyte");
        let mut b = std::fs::read(&p).unwrap();
        b[0..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        std::fs::write(&p, b).unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("wrong magic number 0x12345678") && e.contains(&p.display().to_string()),
            "{e}"
        );
        // A label file where an image file belongs.
        std::fs::copy(t.path().join("train-labels-idx1-ubyte"), &p).unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("wrong magic number 0x00000801 for an image file"),
            "{e}"
        );
    }

    #[test]
    fn data_idx_truncated() {
        let t = tempfile::tempdir().unwrap();
        write_split(t.path(), 3, true);
        let p = t.path().join("train-images-idx3-ubyte.gz");
        // Truncated gzip stream.
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("corrupt or truncated gzip") && e.contains(&p.display().to_string()),
            "{e}"
        );
        // Truncated raw data: header says 3 images, data for 2.5.
        let pixels = vec![0u8; 28 * 28 * 5 / 2];
        std::fs::write(&p, gz(&idx_images(3, 28, 28, &pixels))).unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("truncated") && e.contains("3 images of 28x28") && e.contains("2 complete"),
            "{e}"
        );
        assert!(e.contains(&p.display().to_string()), "{e}");
        // Shorter than the header.
        std::fs::write(&p, [0u8, 0, 8, 3, 0, 0]).unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(e.contains("shorter than its 16-byte header"), "{e}");
    }

    #[test]
    fn data_idx_count_disagrees_with_header() {
        let t = tempfile::tempdir().unwrap();
        write_split(t.path(), 3, false);
        // Header says 2 images but the data holds 3.
        let p = t.path().join("train-images-idx3-ubyte");
        let mut b = std::fs::read(&p).unwrap();
        b[4..8].copy_from_slice(&2u32.to_be_bytes());
        std::fs::write(&p, b).unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("header says 2 images") && e.contains("784 extra"),
            "{e}"
        );
        assert!(e.contains(&p.display().to_string()), "{e}");
        // Images and labels disagree.
        write_split(t.path(), 3, false);
        std::fs::write(
            t.path().join("train-labels-idx1-ubyte"),
            idx_labels(&[1, 2]),
        )
        .unwrap();
        let e = err_of(load_split(t.path(), Split::Train, true));
        assert!(
            e.contains("2 labels, but") && e.contains("has 3 images"),
            "{e}"
        );
    }

    #[test]
    fn data_idx_empty_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.idx");
        std::fs::write(&p, b"").unwrap();
        let e = err_of(read_idx(&p));
        assert!(
            e.contains("truncated IDX file: 0 bytes") && e.contains("x.idx"),
            "{e}"
        );
    }
}
