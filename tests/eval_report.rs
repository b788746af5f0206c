//! The Table-1 report from fake run folders.

use ldc_vae::eval::report::{load_run, paper_fid, paper_table1, write_report};
use std::path::Path;

fn png(path: &Path, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(16, 12, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

fn fake_runs(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ldc = root.join("ldc-mnist");
    std::fs::create_dir_all(&ldc).unwrap();
    std::fs::write(
        ldc.join("eval.json"),
        r#"{"model":"ldc","dataset":"mnist","preset":"mnist-cpu","sampler":"sampler net (aggregate_kde)",
            "rec_fid":12.3,"sample_fid":40.1,"sample_fid_gmm":35.0,"fid_samples":1000,"val_mse":0.01,
            "latent_mmd2":0.015,"latent_mmd2_gaussian":0.012,"latent_mmd2_gmm":0.011,"latent_samples":2000,
            "rec_kid":0.0021,"rec_kid_std":0.0003,"sample_kid":0.0345,"sample_kid_std":0.002,"sample_kid_gmm":0.0288,
            "sample_kid_gmm_std":0.001,"sample_precision":0.61,"sample_recall":0.42,"sample_precision_gmm":0.7,
            "sample_recall_gmm":0.55,"class_tv":0.213,"class_tv_gmm":0.05,"copying_ct":-0.42,"copying_ct_gmm":1.3,
            "copying":{"ct":-0.42,"zu":-1.5,"cells":50,"cells_kept":47,"n_train":10000,"n_held_out":2000,"n_generated":2000},"kid_subsets":100,"kid_subset_size":1000,"pr_k":3,
            "train":{"steps":1200,"epochs":2,"wall_s":250.0},
            "figures":{"tsne":"tsne.png","recon":"recon.png","samples":"samples.png","samples_gmm":"samples_gmm.png","loss":"loss.png"}}"#,
    )
    .unwrap();
    std::fs::write(
        ldc.join("config.toml"),
        "[model]\nkind = \"ldc\"\nlatent_dim = 16\n# <b>not html</b>\n",
    )
    .unwrap();
    for (f, c) in [
        ("tsne.png", [0, 0, 255]),
        ("recon.png", [0, 255, 0]),
        ("samples.png", [255, 0, 0]),
    ] {
        png(&ldc.join(f), c);
    }
    png(&ldc.join("samples_gmm.png"), [9, 9, 9]);
    // loss.png deliberately missing.

    let vae = root.join("vae-mnist");
    std::fs::create_dir_all(&vae).unwrap();
    // Optional fields missing or null.
    std::fs::write(
        vae.join("eval.json"),
        r#"{"model":"vae","dataset":"mnist","rec_fid":25.5,"sample_fid":61.25,"sample_fid_gmm":null,
            "fid_samples":1000,"latent_mmd2":0.2,"latent_mmd2_gmm":null,"figures":{"tsne":"tsne.png"}}"#,
    )
    .unwrap();
    png(&vae.join("tsne.png"), [1, 2, 3]);
    (ldc, vae)
}

#[test]
fn paper_table_lookup() {
    let _rng = ldc_vae::rng::exclusive();
    assert_eq!(paper_table1().len(), 8);
    assert_eq!(paper_fid("ldc", "mnist"), Some((1.02, 4.73)));
    assert_eq!(paper_fid("LDC-VAE", "MNIST"), Some((1.02, 4.73)));
    assert_eq!(paper_fid("two-stage-vae", "cifar10"), Some((62.54, 109.77)));
    assert_eq!(paper_fid("rae-sn", "celeba"), Some((36.01, 40.95)));
    assert_eq!(paper_fid("vae", "fashion-mnist"), None);
}

