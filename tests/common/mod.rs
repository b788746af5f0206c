//! What the integration tests share: the tiny MNIST run (width 1/16, 400
//! training images, batch 20) and reading a run's checkpoint.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// `--set` values of a tiny run of the `mnist-cpu` preset (seconds per run on
/// one core), before the test's own (`extra` wins: later keys override).
pub fn tiny_overrides(extra: &[&str]) -> Vec<String> {
    [
        "net.width=0.0625",
        "net.channels_last=false",
        "data.train_limit=400",
        "data.val_size=100",
        "train.batch_size=20",
        "train.epochs=1",
        "ldc.sampler_particles=40",
        "ldc.kde_bank=100",
        "threads=1",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// The named tensors of a run's checkpoint.
pub fn checkpoint(dir: &Path) -> HashMap<String, Tensor> {
    ldc_vae::run_dir::read_checkpoint(dir).unwrap().0
}
