//! Evaluation: FID, KID, precision/recall, latent-consistency MMD, data-copying C_T, t-SNE, plots, grids, report.

pub mod aggregate;
pub mod classes;
pub mod copying;
pub mod feature_metrics;
pub mod fid;
pub mod grid;
pub mod mmd;
pub mod plots;
pub mod report;
pub mod report_tables;
pub mod run;
pub mod samplers;
