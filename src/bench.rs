//! Timing of training steps (ms/step, median after warm-up) for `ldc-vae bench`,
//! and what the comparison against the PyTorch peers (issue 7) needs: the
//! peers' Python scripts (embedded, `bench/peers/`), the interpreter of the
//! peers' virtual environment, an analytic FLOP count of a training step and a
//! measured matmul peak.

use crate::config::Config;
use crate::nets::{scaled, Geometry};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Median and quartiles of a sample of durations, ms.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median_ms: f64,
    pub q1_ms: f64,
    pub q3_ms: f64,
}

pub fn summarize(mut ms: Vec<f64>) -> Timing {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    Timing {
        median_ms: q(0.5),
        q1_ms: q(0.25),
        q3_ms: q(0.75),
    }
}

/// Durations (ms) of `steps` training steps of the model in `cfg` on random
/// images of the data set's shape, after `warmup` steps.
pub fn train_step_times(cfg: &Config, warmup: usize, steps: usize) -> Result<Vec<f64>> {
    let device = crate::util::parse_device(&cfg.device)?;
    let geo = cfg.geometry();
    let mut model = cfg.build_model(device)?;
    tch::manual_seed(0);
    let x = Tensor::rand(
        [cfg.train.batch_size, geo.channels, geo.size, geo.size],
        (Kind::Float, device),
    );
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let s = model.train_step(&x, i as u64)?;
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        let _ = s.get("loss");
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

/// Time `steps` training steps of the model in `cfg` on random images of the
/// data set's shape (after `warmup` steps).
pub fn time_train_steps(cfg: &Config, warmup: usize, steps: usize) -> Result<Timing> {
    Ok(summarize(train_step_times(cfg, warmup, steps)?))
}

/// Number of trainable parameters of the model in `cfg` (weights and biases;
/// BatchNorm running statistics and optimizer state excluded).
pub fn param_count(cfg: &Config) -> Result<i64> {
    let model = cfg.build_model(Device::Cpu)?;
    Ok(model
        .state()
        .iter()
        .filter(|(n, _)| {
            !n.starts_with("adam")
                && !n.contains("running_")
                && ["encoder.", "decoder.", "sampler.", "model."]
                    .iter()
                    .any(|p| n.starts_with(p))
        })
        .map(|(_, t)| t.numel() as i64)
        .sum())
}

/// Peak resident memory of this process so far, MiB (Linux; NaN elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

// ------------------------------------------------------------------ FLOPs

/// Forward FLOPs (2 per multiply-add) of the RAE encoder on `n` images;
/// `noise_conv`: the LDC encoder's extra conv on the noise.
pub fn encoder_flops(geo: Geometry, width: f64, latent: i64, n: i64, noise_conv: bool) -> f64 {
    let ch: Vec<i64> = [128, 256, 512, 1024]
        .iter()
        .map(|&c| scaled(c, width))
        .collect();
    let k2 = (geo.kernel * geo.kernel) as f64;
    let mut f = 0.0;
    let mut cin = geo.channels;
    let mut size = geo.size;
    for (i, &c) in ch.iter().enumerate() {
        size /= 2;
        let conv = 2.0 * (c * size * size) as f64 * cin as f64 * k2;
        f += conv * if i == 0 && noise_conv { 2.0 } else { 1.0 };
        cin = c;
    }
    f += 2.0 * (ch[3] * size * size * latent) as f64;
    f * n as f64
}

/// Forward FLOPs of the RAE decoder on `n` latents (32×32 geometry: two
/// stride-2 ConvTs; 64×64: three), transposed convs counted per input pixel.
pub fn decoder_flops(geo: Geometry, width: f64, latent: i64, n: i64) -> f64 {
    let c0 = scaled(1024, width);
    let widths: &[i64] = if geo.size == 64 {
        &[512, 256, 128]
    } else {
        &[512, 256]
    };
    let k2 = (geo.kernel * geo.kernel) as f64;
    let mut f = 2.0 * (latent * c0 * 64) as f64;
    let (mut cin, mut size) = (c0, 8);
    for &w in widths {
        let c = scaled(w, width);
        f += 2.0 * (cin * size * size * c) as f64 * k2;
        cin = c;
        size *= 2;
    }
    f += 2.0 * (cin * size * size * geo.channels) as f64 * k2;
    f * n as f64
}

/// Analytic FLOPs of one training step of `cfg.model` (ldc or an RAE): each
/// conv/linear pass counted as forward + 2× forward for its backward (input
/// and weight gradients) when parameters are trained, + 1× when only the
/// input gradient is taken (LDC's score pass); LDC adds its kernel/KDE
/// matmuls. Elementwise work (BN, ReLU, Adam) is not counted.
pub fn train_step_flops(cfg: &Config) -> Result<f64> {
    let geo = cfg.geometry();
    let (w, d, n) = (cfg.net.width, cfg.net.latent_dim, cfg.train.batch_size);
    let (n_f, d_f) = (n as f64, d as f64);
    Ok(match cfg.model.as_str() {
        "ldc" => {
            let ns = cfg.ldc.sampler_particles;
            let bank = (cfg.ldc.kde_bank.min(1000)) as f64;
            let ns_f = ns as f64;
            let nets = 3.0 * encoder_flops(geo, w, d, n, true)
                + 3.0 * decoder_flops(geo, w, d, n)
                + 2.0 * decoder_flops(geo, w, d, n)
                + 3.0 * encoder_flops(geo, w, d, ns, false);
            // encoder: pairwise distances + Φ (3 matmuls of n×n×d);
            // sampler: bank median, KDE distances and softmax·bank, Φ.
            let svgd = 2.0 * n_f * n_f * d_f * 4.0
                + 2.0 * bank * bank * d_f
                + 2.0 * ns_f * bank * d_f * 2.0
                + 2.0 * ns_f * ns_f * d_f * 4.0;
            nets + svgd
        }
        "rae-l2" | "rae-gp" | "rae-sn" => {
            3.0 * (encoder_flops(geo, w, d, n, false) + decoder_flops(geo, w, d, n))
        }
        m => bail!("no FLOP count for model `{m}` (bench covers ldc and rae-l2)"),
    })
}

/// Achieved f32 matmul rate on `device`, GFLOP/s: median of `reps` products of
/// two `size`×`size` matrices with the current thread count (after 2 warm-ups).
pub fn matmul_gflops(device: Device, size: i64, reps: usize) -> f64 {
    let _g = tch::no_grad_guard();
    let a = Tensor::rand([size, size], (Kind::Float, device));
    let b = Tensor::rand([size, size], (Kind::Float, device));
    let mut ms = Vec::new();
    for i in 0..reps + 2 {
        let t = Instant::now();
        let c = a.mm(&b);
        let _ = c.double_value(&[0, 0]);
        if i >= 2 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let med = summarize(ms).median_ms;
    2.0 * (size as f64).powi(3) / (med / 1e3) / 1e9
}

// ------------------------------------------------------------------ peers

/// The peers' scripts, embedded so the binary works from anywhere.
pub const PEER_SCRIPTS: &[(&str, &str)] = &[
    ("common.py", include_str!("../bench/peers/common.py")),
    ("ldc_peer.py", include_str!("../bench/peers/ldc_peer.py")),
    (
        "pythae_rae.py",
        include_str!("../bench/peers/pythae_rae.py"),
    ),
    ("fid_peer.py", include_str!("../bench/peers/fid_peer.py")),
];

/// How to create the peers' environment (for error messages).
pub const PEERS_HOWTO: &str = "create it with `source scripts/setup.sh && ldc_vae_peers_venv` \
(a venv with torch==2.13.0 (full, with its CUDA wheels: `import torch` needs them), numpy and \
pythae==0.1.2, ~4.7 GB) or point LDC_VAE_PEERS_PYTHON at a python that has them";

/// The Python of the peers' virtual environment: `$LDC_VAE_PEERS_PYTHON`, else
/// `<cache_root>/venv-peers/bin/python` (what `scripts/setup.sh` creates).
pub fn peers_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LDC_VAE_PEERS_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "LDC_VAE_PEERS_PYTHON = {} does not exist; {PEERS_HOWTO}",
                p.display()
            );
        }
        return Ok(p);
    }
    let p = crate::eval::fid::cache_root().join("venv-peers/bin/python");
    if !p.is_file() {
        bail!(
            "the PyTorch peers' Python {} does not exist; {PEERS_HOWTO}",
            p.display()
        );
    }
    Ok(p)
}

