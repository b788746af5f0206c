//! Spectral normalisation (Miyato et al. 2018) for the RAE-SN decoder, as the
//! RAE reference does it (`models/my_layers/spectral_normalized_dense_conv.py`,
//! `DenseSN` / `ConvSN2DTranspose`): every weight `W`, viewed as a matrix,
//! is divided by an estimate of its largest singular value σ(W), refined by
//! one power iteration per forward pass; the iteration vector `u` is a
//! persistent, non-trainable variable (kept in checkpoints, so a resumed run
//! continues exactly) and is updated only in training mode.
//!
//! Which layers: the reference (`models/rae/rae_mnist.py`) swaps the decoder's
//! Dense and all Conv2DTranspose layers for their SN versions (its configs also
//! set `spec_norm_on_dec_only: False`, which spectrally normalises the encoder
//! too; DESIGN §3 names the decoder only, and so does this implementation).
//! BatchNorm layers are left as they are, as in the reference.

use super::{convt_last_padding, convt_stride2_padding, Decoder, Geometry};
use tch::nn;
use tch::{Kind, Tensor};

const EPS: f64 = 1e-12;

fn normalize(v: &Tensor) -> Tensor {
    v / (v.square().sum(Kind::Float).sqrt() + EPS)
}

/// One power iteration on `m` `[r, c]` from `u` `[r]`: returns σ (a scalar
/// differentiable in `m`; `u`, `v` are constants as in torch's spectral_norm)
/// and the new `u`.
pub fn power_iteration(m: &Tensor, u: &Tensor) -> (Tensor, Tensor) {
    let (u2, v) = {
        let _g = tch::no_grad_guard();
        let md = m.detach();
        let v = normalize(&md.transpose(0, 1).mv(u));
        (normalize(&md.mv(&v)), v)
    };
    let sigma = u2.dot(&m.mv(&v));
    (sigma, u2)
}

/// A weight with its power-iteration vector.
struct SnWeight {
    w: Tensor,
    u: Tensor,
}

impl SnWeight {
    /// `u` is created in the var store as `<path>.sn_u` (non-trainable), drawn
    /// from N(0, 1) like the reference's `RandomNormal(0, 1)` and normalised.
    fn new(p: &nn::Path, w: Tensor) -> SnWeight {
        let rows = w.size()[0];
        let mut u = p.zeros_no_train("sn_u", &[rows]);
        let _g = tch::no_grad_guard();
        u.copy_(&normalize(&Tensor::randn(
            [rows],
            (Kind::Float, w.device()),
        )));
        SnWeight { w, u }
    }

    /// `W / σ(W)`; in training mode the refined `u` is stored.
    fn normalized(&self, train: bool) -> Tensor {
        let m = self.w.view([self.w.size()[0], -1]);
        let (sigma, u2) = power_iteration(&m, &self.u);
        if train {
            let _g = tch::no_grad_guard();
            let mut u = self.u.shallow_clone();
            u.copy_(&u2);
        }
        &self.w / sigma
    }
}

/// The RAE reference decoder (same layers, names and shapes as
/// [`crate::nets::Decoder`]) with spectrally normalised Linear and ConvT weights.
pub struct SnDecoder {
    fc: SnWeight,
    fc_b: Option<Tensor>,
    c0: i64,
    ups: Vec<(SnWeight, Option<Tensor>)>,
    bns: Vec<nn::BatchNorm>,
    last: (SnWeight, Option<Tensor>),
    stride2: (i64, i64),
    last_pad: i64,
    size: i64,
    bn_groups: usize,
}

impl SnDecoder {
    /// The plain decoder's layers (same names, shapes and init), with each
    /// Linear/ConvT weight wrapped for spectral normalisation.
    pub fn new(p: &nn::Path, geo: Geometry, width: f64, latent: i64) -> SnDecoder {
        let d = Decoder::new(p, geo, width, latent, false);
        let bn_groups = d.bn_groups;
        let ups = d
            .ups
            .into_iter()
            .enumerate()
            .map(|(i, l)| (SnWeight::new(&(p / format!("convt{i}")), l.ws), l.bs))
            .collect();
        SnDecoder {
            fc: SnWeight::new(&(p / "fc"), d.fc.ws),
            fc_b: d.fc.bs,
            c0: d.c0,
            ups,
            bns: d.bns,
            last: (SnWeight::new(&(p / "convt_out"), d.last.ws), d.last.bs),
            stride2: convt_stride2_padding(geo.kernel),
            last_pad: convt_last_padding(geo.kernel),
            size: d.size,
            bn_groups,
        }
    }

