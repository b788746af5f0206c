//! The `ldc-vae` command line: a thin layer of clap argument structs, each
//! subcommand in its own file, over the library.

use anyhow::Result;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod data;
pub mod encode;
pub mod eval;
pub mod fid;
pub mod report;
pub mod reproduce;
pub mod sample;
pub mod table;
pub mod train;

#[derive(Parser, Debug)]
#[command(
    name = "ldc-vae",
    version,
    about = "Train and evaluate LDC-VAE and the autoencoders it is compared against",
    long_about = "Train and evaluate LDC-VAE (Latent Distribution Consistency VAE: an encoder \
trained by SVGD toward a Gibbs posterior, and a sampler net for generation) and the \
baselines of the paper's Table 1, on MNIST, CelebA and CIFAR-10; evaluate them as papers do \
(FID, t-SNE latent plots, image grids) and write one report.\n\n\
Typical session:\n  ldc-vae train --preset mnist-cpu --out runs/ldc\n  ldc-vae eval runs/ldc\n  \
ldc-vae report runs/ldc --out report/"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); also RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Get data sets and inspect data files.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model (LDC-VAE by default) from a preset or config file.
    Train(train::TrainArgs),
    /// Draw samples or reconstructions from a trained run.
    Sample(sample::SampleArgs),
    /// Evaluate a run: rec/sample FID, validation MSE, latent MMD, figures.
    Eval(eval::EvalArgs),
    /// Write a run's encoder latents of a split as NumPy .npy (labels beside them).
    Encode(encode::EncodeArgs),
    /// FID between two image sets or saved statistics (like `python -m pytorch_fid`).
    Fid(fid::FidArgs),
    /// Compute and cache FID reference statistics of a data set split.
    FidStats(fid::FidStatsArgs),
    /// Write the Table-1 report (HTML + Markdown) for one or more runs.
    Report(report::ReportArgs),
    /// One Markdown line per evaluated run folder (ablations: variants that are not Table-1 rows).
    Table(table::TableArgs),
    /// Train, evaluate and report every model on one preset (regenerates Table 1).
    Reproduce(reproduce::ReproduceArgs),
    /// Compare LDC sampler targets on a trained run's frozen encoder/decoder (DESIGN §1.8).
    CompareSamplers(eval::CompareSamplersArgs),
    /// Benchmark training steps and FID forward against the PyTorch peers.
    Bench(bench::BenchArgs),
    /// One measurement of `bench` in a fresh process (internal).
    #[command(hide = true)]
    BenchRow(bench::BenchRowArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    if crate::dist::size() > 1 && !matches!(cli.command, Command::Train(_)) {
        anyhow::bail!(
            "only `ldc-vae train` runs on several MPI workers; run this command without mpirun"
        );
    }
    match cli.command {
        Command::Data(c) => data::run(c),
        Command::Train(a) => train::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Encode(a) => encode::run(a),
        Command::Fid(a) => fid::run(a),
        Command::FidStats(a) => fid::run_stats(a),
        Command::Report(a) => report::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Table(a) => table::run(a),
        Command::CompareSamplers(a) => eval::run_compare(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchRow(a) => bench::run_row(a),
    }
}
