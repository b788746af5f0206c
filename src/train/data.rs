//! The data side of training: the training set split into train and
//! validation, its deterministic batches, and reconstruction MSE.

use crate::config::Config;
use crate::data::{self, ImageSet, Split};
use crate::dist;
use crate::models::{BatchSource, Model};
use crate::rng;
use anyhow::{bail, Result};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// Training data split into train and validation (last `val_size` training images).
pub struct TrainData {
    pub train: ImageSet,
    pub val: ImageSet,
}

pub fn load_train_data(cfg: &Config) -> Result<TrainData> {
    cfg.data.register();
    let dir = (!cfg.data.dir.is_empty()).then(|| PathBuf::from(&cfg.data.dir));
    let all = data::load_split(&cfg.data.dataset, dir.as_deref(), Split::Train)?;
    let n = all.len();
    let val = cfg.data.val_size as i64;
    if val >= n {
        bail!(
            "config key `data.val_size` ({val}) must be smaller than the training set ({n} images)"
        );
    }
    let mut train = all.slice(0, n - val);
    if cfg.data.train_limit > 0 && (cfg.data.train_limit as i64) < train.len() {
        train = train.slice(0, cfg.data.train_limit as i64);
    }
    if train.len() < cfg.train.batch_size {
        bail!(
            "training set ({} images) is smaller than `train.batch_size` ({})",
            train.len(),
            cfg.train.batch_size
        );
    }
    Ok(TrainData {
        train,
        val: all.slice(n - val, n),
    })
}

/// Deterministic batches of a training set: epoch `e` uses permutation (seed, e).
pub struct Batches<'a> {
    pub set: &'a ImageSet,
    pub batch_size: i64,
    pub seed: u64,
    pub device: Device,
    perm_epoch: Option<(u64, Tensor)>,
    /// Offset of the stream of epochs (the post-training phase uses its own).
    pub epoch_offset: u64,
}

impl<'a> Batches<'a> {
    pub fn new(set: &'a ImageSet, batch_size: i64, seed: u64, device: Device) -> Self {
        Batches {
            set,
            batch_size,
            seed,
            device,
            perm_epoch: None,
            epoch_offset: 0,
        }
    }
    pub fn per_epoch(&self) -> u64 {
        (self.set.len() / self.batch_size) as u64
    }
    /// Batch number `i` counted from the start (epoch = i / per_epoch).
    pub fn get(&mut self, i: u64) -> Tensor {
        let spe = self.per_epoch();
        let epoch = i / spe + self.epoch_offset;
        let within = (i % spe) as i64;
        if self.perm_epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let p = rng::permutation(self.set.len() as usize, self.seed, epoch);
            self.perm_epoch = Some((epoch, Tensor::from_slice(&p)));
        }
        let idx = self.perm_epoch.as_ref().unwrap().1.narrow(
            0,
            within * self.batch_size,
            self.batch_size,
        );
        // Under MPI each worker takes its rows of the global batch.
        dist::shard(&self.set.images.index_select(0, &idx)).to_device(self.device)
    }
}

impl BatchSource for Batches<'_> {
    fn batch(&mut self, i: u64) -> Tensor {
        self.get(i)
    }
    fn num_train(&self) -> i64 {
        self.set.len()
    }
    fn chunk(&mut self, start: i64, len: i64) -> Tensor {
        self.set.images.narrow(0, start, len).to_device(self.device)
    }
}

/// Mean squared reconstruction error over a set, in inference mode.
pub fn reconstruction_mse(model: &dyn Model, set: &ImageSet, batch: i64, seed: u64) -> f64 {
    let _g = tch::no_grad_guard();
    rng::reseed(seed, rng::Stream::Eval, 0);
    let mut total = 0.0;
    let n = set.len();
    let mut i = 0;
    while i < n {
        let len = batch.min(n - i);
        let x = set.images.narrow(0, i, len).to_device(model.device());
        let r = model.decode(&model.encode(&x));
        total += (r - x).square().sum(Kind::Double).double_value(&[]);
        i += len;
    }
    total / (set.images.numel() as f64)
}
