//! Unit tests of [`super`] (the `folder` data set), in their own file.

use super::*;
use crate::data::images::tests::write_image;

fn opts(size: u32) -> FolderOptions {
    FolderOptions {
        image_size: size,
        channels: 3,
        center_crop: 0,
        resize: true,
        test_fraction: DEFAULT_TEST_FRACTION,
    }
}

fn err_of<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// `n` 40×40 images in each of the class folders `classes` under `dir`.
fn classes(dir: &Path, classes: &[&str], n: usize) {
    for c in classes {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        for i in 0..n {
            write_image(&dir.join(c).join(format!("{i:03}.png")), 40, 40);
        }
    }
}

#[test]
fn data_folder_classes_split_labels_and_cache() {
    let t = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let mode = CacheMode::Dir(c.path().into());
    classes(t.path(), &["zebra", "ant"], 10);
    std::fs::create_dir(t.path().join("empty")).unwrap();
    std::fs::write(t.path().join("ant/notes.txt"), "no image").unwrap();
    write_image(&t.path().join("ant/.hidden.png"), 40, 40);
    let l = list(t.path(), 0.1).unwrap();
    assert_eq!(l.classes, ["ant", "zebra"]);
    assert_eq!(l.files.len(), 20);
    assert_eq!(l.layout, Layout::Fraction);
    // One test image per class, the same draw every time.
    for k in 0..2 {
        let test: Vec<_> = (0..20)
            .filter(|&i| l.class_of[i] == k && l.split_of[i] == Split::Test)
            .collect();
        assert_eq!(test.len(), 1, "class {k}");
    }
    assert_eq!(list(t.path(), 0.1).unwrap().split_of, l.split_of);
    let o = opts(32);
    let tr = load_split(t.path(), Split::Train, &o, &mode, OnCorrupt::Fail).unwrap();
    assert_eq!(tr.images.size(), [18, 3, 32, 32]);
    let lab = Vec::<i64>::try_from(tr.labels.unwrap()).unwrap();
    assert_eq!(lab.iter().filter(|&&x| x == 0).count(), 9);
    // Shuffled: the classes mix (not all ants first).
    assert_ne!(lab[..9], [0; 9]);
    let te = load_split(t.path(), Split::Test, &o, &mode, OnCorrupt::Fail).unwrap();
    let mut tl = Vec::<i64>::try_from(te.labels.unwrap()).unwrap();
    tl.sort();
    assert_eq!(tl, [0, 1]);
    assert!(matches!(
        load_all(t.path(), &o, &mode, OnCorrupt::Fail)
            .unwrap()
            .outcome,
        CacheOutcome::Hit(_)
    ));
    // Grey and 64 px: other caches, beside the first.
    let g = FolderOptions {
        channels: 1,
        ..opts(64)
    };
    let s = load_split(t.path(), Split::Train, &g, &mode, OnCorrupt::Fail).unwrap();
    assert_eq!(s.images.size(), [18, 1, 64, 64]);
    assert_eq!(std::fs::read_dir(c.path()).unwrap().count(), 2);
    assert!(describe(t.path(), &o)
        .unwrap()
        .contains("2 classes from sub-folder names (ant, zebra)"));
}

#[test]
fn data_folder_train_test_and_flat_layouts() {
    let t = tempfile::tempdir().unwrap();
    let mode = CacheMode::Off;
    for (part, n) in [("train", 5), ("test", 3)] {
        std::fs::create_dir(t.path().join(part)).unwrap();
        for i in 0..n {
            write_image(&t.path().join(part).join(format!("{i}.jpg")), 50, 30);
        }
    }
    let o = opts(32);
    let tr = load_split(t.path(), Split::Train, &o, &mode, OnCorrupt::Fail).unwrap();
    let te = load_split(t.path(), Split::Test, &o, &mode, OnCorrupt::Fail).unwrap();
    assert_eq!((tr.len(), te.len()), (5, 3));
    assert!(tr.labels.is_none());
    assert_eq!(list(t.path(), 0.1).unwrap().layout, Layout::TrainTest);
    std::fs::rename(t.path().join("test"), t.path().join("other")).unwrap();
    let e = err_of(list(t.path(), 0.1));
    assert!(e.contains("has train/ but no test/"), "{e}");
    // Flat: images directly in the folder, 1 of 8 to test.
    let f = tempfile::tempdir().unwrap();
    for i in 0..8 {
        write_image(&f.path().join(format!("{i}.png")), 32, 32);
    }
    let l = list(f.path(), 0.1).unwrap();
    assert!(l.classes.is_empty());
    assert_eq!(l.split_of.iter().filter(|s| **s == Split::Test).count(), 1);
    let e = err_of(list(&f.path().join("0.png"), 0.1));
    assert!(e.contains("missing folder"), "{e}");
    let one = tempfile::tempdir().unwrap();
    write_image(&one.path().join("a.png"), 32, 32);
    let e = err_of(list(one.path(), 0.1));
    assert!(e.contains("too few") && e.contains("test_fraction"), "{e}");
}

