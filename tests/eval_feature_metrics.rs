//! KID and precision/recall against torch-fidelity 0.4.0 on the committed
//! fixture `tests/fixtures/feature_metrics.json` (features and expected
//! numbers; regenerate with `tests/fixtures/make_feature_metrics_fixture.py`,
//! whose docstring says how). No Python at test time.

use ldc_vae::eval::feature_metrics::{kid, precision_recall};
use std::path::PathBuf;
use tch::Tensor;

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feature_metrics.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture missing")).unwrap()
}

fn matrix(v: &serde_json::Value) -> Tensor {
    let rows = v.as_array().unwrap();
    let d = rows[0].as_array().unwrap().len() as i64;
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, d])
}

#[test]
fn kid_on_whole_sets_matches_torch_fidelity_exactly() {
    let fx = fixture();
    let (real, fake) = (matrix(&fx["real"]), matrix(&fx["fake"]));
    let e = &fx["kid_whole_sets"];
    let rows = e["real_rows"].as_i64().unwrap();
    let want = e["mean"].as_f64().unwrap();
    // Subsets as large as both sets: every subset is the whole set, so the
    // draws do not matter and every subset gives the exact estimate.
    let got = kid(&real.narrow(0, 0, rows), &fake, 5, 1000, 3).unwrap();
    assert_eq!((got.subset_size, got.subsets), (50, 1));
    let rel = (got.mean - want).abs() / want.abs();
    eprintln!(
        "KID whole sets: rust {} vs torch-fidelity {want} (rel {rel:e})",
        got.mean
    );
    assert!(rel < 1e-9, "rust {} vs torch-fidelity {want}", got.mean);
    assert_eq!(got.std, 0.0, "{got:?}");
}

#[test]
fn kid_over_subsets_matches_torch_fidelity_statistically() {
    let fx = fixture();
    let (real, fake) = (matrix(&fx["real"]), matrix(&fx["fake"]));
    let e = &fx["kid_subsets"];
    let (subsets, size) = (
        e["subsets"].as_u64().unwrap() as usize,
        e["subset_size"].as_u64().unwrap() as usize,
    );
    let (want, want_std) = (e["mean"].as_f64().unwrap(), e["std"].as_f64().unwrap());
    let got = kid(&real, &fake, subsets, size, 2020).unwrap();
    // Different random subsets (numpy RandomState vs SplitMix64): each mean
    // has a standard error of std/√subsets; allow 4 standard errors of the
    // difference of two independent means.
    let tol = 4.0 * want_std * (2.0 / subsets as f64).sqrt();
    eprintln!(
        "KID {subsets} subsets of {size}: rust {} ± {} vs torch-fidelity {want} ± {want_std} (tolerance {tol})",
        got.mean, got.std
    );
    assert!((got.mean - want).abs() < tol, "{got:?} vs {want}");
    assert!(
        (got.std - want_std).abs() < 0.15 * want_std,
        "{got:?} vs std {want_std}"
    );
}

#[test]
fn precision_recall_match_torch_fidelity() {
    let fx = fixture();
    let (real, fake) = (matrix(&fx["real"]), matrix(&fx["fake"]));
    for (k, want) in fx["precision_recall"].as_object().unwrap() {
        let k: usize = k.parse().unwrap();
        let got = precision_recall(&real, &fake, k).unwrap();
        let (p, r) = (
            want["precision"].as_f64().unwrap(),
            want["recall"].as_f64().unwrap(),
        );
        eprintln!(
            "k = {k}: precision {} / recall {} (torch-fidelity {p} / {r})",
            got.precision, got.recall
        );
        // torch-fidelity returns float32 means of 0/1 flags.
        assert!((got.precision - p).abs() < 1e-6, "k = {k}: {got:?} vs {p}");
        assert!((got.recall - r).abs() < 1e-6, "k = {k}: {got:?} vs {r}");
    }
}
