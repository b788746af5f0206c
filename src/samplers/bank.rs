//! The fixed target of an ex-post sampler: a bank of encoded training latents
//! in working coordinates (whitened or not), with its median-heuristic
//! bandwidth, the KDE's τ² when an SVGD objective needs it, and the OT step
//! that moves particles onto it.

use crate::dist;
use crate::models::BatchSource;
use crate::rng::{reseed, Stream};
use crate::svgd;
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// The settings of one OT step ([`BankTarget::ot_step`]).
#[derive(Debug, Clone, Copy)]
pub struct OtStep {
    /// ε in units of the bank's bandwidth.
    pub eps: f64,
    /// Ascent rate of the bank's dual potential.
    pub potential_lr: f64,
    /// Sinkhorn-divergence debiasing.
    pub debias: bool,
    /// Keep each particle's own atom in the debias's self-plan.
    pub own_atom: bool,
}

/// The bank as one sampler step sees it (DESIGN §1.8, issue 14).
pub struct BankTarget {
    pub whitening: Option<svgd::Whitening>,
    /// The bank in working coordinates, `[M, d]`.
    pub bank: Tensor,
    /// τ², a 0-dim tensor on the bank's device; `None` unless the objective
    /// is SVGD toward the KDE (the held-out rule costs a pass over the bank).
    pub tau2: Option<Tensor>,
    pub h_bank: Tensor,
}

impl BankTarget {
    /// `bank` in latent coordinates; `kde`: the bandwidth rule and the factor
    /// on its τ², for an SVGD objective.
    pub fn build(bank: &Tensor, whiten: bool, kde: Option<(svgd::KdeBandwidth, f64)>) -> Self {
        let _g = tch::no_grad_guard();
        let whitening = whiten.then(|| svgd::Whitening::fit(bank));
        let bank = match &whitening {
            Some(w) => w.apply(bank),
            None => bank.shallow_clone(),
        };
        let h_bank = svgd::median_bandwidth_subset(&bank, 1000);
        let tau2 = kde.map(|(rule, scale)| svgd::kde_tau2_tensor(&bank, rule, &h_bank) * scale);
        BankTarget {
            whitening,
            bank,
            tau2,
            h_bank,
        }
    }

    /// Working coordinates of latents `z` (differentiable).
    pub fn coords(&self, z: &Tensor) -> Tensor {
        match &self.whitening {
            Some(w) => w.apply(z),
            None => z.shallow_clone(),
        }
    }

    /// What identifies the coordinates an OT potential was learnt in: the
    /// bank's size, whether it is whitened, its bandwidth and the sum of its
    /// working coordinates (`[4]`, f32). A potential saved with another
    /// fingerprint (e.g. after `--set ldc.kde_whiten=false` on a resumed
    /// run) belongs to another transport problem and restarts from zero.
    pub fn fingerprint(&self) -> Tensor {
        let _g = tch::no_grad_guard();
        let dev = self.bank.device();
        Tensor::stack(
            &[
                Tensor::from(self.bank.size()[0] as f32).to_device(dev),
                Tensor::from(if self.whitening.is_some() {
                    1.0f32
                } else {
                    0.0
                })
                .to_device(dev),
                self.h_bank.to_kind(Kind::Float).reshape([]),
                self.bank.sum(Kind::Float),
            ],
            0,
        )
    }

    /// Whether `saved` (a fingerprint from a checkpoint) is this target's.
    pub fn matches(&self, saved: &Tensor) -> bool {
        let now = self.fingerprint();
        saved.size() == now.size()
            && saved
                .to_device(now.device())
                .to_kind(Kind::Float)
                .allclose(&now, 1e-5, 1e-5, false)
    }

    /// One OT step of particles `yd` (this worker's rows, working
    /// coordinates, detached) among `y_all` (every worker's): the direction
    /// `T_bank(y) − y` of the semi-discrete entropic plan with the bank's
    /// dual `potential`, debiased as a Sinkhorn divergence when `debias`
    /// ([`svgd::ot_self_projection`]; `own_atom`: its pre-issue-26 form); then
    /// one ascent step on the potential.
    pub fn ot_step(
        &self,
        yd: &Tensor,
        y_all: &Tensor,
        potential: &mut Tensor,
        o: OtStep,
    ) -> Tensor {
        let OtStep {
            eps,
            potential_lr,
            debias,
            own_atom,
        } = o;
        if potential.size()[0] != self.bank.size()[0] {
            // A fresh sampler (or another bank): a fresh transport problem.
            *potential = Tensor::zeros([self.bank.size()[0]], (Kind::Float, self.bank.device()));
        }
        // The plan of every worker's particles (the potential's step must be
        // the same everywhere); this worker's rows for its direction.
        let plan_all = svgd::ot_plan(y_all, &self.bank, potential, &self.h_bank, eps);
        let whole = y_all.size()[0] == yd.size()[0];
        let plan = if whole {
            plan_all.shallow_clone()
        } else {
            svgd::ot_plan(yd, &self.bank, potential, &self.h_bank, eps)
        };
        let mut phi = svgd::ot_direction(yd, &plan, &self.bank);
        if debias {
            // (T_bank(y) − y) − (T_self(y) − y)
            let offset = if whole {
                0
            } else {
                dist::rank() as i64 * yd.size()[0]
            };
            phi =
                phi + yd - svgd::ot_self_projection(yd, y_all, offset, &self.h_bank, eps, own_atom);
        }
        svgd::ot_potential_step(potential, &plan_all, potential_lr);
        phi
    }
}

/// Latents of a seeded random subset of `size` training images (0 = all),
/// encoded in chunks by `encode(chunk_index, images)` (inference mode).
pub fn encode_bank(
    data: &mut dyn BatchSource,
    size: i64,
    seed: u64,
    mut encode: impl FnMut(usize, &Tensor) -> Tensor,
) -> Result<Tensor> {
    let n = data.num_train();
    if n < 2 {
        bail!("the training set holds fewer than 2 images: no bank for the sampler");
    }
    let size = match size {
        0 => n,
        s => s.min(n),
    };
    let order: Vec<i64> = crate::rng::permutation(n as usize, seed, 1 << 43)
        .into_iter()
        .take(size as usize)
        .collect();
    let mut parts = Vec::new();
    for (c, idx) in order.chunks(500).enumerate() {
        let x = Tensor::cat(
            &idx.iter().map(|&i| data.chunk(i, 1)).collect::<Vec<_>>(),
            0,
        );
        let _g = tch::no_grad_guard();
        parts.push(encode(c, &x));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// The seeded noise stream of ex-post sampler step `i` (refinement steps
/// are numbered from 2^40, as LDC-VAE's refinement).
pub fn reseed_step(seed: u64, i: u64) {
    reseed(seed, Stream::SamplerNoise, (1u64 << 40) + i);
}
