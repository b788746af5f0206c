//! The decoded-image cache of image-file data sets (CelebA, `folder`): the
//! preprocessed u8 pixels of every file of a folder in one file under the
//! user cache folder,
//! `${LDC_VAE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/ldc-vae}/<sub>/`, never
//! under the data folder (issue 28: nothing is written there).
//!
//! A cache file is keyed by the folder's identity ([`listing_key`]: the
//! preprocessing tag and every file's relative path, size and mtime), so
//! adding, removing, replacing or touching a file rebuilds it; the older
//! caches of that folder (same name prefix, [`name_prefix`]) are then
//! deleted. A cache file that cannot be read or does not check out is rebuilt
//! with a warning; an unwritable cache folder is a warning, and the images
//! are decoded on every load.
//!
//! Format: magic `LDCVAEC2`, the 32-byte key, the file count (u64 LE), the
//! image dims `C, H, W` (3 × u32 LE), a checksum of the payload (u64 LE),
//! then the payload: one byte per file (1 kept, 0 a corrupt file skipped)
//! and the kept images' pixels, u8 CHW.

use super::images::{self, OnCorrupt};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

const MAGIC: &[u8; 8] = b"LDCVAEC2";
const HEAD: usize = 8 + 32 + 8 + 12 + 8;

/// Where the cache lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// The user cache folder ([`user_cache_root`]`/<data set>-cache`).
    #[default]
    Auto,
    /// This folder.
    Dir(PathBuf),
    /// No cache: decode every time.
    Off,
}

/// What happened with the cache on a load (for messages and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit(PathBuf),
    Built(PathBuf),
    /// The cache existed but was unreadable or did not check out; rebuilt.
    Rebuilt {
        path: PathBuf,
        reason: String,
    },
    /// Decoded, but no cache written (mode Off, or no writable place: reason).
    NotWritten(String),
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `${LDC_VAE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/ldc-vae}`.
pub fn user_cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("LDC_VAE_CACHE").filter(|s| !s.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(d).join("ldc-vae");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("ldc-vae")
}

/// Candidate cache folders, preferred first (`sub`: the data set's folder
/// under the user cache root).
fn cache_dirs(mode: &CacheMode, sub: &str) -> Vec<PathBuf> {
    match mode {
        CacheMode::Off => vec![],
        CacheMode::Dir(d) => vec![d.clone()],
        CacheMode::Auto => vec![user_cache_root().join(sub)],
    }
}

/// Path of `f` below `root` (`/`-separated), or its file name.
pub fn relative_name(root: &Path, f: &Path) -> String {
    match f.strip_prefix(root) {
        Ok(r) => r
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    }
}

