//! Adam whose state (moments and step count) can be saved and restored, so a
//! resumed run continues exactly (tch's built-in optimizer hides its state).
//! Same update as `torch.optim.Adam` (L2 `weight_decay` added to the gradient).

use anyhow::{bail, Result};
use std::collections::HashMap;
use tch::{nn::VarStore, Tensor};

pub struct Adam {
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: i64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Adam {
    /// Adam over the trainable variables of `vs`, in name order.
    pub fn new(vs: &VarStore, lr: f64, beta1: f64, beta2: f64) -> Adam {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let (names, params) = vars.into_iter().unzip();
        Adam {
            names,
            params,
            m,
            v,
            step: 0,
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One Adam update from the gradients currently stored on the parameters.
    pub fn step(&mut self) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for ((p, m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let g = if self.weight_decay != 0.0 {
                &g + &*p * self.weight_decay
            } else {
                g
            };
            let _ = m
                .g_mul_scalar_(self.beta1)
                .g_add_(&(&g * (1.0 - self.beta1)));
            let _ = v
                .g_mul_scalar_(self.beta2)
                .g_add_(&(g.square() * (1.0 - self.beta2)));
            let denom = (v.sqrt() / bc2.sqrt()).g_add_scalar_(self.eps);
            let _ = p.g_sub_(&(&*m / denom * (self.lr / bc1)));
        }
    }

    /// `zero_grad`, backward of `loss`, gradients averaged over MPI workers
    /// (one all-reduce; nothing when not distributed), `step`.
    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        crate::dist::average_grads(&self.params);
        self.step();
    }

    /// Gradients on the parameters (for NaN checks): true if all finite.
    pub fn grads_finite(&self) -> bool {
        self.params.iter().all(|p| {
            let g = p.grad();
            !g.defined() || bool::try_from(g.isfinite().all()).unwrap_or(false)
        })
    }

    /// Named state tensors, prefixed, for a checkpoint.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.names.len() + 2);
        for ((n, m), v) in self.names.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("{prefix}.m.{n}"), m.shallow_clone()));
            out.push((format!("{prefix}.v.{n}"), v.shallow_clone()));
        }
        out.push((format!("{prefix}.step"), Tensor::from(self.step)));
        out.push((format!("{prefix}.lr"), Tensor::from(self.lr)));
        out
    }

    /// Restore from tensors written by [`Adam::state`].
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let get = |k: String| -> Result<&Tensor> {
            tensors
                .get(&k)
                .ok_or_else(|| anyhow::anyhow!("checkpoint lacks optimizer tensor `{k}`"))
        };
        for ((n, m), v) in self.names.iter().zip(&mut self.m).zip(&mut self.v) {
            let (sm, sv) = (
                get(format!("{prefix}.m.{n}"))?,
                get(format!("{prefix}.v.{n}"))?,
            );
            if sm.size() != m.size() || sv.size() != v.size() {
                bail!(
                    "checkpoint optimizer tensor `{prefix}.m.{n}` has shape {:?}, expected {:?}",
                    sm.size(),
                    m.size()
                );
            }
            m.copy_(sm);
            v.copy_(sv);
        }
        self.step = get(format!("{prefix}.step"))?.int64_value(&[]);
        self.lr = get(format!("{prefix}.lr"))?.double_value(&[]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    #[test]
    fn adam_matches_closed_form_first_step_and_minimises() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let mut opt = Adam::new(&vs, 0.1, 0.9, 0.999);
        // First Adam step moves each coordinate by lr·sign(g) (bias-corrected).
        let loss = (&w * Tensor::from_slice(&[1.0f32, -2.0, 3.0])).sum(Kind::Float);
        opt.backward_step(&loss);
        let got = Vec::<f32>::try_from(&w.detach()).unwrap();
        for (g, want) in got.iter().zip([0.9f32, 1.1, 0.9]) {
            assert!((g - want).abs() < 1e-5, "{got:?}");
        }
        for _ in 0..500 {
            let loss = (&w - 3.0).square().sum(Kind::Float);
            opt.backward_step(&loss);
        }
        let got = Vec::<f32>::try_from(&w.detach()).unwrap();
        assert!(got.iter().all(|x| (x - 3.0).abs() < 1e-2), "{got:?}");
    }
}
