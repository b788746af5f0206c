//! `scripts/gpu-check.sh --dry-run`: the GPU check's steps (train, stop,
//! resume, sample, eval, bench, one checkpoint evaluated on two devices,
//! stopped-and-resumed against uninterrupted) on the CPU at tiny sizes, with
//! this build's binary. On the CPU every comparison must be bit-identical.

use std::process::Command;

#[test]
fn gpu_check_dry_run_passes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let work = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/gpu-check.sh"))
        .args([
            "--dry-run",
            "--bin",
            env!("CARGO_BIN_EXE_ldc-vae"),
            "--work",
        ])
        .arg(work.path().join("w"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("cannot run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "gpu-check --dry-run took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "gpu-check --dry-run failed ({}):\n{stdout}\n{}",
        out.status,
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("gpu-check: ok (cpu"), "{stdout}");
    // Both comparisons really ran (compare_runs.py prints to stdout) and
    // found nothing to forgive.
    assert_eq!(stdout.matches("tolerance 0: ok").count(), 2, "{stdout}");
}
