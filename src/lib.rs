//! ldc-vae: train and evaluate LDC-VAE (Latent Distribution Consistency VAE,
//! Chen et al.) and the autoencoders it is compared against, on MNIST, CelebA
//! and CIFAR-10, and evaluate them the way the paper does (FID, t-SNE latent
//! plots, image grids, a Table-1 report).
//!
//! Map of the crate:
//! - [`data`]: readers for the public formats (IDX, CIFAR-10 binary, image
//!   folders / CelebA) and `data fetch`.
//! - [`nets`]: the RAE reference architectures, the LDC encoder with its noise
//!   layer, the sampler net.
//! - [`svgd`]: RBF kernel, median bandwidth, Stein direction Φ, KDE score.
//! - [`models`]: one file per model behind [`models::Model`].
//! - [`samplers`]: generation routes fitted on a trained model's frozen
//!   encoder (GMM, Gaussian, prior, and sampler nets trained by OT, MMD or SVGD).
//! - [`optim`]: Adam with saveable state (exact resume).
//! - [`train`]: the one training loop, checkpoints, metrics, NaN handling.
//! - [`eval`]: FID, latent MMD, t-SNE, plots, grids, report.
//! - [`rows`]: the rows of Table 1 (a model plus config overrides).
//! - [`config`]: TOML presets and `--set key=value` overrides.
//! - [`dist`]: data-parallel training over MPI (feature `mpi`).

pub mod bench;
pub mod checkpoint_file;
pub mod cli;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod gmm;
pub mod models;
pub mod nets;
pub mod optim;
pub mod rng;
pub mod rows;
pub mod run_dir;
pub mod run_state;
pub mod samplers;
pub mod svgd;
pub mod train;
pub mod util;
