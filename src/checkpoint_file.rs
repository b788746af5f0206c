//! Checkpoint files: safetensors with a sha256 digest of the tensors in the
//! header's metadata ([`DIGEST_KEY`]), checked on every read (issue 28).
//!
//! The digest covers, in name order, each tensor's name, dtype, shape and raw
//! (little-endian) bytes, so a flipped byte anywhere in the tensor data, or a
//! renamed or reshaped tensor, is an error naming the file; the header itself
//! is checked by the safetensors parser. Files written before digests existed
//! (no [`DIGEST_KEY`] in their metadata) load unchecked, with a one-line note.

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Metadata key of the digest (lower-case hex sha256).
pub const DIGEST_KEY: &str = "ldc-vae.sha256";

/// One tensor's bytes on the CPU.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn dtype_of(k: Kind) -> Result<Dtype> {
    Ok(match k {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        other => bail!("cannot save a tensor of kind {other:?} in a checkpoint"),
    })
}

fn kind_of(d: Dtype) -> Result<Kind> {
    Ok(match d {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        other => bail!("unsupported dtype {other:?}"),
    })
}

fn raw(t: &Tensor) -> Result<Raw> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let n = t.numel();
    let mut data = vec![0u8; n * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, n)?;
    Ok(Raw {
        dtype: dtype_of(t.kind())?,
        shape: t.size().iter().map(|&s| s as usize).collect(),
        data,
    })
}

/// The digest of named tensors given in name order.
fn digest<'a>(items: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, dtype, shape, data) in items {
        let shape: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
        h.update(format!("{name}\0{dtype:?}\0{}\0", shape.join(",")).as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `tensors` to `path` (not atomically: callers write to a temp path
/// and rename) with their digest in the metadata.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut raws = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), raw(t).with_context(|| format!("tensor `{n}`"))?)))
        .collect::<Result<Vec<_>>>()?;
    raws.sort_by(|a, b| a.0.cmp(b.0));
    let d = digest(
        raws.iter()
            .map(|(n, r)| (*n, r.dtype, r.shape.as_slice(), r.data.as_slice())),
    );
    let meta = HashMap::from([(DIGEST_KEY.to_string(), d)]);
    safetensors::tensor::serialize_to_file(raws.iter().map(|(n, r)| (*n, r)), &Some(meta), path)
        .with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Whether a file read by [`read`] carried a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestStatus {
    /// Present and matching.
    Checked,
    /// Absent: a file written before checkpoints carried digests.
    Absent,
}

/// Read every tensor of `path`, checking the digest; a mismatch is an error
/// naming the file.
pub fn read(path: &Path) -> Result<(Vec<(String, Tensor)>, DigestStatus)> {
    let p = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {p}"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("{p}: not a valid safetensors file"))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("{p}: unreadable header"))?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = meta.metadata().as_ref().and_then(|m| m.get(DIGEST_KEY));
    let status = match expected {
        Some(want) => {
            let got = digest(
                views
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
            );
            if &got != want {
                bail!(
                    "{p}: checkpoint damaged: its tensors' sha256 is {got}, not the {want} \
                     recorded when it was written"
                );
            }
            DigestStatus::Checked
        }
        None => {
            tracing::warn!(
                "{p}: no digest (written before checkpoints carried one); loaded unchecked"
            );
            DigestStatus::Absent
        }
    };
    let tensors = views
        .iter()
        .map(|(n, v)| {
            let shape: Vec<i64> = v.shape().iter().map(|&s| s as i64).collect();
            let t = Tensor::f_from_data_size(v.data(), &shape, kind_of(v.dtype())?)
                .with_context(|| format!("{p}: tensor `{n}`"))?;
            Ok((n.clone(), t))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip_and_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        let ts = vec![
            ("w".to_string(), Tensor::from_slice(&[1.5f32, -2.0, 3.25])),
            ("n".to_string(), Tensor::from(7i64)),
            ("d".to_string(), Tensor::from_slice(&[0.5f64]).view([1, 1])),
        ];
        write(&p, &ts).unwrap();
        let (back, s) = read(&p).unwrap();
        assert_eq!(s, DigestStatus::Checked);
        let back: HashMap<_, _> = back.into_iter().collect();
        for (n, t) in &ts {
            assert!(back[n].equal(t), "{n}");
            assert_eq!(back[n].kind(), t.kind());
        }
        // A file without a digest (as tch writes them) still loads.
        let old = dir.path().join("old.safetensors");
        Tensor::write_safetensors(&ts, &old).unwrap();
        let (back, s) = read(&old).unwrap();
        assert_eq!(s, DigestStatus::Absent);
        assert_eq!(back.len(), 3);
    }
}
