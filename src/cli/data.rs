use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Get a data set (mnist, fashion-mnist, cifar10, celeba) into the data directory.
    Fetch {
        dataset: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Format, image count, shape, labels and pixel statistics of a data file or folder.
    Info { path: PathBuf },
}

pub fn run(_c: DataCommand) -> Result<()> {
    bail!("`ldc-vae data` is not implemented yet (issue 3)")
}
