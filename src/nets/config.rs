//! The nets' knobs (TOML section `[net]`).

use super::NoiseJoin;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Channel multiplier on the RAE widths (128, 256, 512, 1024); 1 = paper.
    pub width: f64,
    /// Latent dimension (paper: 16 MNIST, 64 CelebA, 128 CIFAR-10).
    pub latent_dim: i64,
    /// How the LDC encoder joins its noise conv to the image conv: add | concat.
    pub noise_join: NoiseInput,
    /// Run the decoder in channels-last memory format (faster transposed convs on CPU).
    pub channels_last: bool,
    /// Weight initialisation of every conv/linear layer: `pytorch` (PyTorch's
    /// defaults, U(±1/√fan_in) for weights and biases) or `tch` (tch's defaults:
    /// Kaiming-uniform with ReLU gain, 2.45× wider, and zero conv biases; the
    /// default before issue 14, ~1.7× higher validation MSE at 1,200 steps).
    pub init: NetInit,
}

/// `net.init`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetInit {
    Pytorch,
    Tch,
}

/// `net.noise_join`: the two ways the LDC encoder takes its noise (paper Fig. 1(b)).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NoiseInput {
    Add,
    Concat,
}

impl From<NoiseInput> for NoiseJoin {
    fn from(n: NoiseInput) -> NoiseJoin {
        match n {
            NoiseInput::Add => NoiseJoin::Add,
            NoiseInput::Concat => NoiseJoin::Concat,
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            width: 1.0,
            latent_dim: 16,
            noise_join: NoiseInput::Add,
            channels_last: false,
            init: NetInit::Pytorch,
        }
    }
}

impl NetConfig {
    pub fn validate(&self) -> Result<()> {
        crate::util::positive("net.width", self.width)?;
        crate::util::at_least("net.latent_dim", self.latent_dim, 1)?;
        Ok(())
    }
}
