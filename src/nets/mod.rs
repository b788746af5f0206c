//! The RAE reference architectures (DESIGN.md §2), scaled by a width
//! multiplier: the deterministic encoder (also the sampler net), the decoder,
//! and the LDC encoder with its extra noise conv layer (paper Fig. 1(b)).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Image geometry and kernel size of one data set family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub channels: i64,
    pub size: i64,
    pub kernel: i64,
}

impl Geometry {
    /// MNIST (padded to 32×32): 1 channel, 4×4 kernels.
    pub const MNIST: Geometry = Geometry {
        channels: 1,
        size: 32,
        kernel: 4,
    };
    /// CIFAR-10: 3 channels, 32×32, 4×4 kernels.
    pub const CIFAR10: Geometry = Geometry {
        channels: 3,
        size: 32,
        kernel: 4,
    };
    /// CelebA 64×64: 3 channels, 5×5 kernels.
    pub const CELEBA: Geometry = Geometry {
        channels: 3,
        size: 64,
        kernel: 5,
    };

    pub fn for_dataset(name: &str) -> Geometry {
        match name {
            "cifar10" => Self::CIFAR10,
            "celeba" => Self::CELEBA,
            _ => Self::MNIST,
        }
    }

    /// Image shape `[C, H, W]`.
    pub fn image_shape(&self) -> [i64; 3] {
        [self.channels, self.size, self.size]
    }
}

/// Channel count scaled by `width`, at least 1.
pub fn scaled(channels: i64, width: f64) -> i64 {
    ((channels as f64 * width).round() as i64).max(1)
}

/// BatchNorm with PyTorch's initialisation (weight 1, bias 0).
fn batch_norm(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            ..Default::default()
        },
    )
}

/// Number of groups of the global batch over which training-mode BatchNorm
/// computes its statistics ("ghost" BatchNorm; `train.bn_groups`). 1: the whole batch.
static BN_GROUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Set `train.bn_groups` for the nets of this process (set by the training loop).
pub fn set_bn_groups(groups: usize) {
    BN_GROUPS.store(groups.max(1), std::sync::atomic::Ordering::SeqCst);
}

pub fn bn_groups() -> usize {
    BN_GROUPS.load(std::sync::atomic::Ordering::SeqCst)
}

/// BatchNorm of `x` (`[N, C, H, W]`). In training mode with `bn_groups = G > 1`
/// each of G consecutive groups of the global batch is normalised with its own
/// statistics (the exact gradient of that objective), and the running
/// statistics are updated from the whole global batch. With K MPI workers each
/// worker's shard holds G/K groups, so a K-worker run normalises exactly as a
/// single process with `bn_groups = K` (PyTorch DDP without SyncBatchNorm does
/// the same); the running statistics' sums are all-reduced. With G = 1 and one
/// process this is libtorch's BatchNorm.
pub fn batch_norm_forward(bn: &nn::BatchNorm, x: &Tensor, train: bool) -> Tensor {
    let workers = crate::dist::size();
    let groups = bn_groups();
    if !train || (groups == 1 && workers == 1) {
        return x.apply_t(bn, train);
    }
    let local_groups = (groups / workers).max(1) as i64;
    let n = x.size()[0];
    assert!(
        n % local_groups == 0,
        "batch of {n} cannot be split into {local_groups} BatchNorm groups"
    );
    let parts: Vec<Tensor> = x
        .split(n / local_groups, 0)
        .iter()
        .map(|p| {
            Tensor::batch_norm(
                p,
                bn.ws.as_ref(),
                bn.bs.as_ref(),
                None::<&Tensor>,
                None::<&Tensor>,
                true,
                BN_MOMENTUM,
                BN_EPS,
                false,
            )
        })
        .collect();
    let out = Tensor::cat(&parts, 0);
    // Running statistics from the global batch: per-channel sums in f64.
    let _g = tch::no_grad_guard();
    let xd = x.detach().to_kind(Kind::Double);
    let c = x.size()[1];
    let count = (x.numel() as i64 / c) as f64;
    let mut buf: Vec<f64> = Vec::with_capacity(2 * c as usize + 1);
    let dims = &[0i64, 2, 3][..];
    buf.extend(crate::dist::to_host::<f64>(&xd.sum_dim_intlist(
        dims,
        false,
        Kind::Double,
    )));
    buf.extend(crate::dist::to_host::<f64>(&xd.square().sum_dim_intlist(
        dims,
        false,
        Kind::Double,
    )));
    buf.push(count);
    crate::dist::sum_f64(&mut buf);
    let total = buf[2 * c as usize];
    let sums = Tensor::from_slice(&buf[..c as usize]);
    let sqs = Tensor::from_slice(&buf[c as usize..2 * c as usize]);
    let mean = &sums / total;
    let var_unbiased = (sqs - &mean * &sums) / (total - 1.0);
    let dev = bn.running_mean.device();
    let mut rm = bn.running_mean.shallow_clone();
    let mut rv = bn.running_var.shallow_clone();
    let _ = rm
        .g_mul_scalar_(1.0 - BN_MOMENTUM)
        .g_add_(&(mean * BN_MOMENTUM).to_kind(Kind::Float).to_device(dev));
    let _ = rv.g_mul_scalar_(1.0 - BN_MOMENTUM).g_add_(
        &(var_unbiased * BN_MOMENTUM)
            .to_kind(Kind::Float)
            .to_device(dev),
    );
    out
}

