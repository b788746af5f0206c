//! `scripts/gpu-check.sh --dry-run`: the GPU check's steps (train, stop,
//! resume, sample, eval, bench, one checkpoint evaluated on two devices,
//! stopped-and-resumed against uninterrupted) on the CPU at tiny sizes, with
//! this build's binary. On the CPU every comparison must be bit-identical.
//! Nothing is written into the repository: the data goes to a temporary
//! folder (`--data`), and with `--bin` the dry run does not re-run the set-up.

use std::process::Command;

#[test]
fn gpu_check_dry_run_passes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let work = tempfile::tempdir().unwrap();
    let repo_data = std::path::Path::new(root).join("data");
    let had_data = repo_data.exists();
    let cargo_cfg = std::path::Path::new(root).join(".cargo/config.toml");
    let cfg_mtime = || {
        std::fs::metadata(&cargo_cfg)
            .and_then(|m| m.modified())
            .ok()
    };
    let cfg_before = cfg_mtime();
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
        .arg("--data")
        .arg(work.path().join("data"))
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
    assert!(
        work.path().join("data/mnist").is_dir(),
        "MNIST not fetched to --data"
    );
    assert_eq!(
        repo_data.exists(),
        had_data,
        "the dry run wrote {}",
        repo_data.display()
    );
    assert_eq!(
        cfg_mtime(),
        cfg_before,
        "the dry run rewrote {}",
        cargo_cfg.display()
    );
}
