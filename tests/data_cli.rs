//! The `ldc-vae data` command line on small bad and good inputs: errors
//! name the file and the problem, exit status 1, never a panic.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ldc-vae"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LDC_VAE_DATA")
        .output()
        .unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        s(&out.stdout),
        s(&out.stderr),
    )
}

#[test]
fn data_cli_info_bad_and_good_files() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("t10k-images-idx3-ubyte");
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    b.extend(vec![255u8; 784]);
    std::fs::write(&p, &b).unwrap();
    let (rc, _, err) = run(&["data", "info", "t10k-images-idx3-ubyte"], t.path());
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("t10k-images-idx3-ubyte: truncated") && !err.contains("panicked"),
        "{err}"
    );
    b.extend(vec![0u8; 784]);
    std::fs::write(&p, &b).unwrap();
    let (rc, out, err) = run(&["data", "info", "t10k-images-idx3-ubyte"], t.path());
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("images: 2 of 1x28x28") && out.contains("pixel mean: 127.500"),
        "{out}"
    );
    let (rc, out, _) = run(
        &["data", "info", "--json", "t10k-images-idx3-ubyte"],
        t.path(),
    );
    assert_eq!(rc, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["parts"][0]["count"], 2);
    let (rc, _, err) = run(&["data", "info", "missing.gz"], t.path());
    assert_eq!(rc, 1);
    assert!(err.contains("missing.gz: missing file"), "{err}");
}

#[test]
fn data_cli_fetch_offline_and_unknown() {
    let t = tempfile::tempdir().unwrap();
    let (rc, _, err) = run(&["data", "fetch", "imagenet", "--offline"], t.path());
    assert_eq!(rc, 1);
    assert!(err.contains("unknown data set `imagenet`"), "{err}");
    // Fetch from ../shared/data (found beside the crate) into a temp data root.
    let dest = t.path().join("d");
    let (rc, out, err) = run(
        &[
            "data",
            "fetch",
            "cifar10",
            "--offline",
            "--dir",
            dest.to_str().unwrap(),
        ],
        t.path(),
    );
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("local copy") && dest.join("cifar10/test_batch.bin").is_file(),
        "{out}"
    );
}
