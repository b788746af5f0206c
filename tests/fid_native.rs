//! The native Inception forward (BatchNorm folded, channels-last) against the
//! plain TorchScript forward of the same file: the same features up to float
//! rounding, and the same FID on two image sets to 1e-6 relative (issue 16).

use ldc_vae::eval::fid::{frechet_distance, FidStats, Inception};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn weights() -> PathBuf {
    let p = std::env::var("LDC_VAE_FID_WEIGHTS")
        .ok()
        .or_else(|| option_env!("LDC_VAE_FID_WEIGHTS").map(String::from))
        .expect("LDC_VAE_FID_WEIGHTS is not set: run the tests through scripts/test.sh (or source scripts/setup.sh)");
    PathBuf::from(p)
}

/// `n` digit-like 1×32×32 images in [0, 1]: blurred random strokes, so the
/// features spread like those of real images rather than of noise.
fn images(n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let x = Tensor::rand([n, 1, 8, 8], (Kind::Float, Device::Cpu));
    let x = (x - 0.55).clamp_min(0.0) * 3.0;
    x.upsample_bilinear2d([28, 28], false, None, None)
        .constant_pad_nd([2, 2, 2, 2])
        .clamp(0.0, 1.0)
}

#[test]
fn native_forward_keeps_features_and_fid() {
    let _rng = ldc_vae::rng::exclusive();
    tch::set_num_threads(2);
    let native = Inception::load_with(&weights(), Device::Cpu, false).unwrap();
    let plain = Inception::load_plain_on(&weights(), Device::Cpu).unwrap();
    assert!(!native.is_plain() && plain.is_plain());
    // Two sets of 30, in forwards of 15 (two batches each).
    let (a, b) = (images(30, 1), images(30, 2));
    let fa_n = native.activations(&a, 15, false).unwrap();
    let fa_p = plain.activations(&a, 15, false).unwrap();
    let fb_n = native.activations(&b, 15, false).unwrap();
    let fb_p = plain.activations(&b, 15, false).unwrap();
    let scale = fa_p.abs().max().double_value(&[]);
    let diff = (&fa_n - &fa_p)
        .abs()
        .max()
        .double_value(&[])
        .max((&fb_n - &fb_p).abs().max().double_value(&[]));
    eprintln!("largest feature difference native vs plain {diff:e} (largest feature {scale})");
    assert!(
        diff <= 1e-5 * scale,
        "features differ by {diff} (scale {scale})"
    );
    let fid_n = frechet_distance(
        &FidStats::from_activations(&fa_n).unwrap(),
        &FidStats::from_activations(&fb_n).unwrap(),
    )
    .unwrap();
    let fid_p = frechet_distance(
        &FidStats::from_activations(&fa_p).unwrap(),
        &FidStats::from_activations(&fb_p).unwrap(),
    )
    .unwrap();
    let rel = (fid_n - fid_p).abs() / fid_p.abs();
    eprintln!("FID native {fid_n} plain {fid_p}: relative difference {rel:e}");
    assert!(fid_p > 1.0, "the two sets should differ (FID {fid_p})");
    assert!(
        rel <= 1e-6,
        "FID native {fid_n} vs plain {fid_p}: {rel:e} relative"
    );
}

#[test]
fn plain_switch_is_read_from_the_environment() {
    let _rng = ldc_vae::rng::exclusive();
    // Only this test touches the variable; the others pick their path explicitly.
    std::env::set_var(ldc_vae::eval::fid::PLAIN_ENV, "1");
    let net = Inception::load_on(&weights(), Device::Cpu).unwrap();
    std::env::remove_var(ldc_vae::eval::fid::PLAIN_ENV);
    assert!(net.is_plain());
    assert!(!Inception::load_on(&weights(), Device::Cpu)
        .unwrap()
        .is_plain());
}