/// libtorch's BatchNorm defaults, which [`batch_norm`] keeps.
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// "same" padding for a stride-2 conv of kernel k (k=4 → 1, k=5 → 2).
fn same_pad(kernel: i64) -> i64 {
    (kernel - 1) / 2
}

/// Conv(k, stride 2, "same") → BN → ReLU blocks with 128, 256, 512, 1024·width
/// channels, flatten, Linear → latent. Spatial size after the convs is size/16.
#[derive(Debug)]
pub struct Encoder {
    first: nn::Conv2D,
    /// Extra conv on the encoder noise (LDC encoder only), joined by addition.
    noise: Option<nn::Conv2D>,
    bns: Vec<nn::BatchNorm>,
    convs: Vec<nn::Conv2D>,
    fc: nn::Linear,
    concat_noise: bool,
}

/// How the LDC encoder joins its noise branch (DESIGN §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseJoin {
    /// No noise input: the RAE encoder / the sampler net.
    None,
    /// `BN/ReLU(conv1(x) + E_n(ε))`.
    Add,
    /// `conv1([x, ε])`: channels concatenated, first conv widened.
    Concat,
}

impl Encoder {
    pub fn new(p: &nn::Path, geo: Geometry, width: f64, out_dim: i64, join: NoiseJoin) -> Encoder {
        let chans: Vec<i64> = [128, 256, 512, 1024]
            .iter()
            .map(|&c| scaled(c, width))
            .collect();
        let cfg = nn::ConvConfig {
            stride: 2,
            padding: same_pad(geo.kernel),
            ..Default::default()
        };
        let in0 = if join == NoiseJoin::Concat {
            2 * geo.channels
        } else {
            geo.channels
        };
        let first = nn::conv2d(p / "conv0", in0, chans[0], geo.kernel, cfg);
        let noise = (join == NoiseJoin::Add)
            .then(|| nn::conv2d(p / "noise_conv", geo.channels, chans[0], geo.kernel, cfg));
        let mut bns = vec![batch_norm(p / "bn0", chans[0])];
        let mut convs = Vec::new();
        for i in 1..chans.len() {
            convs.push(nn::conv2d(
                p / format!("conv{i}"),
                chans[i - 1],
                chans[i],
                geo.kernel,
                cfg,
            ));
            bns.push(batch_norm(p / format!("bn{i}"), chans[i]));
        }
        let spatial = geo.size / 16;
        let fc = nn::linear(
            p / "fc",
            chans[3] * spatial * spatial,
            out_dim,
            Default::default(),
        );
        Encoder {
            first,
            noise,
            bns,
            convs,
            fc,
            concat_noise: join == NoiseJoin::Concat,
        }
    }

    /// `x`: images `[N,C,H,W]`; `noise`: image-shaped noise for the LDC encoder.
    pub fn forward(&self, x: &Tensor, noise: Option<&Tensor>, train: bool) -> Tensor {
        let mut h = match (noise, &self.noise, self.concat_noise) {
            (Some(e), Some(nc), _) => x.apply(&self.first) + e.apply(nc),
            (Some(e), None, true) => Tensor::cat(&[x, e], 1).apply(&self.first),
            (None, None, false) => x.apply(&self.first),
            _ => panic!("encoder noise input does not match its construction"),
        };
        h = batch_norm_forward(&self.bns[0], &h, train).relu();
        for (conv, bn) in self.convs.iter().zip(&self.bns[1..]) {
            h = batch_norm_forward(bn, &h.apply(conv), train).relu();
        }
        h.flatten(1, -1).apply(&self.fc)
    }
}

