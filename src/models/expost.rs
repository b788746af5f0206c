//! The ex-post density of the RAE baselines (and, with `baselines.vae_sampler
//! = gmm`, of VAE, CV-VAE and WAE-MMD): a [`Gmm`] fitted on the encoder's
//! training latents in the post-training phase, with its fit settings.

use super::StepStats;
use crate::gmm::{subsample, Gmm};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Device, Tensor};

/// The ex-post GMM's knobs (TOML section `[baselines]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GmmConfig {
    /// Ex-post GMM components.
    pub gmm_components: usize,
    /// Ex-post GMM: EM iteration limit and tolerance on the change of the mean
    /// log-likelihood (reference: sklearn `max_iter=2000, tol=1e-3`).
    pub gmm_max_iter: usize,
    pub gmm_tol: f64,
    /// Fit the ex-post GMM on at most this many training latents (a seeded
    /// random subset; 0 = all, as the reference). EM costs O(N·K·d²) per
    /// iteration: ~8 s per iteration for 50,000 CIFAR latents (d = 128) on one
    /// CPU core.
    pub gmm_max_points: usize,
}

impl Default for GmmConfig {
    fn default() -> Self {
        GmmConfig {
            gmm_components: 10,
            gmm_max_iter: 2000,
            gmm_tol: 1e-3,
            gmm_max_points: 0,
        }
    }
}

impl GmmConfig {
    pub fn validate(&self) -> Result<()> {
        if self.gmm_components < 1 {
            bail!("config key `baselines.gmm_components` must be >= 1");
        }
        if self.gmm_max_iter < 1 {
            bail!("config key `baselines.gmm_max_iter` must be >= 1");
        }
        crate::util::positive("baselines.gmm_tol", self.gmm_tol)
    }
}

/// An ex-post mixture on a model's training latents, with its fit settings
/// (`baselines.gmm_*`): the RAE sampler, and optionally the VAE/CV-VAE/WAE one
/// (`baselines.vae_sampler = gmm`). Fitted in the model's post-training phase;
/// kept in checkpoints under `gmm.*`.
pub struct ExPost {
    pub gmm: Option<Gmm>,
    pub components: usize,
    pub max_iter: usize,
    pub tol: f64,
    pub max_points: usize,
    seed: u64,
}

impl ExPost {
    pub fn new(c: &GmmConfig, seed: u64) -> ExPost {
        ExPost {
            gmm: None,
            components: c.gmm_components,
            max_iter: c.gmm_max_iter,
            tol: c.gmm_tol,
            max_points: c.gmm_max_points,
            seed,
        }
    }

    /// Fit the mixture on the training latents `z` (at most `gmm_max_points` of them).
    pub fn fit(&mut self, z: &Tensor) -> Result<StepStats> {
        let z = subsample(z, self.max_points, self.seed);
        let g = Gmm::fit_with_tol(&z, self.components, self.seed, self.max_iter, self.tol)?;
        let stats = vec![
            ("loss", -g.log_likelihood),
            ("gmm_log_likelihood", g.log_likelihood),
            ("gmm_iterations", g.iterations as f64),
            ("gmm_points", z.size()[0] as f64),
        ];
        self.gmm = Some(g);
        Ok(StepStats(stats))
    }

    /// `n` latents on `device`, or an error naming `model` if not fitted yet.
    pub fn sample(&self, n: i64, device: Device, model: &str) -> Result<Tensor> {
        match &self.gmm {
            Some(g) => Ok(g.sample(n).to_device(device)),
            None => bail!(
                "{model} samples from the ex-post GMM, which the post-training phase fits on \
                 the training latents; it has not run yet"
            ),
        }
    }

    pub fn name(&self) -> String {
        if self.components == 1 {
            return "ex-post Gaussian (full covariance)".into();
        }
        format!(
            "ex-post GMM ({} components, full covariance)",
            self.components
        )
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.gmm
            .as_ref()
            .map(|g| g.state("gmm"))
            .unwrap_or_default()
    }

    /// Restore the mixture if the checkpoint has one (it has none before the fit).
    pub fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.gmm = if Gmm::in_state("gmm", t) {
            Some(Gmm::load_state("gmm", t, Device::Cpu)?)
        } else {
            None
        };
        Ok(())
    }
}
