//! Small shared helpers: devices, threads, atomic file writes.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use tch::Device;

/// Parse `cpu`, `cuda` or `cuda:N`, failing clearly when CUDA is asked for but absent.
pub fn parse_device(s: &str) -> Result<Device> {
    let dev = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        // One GPU per MPI worker on each machine: the worker's local rank.
        "cuda:local" => {
            let n = tch::Cuda::device_count().max(1) as usize;
            Device::Cuda(crate::dist::local_rank() % n)
        }
        s if s.starts_with("cuda:") => Device::Cuda(
            s[5..]
                .parse()
                .with_context(|| format!("bad device `{s}` (expected cuda:N)"))?,
        ),
        s => bail!("unknown device `{s}` (cpu, cuda, cuda:N or cuda:local)"),
    };
    if dev != Device::Cpu {
        cuda_determinism();
    }
    if let Device::Cuda(i) = dev {
        if !tch::Cuda::is_available() {
            bail!("device `{s}` requested but libtorch sees no CUDA device (is this a GPU machine with the CUDA libtorch?)");
        }
        if i as i64 >= tch::Cuda::device_count() {
            bail!(
                "device `{s}` requested but only {} CUDA device(s) exist",
                tch::Cuda::device_count()
            );
        }
    }
    Ok(dev)
}

/// What "same seed, same numbers" can mean on CUDA, set before the first CUDA
/// call (README, GPU): TF32 off in cuBLAS and cuDNN (`NVIDIA_TF32_OVERRIDE=0`,
/// read by the NVIDIA libraries themselves: tch has no setter for libtorch's
/// TF32 flags), cuBLAS's deterministic workspace (`CUBLAS_WORKSPACE_CONFIG`),
/// and no cuDNN benchmarking (so the algorithm choice does not depend on
/// timing). Values the user set are kept. libtorch's `cudnn.deterministic`
/// flag is not reachable through tch, so cuDNN may still pick a
/// non-deterministic backward algorithm; scripts/gpu-check.sh measures it.
fn cuda_determinism() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("NVIDIA_TF32_OVERRIDE", "0"),
            ("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
        ] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
        tch::Cuda::cudnn_set_benchmark(false);
    });
}

/// Set libtorch's intra-op thread count (0 = leave libtorch's default: all cores).
pub fn set_threads(n: usize) {
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
}

/// Error unless `value` is finite and > 0, naming the config key.
pub fn positive(key: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        bail!("config key `{key}` must be a finite number > 0 (got {value})");
    }
    Ok(())
}

/// Error unless `value >= min`, naming the config key.
pub fn at_least(key: &str, value: i64, min: i64) -> Result<()> {
    if value < min {
        bail!("config key `{key}` must be >= {min} (got {value})");
    }
    Ok(())
}

/// Error unless `value` is finite and in `[lo, hi]`, naming the config key.
pub fn in_range(key: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !(value.is_finite() && value >= lo && value <= hi) {
        bail!("config key `{key}` must be in [{lo}, {hi}] (got {value})");
    }
    Ok(())
}

/// Write `bytes` to `path` through a temp file in the same folder and a rename,
/// so readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// `path` with `.tmp` appended to its file name (same folder, so rename is atomic).
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Run `write` against a temp path, then rename it over `path`.
pub fn with_atomic_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}
