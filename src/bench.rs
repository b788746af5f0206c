//! Timing of training steps (ms/step, median after warm-up) for `ldc-vae bench`.

use crate::config::Config;
use crate::models;
use anyhow::Result;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Median and quartiles of a sample of durations, ms.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median_ms: f64,
    pub q1_ms: f64,
    pub q3_ms: f64,
}

pub fn summarize(mut ms: Vec<f64>) -> Timing {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| ms[((ms.len() - 1) as f64 * f).round() as usize];
    Timing {
        median_ms: q(0.5),
        q1_ms: q(0.25),
        q3_ms: q(0.75),
    }
}

/// Time `steps` training steps of the model in `cfg` on random images of the
/// data set's shape (after `warmup` steps).
pub fn time_train_steps(cfg: &Config, warmup: usize, steps: usize) -> Result<Timing> {
    let device = crate::util::parse_device(&cfg.device)?;
    let geo = crate::nets::Geometry::for_dataset(&cfg.data.dataset);
    let mut model = models::build(cfg, device)?;
    tch::manual_seed(0);
    let x = Tensor::rand(
        [cfg.train.batch_size, geo.channels, geo.size, geo.size],
        (Kind::Float, device),
    );
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let s = model.train_step(&x, i as u64)?;
        if device != Device::Cpu {
            tch::Cuda::synchronize(0);
        }
        let _ = s.get("loss");
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(summarize(times))
}

/// Peak resident memory of this process so far, MiB (Linux; NaN elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
