//! How long the t-SNE figure of `ldc-vae eval` takes at the paper's setting
//! (2,000 + 2,000 16-d latents): a measurement, not a test.
//!
//! `cargo run --release --example tsne_timing [N] [D]` (default 2000 16).

use ldc_vae::eval::plots::tsne_scatter;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let d: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    tch::manual_seed(11);
    let a = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 0.5 + 4.0;
    let dir = tempfile::tempdir()?;
    let t0 = std::time::Instant::now();
    tsne_scatter(
        &a,
        &b,
        "encoder",
        "prior",
        "timing",
        &dir.path().join("t.png"),
        1,
    )?;
    println!(
        "t-SNE scatter of {n} + {n} {d}-d points: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
