//! The data set's knobs (TOML section `[data]`), with the `folder` data
//! set's load settings and their validation.

use crate::config::one_of;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// mnist, fashion-mnist, cifar10, celeba, folder (any folder of images,
    /// `crate::data::folder`).
    pub dataset: String,
    /// Directory holding the data set; empty = search the usual places
    /// (`$LDC_VAE_DATA`, `./data`, `../shared/data`). Required for `folder`.
    pub dir: String,
    /// Images held out of the training split for validation MSE.
    pub val_size: usize,
    /// Use at most this many training images (0 = all); for quick runs.
    pub train_limit: usize,
    /// `folder` only: side of the square images, 32 (the CIFAR-10 nets) or
    /// 64 (the CelebA nets).
    pub image_size: u32,
    /// `folder` only: 1 (grey) or 3 (RGB); images are converted on load.
    pub channels: u32,
    /// `folder` only: centre crop of this many pixels square before
    /// resizing (0 = none).
    pub center_crop: u32,
    /// `folder` only: resize each image to `image_size` (its largest centred
    /// square); false: every image must already have that size.
    pub resize: bool,
    /// `folder` only, without `train/` + `test/` sub-folders: the share of
    /// each class held out as the test split (a fixed draw).
    pub test_fraction: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "mnist".into(),
            dir: String::new(),
            val_size: 1000,
            train_limit: 0,
            image_size: 0,
            channels: 3,
            center_crop: 0,
            resize: true,
            test_fraction: super::folder::DEFAULT_TEST_FRACTION,
        }
    }
}

impl DataConfig {
    /// The `folder` data set's load settings.
    pub fn folder_options(&self) -> super::folder::FolderOptions {
        super::folder::FolderOptions {
            image_size: self.image_size,
            channels: self.channels,
            center_crop: self.center_crop,
            resize: self.resize,
            test_fraction: self.test_fraction,
        }
    }

    /// Record the `folder` data set's load settings for the data loaders
    /// (which see a data set name and a folder); nothing for other data sets.
    pub fn register(&self) {
        if self.dataset == "folder" && !self.dir.is_empty() {
            super::folder::register(Path::new(&self.dir), &self.folder_options());
        }
    }

    pub fn validate(&self) -> Result<()> {
        one_of(
            "data.dataset",
            &self.dataset,
            &["mnist", "fashion-mnist", "cifar10", "celeba", "folder"],
        )?;
        if self.dataset != "folder" {
            let d = DataConfig::default();
            for (key, set) in [
                ("image_size", self.image_size != d.image_size),
                ("channels", self.channels != d.channels),
                ("center_crop", self.center_crop != d.center_crop),
                ("resize", self.resize != d.resize),
                ("test_fraction", self.test_fraction != d.test_fraction),
            ] {
                if set {
                    bail!(
                        "config key `data.{key}` applies to `data.dataset = \"folder\"` only, \
                         not to {} (its images are loaded as they are published)",
                        self.dataset
                    );
                }
            }
            return Ok(());
        }
        if self.dir.trim().is_empty() {
            bail!(
                "config key `data.dir` is required with `data.dataset = \"folder\"`: the folder \
                 of images (train/ + test/, class sub-folders, or images directly in it)"
            );
        }
        if !matches!(self.image_size, 32 | 64) {
            bail!(
                "config key `data.image_size` must be 32 (the CIFAR-10 nets) or 64 (the CelebA \
                 nets) with `data.dataset = \"folder\"`, got {}",
                self.image_size
            );
        }
        if !matches!(self.channels, 1 | 3) {
            bail!(
                "config key `data.channels` must be 1 (grey) or 3 (RGB), got {}",
                self.channels
            );
        }
        if self.center_crop > 0 && self.center_crop != self.image_size && !self.resize {
            bail!(
                "config key `data.center_crop` ({}) differs from `data.image_size` ({}) and \
                 `data.resize = false`: the cropped images would not have the nets' size",
                self.center_crop,
                self.image_size
            );
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            bail!(
                "config key `data.test_fraction` must be in (0, 1), got {}",
                self.test_fraction
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn folder_data_keys_are_validated_and_pick_the_nets() {
        let folder = |extra: &[&str]| {
            let mut v: Vec<String> = ["data.dataset=folder", "data.dir=/some/images"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect();
            v.retain(|s| !s.is_empty());
            Config::load(None, None, &v)
        };
        let c = folder(&["data.image_size=32"]).unwrap();
        assert_eq!(c.geometry(), crate::nets::Geometry::CIFAR10);
        let c = folder(&["data.image_size=64", "data.channels=1"]).unwrap();
        assert_eq!(
            c.geometry(),
            crate::nets::Geometry {
                channels: 1,
                ..crate::nets::Geometry::CELEBA
            }
        );
        assert_eq!(
            crate::models::reference::Family::of_spec(&c.spec()),
            crate::models::reference::Family::Celeba
        );
        for (ov, key) in [
            (
                &["data.dir=", "data.image_size=32"][..],
                "data.dir` is required",
            ),
            (&[""][..], "data.image_size"),
            (&["data.image_size=48"][..], "32 (the CIFAR-10 nets) or 64"),
            (
                &["data.image_size=32", "data.channels=2"][..],
                "data.channels",
            ),
            (
                &["data.image_size=32", "data.test_fraction=1"][..],
                "data.test_fraction",
            ),
            (
                &[
                    "data.image_size=32",
                    "data.center_crop=40",
                    "data.resize=false",
                ][..],
                "data.center_crop",
            ),
        ] {
            let e = format!("{:#}", folder(ov).unwrap_err());
            assert!(e.contains(key), "{ov:?}: {e}");
        }
        for ov in ["data.image_size=32", "data.channels=1", "data.resize=false"] {
            let e = format!("{:#}", Config::load(None, None, &[ov.into()]).unwrap_err());
            let key = ov.split('=').next().unwrap();
            assert!(
                e.contains(key) && e.contains("applies to `data.dataset = \"folder\"` only"),
                "{ov}: {e}"
            );
        }
    }
}
