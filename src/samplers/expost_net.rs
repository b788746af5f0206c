//! A sampler net fitted after training on a model's frozen encoder
//! (`sampler.kind = ot | mmd | svgd`): its particles are moved toward the
//! bank of encoded training latents, by optimal transport, MMD or SVGD
//! toward the bank's KDE, for `sampler.steps` steps. Works for any model
//! whose encoder gives latents of the training images (the RAEs, WAE-MMD,
//! the VAEs' means). Its state (weights, Adam, OT potential) is saved with
//! the model's checkpoint, so the fit resumes exactly.

use super::{bank, BankTarget, SamplerConfig, SamplerNet, SamplerNetShape, SamplerObjective};
use crate::models::{load_var_store, var_store_state, StepStats};
use crate::nets::Geometry;
use crate::optim::Adam;
use crate::rng::{reseed, Stream};
use crate::svgd;
use anyhow::{bail, Result};
use std::collections::HashMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

const PREFIX: &str = "expost_sampler";

pub struct ExPostNet {
    cfg: SamplerConfig,
    objective: SamplerObjective,
    seed: u64,
    geo: Geometry,
    device: Device,
    vs: VarStore,
    net: SamplerNet,
    opt: Adam,
    /// Built at the first step (or after a resume) from the frozen encoder.
    target: Option<BankTarget>,
    /// OT: the bank rows' dual potential `[M]` (empty before the first step).
    potential: Tensor,
    /// The fingerprint of the bank the potential was learnt on
    /// ([`BankTarget::fingerprint`]), empty until then.
    potential_of: Tensor,
}

