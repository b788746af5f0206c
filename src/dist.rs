//! Data-parallel training over MPI (feature `mpi`; docs/DISTRIBUTED.md).
//!
//! `mpirun -np K ldc-vae train ...` runs K workers. Each takes its rows of
//! every global batch ([`shard`]), and draws its rows of the noise a single
//! process would draw ([`draw_shard`]), so the K shards together are exactly
//! the single-process batch. Workers start from rank 0's state ([`broadcast_state`])
//! and average their gradients with one all-reduce on one flat buffer per
//! optimizer step ([`average_grads`], called by [`crate::optim::Adam`]).
//!
//! SVGD needs more than gradients: the particle set of a step is the global
//! batch. Workers all-gather the latents and scores ([`gather_rows`]; n × d,
//! tiny next to the gradients), so each computes the Stein direction Φ for its
//! own particles against every source, the median bandwidth and σ² on the
//! global set, as one process would.
//!
//! Every collective runs under a watchdog: a worker that waits longer than
//! `LDC_VAE_MPI_TIMEOUT` seconds (default 120) for the others, because one
//! died or hangs, prints which collective stalled and exits with an error, and
//! `mpirun` then stops the rest. Without the feature, or with one worker,
//! every function here is the identity and nothing is sent.

use anyhow::{bail, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

/// The collectives the training loop needs, on host buffers.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Concatenation of every worker's `local` (all the same length), in rank order.
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32>;
    /// Rank 0's `buf` into every worker's `buf`.
    fn broadcast_f64(&self, buf: &mut [f64]);
    fn barrier(&self);
    /// Shut the library down (MPI_Finalize); collectives fail afterwards.
    fn finalize(&self) {}
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// Install the communicator (once per process).
pub fn install(world: Box<dyn Collective>) -> Result<()> {
    if WORLD.set(world).is_err() {
        bail!("the MPI communicator was already set up");
    }
    start_watchdog();
    Ok(())
}

/// The communicator when this process is one of several workers.
pub fn world() -> Option<&'static dyn Collective> {
    WORLD.get().map(|w| w.as_ref()).filter(|w| w.size() > 1)
}

/// This worker's rank (0 when not distributed).
pub fn rank() -> usize {
    world().map_or(0, |w| w.rank())
}

/// Number of workers (1 when not distributed).
pub fn size() -> usize {
    world().map_or(1, |w| w.size())
}

/// This worker's index among the workers on its machine (from the launcher's
/// environment: Open MPI, MPICH/Hydra, Slurm); 0 when not distributed.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// Rank 0 writes the run directory, logs and checkpoints.
pub fn is_root() -> bool {
    rank() == 0
}

/// Finalize MPI at the end of a successful run (no-op otherwise).
pub fn finalize() {
    if let Some(w) = WORLD.get() {
        w.finalize();
    }
}

// ---- watchdog ---------------------------------------------------------------

/// Milliseconds since `EPOCH` at which the current collective started (0: none).
static IN_COLLECTIVE_SINCE: AtomicU64 = AtomicU64::new(0);
/// Index into `OPS` of the current collective.
static CURRENT_OP: AtomicU64 = AtomicU64::new(0);
const OPS: [&str; 6] = [
    "all-reduce (gradients)",
    "all-reduce (statistics)",
    "all-gather (particles)",
    "broadcast (state)",
    "barrier",
    "all-reduce (sums: BatchNorm statistics, state size)",
];

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Seconds a worker waits in one collective before it gives up.
pub fn timeout() -> Duration {
    let s = std::env::var("LDC_VAE_MPI_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(120.0);
    Duration::from_secs_f64(s)
}

fn start_watchdog() {
    let limit = timeout();
    let _ = epoch();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(250));
        let since = IN_COLLECTIVE_SINCE.load(Ordering::SeqCst);
        if since == 0 {
            continue;
        }
        let waited = epoch().elapsed().as_millis() as u64 - (since - 1);
        if waited > limit.as_millis() as u64 {
            let op = OPS[CURRENT_OP.load(Ordering::SeqCst) as usize];
            eprintln!(
                "error: worker {} of {}: the {op} has waited {:.0} s for the other workers: one of them died or hangs (limit LDC_VAE_MPI_TIMEOUT={:.0} s); stopping",
                rank(),
                size(),
                waited as f64 / 1000.0,
                limit.as_secs_f64()
            );
            // Exiting without MPI_Finalize makes mpirun stop the remaining workers.
            std::process::exit(75);
        }
    });
}

