use crate::data::Split;
use crate::eval::fid::{self, FidStats, Inception};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct FidArgs {
    /// First image set: a folder of PNG/JPEG images (searched recursively), a
    /// statistics file (.safetensors from `fid-stats`, or a pytorch-fid .npz),
    /// or a data set split written `DATASET:SPLIT[:N]` (e.g. `mnist:test:10000`,
    /// cached like `fid-stats`).
    pub a: String,
    /// Second image set, statistics file or data set split.
    pub b: String,
    #[command(flatten)]
    pub net: InceptionArgs,
}

/// The Inception network's options, shared by `fid` and `fid-stats`.
#[derive(Args, Debug)]
pub struct InceptionArgs {
    /// Images per Inception forward pass.
    #[arg(long, default_value_t = 50)]
    pub batch: i64,
    /// FID network (TorchScript); default `$LDC_VAE_FID_WEIGHTS`, then the set-up's venv.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Device for the network: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Folder of cached reference statistics (default `${LDC_VAE_CACHE:-~/.cache/ldc-vae}/fid-stats`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Data folder for data set splits (default: the usual search).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FidStatsArgs {
    /// Data set name (mnist, fashion-mnist, cifar10, celeba).
    pub dataset: String,
    /// Split: test or train.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Number of images, the first N of the split in file order (0 = all).
    #[arg(long, default_value_t = 0)]
    pub n: usize,
    /// Also write the statistics here (.safetensors, or .npz for pytorch-fid).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub net: InceptionArgs,
}

pub fn parse_split(s: &str) -> Result<Split> {
    match s {
        "test" => Ok(Split::Test),
        "train" => Ok(Split::Train),
        other => bail!("unknown split `{other}` (test or train)"),
    }
}

/// `DATASET:SPLIT[:N]` → (dataset, split, n).
fn parse_dataset_spec(s: &str) -> Option<(String, Split, usize)> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let split = parse_split(parts[1]).ok()?;
    let n = match parts.get(2) {
        Some(n) => n.parse().ok()?,
        None => 0,
    };
    Some((parts[0].to_string(), split, n))
}

struct Ctx {
    net: Option<Inception>,
    weights: PathBuf,
    device: tch::Device,
    batch: i64,
    cache_dir: PathBuf,
    data_dir: Option<PathBuf>,
}

impl Ctx {
    fn net(&mut self) -> Result<&Inception> {
        if self.net.is_none() {
            self.net = Some(Inception::load_on(&self.weights, self.device)?);
        }
        Ok(self.net.as_ref().unwrap())
    }

    fn stats_of(&mut self, arg: &str) -> Result<FidStats> {
        let p = Path::new(arg);
        if p.is_dir() {
            eprintln!("{arg}: computing Inception features");
            let batch = self.batch;
            let acts = self.net()?.folder_activations(p, batch, true)?;
            return FidStats::from_activations(&acts)
                .with_context(|| format!("statistics of {arg}"));
        }
        if p.is_file() {
            return FidStats::load(p);
        }
        if let Some((ds, split, n)) = parse_dataset_spec(arg) {
            let (batch, data_dir, cache_dir) =
                (self.batch, self.data_dir.clone(), self.cache_dir.clone());
            let net = self.net()?;
            return fid::reference_stats_with(
                net,
                &ds,
                split,
                n,
                data_dir.as_deref(),
                &cache_dir,
                batch,
            );
        }
        bail!("`{arg}` is neither a folder of images, a statistics file, nor DATASET:SPLIT[:N]")
    }
}

fn weights_of(w: Option<PathBuf>) -> Result<PathBuf> {
    match w {
        Some(p) => Ok(p),
        None => fid::default_weights_path(),
    }
}

pub fn run(a: FidArgs) -> Result<()> {
    crate::util::set_threads(a.net.threads);
    let mut ctx = Ctx {
        net: None,
        weights: weights_of(a.net.weights)?,
        device: crate::util::parse_device(&a.net.device)?,
        batch: a.net.batch,
        cache_dir: a.net.cache_dir.unwrap_or_else(fid::default_stats_dir),
        data_dir: a.net.data_dir,
    };
    let s1 = ctx.stats_of(&a.a)?;
    let s2 = ctx.stats_of(&a.b)?;
    let value = fid::frechet_distance(&s1, &s2)?;
    // Same line as `python -m pytorch_fid`.
    println!("FID:  {value}");
    Ok(())
}

pub fn run_stats(a: FidStatsArgs) -> Result<()> {
    crate::util::set_threads(a.net.threads);
    let split = parse_split(&a.split)?;
    let weights = weights_of(a.net.weights)?;
    let cache_dir = a.net.cache_dir.unwrap_or_else(fid::default_stats_dir);
    let net = Inception::load_on(&weights, crate::util::parse_device(&a.net.device)?)?;
    let stats = fid::reference_stats_with(
        &net,
        &a.dataset,
        split,
        a.n,
        a.net.data_dir.as_deref(),
        &cache_dir,
        a.net.batch,
    )?;
    let cached = fid::reference_stats_path(
        &crate::data::split_identity(&a.dataset, a.net.data_dir.as_deref(), split)?,
        split,
        stats.n,
        &fid::sha256_file(&weights)?,
        &cache_dir,
    );
    println!(
        "{} {} ({} images): {}",
        a.dataset,
        a.split,
        stats.n,
        cached.display()
    );
    if let Some(out) = a.out {
        stats.save(&out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