impl ExPostNet {
    /// A fresh sampler net for `objective`, its weights from the run's
    /// sampler-init stream (the model's weights do not move).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &SamplerConfig,
        objective: SamplerObjective,
        seed: u64,
        geo: Geometry,
        width: f64,
        latent: i64,
        lr: f64,
        betas: (f64, f64),
        device: Device,
    ) -> ExPostNet {
        reseed(seed, Stream::SamplerInit, 1);
        let vs = VarStore::new(device);
        let net = SamplerNet::new(
            &vs,
            &SamplerNetShape {
                kind: cfg.net,
                noise_dim: cfg.noise_dim,
                hidden: cfg.hidden,
                geo,
                width,
                latent,
                bn_groups: 1,
            },
        );
        let opt = Adam::new(&vs, cfg.lr_or(lr), betas.0, betas.1);
        ExPostNet {
            cfg: cfg.clone(),
            objective,
            seed,
            geo,
            device,
            vs,
            net,
            opt,
            target: None,
            potential: Tensor::zeros([0], (Kind::Float, device)),
            potential_of: Tensor::zeros([0], (Kind::Float, device)),
        }
    }

    pub fn steps(&self) -> u64 {
        self.cfg.steps
    }

    /// `sampler net (ot)` etc., as eval and the report name the route.
    pub fn name(&self) -> String {
        format!("ex-post sampler net ({})", self.objective.as_str())
    }

    /// Whether the bank is still to be given ([`ExPostNet::set_bank`]):
    /// at the first step of a process (fresh or resumed).
    pub fn needs_bank(&self) -> bool {
        self.target.is_none()
    }

    /// Encoded training images the bank should hold (0 = all).
    pub fn bank_size(&self) -> i64 {
        self.cfg.bank_size
    }

    /// The bank: the frozen encoder's latents of the training images.
    pub fn set_bank(&mut self, z: &Tensor) {
        let kde = (self.objective == SamplerObjective::Svgd)
            .then_some((svgd::KdeBandwidth::Median, self.cfg.kde_scale));
        let t = BankTarget::build(&z.to_device(self.device), self.cfg.whiten, kde);
        let tagged = self.potential_of.numel() > 0;
        if self.potential.size()[0] > 0 && tagged && !t.matches(&self.potential_of) {
            tracing::warn!(
                "the saved OT potential belongs to another bank (size, whitening or latents \
                 differ): the transport restarts from zero"
            );
            self.potential = Tensor::zeros([0], (Kind::Float, self.device));
        }
        self.potential_of = t.fingerprint();
        tracing::info!(
            "ex-post sampler ({}): bank of {} encoded training images{}, h_bank = {:.4}",
            self.objective.as_str(),
            t.bank.size()[0],
            if self.cfg.whiten { ", whitened" } else { "" },
            t.h_bank.double_value(&[])
        );
        self.target = Some(t);
    }

    /// Step `i` of the fit (after [`ExPostNet::set_bank`]).
    pub fn step(&mut self, i: u64) -> Result<StepStats> {
        let Some(target) = self.target.as_ref() else {
            bail!("the ex-post sampler has no bank yet");
        };
        bank::reseed_step(self.seed, i);
        let eps = self.net.noise(self.cfg.particles, self.geo, self.device);
        let y = self.net.forward(&eps, true);
        let yu = target.coords(&y);
        let yd = yu.detach();
        let phi = match self.objective {
            SamplerObjective::Ot => target.ot_step(
                &yd,
                &yd,
                &mut self.potential,
                super::OtStep {
                    eps: self.cfg.ot_epsilon,
                    potential_lr: self.cfg.ot_potential_lr,
                    debias: self.cfg.ot_debias,
                    own_atom: self.cfg.ot_debias_own_atom,
                },
            ),
            SamplerObjective::Mmd => {
                let h = &target.h_bank * self.cfg.mmd_h_scale;
                svgd::mmd_direction(&yd, &yd, &target.bank, &h)
            }
            SamplerObjective::Svgd => {
                let tau2 = target.tau2.as_ref().expect("built with τ² for SVGD");
                let s = svgd::kde_score_t(&yd, &target.bank, tau2);
                svgd::stein_direction(&yd, &s, &yd, &target.h_bank)
            }
        };
        let loss = -(&yu * phi.detach())
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float);
        self.opt.backward_step(&loss);
        let phi_norm = phi
            .square()
            .sum_dim_intlist(-1, false, Kind::Float)
            .sqrt()
            .mean(Kind::Float)
            .double_value(&[]);
        let std = y
            .detach()
            .std_dim(0, true, false)
            .mean(Kind::Float)
            .double_value(&[]);
        if !phi_norm.is_finite() || !std.is_finite() {
            bail!("ex-post sampler step {i}: non-finite direction or particles");
        }
        Ok(StepStats(vec![
            ("loss", phi_norm),
            ("sampler_phi_norm", phi_norm),
            ("sampler_std", std),
        ]))
    }

    /// `n` latents (inference mode).
    pub fn sample(&self, n: i64) -> Tensor {
        let _g = tch::no_grad_guard();
        let eps = self.net.noise(n, self.geo, self.device);
        self.net.forward(&eps, false)
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut v = var_store_state(&self.vs, PREFIX);
        v.extend(self.opt.state(&format!("adam_{PREFIX}")));
        if self.potential.size()[0] > 0 {
            v.push((
                format!("{PREFIX}_ot_potential"),
                self.potential.shallow_clone(),
            ));
            v.push((
                format!("{PREFIX}_ot_bank"),
                self.potential_of.shallow_clone(),
            ));
        }
        v
    }

    pub fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        load_var_store(&mut self.vs, PREFIX, t)?;
        self.opt.load_state(&format!("adam_{PREFIX}"), t)?;
        let get = |k: String| {
            t.get(&k)
                .map(|g| g.to_device(self.device).to_kind(Kind::Float))
        };
        self.potential = get(format!("{PREFIX}_ot_potential"))
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, self.device)));
        self.potential_of = get(format!("{PREFIX}_ot_bank"))
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, self.device)));
        self.target = None;
        Ok(())
    }

    pub fn scale_lr(&mut self, factor: f64) {
        self.opt.lr *= factor;
    }
}

#[cfg(test)]
mod tests {
    use crate::models::common::testing::{blobs, tiny_config, train_fixed, Fixed};
    use crate::models::{Generation, Model};
    use std::collections::HashMap;
    use tch::Tensor;

