//! The sampler net `S_ω` that maps noise to latents (DESIGN §1.8), shared by
//! LDC-VAE's own sampler and the ex-post sampler nets of any model.

use crate::nets::{image_noise, Encoder, Geometry, Mlp, NoiseJoin};
use serde::{Deserialize, Serialize};
use tch::{nn::Module, nn::VarStore, Device, Kind, Tensor};

/// `ldc.sampler_net`, `sampler.net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerNetKind {
    /// The RAE encoder architecture on image-shaped noise (the paper's).
    Conv,
    /// An MLP (3 hidden ReLU layers) on a `noise_dim`-dim Gaussian.
    Mlp,
}

/// The sampler net.
pub enum SamplerNet {
    /// The RAE encoder on image-shaped noise (the paper's choice, DESIGN §1.8).
    Conv(Box<Encoder>),
    /// An MLP on a `noise_dim`-dim Gaussian.
    Mlp { net: Mlp, noise_dim: i64 },
}

/// What a sampler net is built from.
#[derive(Debug, Clone, Copy)]
pub struct SamplerNetShape {
    pub kind: SamplerNetKind,
    pub noise_dim: i64,
    pub hidden: i64,
    pub geo: Geometry,
    /// Width multiplier of the conv net.
    pub width: f64,
    pub latent: i64,
    pub bn_groups: usize,
}

impl SamplerNet {
    pub fn new(vs: &VarStore, s: &SamplerNetShape) -> SamplerNet {
        match s.kind {
            SamplerNetKind::Mlp => SamplerNet::Mlp {
                net: Mlp::new(
                    &vs.root(),
                    &[s.noise_dim, s.hidden, s.hidden, s.hidden, s.latent],
                ),
                noise_dim: s.noise_dim,
            },
            SamplerNetKind::Conv => SamplerNet::Conv(Box::new(
                Encoder::new(&vs.root(), s.geo, s.width, s.latent, NoiseJoin::None)
                    .bn_groups(s.bn_groups),
            )),
        }
    }

    /// `n` draws of the net's input noise (current generator).
    pub fn noise(&self, n: i64, geo: Geometry, device: Device) -> Tensor {
        match self {
            SamplerNet::Conv(_) => image_noise(n, geo, device),
            SamplerNet::Mlp { noise_dim, .. } => {
                Tensor::randn([n, *noise_dim], (Kind::Float, device))
            }
        }
    }

    pub fn forward(&self, eps: &Tensor, train: bool) -> Tensor {
        match self {
            SamplerNet::Conv(e) => e.forward(eps, None, train),
            SamplerNet::Mlp { net, .. } => net.forward(eps),
        }
    }
}
