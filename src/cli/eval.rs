use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory written by `ldc-vae train`.
    pub run_dir: PathBuf,
}

pub fn run(_a: EvalArgs) -> Result<()> {
    bail!("`ldc-vae eval` is not implemented yet (issue 5)")
}