    fn model(kind: &str, extra: &[&str]) -> Box<dyn Model> {
        let c = tiny_config("rae-l2");
        let mut ov: Vec<String> = vec![
            "model=rae-l2".into(),
            format!("sampler.kind={kind}"),
            "sampler.steps=6".into(),
            "sampler.particles=20".into(),
            "sampler.bank_size=48".into(),
            "sampler.hidden=16".into(),
        ];
        ov.extend(extra.iter().map(|s| s.to_string()));
        let mut c = crate::config::Config::from_toml_str(&c.to_toml(), &ov).unwrap();
        c.net.latent_dim = 4;
        c.build_model(tch::Device::Cpu).unwrap()
    }

    /// `sampler.kind = ot | mmd | svgd` on a baseline: the route is a sampler
    /// net with `sampler.steps` post-training steps that move its latents
    /// toward the encoder's; the fit resumes exactly from a mid-way state.
    #[test]
    fn expost_sampler_net_trains_on_a_baseline_and_resumes_exactly() {
        let _rng = crate::rng::exclusive();
        let x = blobs(64, 1);
        for kind in ["ot", "mmd", "svgd"] {
            let mut a = model(kind, &[]);
            assert_eq!(a.generation(), Generation::SamplerNet);
            assert_eq!(a.post_training_steps(), 6);
            assert!(a.sampler_name().contains(kind), "{}", a.sampler_name());
            train_fixed(a.as_mut(), &x.narrow(0, 0, 16), 5);
            let trained: HashMap<String, Tensor> =
                a.state().into_iter().map(|(k, t)| (k, t.copy())).collect();
            // Uninterrupted: 6 steps.
            let mut src = Fixed(x.shallow_clone());
            for i in 0..6 {
                let s = a.post_training_step(&mut src, i).unwrap();
                assert!(s.non_finite().is_none(), "{kind}: {s:?}");
            }
            // Interrupted after 3 steps, resumed in a fresh model from the state.
            let mut b = model(kind, &[]);
            b.load_state(&trained).unwrap();
            for i in 0..3 {
                b.post_training_step(&mut src, i).unwrap();
            }
            let mid: HashMap<String, Tensor> =
                b.state().into_iter().map(|(k, t)| (k, t.copy())).collect();
            let mut c = model(kind, &[]);
            c.load_state(&mid).unwrap();
            for i in 3..6 {
                c.post_training_step(&mut src, i).unwrap();
            }
            let (sa, sc) = (a.state(), c.state());
            assert_eq!(sa.len(), sc.len());
            for ((ka, ta), (kc, tc)) in sa.iter().zip(&sc) {
                assert_eq!(ka, kc);
                assert!(ta.equal(tc), "{kind}: {ka} differs after a resumed fit");
            }
            if kind == "ot" {
                assert!(sa.iter().any(|(k, _)| k == "expost_sampler_ot_potential"));
            }
            let z = a.sample_latents(7).unwrap();
            assert_eq!(z.size(), vec![7, 4]);
            assert!(f64::try_from(z.isfinite().all()).unwrap() == 1.0);
        }
    }

    /// The ex-post GMM and Gaussian routes of `sampler.kind`, and LDC-VAE refusing it.
    #[test]
    fn sampler_kind_routes_and_refusals() {
        let _rng = crate::rng::exclusive();
        assert_eq!(
            model("gmm", &[]).sampler_name(),
            model("model", &[]).sampler_name()
        );
        let gaussian = model("gaussian", &[]).sampler_name();
        assert!(gaussian.contains("Gaussian"), "{gaussian}");
        assert_eq!(model("prior", &[]).generation(), Generation::Prior);
        let e = crate::config::Config::load(None, None, &["sampler.kind=ot".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("ldc.recipe"), "{e:#}");
        let e = crate::config::Config::load(
            None,
            None,
            &[
                "model=rae-l2".into(),
                "sampler.kind=ot".into(),
                "sampler.steps=0".into(),
            ],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("sampler.steps"), "{e:#}");
    }
}