/// Linear → 8·8·1024·width, ConvT(k, stride 2) blocks with BN/ReLU (512, 256
/// for 32×32; 512, 256, 128 for 64×64), a final ConvT(k, stride 1) to C
/// channels and a sigmoid. For k = 4 the last ConvT gives 33×33 in libtorch
/// (TF's "same" is asymmetric); it is cropped to the first 32 rows/columns.
#[derive(Debug)]
pub struct Decoder {
    pub(crate) fc: nn::Linear,
    pub(crate) c0: i64,
    pub(crate) ups: Vec<nn::ConvTranspose2D>,
    pub(crate) bns: Vec<nn::BatchNorm>,
    pub(crate) last: nn::ConvTranspose2D,
    pub(crate) size: i64,
    channels_last: bool,
}

/// Padding of the decoder's stride-2 ConvT for kernel `k` doubling the size:
/// k=4 → (pad 1, output_padding 0); k=5 → (2, 1).
pub(crate) fn convt_stride2_padding(k: i64) -> (i64, i64) {
    if k == 4 {
        (1, 0)
    } else {
        (2, 1)
    }
}

/// Padding of the decoder's last (stride-1) ConvT for kernel `k`.
pub(crate) fn convt_last_padding(k: i64) -> i64 {
    if k == 4 {
        1
    } else {
        2
    }
}

impl Decoder {
    pub fn new(
        p: &nn::Path,
        geo: Geometry,
        width: f64,
        latent: i64,
        channels_last: bool,
    ) -> Decoder {
        let c0 = scaled(1024, width);
        let fc = nn::linear(p / "fc", latent, c0 * 64, Default::default());
        let widths: &[i64] = if geo.size == 64 {
            &[512, 256, 128]
        } else {
            &[512, 256]
        };
        let k = geo.kernel;
        // ConvT stride 2 doubling the size: k=4 → pad 1; k=5 → pad 2, output_padding 1.
        let (pad, out_pad) = convt_stride2_padding(k);
        let cfg = nn::ConvTransposeConfig {
            stride: 2,
            padding: pad,
            output_padding: out_pad,
            ..Default::default()
        };
        let mut ups = Vec::new();
        let mut bns = Vec::new();
        let mut cin = c0;
        for (i, &w) in widths.iter().enumerate() {
            let c = scaled(w, width);
            ups.push(nn::conv_transpose2d(
                p / format!("convt{i}"),
                cin,
                c,
                k,
                cfg,
            ));
            bns.push(batch_norm(p / format!("bn{i}"), c));
            cin = c;
        }
        let last_cfg = nn::ConvTransposeConfig {
            stride: 1,
            padding: convt_last_padding(k),
            ..Default::default()
        };
        let last = nn::conv_transpose2d(p / "convt_out", cin, geo.channels, k, last_cfg);
        Decoder {
            fc,
            c0,
            ups,
            bns,
            last,
            size: geo.size,
            channels_last,
        }
    }

    pub fn forward(&self, z: &Tensor, train: bool) -> Tensor {
        let mut h = z.apply(&self.fc).view([-1, self.c0, 8, 8]);
        if self.channels_last {
            h = to_channels_last(&h);
        }
        for (up, bn) in self.ups.iter().zip(&self.bns) {
            h = batch_norm_forward(bn, &h.apply(up), train).relu();
        }
        let out = h.apply(&self.last);
        let out = if out.size()[2] != self.size {
            out.narrow(2, 0, self.size).narrow(3, 0, self.size)
        } else {
            out
        };
        out.sigmoid().contiguous()
    }
}

/// Same values, NHWC strides: libtorch's "channels-last" layout, which makes
/// the (transposed) convolutions that follow pick faster CPU kernels.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// A fully connected net for small vector maps (two-stage VAE's second stage).
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
}

impl Mlp {
    pub fn new(p: &nn::Path, dims: &[i64]) -> Mlp {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(p / format!("fc{i}"), w[0], w[1], Default::default()))
            .collect();
        Mlp { layers }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = h.apply(l);
            if i + 1 < self.layers.len() {
                h = h.relu();
            }
        }
        h
    }
}

