//! Evaluation: FID, latent-consistency MMD, t-SNE, plots, grids, report.

pub mod grid;
pub mod mmd;
pub mod run;
pub mod samplers;
