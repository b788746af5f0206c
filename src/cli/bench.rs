use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs) -> Result<()> {
    bail!("`ldc-vae bench` is not implemented yet (issue 7: benchmarks against PyTorch peers)")
}