/// sha256 (hex) of `tag` and every file's path below `root`, size and mtime.
pub fn listing_key(tag: &str, root: &Path, files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update(b"\n");
    for f in files {
        let md = std::fs::metadata(f).with_context(|| format!("cannot stat {}", f.display()))?;
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or((0, 0));
        let name = relative_name(root, f);
        h.update(format!("{name}\t{}\t{}.{:09}\n", md.len(), mtime.0, mtime.1).as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// First 8 hex digits of the sha256 of `dir`'s absolute path: one cache
/// name prefix per folder.
pub fn folder_hash(dir: &Path) -> String {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    hex(&Sha256::digest(abs.to_string_lossy().as_bytes()))[..8].to_string()
}

/// A fast 64-bit checksum (not cryptographic) of the cache payload, to
/// catch a damaged cache file of the right length.
fn checksum(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [0u64; 4];
    let mut chunks = b.chunks_exact(32);
    for c in &mut chunks {
        for (j, l) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[8 * j..8 * j + 8].try_into().unwrap());
            *l = (*l ^ w).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut h = b.len() as u64;
    for l in lanes {
        h = (h ^ l).wrapping_mul(K).rotate_left(31);
    }
    for &x in chunks.remainder() {
        h = (h ^ x as u64).wrapping_mul(K);
    }
    h
}

fn read_cache(
    path: &Path,
    key: &str,
    n_files: usize,
    dims: [u32; 3],
) -> Result<(Vec<bool>, Tensor)> {
    let p = path.display();
    let b = std::fs::read(path).with_context(|| format!("{p}: cannot read cache"))?;
    if b.len() < HEAD || &b[..8] != MAGIC {
        bail!("{p}: not a cache file of this version (bad magic or too short)");
    }
    if hex(&b[8..40]) != key {
        bail!("{p}: cache key does not match the folder");
    }
    let n = u64::from_le_bytes(b[40..48].try_into().unwrap()) as usize;
    let got: Vec<u32> = (0..3)
        .map(|i| u32::from_le_bytes(b[48 + 4 * i..52 + 4 * i].try_into().unwrap()))
        .collect();
    if n != n_files || got != dims {
        bail!("{p}: cache header ({n} files, {got:?}) does not match ({n_files} files, {dims:?})");
    }
    if b.len() < HEAD + n {
        bail!("{p}: truncated cache file");
    }
    let kept: Vec<bool> = b[HEAD..HEAD + n].iter().map(|&x| x == 1).collect();
    let k = kept.iter().filter(|&&x| x).count();
    let per = dims.iter().product::<u32>() as usize;
    let want = HEAD + n + k * per;
    if b.len() != want {
        bail!(
            "{p}: truncated or oversized cache file ({} bytes, expected {want})",
            b.len()
        );
    }
    let sum = u64::from_le_bytes(b[60..68].try_into().unwrap());
    if checksum(&b[HEAD..]) != sum {
        bail!("{p}: damaged cache file (checksum mismatch)");
    }
    let t = Tensor::from_slice(&b[HEAD + n..]).view([
        k as i64,
        dims[0] as i64,
        dims[1] as i64,
        dims[2] as i64,
    ]);
    Ok((kept, t))
}

/// `<prefix>-` of a cache file name `<prefix>-<key>.u8`: the files of one
/// folder (and preprocessing) share it.
fn name_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match name.rfind('-') {
        Some(i) => name[..=i].to_string(),
        None => name.into_owned(),
    }
}

fn write_cache(path: &Path, key: &str, kept: &[bool], dims: [u32; 3], pixels: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut payload: Vec<u8> = kept.iter().map(|&k| k as u8).collect();
    payload.extend_from_slice(pixels);
    let key_bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut head = Vec::with_capacity(HEAD);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&key_bytes);
    head.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    for d in dims {
        head.extend_from_slice(&d.to_le_bytes());
    }
    head.extend_from_slice(&checksum(&payload).to_le_bytes());
    // A temp name of our own (several processes may build the same cache at
    // once), then an atomic rename.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let fname = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{fname}.{}.{nanos}.tmp", std::process::id()));
    let r = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&head)?;
        f.write_all(&payload)?;
        f.sync_all().ok();
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("cannot write cache {}", path.display()))?;
    // Remove stale caches of the same folder (same name prefix, other key).
    let prefix = name_prefix(path);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".u8") && e.path() != path {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// One cached decode of a folder's files.
pub struct Request<'a> {
    /// The files, in the order of the cache's rows.
    pub files: &'a [PathBuf],
    /// [`listing_key`] of the files.
    pub key: &'a str,
    /// Cache file name, `<prefix>-<key>.u8`.
    pub name: String,
    /// Image dims `[C, H, W]` of every row.
    pub dims: [u32; 3],
    pub mode: &'a CacheMode,
    /// Folder under the user cache root (`celeba-cache`, `folder-cache`).
    pub sub: &'a str,
    /// The data set, for messages (`CelebA`, `image folder`).
    pub what: &'a str,
    pub on_corrupt: OnCorrupt,
}

