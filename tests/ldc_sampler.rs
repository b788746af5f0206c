//! DESIGN.md §1 acceptance test of the sampler: a sampler trained alone against
//! a saved MNIST encoder/decoder (`mnist-cpu` preset) reaches a latent MMD² to
//! the encoder's test latents within 2× of an ex-post full-covariance
//! Gaussian's, and its decoded samples are not one class (judged by a 1-nearest-
//! neighbour classifier, by cosine similarity, on 10,000 labelled training images).
//!
//! Takes a few minutes on 2 cores: it trains one epoch of MNIST first.

use ldc_vae::config::Config;
use ldc_vae::data::{self, Split};
use ldc_vae::eval::{
    classes, mmd,
    run::{decode_all, encode_set, sample_latents},
};
use ldc_vae::rng::{reseed, Stream};
use ldc_vae::train::{self, TrainOptions};

#[test]
fn sampler_alone_on_saved_mnist_nets_matches_gaussian_and_covers_classes() {
    let _rng = ldc_vae::rng::exclusive();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    // Joint training for one epoch, then save (the "saved encoder/decoder").
    let cfg = Config::load(
        Some("mnist-cpu"),
        None,
        &["train.epochs=1".into(), "ldc.sampler_refine_steps=0".into()],
    )
    .unwrap();
    let out = train::train(
        &cfg,
        &dir,
        &TrainOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(out.complete);
    assert!(
        out.progress.val_mse < 0.05,
        "validation MSE {}",
        out.progress.val_mse
    );
    // Train the sampler alone on the frozen nets (`train --resume --only sampler`).
    train::extend_post_training(&dir, 1500, None, &[], true).unwrap();

    let (cfg, model, _) = ldc_vae::run_dir::load_run(&dir, None).unwrap();
    let model = model.as_ref();
    let test = data::load_split("mnist", None, Split::Test).unwrap();
    let trainset = data::load_split("mnist", None, Split::Train).unwrap();
    let n = 2000;
    reseed(cfg.seed, Stream::Eval, 10);
    let z_test = encode_set(model, &test, n, 250);
    reseed(cfg.seed, Stream::Eval, 11);
    let z_train = encode_set(model, &trainset, 10_000, 250);
    reseed(cfg.seed, Stream::Eval, 12);
    let z_sampler = sample_latents(model, n, 250).unwrap();
    let gauss = mmd::Gaussian::fit(&z_train);
    reseed(cfg.seed, Stream::Eval, 13);
    let z_gauss = gauss.sample(n);
    let m_sampler = mmd::mmd2_rbf(&z_test, &z_sampler);
    let m_gauss = mmd::mmd2_rbf(&z_test, &z_gauss);
    eprintln!("latent MMD²: sampler {m_sampler:.4}, ex-post Gaussian {m_gauss:.4}");
    assert!(
        m_sampler <= 2.0 * m_gauss,
        "sampler MMD² {m_sampler:.4} > 2 × Gaussian's {m_gauss:.4}"
    );

    // Decoded samples: classes by cosine 1-NN against labelled training images.
    let samples = decode_all(model, &z_sampler.narrow(0, 0, 200), 200);
    let refs = trainset.images.narrow(0, 0, 10_000);
    let labels = trainset.labels.as_ref().unwrap().narrow(0, 0, 10_000);
    let counts = classes::histogram(
        &classes::nearest_neighbour_labels(&samples, &refs, &labels),
        10,
    );
    eprintln!("1-NN classes of 200 samples: {counts:?}");
    let present = counts.iter().filter(|&&c| c > 0).count();
    let top = *counts.iter().max().unwrap() as f64 / 200.0;
    assert!(
        present >= 8,
        "only {present} digit classes among samples: {counts:?}"
    );
    assert!(
        top <= 0.35,
        "one class takes {:.0}% of samples: {counts:?}",
        top * 100.0
    );

    // The sampler study (`compare-samplers --variant`) on the same nets.
    let study_dir = root.path().join("study");
    let variant = ldc_vae::eval::samplers::Variant::parse("short:sampler_refine_steps=60").unwrap();
    let run_study = |references: bool| {
        ldc_vae::eval::samplers::study(
            &dir,
            std::slice::from_ref(&variant),
            1500,
            &study_dir,
            true,
            None,
            references,
            // The test split: the run's 1,000 held-out validation images would
            // do as well; the assertions below use the test labels.
            ldc_vae::eval::run::ScoreOn::Test,
        )
        .unwrap()
    };
    let rows = run_study(true);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ex-post GMM",
            "ex-post Gaussian",
            "encoder latents of test images (reconstructions)",
            "the run's own sampler",
            "short"
        ]
    );
    // Latent classes mean something: test images the study did not use as
    // references (images n..n+1000) get their own label from their nearest
    // reference latent (the first n test latents, whitened by the training
    // latents, as the study does) far more often than chance (10%).
    let white = ldc_vae::svgd::Whitening::fit(&z_train);
    let held = test.slice(n, n + 1000);
    reseed(cfg.seed, Stream::Eval, 16);
    let z_held = encode_set(model, &held, 1000, 250);
    let nearest = ldc_vae::svgd::sq_dists(&white.apply(&z_held), &white.apply(&z_test))
        .argmin(1, false)
        .to_device(tch::Device::Cpu);
    let test_labels = test.labels.as_ref().unwrap();
    let predicted = test_labels.narrow(0, 0, n).index_select(0, &nearest);
    let accuracy = predicted
        .eq_tensor(held.labels.as_ref().unwrap())
        .to_kind(tch::Kind::Double)
        .mean(tch::Kind::Double)
        .double_value(&[]);
    eprintln!("latent 1-NN accuracy of held-out test latents: {accuracy:.3}");
    assert!(
        accuracy > 0.4,
        "latent 1-NN accuracy {accuracy:.3} (chance: 0.1)"
    );
    let nc = 1000;
    for r in &rows {
        assert_eq!(r.classes.iter().sum::<i64>(), nc, "{}", r.name);
        assert_eq!(r.latent_classes.iter().sum::<i64>(), nc, "{}", r.name);
        assert!(r.mmd2.is_finite() && r.class_tv.is_finite(), "{}", r.name);
        assert!(study_dir.join(&r.grid).is_file(), "{}", r.grid);
    }
    // The study is deterministic: the same variant again gives the same row.
    let again = run_study(false);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].classes, rows[4].classes);
    assert_eq!(again[0].latent_classes, rows[4].latent_classes);
    assert_eq!(again[0].mmd2, rows[4].mmd2);
    assert!(study_dir.join("sampler-study.md").is_file());
    let json = std::fs::read_to_string(study_dir.join("sampler-study.json")).unwrap();
    assert!(json.contains("\"latent_classes\""));
}
