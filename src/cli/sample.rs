use crate::eval::grid;
use crate::rng::{reseed, Stream};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run directory written by `ldc-vae train`.
    pub run_dir: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 64)]
    pub n: i64,
    /// `grid.png` for one grid, or `DIR/` (trailing slash or existing folder) for one PNG per image.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Reconstructions of test images (originals above, reconstructions below) instead of samples.
    #[arg(long)]
    pub recon: bool,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Sample from a run whose training is unfinished (else an error naming
    /// the missing phase).
    #[arg(long)]
    pub allow_unfinished: bool,
}

pub fn run(a: SampleArgs) -> Result<()> {
    crate::run_state::require_finished(&a.run_dir, a.allow_unfinished, "sample from")?;
    let (cfg, model, _) = crate::run_dir::load_run(&a.run_dir, a.device.as_deref())?;
    let _g = tch::no_grad_guard();
    reseed(a.seed, Stream::Eval, 1);
    let ncol = (a.n as f64).sqrt().ceil() as i64;
    let as_dir = a.out.to_string_lossy().ends_with('/') || a.out.is_dir();
    if a.recon {
        let dir = (!cfg.data.dir.is_empty()).then(|| PathBuf::from(&cfg.data.dir));
        let test =
            crate::data::load_split(&cfg.data.dataset, dir.as_deref(), crate::data::Split::Test)?;
        let x = test
            .images
            .narrow(0, 0, a.n.min(test.len()))
            .to_device(model.device());
        let r = model.decode(&model.encode(&x));
        if as_dir {
            grid::save_each(&r, &a.out, 0)?;
        } else {
            grid::save_recon_grid(&x, &r, ncol.max(8), &a.out)?;
        }
    } else {
        let mut done = 0;
        let mut grids = Vec::new();
        while done < a.n {
            let len = 500.min(a.n - done);
            let imgs = model
                .decode(&model.sample_latents(len)?)
                .to_device(tch::Device::Cpu);
            if as_dir {
                grid::save_each(&imgs, &a.out, done as usize)?;
            } else {
                grids.push(imgs);
            }
            done += len;
        }
        if !as_dir {
            grid::save_grid(&tch::Tensor::cat(&grids, 0), ncol, &a.out)
                .context("writing the sample grid")?;
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
