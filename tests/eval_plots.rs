//! t-SNE scatter and loss-curve figures.

use ldc_vae::eval::classes::knn_accuracy_loo;
use ldc_vae::eval::plots::{
    loss_curves, read_metric_series, tsne_classes, tsne_embed, tsne_scatter,
};
use tch::{Device, Kind, Tensor};

fn two_clouds(n: i64, d: i64) -> (Tensor, Tensor) {
    tch::manual_seed(11);
    let a = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 0.5 + 4.0;
    (a, b)
}

#[test]
fn tsne_scatter_writes_png_and_separates_clouds() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_clouds(60, 16);
    let y = tsne_embed(&Tensor::cat(&[&a, &b], 0), 1).unwrap();
    assert_eq!(y.len(), 120);
    assert!(y.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
    // Two well-separated clouds stay apart: centroid distance ≫ spread.
    let mean = |s: &[[f32; 2]]| {
        let n = s.len() as f32;
        [
            s.iter().map(|p| p[0]).sum::<f32>() / n,
            s.iter().map(|p| p[1]).sum::<f32>() / n,
        ]
    };
    let (ma, mb) = (mean(&y[..60]), mean(&y[60..]));
    let spread = y[..60]
        .iter()
        .map(|p| ((p[0] - ma[0]).powi(2) + (p[1] - ma[1]).powi(2)).sqrt())
        .sum::<f32>()
        / 60.0;
    let gap = ((ma[0] - mb[0]).powi(2) + (ma[1] - mb[1]).powi(2)).sqrt();
    assert!(gap > 2.0 * spread, "gap {gap} spread {spread}");

    let path = dir.path().join("fig/tsne.png");
    tsne_scatter(
        &a,
        &b,
        "encoder q(z)",
        "prior p(z)",
        "VAE latents",
        &path,
        7,
    )
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (800, 800));
    let has = |c: [u8; 3]| {
        img.pixels().any(|p| {
            p.0.iter()
                .zip(c)
                .all(|(x, y)| (*x as i32 - y as i32).abs() < 40)
        })
    };
    assert!(
        has([31, 119, 180]) || has([140, 180, 210]),
        "no blue points"
    );
    assert!(
        has([255, 127, 14]) || has([255, 185, 130]),
        "no orange points"
    );
    assert!(tsne_scatter(
        &a,
        &Tensor::zeros([5, 3], (Kind::Float, Device::Cpu)),
        "a",
        "b",
        "t",
        &path,
        0
    )
    .is_err());
}

/// Class-coloured t-SNE: a PNG with a colour per class, the map in the
/// points' order, and its leave-one-out k-NN accuracy high for separated
/// classes; a label count that does not match is an error.
#[test]
fn tsne_classes_colours_classes_and_keeps_them_apart() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_clouds(60, 16);
    let x = Tensor::cat(&[&a, &b], 0);
    let labels = Tensor::cat(
        &[
            Tensor::zeros([60], (Kind::Int64, Device::Cpu)),
            Tensor::ones([60], (Kind::Int64, Device::Cpu)),
        ],
        0,
    );
    let path = dir.path().join("tsne_classes.png");
    let y = tsne_classes(&x, &labels, "by class", &path, 3).unwrap();
    assert_eq!(y.len(), 120);
    let flat: Vec<f32> = y.iter().flat_map(|p| [p[0], p[1]]).collect();
    let map = Tensor::from_slice(&flat).view([-1, 2]);
    assert!(knn_accuracy_loo(&map, &labels, 5) > 0.95);
    let img = image::open(&path).unwrap().to_rgb8();
    // tab10's first two colours (points are drawn at 55 % over white).
    let near = |c: [i32; 3]| {
        img.pixels()
            .any(|p| p.0.iter().zip(c).all(|(x, y)| (*x as i32 - y).abs() < 40))
    };
    assert!(
        near([31, 119, 180]) || near([140, 180, 210]),
        "no class-0 colour"
    );
    assert!(
        near([255, 127, 14]) || near([255, 185, 130]),
        "no class-1 colour"
    );
    let short = labels.narrow(0, 0, 100);
    assert!(tsne_classes(&x, &short, "t", &path, 0).is_err());
}

#[test]
fn loss_curves_from_metrics_jsonl() {
    let _rng = ldc_vae::rng::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("metrics.jsonl");
    let mut lines = String::new();
    for step in 0..200 {
        let loss = 0.5 / (1.0 + step as f64 * 0.1);
        lines += &format!(
            "{{\"kind\":\"step\",\"step\":{step},\"epoch\":{},\"loss\":{loss},\"rec_mse\":{},\"sigma2\":0.3,\"gp\":{}}}\n",
            step / 100,
            loss * 0.9,
            (step as f64 * 0.1).sin()
        );
        if step % 100 == 99 {
            lines += &format!(
                "{{\"kind\":\"epoch\",\"epoch\":{},\"step\":{},\"val_mse\":0.02}}\n",
                step / 100,
                step + 1
            );
        }
    }
    lines += "{\"kind\":\"step\",\"st"; // torn last line
    std::fs::write(&m, lines).unwrap();
    assert_eq!(read_metric_series(&m, "loss").unwrap().len(), 200);
    assert_eq!(
        read_metric_series(&m, "val_mse").unwrap(),
        vec![(100.0, 0.02), (200.0, 0.02)]
    );
    let out = dir.path().join("loss.png");
    loss_curves(&m, &["loss", "rec_mse", "gp", "val_mse", "missing"], &out).unwrap();
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (900, 5 * 260));
    assert!(loss_curves(&m, &["missing"], &dir.path().join("x.png")).is_err());
}
