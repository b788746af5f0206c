//! Regularized autoencoders (Ghosh et al. 2020): RAE-L2, RAE-GP, RAE-SN.
//!
//! Deterministic encoder and decoder (DESIGN §2), loss as the reference
//! `models/rae/loss_functions.py` (`total_loss`) computes it, batch-averaged:
//!
//! `L = mean_pixels (x − D(z))² + β · mean_d z_d² + R(D)`, `z = E(x)`,
//!
//! (the reference's embedding loss is `K.mean(K.square(z), axis=1)`, i.e.
//! ‖z‖²/d, and its reconstruction the per-pixel mean; the β values of
//! `reference.rs` are in these units) with the decoder regulariser `R`:
//! - RAE-L2: `w · Σ W²` over the decoder's transposed-conv kernels (Keras
//!   `kernel_regularizer=l2(w)` in `models/rae/rae_mnist.py`; not on the Dense
//!   layer nor on biases). Written as a loss term rather than Adam weight decay,
//!   so it is exactly the reference's term (Keras l2(w) has gradient 2w·W).
//! - RAE-GP: `gp · mean_{batch, d} (∂ Σ_pixels D(z)² / ∂z)²`, the reference's
//!   `grad_pen_loss` (`K.gradients(K.square(y_pred), embedding)`): the gradient
//!   of the squared output w.r.t. the latent, taken by autograd with
//!   `create_graph`, and back-propagated through (double backward) into the
//!   decoder and, through z, the encoder, as in the Keras graph.
//! - RAE-SN: no loss term; the decoder's weights are spectrally normalised
//!   ([`crate::nets::sn`]).
//!
//! Weights per data set: `reference.rs`. Samples come from the ex-post
//! full-covariance GMM ([`super::expost`], `baselines.gmm_components`, 10 as in
//! the reference) fitted on the training latents in the post-training phase
//! (one post-training "step" = the whole fit).

use super::common::{core_and_latents, per_pixel_mse, val, Core, PriorOrExPost};
use super::reference::{self, check_weight, Weights, BASELINE_REFERENCE};
use super::{Baseline, Model, Spec, StepStats};
use crate::gmm::Gmm;
use crate::nets::Geometry;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The RAEs' knobs (TOML section `[baselines]`); −1 = the reference value
/// ([`super::reference`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RaeConfig {
    /// RAE latent penalty β·mean_d(z²) (reference `embedding_weight`; differs
    /// between RAE-L2, RAE-GP and RAE-SN).
    pub rae_beta: f64,
    /// RAE-L2 decoder weight decay (Keras `l2(w)` on the decoder kernels).
    pub rae_l2_decay: f64,
    /// RAE-GP gradient-penalty weight.
    pub rae_gp_weight: f64,
}

impl Default for RaeConfig {
    fn default() -> Self {
        RaeConfig {
            rae_beta: BASELINE_REFERENCE,
            rae_l2_decay: BASELINE_REFERENCE,
            rae_gp_weight: BASELINE_REFERENCE,
        }
    }
}

impl RaeConfig {
    pub fn validate(&self) -> Result<()> {
        check_weight("baselines.rae_beta", self.rae_beta)?;
        check_weight("baselines.rae_l2_decay", self.rae_l2_decay)?;
        check_weight("baselines.rae_gp_weight", self.rae_gp_weight)
    }
}

/// The registry's build function of `rae-l2`.
pub fn build_l2(spec: &Spec, geo: Geometry, device: Device) -> Result<Box<dyn Model>> {
    Ok(Box::new(Rae::new(spec, geo, device, RaeKind::L2)?))
}

/// The registry's build function of `rae-gp`.
pub fn build_gp(spec: &Spec, geo: Geometry, device: Device) -> Result<Box<dyn Model>> {
    Ok(Box::new(Rae::new(spec, geo, device, RaeKind::Gp)?))
}