#[test]
fn report_from_two_runs() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let (ldc, vae) = fake_runs(dir.path());
    let r = load_run(&vae).unwrap();
    assert_eq!(r.eval.sample_fid_gmm, None);
    assert!(r.config.is_none());

    let out = dir.path().join("out");
    let (html_p, md_p) = write_report(&[ldc.clone(), vae.clone()], &out).unwrap();
    let html = std::fs::read_to_string(&html_p).unwrap();
    let md = std::fs::read_to_string(&md_p).unwrap();

    // Every Table-1 row, with the paper's numbers beside ours.
    for row in [
        "VAE", "CV-VAE", "WAE-MMD", "2sAE", "RAE-L2", "RAE-SN", "RAE-GP", "LDC-VAE",
    ] {
        assert!(
            md.contains(&format!("| {row} |")),
            "markdown lacks row {row}"
        );
        assert!(
            html.contains(&format!("<td class=\"l\">{row}</td>")),
            "html lacks row {row}"
        );
    }
    for col in ["MNIST", "CELEBA", "CIFAR10"] {
        assert!(md.contains(col) && html.contains(col));
    }
    let ldc_row = md.lines().find(|l| l.starts_with("| LDC-VAE |")).unwrap();
    assert!(ldc_row.contains("**12.30** (1.02)"), "{ldc_row}");
    assert!(
        ldc_row.contains("**40.10 · GMM 35.00** (4.73)"),
        "{ldc_row}"
    );
    assert!(ldc_row.contains("– (36.84)"), "{ldc_row}");
    let vae_row = md.lines().find(|l| l.starts_with("| VAE |")).unwrap();
    assert!(
        vae_row.contains("**25.50** (18.26)") && vae_row.contains("**61.25** (19.21)"),
        "{vae_row}"
    );
    for p in ["101.24", "117.44", "74.16", "48.12"] {
        assert!(
            md.contains(p) && html.contains(p),
            "paper number {p} missing"
        );
    }
    // The runs table: KID ×10³, precision / recall and class TV beside FID;
    // an eval.json from before these metrics (the VAE's) shows dashes.
    let ldc_run = md.lines().find(|l| l.starts_with("| ldc-mnist |")).unwrap();
    assert!(
        ldc_run.contains(
            "| 2.10 | 34.50 | 28.80 | 0.61 / 0.42 | 0.70 / 0.55 | 0.213 | 0.050 | -0.42 (47/50 cells) | 1.30 |"
        ),
        "{ldc_run}"
    );
    let vae_run = md.lines().find(|l| l.starts_with("| vae-mnist |")).unwrap();
    assert!(
        vae_run.contains("| – | – | – | – | – | – | – | – | – | 1000 |"),
        "{vae_run}"
    );
    assert!(md.contains("Sample KID ×10³ | Sample KID ×10³ (GMM) | Precision / recall"));
    assert!(html.contains("<th>Sample KID ×10³</th>") && html.contains("<td>34.50</td>"));
    // Data-copying C_T beside them, with its sign explained.
    assert!(
        md.contains("| Copying C_T | Copying C_T (GMM) |") && html.contains("<th>Copying C_T</th>")
    );
    assert!(html.contains("<td>-0.42 (47/50 cells)</td><td>1.30</td>"));
    assert!(md.contains("Meehan et al.") && md.contains("copying"));
    assert!(md.contains("100 random subset(s) of 1000 images") && md.contains("k = 3"));
    // Sample-count note, latent consistency, configs, figures.
    assert!(md.contains("1000 generated") && md.contains("10000") && md.contains("biased upward"));
    assert!(md.contains("0.01500") && md.contains("0.01100") && html.contains("0.01200"));
    assert!(md.contains("latent_dim = 16") && html.contains("&lt;b&gt;not html&lt;/b&gt;"));
    assert!(
        md.contains("sampler net (aggregate_kde)") && md.contains("1200") && md.contains("4.2 min")
    );
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 5);
    assert!(!html.contains("src=\"tsne.png\""));
    assert!(
        md.contains("![tsne](ldc-mnist/tsne.png)") && md.contains("![tsne](vae-mnist/tsne.png)")
    );
    assert!(md.contains("`loss.png` is missing") && html.contains("is missing"));
    for f in [
        "ldc-mnist/tsne.png",
        "ldc-mnist/recon.png",
        "ldc-mnist/samples.png",
        "ldc-mnist/samples_gmm.png",
        "vae-mnist/tsne.png",
    ] {
        assert!(out.join(f).is_file(), "{f} not copied");
    }
    assert!(!out.join("report.html.tmp").exists());

    // Same folder name twice: names made unique.
    let (h2, _) = write_report(&[vae.clone(), vae], &dir.path().join("out2")).unwrap();
    assert!(std::fs::read_to_string(h2).unwrap().contains("vae-mnist-2"));
    assert!(write_report(&[dir.path().join("nope")], &out).is_err());
}

