use clap::Parser;
use ldc_vae::cli::{run, Cli};

/// libtorch's OpenMP threads spin while they wait; on a busy machine (a laptop
/// doing other work, a CI box) that made a 2-thread training step 10× slower
/// (2.7 s instead of 0.25 s, measured with `ldc-vae bench` beside another busy
/// process). Passive waiting costs little when the machine is idle. libgomp
/// reads the setting when it is loaded, before `main`, so set it and re-exec
/// once; an explicit `OMP_WAIT_POLICY` from the user is left alone.
fn ensure_passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    if let Ok(exe) = std::env::current_exe() {
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .exec();
        // exec only returns on failure: carry on with the default policy.
        eprintln!("warning: could not re-exec with OMP_WAIT_POLICY=PASSIVE: {err}");
    }
}

fn main() {
    ensure_passive_openmp();
    let cli = Cli::parse();
    // Under mpirun (feature `mpi`): join the workers; only rank 0 logs below warnings.
    let (rank, workers) = match ldc_vae::dist::init_from_env() {
        Ok(rw) => rw,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    let level = if rank == 0 {
        cli.log.clone()
    } else {
        "warn".into()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        if workers > 1 {
            eprintln!("error: worker {rank} of {workers}: {e:#}");
        } else {
            eprintln!("error: {e:#}");
        }
        // Without MPI_Finalize: mpirun then stops the other workers.
        std::process::exit(1);
    }
    ldc_vae::dist::finalize();
}