    /// Training-mode BatchNorm over `groups` groups of the batch.
    pub fn bn_groups(mut self, groups: usize) -> SnDecoder {
        self.bn_groups = groups;
        self
    }

    pub fn forward(&self, z: &Tensor, train: bool) -> Tensor {
        let mut h = z
            .linear(&self.fc.normalized(train), self.fc_b.as_ref())
            .view([-1, self.c0, 8, 8]);
        let (pad, out_pad) = self.stride2;
        for ((w, b), bn) in self.ups.iter().zip(&self.bns) {
            h = h.conv_transpose2d(
                &w.normalized(train),
                b.as_ref(),
                [2, 2],
                [pad, pad],
                [out_pad, out_pad],
                1,
                [1, 1],
            );
            h = super::batch_norm_forward(bn, &h, train, self.bn_groups).relu();
        }
        let (w, b) = &self.last;
        let out = h.conv_transpose2d(
            &w.normalized(train),
            b.as_ref(),
            [1, 1],
            [self.last_pad, self.last_pad],
            [0, 0],
            1,
            [1, 1],
        );
        let out = if out.size()[2] != self.size {
            out.narrow(2, 0, self.size).narrow(3, 0, self.size)
        } else {
            out
        };
        out.sigmoid().contiguous()
    }

    /// Current σ estimates of every normalised weight (for stats and tests).
    pub fn sigmas(&self) -> Vec<f64> {
        let _g = tch::no_grad_guard();
        std::iter::once(&self.fc)
            .chain(self.ups.iter().map(|(w, _)| w))
            .chain(std::iter::once(&self.last.0))
            .map(|w| {
                power_iteration(&w.w.view([w.w.size()[0], -1]), &w.u)
                    .0
                    .double_value(&[])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    /// Largest singular value, from the eigenvalues of MᵀM in f64.
    fn top_singular(m: &Tensor) -> f64 {
        let m = m.detach().to_kind(Kind::Double);
        m.transpose(0, 1)
            .mm(&m)
            .linalg_eigvalsh("L")
            .max()
            .double_value(&[])
            .sqrt()
    }

    #[test]
    fn power_iteration_finds_the_largest_singular_value() {
        let _rng = crate::rng::exclusive();
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let m = Tensor::randn([20, 12], (Kind::Float, Device::Cpu));
        let top = top_singular(&m);
        let mut u = normalize(&Tensor::randn([20], (Kind::Float, Device::Cpu)));
        let mut sigma = 0.0;
        for _ in 0..100 {
            let (s, u2) = power_iteration(&m, &u);
            sigma = s.double_value(&[]);
            u = u2;
        }
        assert!((sigma - top).abs() / top < 1e-3, "{sigma} vs {top}");
        let normed = &m / sigma;
        let s1 = top_singular(&normed);
        assert!((s1 - 1.0).abs() < 1e-3, "{s1}");
    }

    #[test]
    fn decoder_weights_reach_unit_spectral_norm_and_u_is_state() {
        let _rng = crate::rng::exclusive();
        tch::set_num_threads(1);
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let dec = SnDecoder::new(&(vs.root() / "d"), Geometry::MNIST, 0.0625, 4);
        assert!(vs.variables().contains_key("d.convt0.sn_u"));
        assert!(
            !vs.trainable_variables()
                .iter()
                .any(|t| t.size() == [crate::nets::scaled(1024, 0.0625)]),
            "u must not be trainable"
        );
        let z = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let before = vs.variables()["d.fc.sn_u"].copy();
        for _ in 0..60 {
            let y = dec.forward(&z, true);
            assert_eq!(y.size(), vec![3, 1, 32, 32]);
        }
        assert!(
            !before.equal(&vs.variables()["d.fc.sn_u"]),
            "training forward must update u"
        );
        // After the power iterations, each σ estimate matches the true top
        // singular value, so every normalised weight has spectral norm ≈ 1.
        let vars = vs.variables();
        for (name, sigma) in [
            "d.fc.weight",
            "d.convt0.weight",
            "d.convt1.weight",
            "d.convt_out.weight",
        ]
        .iter()
        .zip(dec.sigmas())
        {
            let w = &vars[*name];
            let top = top_singular(&w.view([w.size()[0], -1]));
            assert!((sigma - top).abs() / top < 2e-2, "{name}: {sigma} vs {top}");
        }
        // Inference mode leaves u alone.
        let u = vs.variables()["d.fc.sn_u"].copy();
        let _ = dec.forward(&z, false);
        assert!(u.equal(&vs.variables()["d.fc.sn_u"]));
    }
}