/// The report with real figures as `ldc-vae eval` makes them (image grids, a
/// t-SNE scatter, loss curves from a metrics log): every figure embedded as a
/// PNG data URI, grids shown at twice their size unsmoothed, the loss plot
/// wide, nothing missing. Set `LDC_VAE_REPORT_DEMO=DIR` to keep it for looking
/// at (DIR/out/report.html).
#[test]
fn report_with_real_figures() {
    let _rng = ldc_vae::rng::exclusive();
    use ldc_vae::eval::{grid, plots};
    use tch::{Device, Kind, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("LDC_VAE_REPORT_DEMO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let (ldc, vae) = fake_runs(&root);
    // 32×32 grey images: grids of 8 columns are 8·32 + borders wide.
    tch::manual_seed(5);
    let imgs = Tensor::rand([64, 1, 32, 32], (Kind::Float, Device::Cpu));
    grid::save_recon_grid(
        &imgs.narrow(0, 0, 16),
        &imgs.narrow(0, 16, 16),
        8,
        &ldc.join("recon.png"),
    )
    .unwrap();
    grid::save_grid(&imgs, 8, &ldc.join("samples.png")).unwrap();
    grid::save_grid(&imgs.narrow(0, 0, 40), 8, &ldc.join("samples_gmm.png")).unwrap();
    let a = Tensor::randn([100, 16], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([100, 16], (Kind::Float, Device::Cpu)) * 0.7 + 0.5;
    plots::tsne_scatter(
        &a,
        &b,
        "encoder q(z)",
        "sampler net",
        "LDC-VAE latents",
        &ldc.join("tsne.png"),
        1,
    )
    .unwrap();
    let mut lines = String::new();
    for step in 0..200 {
        let l = 0.06 / (1.0 + step as f64 * 0.01) + 0.005;
        lines += &format!(
            "{{\"kind\":\"step\",\"step\":{step},\"epoch\":0,\"loss\":{l},\"sigma2\":0.3}}\n"
        );
    }
    lines += "{\"kind\":\"epoch\",\"epoch\":0,\"step\":200,\"val_mse\":0.02}\n";
    std::fs::write(ldc.join("metrics.jsonl"), lines).unwrap();
    plots::loss_curves(
        &ldc.join("metrics.jsonl"),
        &["loss", "sigma2", "val_mse"],
        &ldc.join("loss.png"),
    )
    .unwrap();

    let out = root.join("out");
    let (html, md) = write_report(&[ldc.clone(), vae], &out).unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    assert!(!md.contains("is missing") && !html.contains("is missing"));
    // Five figures of the LDC run and the VAE's t-SNE, each a decodable PNG.
    let uris: Vec<&str> = html
        .split("src=\"data:image/png;base64,")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert_eq!(uris.len(), 6);
    use base64::Engine;
    for u in &uris {
        let bytes = base64::engine::general_purpose::STANDARD.decode(u).unwrap();
        image::load_from_memory(&bytes).expect("embedded figure is a PNG");
    }
    for (f, kind) in [("recon.png", "recon"), ("samples.png", "samples")] {
        let (w, _) = image::image_dimensions(ldc.join(f)).unwrap();
        assert!(w > 8 * 32, "{f}: {w} px");
        let shown = format!(
            "alt=\"{kind}\" class=\"grid\" width=\"{}\"",
            (2 * w).min(520)
        );
        assert!(html.contains(&shown), "{shown}");
        assert_eq!(
            std::fs::read(out.join("ldc-mnist").join(f)).unwrap(),
            std::fs::read(ldc.join(f)).unwrap(),
            "{f} copied for the Markdown report"
        );
    }
    assert!(html.contains("alt=\"loss\" class=\"wide\""));
    assert!(md.contains("![loss](ldc-mnist/loss.png)"));
}

/// `report` over `reproduce` output folders of two data sets: each folder
/// stands for its evaluated runs, same-named runs get their folder's name in
/// front, and every data set's cells and data description are filled.
#[test]
fn report_over_reproduce_folders() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    for (preset, dataset, note, fid) in [
        (
            "cifar10-cpu",
            "cifar10",
            "CIFAR-10 binary batches from X",
            81.5,
        ),
        (
            "celeba-cpu",
            "celeba",
            "CelebA aligned JPEGs; fallback split (no list)",
            66.25,
        ),
    ] {
        for model in ["ldc", "rae-l2"] {
            let d = dir.path().join(format!("reproduce-{preset}")).join(model);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("eval.json"),
                format!(
                    r#"{{"model":"{model}","dataset":"{dataset}","data_note":"{note}","preset":"{preset}",
                        "rec_fid":{fid},"sample_fid":{s},"fid_samples":500,"figures":{{}}}}"#,
                    s = fid + 10.0
                ),
            )
            .unwrap();
        }
        // A folder without eval.json (an unfinished model) is left out.
        std::fs::create_dir_all(dir.path().join(format!("reproduce-{preset}/vae"))).unwrap();
    }
    let out = dir.path().join("report");
    let (html_p, md_p) = write_report(
        &[
            dir.path().join("reproduce-cifar10-cpu"),
            dir.path().join("reproduce-celeba-cpu"),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(&md_p).unwrap();
    let html = std::fs::read_to_string(&html_p).unwrap();
    let ldc_row = md.lines().find(|l| l.starts_with("| LDC-VAE |")).unwrap();
    // MNIST blank, CelebA and CIFAR-10 filled (columns: MNIST, CELEBA, CIFAR10).
    assert!(
        ldc_row.contains("| – (1.02) | – (4.73) | **66.25** (34.82) | **76.25** (36.84) | **81.50** (49.18) | **91.50** (101.24) |"),
        "{ldc_row}"
    );
    let rae_row = md.lines().find(|l| l.starts_with("| RAE-L2 |")).unwrap();
    assert!(
        rae_row.contains("**66.25**") && rae_row.contains("**81.50**"),
        "{rae_row}"
    );
    for name in [
        "reproduce-cifar10-cpu-ldc",
        "reproduce-celeba-cpu-ldc",
        "reproduce-cifar10-cpu-rae-l2",
        "reproduce-celeba-cpu-rae-l2",
    ] {
        assert!(md.contains(&format!("| {name} |")), "{name} missing:\n{md}");
        assert!(
            html.contains(&format!("id=\"run-{name}\"")),
            "{name} missing in html"
        );
    }
    assert!(!md.contains("| vae |"));
    for note in ["CIFAR-10 binary batches from X", "fallback split (no list)"] {
        assert!(md.contains(note) && html.contains(note), "{note}");
    }
    // A folder with no evaluated run at all: the error says to evaluate.
    let empty = dir.path().join("nothing");
    std::fs::create_dir_all(&empty).unwrap();
    let e = format!("{:#}", write_report(&[empty], &out).unwrap_err());
    assert!(e.contains("ldc-vae eval"), "{e}");
}
