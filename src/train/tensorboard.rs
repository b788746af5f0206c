//! TensorBoard event files in the run folder (`train.tensorboard = true`, the
//! default): `events.out.tfevents.<unix time>.<host>`, one per `train`
//! process, read by `tensorboard --logdir runs/`.
//!
//! What is logged: every value of `metrics.jsonl` as a scalar, tag = its key,
//! step = the line's `step` (main-loop steps; the epoch lines' `val_mse` at
//! the step that ended the epoch); the post-training lines' values under
//! `post/<key>` at their post-training step (a series of their own, as their
//! step counts from 0 again). At the end of each epoch, a grid of 64 samples
//! of the model's generator as a PNG image summary, tag `samples` (when the
//! generator cannot sample yet, e.g. an ex-post GMM fitted after training,
//! reconstructions of 32 validation images above their originals, tag
//! `reconstructions`). A resumed run starts a new file; TensorBoard drops the
//! older file's points past the restart (its out-of-order purge).
//!
//! Format: TFRecord framing (u64 LE length, masked CRC32C of the length, the
//! data, masked CRC32C of the data) around `tensorflow.Event` protobufs
//! (`wall_time` 1, `step` 2, `file_version` 3, `summary` 5; `Summary.Value`:
//! `tag` 1, `simple_value` 2, `image` 4; `Summary.Image`: `height` 1,
//! `width` 2, `colorspace` 3, `encoded_image_string` 4). Written here by
//! hand: the crates that write TensorBoard files (`tensorboard-rs`) are
//! unmaintained and pull in an old `protobuf` with its code generator, and
//! `prost` would bring a derive macro for four small messages whose encoding
//! is a few varints; the CRC is the maintained `crc32c` crate's.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Prefix of every event file's name.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// TFRecord's masked CRC32C.
pub fn masked_crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

// ------------------------------------------------------------ protobuf

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field key: number and wire type (0 varint, 1 64-bit, 2 bytes, 5 32-bit).
fn key(field: u64, wire: u64, out: &mut Vec<u8>) {
    varint((field << 3) | wire, out);
}

fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn varint_field(field: u64, v: u64, out: &mut Vec<u8>) {
    key(field, 0, out);
    varint(v, out);
}

/// `Summary.Value` with a `simple_value`.
fn scalar_value(tag: &str, v: f32) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(1, tag.as_bytes(), &mut out);
    key(2, 5, &mut out);
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// `Summary.Value` with an `image` (PNG bytes).
fn image_value(tag: &str, png: &[u8], height: u32, width: u32, channels: u32) -> Vec<u8> {
    let mut img = Vec::new();
    varint_field(1, height as u64, &mut img);
    varint_field(2, width as u64, &mut img);
    varint_field(3, channels as u64, &mut img);
    bytes_field(4, png, &mut img);
    let mut out = Vec::new();
    bytes_field(1, tag.as_bytes(), &mut out);
    bytes_field(4, &img, &mut out);
    out
}

/// An `Event` at `step` with field `what` (3 `file_version`, 5 `summary`).
fn event(wall_time: f64, step: i64, what: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    key(1, 1, &mut out);
    out.extend_from_slice(&wall_time.to_le_bytes());
    varint_field(2, step as u64, &mut out);
    bytes_field(what, payload, &mut out);
    out
}

// -------------------------------------------------------------- writer

/// This machine's name for the file name (letters, digits, `.-_` only).
fn host_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let h: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// An event file being written (appended to, one record per event).
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// A new event file in `dir`, starting with its `file_version` event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let t = now();
        let base = format!("{FILE_PREFIX}{}.{}", t.as_secs(), host_name());
        // Two processes in the same second: a suffix, never an overwrite.
        let mut path = dir.join(&base);
        let mut i = 0;
        let file = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && i < 100 => {
                    i += 1;
                    path = dir.join(format!("{base}.{i}"));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        };
        let mut w = EventWriter { file, path };
        w.write(0, 3, b"brain.Event:2")?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, step: i64, what: u64, payload: &[u8]) -> Result<()> {
        let e = event(now().as_secs_f64(), step, what, payload);
        self.file
            .write_all(&record(&e))
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }

    /// One event with a scalar per value, tags `prefix` + key.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)], prefix: &str) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut summary = Vec::new();
        for (k, v) in values {
            bytes_field(
                1,
                &scalar_value(&format!("{prefix}{k}"), *v as f32),
                &mut summary,
            );
        }
        self.write(step as i64, 5, &summary)
    }

    /// An image summary from a `[H, W, C]` u8 tensor (C = 1 or 3), as PNG.
    pub fn image(&mut self, tag: &str, step: u64, hwc: &tch::Tensor) -> Result<()> {
        let s = hwc.size();
        let (h, w, c) = (s[0] as u32, s[1] as u32, s[2] as u32);
        let data = Vec::<u8>::try_from(hwc.contiguous().flatten(0, -1))?;
        let color = if c == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &data,
            w,
            h,
            color,
        )
        .context("encoding a TensorBoard image as PNG")?;
        let mut summary = Vec::new();
        bytes_field(1, &image_value(tag, &png, h, w, c), &mut summary);
        self.write(step as i64, 5, &summary)
    }
}

/// The epoch's image summary: 64 samples of the model's generator (the same
/// noise every epoch, drawn from the run's evaluation stream, which training
/// never reads), or when it cannot sample yet, 32 validation images above
/// their reconstructions.
pub fn epoch_grid(
    tb: &mut EventWriter,
    model: &dyn crate::models::Model,
    val: &crate::data::ImageSet,
    seed: u64,
    step: u64,
) -> Result<()> {
    use crate::eval::grid;
    use crate::rng::{reseed, Stream};
    let _g = tch::no_grad_guard();
    reseed(seed, Stream::Eval, 1 << 40);
    let (tag, images, ncol) = match model.sample_latents(64) {
        Ok(z) => ("samples", model.decode(&z), 8),
        Err(e) if !val.is_empty() => {
            tracing::debug!("TensorBoard: reconstructions instead of samples: {e:#}");
            let x = val
                .images
                .narrow(0, 0, val.len().min(32))
                .to_device(model.device());
            let r = model.decode(&model.encode(&x));
            ("reconstructions", grid::recon_rows(&x, &r, 8), 8)
        }
        Err(_) => return Ok(()),
    };
    tb.image(tag, step, &grid::make_grid(&images, ncol, 2, 1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // TFRecord's definition, as its spec writes it
    fn tensorboard_crc_and_varint_known_values() {
        // CRC32C check value (RFC 3720's "123456789").
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let c = 0xe306_9283u32;
        assert_eq!(
            masked_crc(b"123456789"),
            ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
        );
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, [0xac, 0x02]);
        // Summary.Value{tag: "a", simple_value: 1.0}.
        assert_eq!(
            scalar_value("a", 1.0),
            [0x0a, 1, b'a', 0x15, 0, 0, 0x80, 0x3f]
        );
        let r = record(b"xy");
        assert_eq!(r.len(), 2 + 16);
        assert_eq!(&r[..8], &2u64.to_le_bytes());
        assert_eq!(&r[12..14], b"xy");
    }
}