/// Re-initialise, in place, every conv, transposed-conv and linear layer among
/// the named `tensors` (a model's [`crate::models::Model::state`]) as PyTorch's
/// defaults do: weight and bias ~ U(±1/√fan_in), fan_in = `weight.size(1)` ×
/// kernel area (PyTorch's rule for all three layer kinds, transposed convs
/// included). tch's defaults are Kaiming-uniform with the ReLU gain (bounds
/// √6 ≈ 2.45× wider) and zero conv biases; with BatchNorm after a conv, Adam's
/// fixed-size steps on 2.45× larger weights train ~2.45× more slowly, which
/// made our reconstructions lag a PyTorch implementation of the same
/// method (issue 14: validation MSE 0.0163 vs its 0.0093 at 1,200 steps).
/// Layers are recognised by their variables: `*.weight` of rank ≥ 2 and the
/// `*.bias` beside it; BatchNorm (rank-1 weights), spectral-norm vectors and
/// optimizer state (`adam*`) are left alone. Each tensor draws from its own
/// stream, seeded by (`seed`, its name), so nets never shift each other's init.
pub fn init_like_pytorch(tensors: &[(String, Tensor)], seed: u64) {
    use crate::rng::{reseed, Stream};
    let _g = tch::no_grad_guard();
    let fan_in = |w: &Tensor| -> i64 { w.size()[1..].iter().product() };
    let weights: std::collections::HashMap<&str, i64> = tensors
        .iter()
        .filter(|(n, t)| !n.starts_with("adam") && n.ends_with(".weight") && t.dim() >= 2)
        .map(|(n, t)| (n.trim_end_matches(".weight"), fan_in(t)))
        .collect();
    for (name, t) in tensors {
        if name.starts_with("adam") {
            continue;
        }
        let layer = name
            .strip_suffix(".weight")
            .or_else(|| name.strip_suffix(".bias"));
        let Some(fan) = layer.and_then(|l| weights.get(l)) else {
            continue;
        };
        let bound = 1.0 / (*fan as f64).sqrt();
        let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        reseed(seed, Stream::Init, name_hash);
        let _ = t.shallow_clone().uniform_(-bound, bound);
    }
}

