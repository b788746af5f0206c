use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct SampleArgs {}

pub fn run(_a: SampleArgs) -> Result<()> {
    bail!("`ldc-vae sample` is not wired yet")
}