/// Run collective `op` (index into `OPS`) under the watchdog.
fn watched<T>(op: usize, f: impl FnOnce(&dyn Collective) -> T) -> Option<T> {
    let w = world()?;
    CURRENT_OP.store(op as u64, Ordering::SeqCst);
    IN_COLLECTIVE_SINCE.store(epoch().elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    let out = f(w);
    IN_COLLECTIVE_SINCE.store(0, Ordering::SeqCst);
    Some(out)
}

// ---- tensors ----------------------------------------------------------------

/// `t`'s values, flattened, as a host vector of `T` (f32, f64).
pub(crate) fn to_host<T: tch::kind::Element + Copy>(t: &Tensor) -> Vec<T> {
    Vec::<T>::try_from(
        t.detach()
            .to_device(tch::Device::Cpu)
            .to_kind(T::KIND)
            .contiguous()
            .view([-1]),
    )
    .expect("tensor to host buffer")
}

fn to_f32_vec(t: &Tensor) -> Vec<f32> {
    to_host(t)
}

/// Rows `[r·n/K, (r+1)·n/K)` of `t` for worker r (the whole of `t` when not distributed).
pub fn shard(t: &Tensor) -> Tensor {
    let k = size() as i64;
    if k == 1 {
        return t.shallow_clone();
    }
    let n = t.size()[0];
    assert!(
        n % k == 0,
        "{n} rows cannot be split evenly over {k} workers"
    );
    t.narrow(0, rank() as i64 * (n / k), n / k)
}

/// Draw the global `n_local · K` rows with `draw` and keep this worker's, so
/// every worker holds the numbers a single process would give those rows.
pub fn draw_shard(n_local: i64, draw: impl FnOnce(i64) -> Tensor) -> Tensor {
    shard(&draw(n_local * size() as i64))
}

/// `Tensor::randn([n_local·K, rest..])` drawn in full and cut to this
/// worker's rows: the Gaussian noise a single process would give them.
pub fn randn_rows(n_local: i64, rest: &[i64], options: (Kind, tch::Device)) -> Tensor {
    draw_shard(n_local, |n| {
        let mut shape = vec![n];
        shape.extend_from_slice(rest);
        Tensor::randn(shape.as_slice(), options)
    })
}

/// Every worker's rows of `t` (`[n_local, ...]`, same shape everywhere),
/// concatenated in rank order: the global set.
pub fn gather_rows(t: &Tensor) -> Tensor {
    let Some(w) = world() else {
        return t.shallow_clone();
    };
    let mut shape = t.size();
    let local = to_f32_vec(t);
    let all = watched(2, |w| w.all_gather_f32(&local)).unwrap();
    shape[0] *= w.size() as i64;
    Tensor::from_slice(&all)
        .view(shape.as_slice())
        .to_kind(t.kind())
        .to_device(t.device())
}

/// Replace the gradients of `params` by their mean over workers: one
/// all-reduce on one flat buffer (parameters without a gradient send zeros).
pub fn average_grads(params: &[Tensor]) {
    let Some(w) = world() else {
        return;
    };
    let _g = tch::no_grad_guard();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g.to_kind(Kind::Float).view([-1])
            } else {
                Tensor::zeros([p.numel() as i64], (Kind::Float, p.device()))
            }
        })
        .collect();
    if grads.is_empty() {
        return;
    }
    let mut flat = to_f32_vec(&Tensor::cat(&grads, 0));
    watched(0, |w| w.all_reduce_sum_f32(&mut flat));
    let k = w.size() as f32;
    let mut off = 0usize;
    for p in params {
        let n = p.numel();
        // Every worker runs the same code, so a gradient is undefined on all or none.
        let mut g = p.grad();
        let mean = Tensor::from_slice(&flat[off..off + n])
            .g_div_scalar(k as f64)
            .view(p.size().as_slice())
            .to_kind(p.kind())
            .to_device(p.device());
        if g.defined() {
            g.copy_(&mean);
        }
        off += n;
    }
}

/// Mean of each value over workers (one small all-reduce), in place, plus
/// whether any worker raised `flag` (e.g. was interrupted). A NaN on one
/// worker makes the mean NaN everywhere, so every worker stops at the same step.
pub fn agree(values: &mut [f64], flag: bool) -> bool {
    let Some(w) = world() else {
        return flag;
    };
    let mut buf: Vec<f64> = values.to_vec();
    buf.push(if flag { 1.0 } else { 0.0 });
    watched(1, |w| w.all_reduce_sum_f64(&mut buf));
    let k = w.size() as f64;
    for (s, v) in values.iter_mut().zip(&buf) {
        *s = v / k;
    }
    buf.last().copied().unwrap_or(0.0) > 0.0
}

/// Sum of `buf` over workers, in place (BatchNorm running statistics).
pub fn sum_f64(buf: &mut [f64]) {
    watched(5, |w| w.all_reduce_sum_f64(buf));
}

/// Wait for every worker (e.g. until rank 0 has written a checkpoint).
pub fn barrier() {
    watched(4, |w| w.barrier());
}