/// Standard normal noise shaped like a batch of images.
pub fn image_noise(n: i64, geo: Geometry, device: tch::Device) -> Tensor {
    Tensor::randn([n, geo.channels, geo.size, geo.size], (Kind::Float, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn shapes_for_every_dataset_and_width() {
        let _rng = crate::rng::exclusive();
        for geo in [Geometry::MNIST, Geometry::CIFAR10, Geometry::CELEBA] {
            for width in [0.0625, 0.125, 1.0] {
                let vs = VarStore::new(Device::Cpu);
                let enc = Encoder::new(&(vs.root() / "e"), geo, width, 16, NoiseJoin::Add);
                let enc_c = Encoder::new(&(vs.root() / "c"), geo, width, 16, NoiseJoin::Concat);
                let rae = Encoder::new(&(vs.root() / "r"), geo, width, 16, NoiseJoin::None);
                let dec = Decoder::new(&(vs.root() / "d"), geo, width, 16, width < 1.0);
                let x = Tensor::rand(
                    [2, geo.channels, geo.size, geo.size],
                    (Kind::Float, Device::Cpu),
                );
                let e = image_noise(2, geo, Device::Cpu);
                let z = enc.forward(&x, Some(&e), true);
                assert_eq!(z.size(), vec![2, 16]);
                assert_eq!(enc_c.forward(&x, Some(&e), true).size(), vec![2, 16]);
                assert_eq!(rae.forward(&x, None, false).size(), vec![2, 16]);
                let y = dec.forward(&z, true);
                assert_eq!(
                    y.size(),
                    vec![2, geo.channels, geo.size, geo.size],
                    "{geo:?} {width}"
                );
                let (lo, hi) = (y.min().double_value(&[]), y.max().double_value(&[]));
                assert!(lo >= 0.0 && hi <= 1.0);
            }
        }
    }

    /// PyTorch's rule: every conv / transposed-conv / linear weight and bias
    /// ~ U(±1/√fan_in) with fan_in = size(1) × kernel area; BatchNorm untouched;
    /// the same seed gives the same weights.
    #[test]
    fn pytorch_init_bounds_and_spread() {
        let _rng = crate::rng::exclusive();
        let build = || {
            let vs = VarStore::new(Device::Cpu);
            let _e = Encoder::new(
                &(vs.root() / "e"),
                Geometry::MNIST,
                0.25,
                16,
                NoiseJoin::Add,
            );
            let _d = Decoder::new(&(vs.root() / "d"), Geometry::MNIST, 0.25, 16, false);
            let state: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            init_like_pytorch(&state, 7);
            vs
        };
        let vs = build();
        let vars = vs.variables();
        let check = |name: &str, fan_in: i64| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            for p in ["weight", "bias"] {
                let t = &vars[&format!("{name}.{p}")];
                let max = t.abs().max().double_value(&[]);
                assert!(max <= bound + 1e-7, "{name}.{p}: {max} > {bound}");
                if t.numel() > 200 {
                    // std of U(-b, b) is b/√3
                    let sd = t.std(true).double_value(&[]);
                    assert!(
                        (sd / (bound / 3f64.sqrt()) - 1.0).abs() < 0.1,
                        "{name}.{p}: std {sd}"
                    );
                }
            }
        };
        check("e.conv0", 16); // 1 input channel × 4×4
        check("e.conv1", 32 * 16); // 32 channels × 4×4
        check("e.fc", 256 * 4);
        check("d.fc", 16);
        check("d.convt0", 128 * 16); // ConvT weight [in=256, out=128, 4, 4]: size(1) = 128
        assert!(
            vars["e.conv1.bias"]
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
        assert_eq!(vars["e.bn0.weight"].double_value(&[0]), 1.0);
        let again = build();
        assert!(vars["d.convt1.weight"].equal(&again.variables()["d.convt1.weight"]));
    }

    #[test]
    fn paper_width_matches_rae_layer_sizes() {
        let _rng = crate::rng::exclusive();
        let vs = VarStore::new(Device::Cpu);
        let _ = Encoder::new(
            &(vs.root() / "e"),
            Geometry::MNIST,
            1.0,
            16,
            NoiseJoin::None,
        );
        let vars = vs.variables();
        assert_eq!(vars["e.conv0.weight"].size(), vec![128, 1, 4, 4]);
        assert_eq!(vars["e.conv3.weight"].size(), vec![1024, 512, 4, 4]);
        assert_eq!(vars["e.fc.weight"].size(), vec![16, 1024 * 2 * 2]);
        assert_eq!(vars["e.bn0.weight"].double_value(&[0]), 1.0);
        let vs = VarStore::new(Device::Cpu);
        let _ = Decoder::new(&(vs.root() / "d"), Geometry::CELEBA, 1.0, 64, false);
        let vars = vs.variables();
        assert_eq!(vars["d.fc.weight"].size(), vec![8 * 8 * 1024, 64]);
        assert_eq!(vars["d.convt2.weight"].size(), vec![256, 128, 5, 5]);
        assert_eq!(vars["d.convt_out.weight"].size(), vec![128, 3, 5, 5]);
    }

    #[test]
    fn channels_last_decoder_computes_the_same_function() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let a = Decoder::new(&(vs.root() / "d"), Geometry::MNIST, 0.125, 16, false);
        let b = Decoder {
            channels_last: true,
            ..a
        };
        let z = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
        let b_out = b.forward(&z, false);
        let a2 = Decoder {
            channels_last: false,
            ..b
        };
        assert!(a2.forward(&z, false).allclose(&b_out, 1e-5, 1e-5, false));
    }

    #[test]
    fn ghost_batch_norm_normalises_each_group_and_tracks_the_whole_batch() {
        let _rng = crate::rng::exclusive();
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let bn = batch_norm(vs.root() / "bn", 3);
        let x = Tensor::randn([8, 3, 4, 4], (Kind::Float, Device::Cpu)) * 2.0 + 1.0;
        // One group: libtorch's BatchNorm.
        set_bn_groups(1);
        let whole = batch_norm_forward(&bn, &x, true);
        let (rm1, rv1) = (bn.running_mean.copy(), bn.running_var.copy());
        // Two groups: each half normalised on its own statistics ...
        let _ = bn.running_mean.shallow_clone().fill_(0.0);
        let _ = bn.running_var.shallow_clone().fill_(1.0);
        set_bn_groups(2);
        let ghost = batch_norm_forward(&bn, &x, true);
        set_bn_groups(1);
        let half = batch_norm_forward(&batch_norm(vs.root() / "h", 3), &x.narrow(0, 4, 4), true);
        assert!(ghost.narrow(0, 4, 4).allclose(&half, 1e-5, 1e-5, false));
        assert!(
            !ghost.allclose(&whole, 1e-3, 1e-3, false),
            "groups must change the output"
        );
        // ... while the running statistics follow the whole batch, as with one group.
        assert!(bn.running_mean.allclose(&rm1, 1e-5, 1e-6, false));
        assert!(bn.running_var.allclose(&rv1, 1e-5, 1e-6, false));
        // Inference mode ignores the groups.
        set_bn_groups(2);
        let eval = batch_norm_forward(&bn, &x, false);
        set_bn_groups(1);
        assert!(eval.allclose(&x.apply_t(&bn, false), 1e-6, 1e-6, false));
    }
}
