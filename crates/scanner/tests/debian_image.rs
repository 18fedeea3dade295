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
    assert!(index.warnings.is_empty(), "{:?}", index.warnings);

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

fn dpkg_greater(a: &str, b: &str) -> bool {
    std::process::Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .expect("dpkg runs")
        .success()
}

/// The done-when of the matcher: advisories made from the image's own
/// source versions (a newer fix, the same version, an older `~` version,
/// an epoch bump, no fix yet, never affected, and another release), and the
/// findings are exactly those whose fixed version dpkg calls newer than the
/// installed source version, plus the unfixed ones.
#[test]
fn findings_are_exactly_the_fixes_newer_than_the_installed_source_version() {
    use scanner::matcher::{FindingState, match_image};
    use scanner::vulndb::VulnDb;
    use std::collections::BTreeSet;

    let paragraphs = host_status_paragraphs();
    let os_release = fs::read_to_string("/usr/lib/os-release").unwrap();
    assert!(
        os_release.contains("ID=debian"),
        "this test builds a Debian image from this machine's packages"
    );
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    common::write_oci_layout(
        &layout,
        "latest",
        &[common::layer(&[
            file("etc/os-release", os_release),
            file("var/lib/dpkg/status", status_file(&paragraphs)),
        ])],
    );
    let source_text = format!("oci:{}", layout.display());
    let source = Source::parse(&source_text).unwrap();
    let data_dir = work.path().join("data");
    let index =
        index::index_image_source(&source_text, &source, &LayerCache::open(&data_dir)).unwrap();
    let os = index.os.clone().unwrap();
    let codename = os.version_codename.clone().unwrap();
    let version_id = os.version_id.clone().unwrap();

    let mut sources: Vec<(String, String)> = index
        .packages
        .iter()
        .map(|p| {
            (
                p.installed.source_name.clone(),
                p.installed.source_version.clone(),
            )
        })
        .collect();
    sources.sort();
    sources.dedup();
    let sources: Vec<(String, String)> = sources.into_iter().take(60).collect();

    let mut osv_entries = Vec::new();
    let mut tracker = serde_json::Map::new();
    // (source, vulnerability) -> the fixed version, None when unfixed.
    let mut expected_by_source: Vec<(String, String, Option<String>)> = Vec::new();
    for (case_idx, (source_name, source_version)) in sources.iter().enumerate() {
        let id = format!("CVE-2099-{case_idx:04}");
        let osv_advisory = |ecosystem: &str, fixed: &str| {
            serde_json::json!({
                "id": id, "modified": "2026-01-01T00:00:00Z",
                "affected": [{"package": {"ecosystem": ecosystem, "name": source_name},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}],
                "database_specific": {"severity": "HIGH"},
            })
        };
        let mut tracker_release = |release: serde_json::Value| {
            tracker.insert(
                source_name.clone(),
                serde_json::json!({id.clone(): {"releases": {codename.clone(): release}}}),
            );
        };
        let (epoch, rest) = match source_version.split_once(':') {
            Some((epoch, rest)) => (epoch.parse::<u32>().unwrap(), rest),
            None => (0, source_version.as_str()),
        };
        let fixed = match case_idx % 7 {
            0 => Some(format!("{source_version}+deb12u99")),
            1 => Some(source_version.clone()),
            2 => Some(format!("{source_version}~pre1")),
            3 => Some(format!("{}:{rest}", epoch + 1)),
            4 => {
                tracker_release(serde_json::json!({"status": "open", "urgency": "medium"}));
                expected_by_source.push((source_name.clone(), id.clone(), None));
                continue;
            }
            5 => {
                tracker_release(serde_json::json!({"status": "resolved", "fixed_version": "0", "urgency": "low"}));
                continue;
            }
            _ => {
                // Another release's advisory says nothing about this image.
                osv_entries.push((format!("{id}.json"), osv_advisory("Debian:1", "999:0").to_string()));
                continue;
            }
        }
        .unwrap();
        if case_idx % 2 == 0 {
            osv_entries.push((
                format!("{id}.json"),
                osv_advisory(&format!("Debian:{version_id}"), &fixed).to_string(),
            ));
        } else {
            tracker_release(
                serde_json::json!({"status": "resolved", "fixed_version": fixed, "urgency": "high"}),
            );
        }
        if dpkg_greater(&fixed, source_version) {
            expected_by_source.push((source_name.clone(), id.clone(), Some(fixed)));
        }
    }
    let db = VulnDb::open(&data_dir).unwrap();
    let zip_path = work.path().join("osv.zip");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
        for (name, text) in &osv_entries {
            zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }
    db.import_file(&zip_path).unwrap();
    let tracker_path = work.path().join("tracker.json");
    fs::write(
        &tracker_path,
        serde_json::Value::Object(tracker).to_string(),
    )
    .unwrap();
    db.import_file(&tracker_path).unwrap();

    let report = match_image(&index, &db).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let found: BTreeSet<(String, String, Option<String>)> = report
        .findings
        .iter()
        .map(|f| {
            assert_eq!(f.state == FindingState::Fixed, f.fixed_version.is_some());
            (
                f.package.clone(),
                f.vulnerability.clone(),
                f.fixed_version.clone(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, Option<String>)> = index
        .packages
        .iter()
        .flat_map(|p| {
            expected_by_source
                .iter()
                .filter(|(source, _, _)| *source == p.installed.source_name)
                .map(|(_, id, fixed)| (p.installed.name.clone(), id.clone(), fixed.clone()))
        })
        .collect();
    assert!(expected.len() >= 10, "too few cases: {expected:?}");
    assert_eq!(found, expected);
    assert!(report.n_not_affected > 0);

    // The update actions name each affected source once, at its fix.
    let actions = scanner::report::update_actions(&report);
    let fixed_sources: BTreeSet<&str> = expected_by_source
        .iter()
        .filter(|(_, _, fixed)| fixed.is_some())
        .map(|(source, _, _)| source.as_str())
        .collect();
    assert_eq!(
        actions
            .iter()
            .map(|a| a.source_name.as_str())
            .collect::<BTreeSet<_>>(),
        fixed_sources
    );
}