/// The registry's build function of `rae-sn`.
pub fn build_sn(spec: &Spec, geo: Geometry, device: Device) -> Result<Box<dyn Model>> {
    Ok(Box::new(Rae::new(spec, geo, device, RaeKind::Sn)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaeKind {
    L2,
    Gp,
    Sn,
}

pub struct Rae {
    kind: RaeKind,
    core: Core,
    w: Weights,
    /// Decoder transposed-conv kernels (RAE-L2's regularised weights).
    dec_kernels: Vec<Tensor>,
    /// Always the ex-post GMM.
    latents: PriorOrExPost,
}

/// `(mean over batch and latent dims of g², g)` with `g = ∂ Σ out² / ∂z`,
/// differentiable (double backward) in everything `out` depends on.
pub fn grad_penalty(z: &Tensor, out: &Tensor) -> (Tensor, Tensor) {
    let s = out.square().sum(out.kind());
    let g = Tensor::run_backward(&[s], &[z], true, true).pop().unwrap();
    (g.square().mean(g.kind()), g)
}

impl Rae {
    pub fn new(cfg: &Spec, geo: Geometry, device: Device, kind: RaeKind) -> Result<Rae> {
        let w = reference::resolve(cfg)?;
        let core = Core::new(cfg, geo, device, cfg.net.latent_dim, kind == RaeKind::Sn);
        let mut dec_kernels: Vec<(String, Tensor)> = core
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.starts_with("decoder.convt") && n.ends_with(".weight"))
            .collect();
        dec_kernels.sort_by(|a, b| a.0.cmp(&b.0));
        let latents = PriorOrExPost::chosen(cfg, &core, PriorOrExPost::ex_post(cfg));
        Ok(Rae {
            kind,
            core,
            w,
            dec_kernels: dec_kernels.into_iter().map(|(_, t)| t).collect(),
            latents,
        })
    }

    pub fn weights(&self) -> &Weights {
        &self.w
    }

    pub fn gmm(&self) -> Option<&Gmm> {
        match &self.latents {
            PriorOrExPost::Gmm(e) => e.gmm.as_ref(),
            _ => None,
        }
    }
}

impl Baseline for Rae {
    fn key(&self) -> &'static str {
        match self.kind {
            RaeKind::L2 => "rae-l2",
            RaeKind::Gp => "rae-gp",
            RaeKind::Sn => "rae-sn",
        }
    }
    core_and_latents!();

    fn step(&mut self, x: &Tensor, _step: u64) -> Result<StepStats> {
        // Nothing random happens in a step (deterministic encoder, no noise).
        let z = self.core.encoder.forward(x, None, true);
        let xhat = self.core.decoder.forward(&z, true);
        let rec = per_pixel_mse(x, &xhat).mean(Kind::Float);
        let emb = z.square().mean(Kind::Float);
        let mut loss = &rec + &emb * self.w.latent;
        let mut stats = vec![];
        match self.kind {
            RaeKind::L2 => {
                let reg = self
                    .dec_kernels
                    .iter()
                    .map(|w| w.square().sum(Kind::Float))
                    .reduce(|a, b| a + b)
                    .unwrap();
                stats.push(("l2", val(&reg)));
                loss += reg * self.w.l2_decay;
            }
            RaeKind::Gp => {
                let (gp, _) = grad_penalty(&z, &xhat);
                stats.push(("grad_pen", val(&gp)));
                loss += gp * self.w.gp_weight;
            }
            RaeKind::Sn => {}
        }
        self.core.opt.backward_step(&loss);
        let mut out = vec![
            ("loss", val(&loss)),
            ("rec_mse", val(&rec)),
            ("z_sq", val(&emb)),
        ];
        out.extend(stats);
        Ok(StepStats(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::*;
    use super::*;
    use crate::rng::{reseed, Stream};
    use tch::nn::{Module, VarStore};

    #[test]
    fn gradient_penalty_matches_finite_differences() {
        let _rng = crate::rng::exclusive();
        // A tiny f64 decoder D(z) = W2 tanh(W1 z + b1) + b2.
        tch::manual_seed(4);
        let mut vs = VarStore::new(Device::Cpu);
        let mlp = crate::nets::Mlp::new(&(vs.root() / "d"), &[3, 5, 4]);
        vs.double();
        let f = |z: &Tensor| mlp.forward(&z.tanh()).tanh();
        let z0 = Tensor::randn([2, 3], (Kind::Double, Device::Cpu));
        let z = z0.set_requires_grad(true);
        let out = f(&z);
        let (pen, g) = grad_penalty(&z, &out);
        // g against central differences of Σ D(z)².
        let sq = |z: &Tensor| f(z).square().sum(Kind::Double).double_value(&[]);
        let h = 1e-6;
        let gv = Vec::<f64>::try_from(g.detach().flatten(0, -1)).unwrap();
        for (i, gi) in gv.iter().enumerate() {
            let e = Tensor::zeros([6], (Kind::Double, Device::Cpu))
                .index_fill(0, &Tensor::from(i as i64), h)
                .view([2, 3]);
            let fd = (sq(&(&z0 + &e)) - sq(&(&z0 - &e))) / (2.0 * h);
            assert!(
                (fd - gi).abs() < 1e-6 * (1.0 + fd.abs()),
                "dz {i}: {fd} vs {gi}"
            );
        }
        let want = gv.iter().map(|v| v * v).sum::<f64>() / 6.0;
        assert!((pen.double_value(&[]) - want).abs() < 1e-12);
        // Double backward: ∂pen/∂W1 against finite differences of the penalty.
        for (_, p) in vs.variables().iter_mut() {
            p.zero_grad();
        }
        pen.backward();
        let mut w1 = vs.variables()["d.fc0.weight"].shallow_clone();
        let grad = Vec::<f64>::try_from(w1.grad().flatten(0, -1)).unwrap();
        let pen_at = || {
            let z = z0.set_requires_grad(true);
            grad_penalty(&z, &f(&z)).0.double_value(&[])
        };
        for i in [0i64, 4, 11] {
            let orig = w1.flatten(0, -1).double_value(&[i]);
            let set = |w: &mut Tensor, v: f64| {
                let _g = tch::no_grad_guard();
                let _ = w.view([-1]).get(i).fill_(v);
            };
            set(&mut w1, orig + 1e-6);
            let up = pen_at();
            set(&mut w1, orig - 1e-6);
            let down = pen_at();
            set(&mut w1, orig);
            let fd = (up - down) / 2e-6;
            assert!(
                (fd - grad[i as usize]).abs() < 1e-5 * (1.0 + fd.abs()),
                "dW1[{i}]: {fd} vs {}",
                grad[i as usize]
            );
        }
    }

    fn rae(kind: &str) -> Rae {
        let c = tiny_config(kind);
        let k = match kind {
            "rae-l2" => RaeKind::L2,
            "rae-gp" => RaeKind::Gp,
            _ => RaeKind::Sn,
        };
        Rae::new(&c.spec(), Geometry::MNIST, Device::Cpu, k).unwrap()
    }

    #[test]
    fn every_variant_lowers_its_loss_in_30_steps() {
        let _rng = crate::rng::exclusive();
        let x = blobs(16, 0);
        for kind in ["rae-l2", "rae-gp", "rae-sn"] {
            let mut m = rae(kind);
            let (first, last) = train_fixed(&mut m, &x, 30);
            assert!(last < 0.7 * first, "{kind}: {first} -> {last}");
        }
    }

    #[test]
    fn gmm_sampling_shapes_and_state_round_trip() {
        let _rng = crate::rng::exclusive();
        let x = blobs(64, 1);
        for kind in ["rae-l2", "rae-sn"] {
            let mut a = rae(kind);
            train_fixed(&mut a, &x.narrow(0, 0, 16), 5);
            assert!(a.sample_latents(3).is_err(), "no GMM before post-training");
            let mut src = Fixed(x.shallow_clone());
            let mut c = tiny_config(kind);
            c.baselines.gmm.gmm_components = 3;
            match &mut a.latents {
                PriorOrExPost::Gmm(e) => e.components = 3,
                _ => panic!("the RAE's route is its GMM"),
            }
            let st = a.post_training_step(&mut src, 0).unwrap();
            assert!(st.get("gmm_log_likelihood").unwrap().is_finite());
            reseed(0, Stream::Eval, 0);
            let z = a.sample_latents(7).unwrap();
            assert_eq!(z.size(), vec![7, 4]);
            assert_eq!(a.decode(&z).size(), vec![7, 1, 32, 32]);
            assert_eq!(a.encode(&x.narrow(0, 0, 5)).size(), vec![5, 4]);
            let mut b = Rae::new(&c.spec(), Geometry::MNIST, Device::Cpu, a.kind).unwrap();
            assert_round_trip(&mut a, &mut b, &x.narrow(0, 0, 16));
            reseed(0, Stream::Eval, 1);
            let za = a.sample_latents(5).unwrap();
            reseed(0, Stream::Eval, 1);
            assert!(za.equal(&b.sample_latents(5).unwrap()));
        }
    }
}
