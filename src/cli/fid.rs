use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct FidArgs {
    /// First image set: a folder of PNG/JPEG images, or a saved statistics file.
    pub a: PathBuf,
    /// Second image set or statistics file.
    pub b: PathBuf,
}

#[derive(Args, Debug)]
pub struct FidStatsArgs {
    /// Data set name (mnist, fashion-mnist, cifar10, celeba).
    pub dataset: String,
}

pub fn run(_a: FidArgs) -> Result<()> {
    bail!("`ldc-vae fid` is not implemented yet (issue 5)")
}

pub fn run_stats(_a: FidStatsArgs) -> Result<()> {
    bail!("`ldc-vae fid-stats` is not implemented yet (issue 5)")
}