/// Write the embedded peer scripts into `dir` (created if needed).
pub fn write_peer_scripts(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in PEER_SCRIPTS {
        crate::util::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// The last line of a child's stdout, parsed as the JSON object it reports.
pub fn parse_report(what: &str, out: &std::process::Output) -> Result<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("{what} printed no JSON report; stdout:\n{stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("{what}: bad JSON report `{line}`"))
}

/// Run a peer script with the peers' Python; returns its JSON report.
pub fn run_peer(
    python: &Path,
    scripts: &Path,
    script: &str,
    args: &[String],
) -> Result<serde_json::Value> {
    let out = std::process::Command::new(python)
        .arg(scripts.join(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    parse_report(&format!("peer {script} {}", args.join(" ")), &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_count_of_paper_encoder_by_hand() {
        // conv0: 16·16·128 outputs × 1·16 MACs; conv1: 8·8·256 × 128·16;
        // conv2: 4·4·512 × 256·16; conv3: 2·2·1024 × 512·16; fc: 4096·16.
        let macs = 16 * 16 * 128 * 16
            + 8 * 8 * 256 * 128 * 16
            + 4 * 4 * 512 * 256 * 16
            + 2 * 2 * 1024 * 512 * 16
            + 4096 * 16;
        let f = encoder_flops(Geometry::MNIST, 1.0, 16, 1, false);
        assert_eq!(f, 2.0 * macs as f64);
        // decoder: fc 16→65536; convT0 8·8·1024 inputs × 512·16; convT1
        // 16·16·512 × 256·16; out 32·32·256 × 1·16.
        let macs = 16 * 65536 + 64 * 1024 * 512 * 16 + 256 * 512 * 256 * 16 + 1024 * 256 * 16;
        assert_eq!(
            decoder_flops(Geometry::MNIST, 1.0, 16, 1),
            2.0 * macs as f64
        );
    }

    #[test]
    fn param_count_matches_layer_sizes() {
        let _rng = crate::rng::exclusive();
        let cfg = Config::load(
            None,
            None,
            &["model=rae-l2".into(), "net.width=0.0625".into()],
        )
        .unwrap();
        // encoder 8-16-32-64 convs (4×4) + BN, fc 256→16; decoder fc 16→4096,
        // convT 64→32, 32→16, 16→1 + BN.
        let enc = (16 * 8 + 8)
            + (8 * 16 * 16 + 16)
            + (16 * 16 * 32 + 32)
            + (32 * 16 * 64 + 64)
            + 2 * (8 + 16 + 32 + 64)
            + (256 * 16 + 16);
        let dec = (16 * 4096 + 4096)
            + (64 * 32 * 16 + 32)
            + (32 * 16 * 16 + 16)
            + (16 * 16 + 1)
            + 2 * (32 + 16);
        assert_eq!(param_count(&cfg).unwrap(), enc + dec);
    }
}