/// The files' pixels from the cache when it holds them, else from `decode`
/// (the files' keep flags and the kept images' u8 CHW pixels), then cached.
/// Returns the keep flags, the pixels `[K, C, H, W]` and what happened.
pub fn load(
    req: &Request,
    decode: impl FnOnce() -> Result<(Vec<bool>, Vec<u8>)>,
) -> Result<(Vec<bool>, Tensor, CacheOutcome)> {
    let files = req.files;
    let cands: Vec<PathBuf> = cache_dirs(req.mode, req.sub)
        .into_iter()
        .map(|d| d.join(&req.name))
        .collect();
    let mut stale: Option<(PathBuf, String)> = None;
    for c in cands.iter().filter(|c| c.exists()) {
        match read_cache(c, req.key, files.len(), req.dims) {
            Ok((kept, pixels)) => {
                if req.on_corrupt == OnCorrupt::Fail {
                    if let Some(i) = kept.iter().position(|k| !k) {
                        bail!(
                            "{}: corrupt image (found when the cache {} was built); \
                             replace or remove it, or load with corrupt images skipped",
                            files[i].display(),
                            c.display()
                        );
                    }
                }
                return Ok((kept, pixels, CacheOutcome::Hit(c.clone())));
            }
            Err(e) => {
                tracing::warn!("ignoring the {} cache and rebuilding it: {e:#}", req.what);
                stale.get_or_insert((c.clone(), format!("{e:#}")));
            }
        }
    }
    let (kept, px) = decode()?;
    let mut outcome = CacheOutcome::NotWritten("cache off".into());
    // Rewrite a stale cache where it was; else the first writable candidate.
    let order: Vec<PathBuf> = match &stale {
        Some((p, _)) => std::iter::once(p.clone())
            .chain(cands.iter().cloned())
            .collect(),
        None => cands.clone(),
    };
    let mut errs = Vec::new();
    for c in order {
        match write_cache(&c, req.key, &kept, req.dims, &px) {
            Ok(()) => {
                outcome = match &stale {
                    Some((_, reason)) => CacheOutcome::Rebuilt {
                        path: c,
                        reason: reason.clone(),
                    },
                    None => CacheOutcome::Built(c),
                };
                errs.clear();
                break;
            }
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    if !errs.is_empty() {
        tracing::warn!("{} cache not written: {}", req.what, errs.join("; "));
        outcome = CacheOutcome::NotWritten(errs.join("; "));
    }
    let k = kept.iter().filter(|&&x| x).count() as i64;
    let [c, h, w] = req.dims.map(|d| d as i64);
    let pixels = Tensor::from_slice(&px).view([k, c, h, w]);
    Ok((kept, pixels, outcome))
}

/// The decoded images of [`images::decode_all`], gathered by [`gather`].
pub struct Gathered {
    /// One flag per file: false for a corrupt file that was skipped.
    pub kept: Vec<bool>,
    /// The kept images' pixels, concatenated.
    pub pixels: Vec<u8>,
    /// Each kept image's size before preprocessing.
    pub sizes: Vec<(u32, u32)>,
}

/// Gather decoded images. A corrupt file fails (its error names it), or
/// under [`OnCorrupt::Skip`] is left out with a warning; all files corrupt
/// is an error.
pub fn gather(
    decoded: Vec<images::Decoded>,
    on_corrupt: OnCorrupt,
    what: &str,
) -> Result<Gathered> {
    let mut g = Gathered {
        kept: Vec::with_capacity(decoded.len()),
        pixels: Vec::new(),
        sizes: Vec::with_capacity(decoded.len()),
    };
    let mut skipped = 0;
    for d in decoded {
        match d {
            Ok((size, px)) => {
                g.pixels.extend_from_slice(&px);
                g.kept.push(true);
                g.sizes.push(size);
            }
            Err(e)
                if on_corrupt == OnCorrupt::Skip && format!("{e:#}").contains("corrupt image") =>
            {
                tracing::warn!("skipping {e:#}");
                g.kept.push(false);
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if skipped == g.kept.len() {
        bail!("no {what} image could be decoded ({skipped} corrupt files skipped)");
    }
    Ok(g)
}