#[test]
fn data_folder_bad_input_is_named() {
    let mode = CacheMode::Off;
    let load = |d: &Path, o: &FolderOptions| load_split(d, Split::Train, o, &mode, OnCorrupt::Fail);
    // Empty folder (an empty sub-folder is no class).
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("cats")).unwrap();
    let e = err_of(load(t.path(), &opts(32)));
    assert!(
        e.contains("empty folder") && e.contains(&t.path().display().to_string()),
        "{e}"
    );
    // A corrupt file: named.
    classes(t.path(), &["cats"], 12);
    std::fs::write(t.path().join("cats/005.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let e = err_of(load(t.path(), &opts(32)));
    assert!(
        e.contains("corrupt image") && e.contains("cats/005.png"),
        "{e}"
    );
    // Skipped on request: the other 11 load.
    let s = load_split(t.path(), Split::Test, &opts(32), &mode, OnCorrupt::Skip).unwrap();
    assert_eq!(s.len(), 1);
    // Mixed sizes without a resize: two files named.
    write_image(&t.path().join("cats/005.png"), 32, 32);
    let keep = FolderOptions {
        resize: false,
        ..opts(32)
    };
    let e = err_of(load(t.path(), &keep));
    assert!(
        e.contains("differ in size") && e.contains("cats/005.png") && e.contains("cats/000.png"),
        "{e}"
    );
    // One size, not the nets' one.
    write_image(&t.path().join("cats/005.png"), 40, 40);
    let e = err_of(load(t.path(), &keep));
    assert!(
        e.contains("cats/000.png") && e.contains("40x40, not data.image_size = 32"),
        "{e}"
    );
    // A centre crop of 40 fits exactly; 48 does not.
    let crop = |c| FolderOptions {
        center_crop: c,
        ..opts(32)
    };
    assert_eq!(load(t.path(), &crop(40)).unwrap().len(), 11);
    let e = err_of(load(t.path(), &crop(48)));
    assert!(
        e.contains("smaller than the centre crop") && e.contains("40x40"),
        "{e}"
    );
    // Images beside class folders.
    write_image(&t.path().join("stray.png"), 40, 40);
    let e = err_of(load(t.path(), &opts(32)));
    assert!(e.contains("stray.png") && e.contains("cats/"), "{e}");
}

#[test]
fn data_folder_identity_and_registry() {
    let t = tempfile::tempdir().unwrap();
    classes(t.path(), &["a", "b"], 6);
    let id = |o: &FolderOptions, s| split_identity(t.path(), o, s).unwrap();
    let o = opts(32);
    assert!(id(&o, Split::Test).starts_with("folder-"));
    assert_eq!(id(&o, Split::Test), id(&o, Split::Test));
    assert_ne!(id(&o, Split::Test), id(&o, Split::Train));
    assert_ne!(id(&o, Split::Test), id(&opts(64), Split::Test));
    let before = id(&o, Split::Test);
    write_image(&t.path().join("a/999.png"), 41, 40);
    assert_ne!(id(&o, Split::Test), before);
    let e = err_of(registered(t.path()));
    assert!(e.contains("load settings") && e.contains("data.dir"), "{e}");
    register(t.path(), &opts(64));
    register(t.path(), &o);
    assert_eq!(registered(t.path()).unwrap(), o);
    let s = crate::data::load_split("folder", Some(t.path()), Split::Train).unwrap();
    assert_eq!(s.images.size()[1..], [3, 32, 32]);
    assert!(crate::data::describe("folder", Some(t.path()))
        .unwrap()
        .contains("image folder"));
    remove_user_caches(t.path());
    let e = err_of(crate::data::load_split("folder", None, Split::Train));
    assert!(e.contains("set `data.dir`"), "{e}");
}
