use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct TrainArgs {}

pub fn run(_a: TrainArgs) -> Result<()> {
    bail!("`ldc-vae train` is not wired yet")
}
