use crate::bench;
use crate::config::Config;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Preset whose model and width are timed.
    #[arg(long, default_value = "mnist-cpu")]
    pub preset: String,
    /// Config overrides, e.g. `--set net.width=1`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// libtorch threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let cfg = Config::load(Some(&a.preset), None, &a.overrides)?;
    tch::set_num_threads(a.threads as i32);
    let t = bench::time_train_steps(&cfg, a.warmup, a.steps)?;
    println!(
        "{} {} width {} batch {}: {:.1} ms/step (quartiles {:.1}–{:.1}), peak RSS {:.0} MiB",
        cfg.model,
        cfg.data.dataset,
        cfg.net.width,
        cfg.train.batch_size,
        t.median_ms,
        t.q1_ms,
        t.q3_ms,
        bench::peak_rss_mib()
    );
    println!("note: comparison against the PyTorch peers (issue 7) is not implemented yet");
    Ok(())
}