/// Rank 0's values of the named tensors `state` (a model's whole state:
/// weights, optimizer moments, step counters, banks), for every worker to load:
/// one broadcast of one flat buffer. `None` in a single process.
pub fn broadcast_state(state: Vec<(String, Tensor)>) -> Result<Option<HashMap<String, Tensor>>> {
    if world().is_none() {
        return Ok(None);
    }
    let mut flat: Vec<f64> = Vec::new();
    for (_, t) in &state {
        flat.extend(to_host::<f64>(t));
    }
    // Every worker built the same model from the same config, so the layouts agree;
    // check the total size first so a mismatch is an error, not garbage.
    let mut len = [flat.len() as f64, -(flat.len() as f64)];
    sum_f64(&mut len);
    if len[0] != flat.len() as f64 * size() as f64 {
        bail!("workers hold model states of different sizes (different configs?)");
    }
    watched(3, |w| w.broadcast_f64(&mut flat));
    let mut off = 0usize;
    let mut out = HashMap::new();
    for (name, t) in state {
        let n = t.numel();
        let v = Tensor::from_slice(&flat[off..off + n])
            .view(t.size().as_slice())
            .to_kind(t.kind())
            .to_device(t.device());
        out.insert(name, v);
        off += n;
    }
    Ok(Some(out))
}

// ---- fault injection (tests) -------------------------------------------------

/// `LDC_VAE_FAULT` as (kind, rank, step), read once.
fn fault() -> &'static Option<(String, usize, u64)> {
    static FAULT: OnceLock<Option<(String, usize, u64)>> = OnceLock::new();
    FAULT.get_or_init(|| {
        let v = std::env::var("LDC_VAE_FAULT").ok()?;
        let mut it = v.split(':');
        let kind = it.next()?.to_string();
        let r = it.next()?.parse().ok()?;
        let s = it.next()?.parse().ok()?;
        Some((kind, r, s))
    })
}

/// Test hook: `LDC_VAE_FAULT=<kind>:<rank>:<step>` makes worker `rank` fail at
/// training step `step`: `nan` (NaN images, so its loss is NaN), `kill`
/// (SIGKILL itself) or `hang` (stop responding). For the tests of a worker that
/// diverges, dies or hangs; not for users.
pub fn inject_fault(step: u64, x: &mut Tensor) {
    let Some((kind, r, s)) = fault() else {
        return;
    };
    if *r != rank() || *s != step {
        return;
    }
    match kind.as_str() {
        "nan" => *x = x.full_like(f64::NAN),
        "kill" => {
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
            std::thread::sleep(Duration::from_secs(60));
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        _ => {}
    }
}

/// Test hook of the post-training phase: `LDC_VAE_FAULT=postnan:<rank>:<step>`
/// makes worker `rank` report a NaN statistic at post-training step `step`,
/// the first time only (a rollback that replays the step then gets past it).
pub fn inject_post_fault(step: u64, stats: &mut [(&'static str, f64)]) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some((kind, r, s)) = fault() else {
        return;
    };
    if kind == "postnan" && *r == rank() && *s == step && !FIRED.swap(true, Ordering::SeqCst) {
        if let Some(first) = stats.first_mut() {
            first.1 = f64::NAN;
        }
    }
}

// ---- MPI backend ------------------------------------------------------------

/// Set up MPI when this process was started by `mpirun`/`mpiexec` (Open MPI,
/// MPICH or a PMI launcher), and return (rank, size); (0, 1) otherwise.
pub fn init_from_env() -> Result<(usize, usize)> {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !launched {
        return Ok((0, 1));
    }
    #[cfg(feature = "mpi")]
    {
        let comm = mpi_backend::Mpi::init()?;
        let (r, k) = (comm.rank(), comm.size());
        install(Box::new(comm))?;
        Ok((r, k))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let size = std::env::var("OMPI_COMM_WORLD_SIZE")
            .or_else(|_| std::env::var("PMI_SIZE"))
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(1);
        if size > 1 {
            bail!("started by mpirun with {size} processes, but this ldc-vae was built without MPI: rebuild with `cargo build --release --features mpi` (docs/DISTRIBUTED.md)");
        }
        Ok((0, 1))
    }
}

#[cfg(feature = "mpi")]
mod mpi_backend {
    use super::Collective;
    use anyhow::{bail, Result};
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use std::sync::Mutex;

    pub struct Mpi {
        universe: Mutex<Option<mpi::environment::Universe>>,
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
    }

    // SAFETY: MPI is initialised with `Threading::Funneled`: every MPI call is
    // made from the main thread (the watchdog thread only reads atomics and
    // exits the process). The handles are plain pointers/ints owned by the library.
    unsafe impl Send for Mpi {}
    unsafe impl Sync for Mpi {}

    impl Mpi {
        pub fn init() -> Result<Mpi> {
            let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            else {
                bail!("MPI was already initialised in this process");
            };
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Ok(Mpi {
                universe: Mutex::new(Some(universe)),
                world,
                rank,
                size,
            })
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
            let mut out = vec![0f32; local.len() * self.size];
            self.world.all_gather_into(local, &mut out[..]);
            out
        }
        fn broadcast_f64(&self, buf: &mut [f64]) {
            self.world.process_at_rank(0).broadcast_into(buf);
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn finalize(&self) {
            // Dropping the universe calls MPI_Finalize.
            drop(self.universe.lock().ok().and_then(|mut u| u.take()));
        }
    }
}
