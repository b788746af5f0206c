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
        "VAE",
        "CV-VAE",
        "WAE-MMD",
        "2sAE",
        "RAE-L2",
        "RAE-SN",
        "RAE-GP",
        "LDC-VAE (OT)",
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
    // Rows beyond the paper's appear only with runs.
    assert!(!md.contains("RAE-L2 + OT") && !md.contains("paper recipe"));
    let ldc_row = md
        .lines()
        .find(|l| l.starts_with("| LDC-VAE (OT) |"))
        .unwrap();
    assert!(ldc_row.contains("| 12.30 (1.02) |"), "{ldc_row}");
    assert!(
        ldc_row.contains("| 40.10 · GMM 35.00 (4.73) |"),
        "{ldc_row}"
    );
    assert!(ldc_row.contains("– (36.84)"), "{ldc_row}");
    let vae_row = md.lines().find(|l| l.starts_with("| VAE |")).unwrap();
    assert!(
        vae_row.contains("| 25.50 (18.26) |") && vae_row.contains("| 61.25 (19.21) |"),
        "{vae_row}"
    );
    // One seed per cell: values alone, nothing bold, and the note says why.
    assert!(!ldc_row.contains("**") && !vae_row.contains("**"));
    assert!(!html.contains("<b>1") && !html.contains("<b>2") && !html.contains("<b>4"));
    assert!(md.contains("one seed: no difference is called"));
    for p in ["101.24", "117.44", "74.16", "48.12"] {
        assert!(
            md.contains(p) && html.contains(p),
            "paper number {p} missing"
        );
    }
    // The runs table: KID ×10³, precision / recall and class TV beside FID;
    // an eval.json from before these metrics (the VAE's) shows dashes.
    // Columns: run (Run, Model, Data, Preset, Seeds, FID images), reconstruction
    // (FID, KID, val MSE), sampler (generator, FID, KID, P/R, TV), ex-post GMM
    // (FID, KID, P/R, TV), training (steps, epochs, time).
    let ldc_run = md.lines().find(|l| l.starts_with("| ldc-mnist |")).unwrap();
    assert!(
        ldc_run
            .contains("| LDC-VAE (OT) | mnist | mnist-cpu | 1 | 1000 | 12.30 | 2.10 | 0.01000 |"),
        "{ldc_run}"
    );
    assert!(
        ldc_run.contains("| 40.10 | 34.50 | 0.61 / 0.42 | 0.213 | -0.42 | 35.00 | 28.80 | 0.70 / 0.55 | 0.050 | 1.30 | 1200 | 2.00 | 4.2 min |"),
        "{ldc_run}"
    );
    assert!(!ldc_run.contains("**"), "{ldc_run}");
    let vae_run = md.lines().find(|l| l.starts_with("| vae-mnist |")).unwrap();
    assert!(
        vae_run.contains("| 61.25 | – | – | – | – | – | – | – | – |"),
        "{vae_run}"
    );
    assert!(md.contains("Sample FID (GMM) | Sample KID ×10³ (GMM) | Precision / recall (GMM)"));
    assert!(html.contains("<th>Sample KID ×10³</th>") && html.contains("<td>34.50</td>"));
    // The runs table's columns are grouped and it scrolls in its own box.
    assert!(
        html.contains("<tr class=\"groups\"><th colspan=\"6\">run</th><th colspan=\"3\">reconstruction</th><th colspan=\"1\">latents</th><th colspan=\"6\">sampler</th><th colspan=\"5\">ex-post GMM</th><th colspan=\"3\">training</th></tr>"),
        "column groups"
    );
    assert!(
        html.contains("div.scroll{overflow-x:auto")
            && html.matches("<div class=\"scroll\">").count() == 3
    );
    assert!(!out.join("budget.png").exists() && !html.contains("alt=\"budget\""));
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
    let ldc_row = md
        .lines()
        .find(|l| l.starts_with("| LDC-VAE (OT) |"))
        .unwrap();
    // MNIST blank, CelebA and CIFAR-10 filled (columns: MNIST, CELEBA, CIFAR10).
    assert!(
        ldc_row.contains("| – (1.02) | – (4.73) | 66.25 (34.82) | 76.25 (36.84) | 81.50 (49.18) | 91.50 (101.24) |"),
        "{ldc_row}"
    );
    let rae_row = md.lines().find(|l| l.starts_with("| RAE-L2 |")).unwrap();
    assert!(
        rae_row.contains("| 66.25 (43.52) |") && rae_row.contains("| 81.50 (32.24) |"),
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

/// Fake run `dir` of `model` (config with `extra` TOML) trained `epochs`
/// epochs in `wall` seconds (summary.json; eval.json says 1 s, which the
/// report must not use).
fn seeded_run(
    dir: &Path,
    model: &str,
    extra: &str,
    epochs: u32,
    seed: u32,
    nums: [f64; 3],
    wall: f64,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("seed = {seed}\nmodel = \"{model}\"\n{extra}\n[train]\nepochs = {epochs}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("eval.json"),
        format!(
            r#"{{"model":"{model}","dataset":"mnist","preset":"mnist-cpu","data_note":"MNIST IDX","rec_fid":{},"sample_fid":{},
                "sample_kid":{},"fid_samples":500,"figures":{{}},
                "train":{{"steps":{},"epochs":{epochs},"wall_s":1.0}}}}"#,
            nums[0],
            nums[1],
            nums[2],
            60 * epochs
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("summary.json"),
        format!(r#"{{"model":"{model}","dataset":"mnist","preset":"mnist-cpu","complete":true,"epochs":{epochs},"wall_s":{wall},"val_mse":0.01}}"#),
    )
    .unwrap();
}

/// Three seeds of LDC-VAE and RAE-L2 at 2 and 4 epochs, and one RAE-L2 + OT
/// run (a row found from its config): cells with mean ± std, bold only
/// beyond the spread, and the budget figure.
#[test]
fn seeds_spread_bold_and_budget_figure() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reproduce");
    // [rec FID, sample FID, sample KID] per seed.
    let ldc = [
        [
            [10.0, 50.0, 0.010],
            [11.0, 60.0, 0.012],
            [12.0, 70.0, 0.014],
        ],
        [[8.0, 40.0, 0.01], [9.0, 41.0, 0.01], [10.0, 42.0, 0.01]],
    ];
    let rae = [
        [[20.0, 55.0, 0.02], [21.0, 56.0, 0.02], [22.0, 57.0, 0.02]],
        [[18.0, 45.0, 0.02], [19.0, 46.0, 0.02], [20.0, 47.0, 0.02]],
    ];
    for (b, epochs) in [2u32, 4].into_iter().enumerate() {
        for k in 0..3 {
            let wall = 50.0 * epochs as f64 + 10.0 * k as f64;
            let d = |row: &str| root.join(format!("e{epochs}/{row}/seed{k}"));
            seeded_run(&d("ldc"), "ldc", "", epochs, k as u32, ldc[b][k], wall);
            seeded_run(
                &d("rae-l2"),
                "rae-l2",
                "",
                epochs,
                k as u32,
                rae[b][k],
                wall,
            );
        }
    }
    // One seed of a row beyond the registry's: the best rec FID at 4 epochs,
    // but one seed calls no difference, so that column has no bold.
    seeded_run(
        &root.join("e4/rae-l2-ot"),
        "rae-l2",
        "[sampler]\nkind = \"ot\"",
        4,
        0,
        [5.0, 100.0, 0.05],
        200.0,
    );
    let out = std::env::var_os("LDC_VAE_REPORT_DEMO")
        .map(|d| std::path::PathBuf::from(d).join("seeds"))
        .unwrap_or_else(|| dir.path().join("report"));
    let (html_p, md_p) = write_report(std::slice::from_ref(&root), &out).unwrap();
    let md = std::fs::read_to_string(&md_p).unwrap();
    let html = std::fs::read_to_string(&html_p).unwrap();
    let row = |t: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {t} |")))
            .unwrap_or_else(|| panic!("no row {t}:\n{md}"))
            .to_string()
    };
    // LDC at 2 epochs: rec 11 ± 1 against RAE-L2's 21 ± 1: bold. Sample
    // 60 ± 10 against 56 ± 1: within the spread, no bold in that column.
    // At 4 epochs: rec has no bold (RAE-L2 + OT leads with one seed); sample
    // 41 ± 1 against 46 ± 1: bold.
    let l = row("LDC-VAE (OT)");
    assert!(
        l.contains("| **2 ep: 11.00 ± 1.00 (3)**; 4 ep: 9.00 ± 1.00 (3) (1.02) | 2 ep: 60.00 ± 10.00 (3); **4 ep: 41.00 ± 1.00 (3)** (4.73) |"),
        "{l}"
    );
    let r = row("RAE-L2");
    assert!(
        r.contains("| 2 ep: 21.00 ± 1.00 (3); 4 ep: 19.00 ± 1.00 (3) (10.53) | 2 ep: 56.00 ± 1.00 (3); 4 ep: 46.00 ± 1.00 (3) (8.69) |"),
        "{r}"
    );
    let ot = row("RAE-L2 + OT");
    assert!(ot.contains("| 5.00 | 100.00 |"), "{ot}");
    // The extra row follows its model's.
    let pos = |t: &str| md.find(&format!("\n| {t} |")).unwrap();
    assert!(pos("RAE-L2") < pos("RAE-L2 + OT") && pos("RAE-L2 + OT") < pos("RAE-GP"));
    assert!(
        html.contains("<b>2 ep: 11.00 ± 1.00 (3)</b>")
            && html.contains("<b>4 ep: 41.00 ± 1.00 (3)</b>")
    );
    // Bold: 2 in Table 1; in the runs table the same 2 FIDs and the sample
    // KID at both budgets (LDC 12 ± 2 against 20 ± 0; 10 ± 0 against 20 ± 0).
    assert_eq!(
        html.matches("<b>").count() - html.matches("<b>Data.</b>").count(),
        2 + 4
    );
    assert!(md.contains("larger of the two standard deviations") && md.contains("one seed"));
    // The runs table: one line per cell, the seeds' names, KID ×10³ 12 ± 2,
    // the mean wall time of summary.json (100, 110, 120 s).
    let c = md
        .lines()
        .find(|l| l.starts_with("| e2-ldc-seed0, e2-ldc-seed1, e2-ldc-seed2 |"))
        .unwrap_or_else(|| panic!("no cell line:\n{md}"));
    assert!(
        c.contains("| LDC-VAE (OT) | mnist | mnist-cpu | 3 | 500 | **11.00 ± 1.00 (3)** |"),
        "{c}"
    );
    assert!(
        c.contains("| 60.00 ± 10.00 (3) | **12.00 ± 2.00 (3)** |")
            && c.ends_with("| 120 | 2.00 | 110 s |"),
        "{c}"
    );
    assert_eq!(
        md.matches("| mnist | mnist-cpu |").count(),
        5,
        "one line per cell"
    );
    // Every run has its section, named by the folders that tell it apart.
    for n in ["e2-ldc-seed0", "e4-rae-l2-seed2", "rae-l2-ot"] {
        assert!(html.contains(&format!("id=\"run-{n}\"")), "{n}");
    }
    // The budget figure: written, a PNG of 2 × 2 panels, in both reports.
    let fig = out.join("budget.png");
    let (w, h) = image::image_dimensions(&fig).expect("budget.png");
    assert_eq!((w, h), (1200, 640));
    assert!(
        md.contains("![budget](budget.png)")
            && html.contains("alt=\"budget\" src=\"data:image/png;base64,")
    );
    let png = image::open(&fig).unwrap().to_rgb8();
    let coloured = png
        .pixels()
        .filter(|p| p[0] != p[1] || p[1] != p[2])
        .count();
    assert!(
        coloured > 500,
        "budget figure looks empty ({coloured} coloured pixels)"
    );
}
