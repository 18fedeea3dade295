//! The indexer on images made from this machine's real dpkg database: the
//! packages listed are exactly those `dpkg-query` lists for the image's
//! merged root filesystem, with their source packages and layers.

mod common;

use std::fs;

use common::{Entry, dpkg_query, field, file, host_status_paragraphs, status_file};
use runtime::image::import::Source;
use scanner::index::{self, ImageIndex, LayerCache};

fn listing(index: &ImageIndex) -> Vec<(String, String, String, String, String)> {
    let mut rows: Vec<_> = index
        .packages
        .iter()
        .map(|package| {
            let installed = &package.installed;
            (
                installed.name.clone(),
                installed.architecture.clone(),
                installed.version.clone(),
                installed.source_name.clone(),
                installed.source_version.clone(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Base layer: this machine's os-release and dpkg status. Second layer:
/// one package upgraded and another removed (its status paragraph gone, its
/// files whited out), as `apt-get` in a Dockerfile step leaves them.
#[test]
fn scan_lists_what_dpkg_query_lists_after_an_upgrade_and_a_removal() {
    let paragraphs = host_status_paragraphs();
    assert!(paragraphs.len() > 50, "this machine has few packages");
    let os_release = fs::read_to_string("/usr/lib/os-release").unwrap();
    let base_status = status_file(&paragraphs);

    // Upgrade a package that names its source with a version (so the
    // source version must follow), else any; remove another.
    let upgraded_idx = paragraphs
        .iter()
        .position(|p| field(p, "Source").is_some_and(|s| s.contains('(')))
        .unwrap_or(0);
    let removed_idx = (upgraded_idx + 1) % paragraphs.len();
    let removed_name = field(&paragraphs[removed_idx], "Package")
        .unwrap()
        .to_string();
    let old_version = field(&paragraphs[upgraded_idx], "Version")
        .unwrap()
        .to_string();
    let new_version = format!("{old_version}+shoaltest1");
    let mut upper: Vec<String> = paragraphs.clone();
    upper[upgraded_idx] = upper[upgraded_idx].replace(
        &format!("Version: {old_version}\n"),
        &format!("Version: {new_version}\n"),
    );
    upper.remove(removed_idx);
    let upper_status = status_file(&upper);

    let base = common::layer(&[
        file("usr/lib/os-release", os_release),
        Entry::Symlink {
            path: "etc/os-release".into(),
            target: "../usr/lib/os-release".into(),
        },
        file("var/lib/dpkg/status", base_status),
        file(&format!("usr/share/doc/{removed_name}/copyright"), "text"),
    ]);
    let upgrade = common::layer(&[
        file("var/lib/dpkg/status", upper_status.clone()),
        Entry::Whiteout {
            path: format!("usr/share/doc/{removed_name}"),
        },
    ]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let digests = common::write_oci_layout(&layout, "test", &[base, upgrade]);

    let data_dir = work.path().join("data");
    let source_text = format!("oci:{}:test", layout.display());
    let source = Source::parse(&source_text).unwrap();
    let cache = LayerCache::open(&data_dir);
    let index = index::index_image_source(&source_text, &source, &cache).unwrap();
    assert!(index.warnings.is_empty(), "{:?}", index.warnings);

    assert_eq!(listing(&index), dpkg_query(&upper_status));
    assert!(
        !index
            .packages
            .iter()
            .any(|p| p.installed.name == removed_name)
    );
    let os = index
        .os
        .as_ref()
        .expect("os-release found through the symlink's target");
    assert_eq!(os.id, "debian");

    // Every package is credited to the base layer except the upgraded one.
    let upgraded_name = field(&paragraphs[upgraded_idx], "Package").unwrap();
    for package in &index.packages {
        let expected = if package.installed.name == upgraded_name {
            assert_eq!(package.installed.version, new_version);
            &digests[1]
        } else {
            &digests[0]
        };
        assert_eq!(&package.layer, expected, "{}", package.installed.name);
    }

    // The layers' parts are cached by digest: a second scan reads no blob.
    for digest in &digests {
        assert!(
            data_dir
                .join("scanner/layers")
                .join(format!("{}.json", digest.hex()))
                .is_file()
        );
    }
    let again = index::index_image_source(&source_text, &source, &cache).unwrap();
    assert_eq!(listing(&again), listing(&index));
}

/// Distroless form: one status file per package under `status.d/`, a layer
/// that whites one out and adds another, and an opaque directory on top.
#[test]
fn status_d_whiteouts_and_opaque_directories() {
    let paragraphs = host_status_paragraphs();
    let pick: Vec<&String> = paragraphs.iter().take(4).collect();
    let name = |p: &String| field(p, "Package").unwrap().to_string();
    let status_d = |p: &String| format!("var/lib/dpkg/status.d/{}", name(p));
    let base = common::layer(&[
        file(&status_d(pick[0]), pick[0].clone()),
        file(&status_d(pick[1]), pick[1].clone()),
        file(&format!("{}.md5sums", status_d(pick[1])), "0123  /x\n"),
        file(&status_d(pick[2]), pick[2].clone()),
    ]);
    let second = common::layer(&[
        Entry::Whiteout {
            path: status_d(pick[1]),
        },
        file(&status_d(pick[3]), pick[3].clone()),
    ]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    common::write_oci_layout(&layout, "latest", &[base.clone(), second.clone()]);
    let source_text = format!("oci:{}", layout.display());
    let source = Source::parse(&source_text).unwrap();
    let index = index::index_image_source(&source_text, &source, &LayerCache::disabled()).unwrap();
    let expected = dpkg_query(&status_file(&[
        pick[0].clone(),
        pick[2].clone(),
        pick[3].clone(),
    ]));
    assert_eq!(listing(&index), expected);

    let third = common::layer(&[
        Entry::Opaque {
            dir: "var/lib/dpkg/status.d".into(),
        },
        file(&status_d(pick[0]), pick[0].clone()),
    ]);
    let layout = work.path().join("layout3");
    common::write_oci_layout(&layout, "latest", &[base, second, third]);
    let source_text = format!("oci:{}", layout.display());
    let source = Source::parse(&source_text).unwrap();
    let index = index::index_image_source(&source_text, &source, &LayerCache::disabled()).unwrap();
    assert_eq!(listing(&index), dpkg_query(pick[0]));
}

/// A layer blob altered after import is refused by digest, and the scan
/// says so instead of listing what the altered blob holds.
#[test]
fn a_tampered_layer_is_reported_not_read() {
    let paragraphs = host_status_paragraphs();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let digests = common::write_oci_layout(
        &layout,
        "latest",
        &[common::layer(&[file(
            "var/lib/dpkg/status",
            paragraphs[0].clone(),
        )])],
    );
    let data_dir = work.path().join("data");
    let store = runtime::image::store::Store::open(&data_dir).unwrap();
    let source = Source::parse(&format!("oci:{}", layout.display())).unwrap();
    let (reference, _) = runtime::image::import::import(&store, &source, None).unwrap();
    let blob = store.blob_path(&digests[0]);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let index =
        index::index_stored_image(&store, &reference.to_string(), &LayerCache::disabled()).unwrap();
    assert!(index.packages.is_empty());
    assert_eq!(index.warnings.len(), 1);
    assert!(
        index.warnings[0].contains(&digests[0].to_string()),
        "{}",
        index.warnings[0]
    );
}
