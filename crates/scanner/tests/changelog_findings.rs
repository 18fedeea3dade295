//! Real advisories from this machine's own packages: each installed
//! package's Debian changelog names the CVEs each version fixed. An image
//! whose packages are one changelog entry older than installed must show
//! exactly the CVEs fixed after that entry (the newer version's), and the
//! machine's real package set none of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;

use common::{field, file, host_status_paragraphs, status_file};
use runtime::image::import::Source;
use scanner::index::{self, LayerCache};
use scanner::matcher::{FindingState, match_image};
use scanner::vulndb::VulnDb;

/// A changelog entry: its version and the CVE ids its text names.
type Entry = (String, BTreeSet<String>);

/// A changelog's entries, newest first.
fn changelog_entries(source_name: &str, text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{source_name} (")) {
            if let Some((version, _)) = rest.split_once(')') {
                entries.push((version.to_string(), BTreeSet::new()));
            }
            continue;
        }
        let Some((_, cves)) = entries.last_mut() else {
            continue;
        };
        let mut rest = line;
        while let Some(start) = rest.find("CVE-") {
            let id: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if id.len() >= 13 && id[4..8].bytes().all(|b| b.is_ascii_digit()) {
                cves.insert(id.clone());
            }
            rest = &rest[start + 4..];
        }
    }
    entries
}

fn read_changelog(package: &str) -> Option<String> {
    let path = format!("/usr/share/doc/{package}/changelog.Debian.gz");
    let compressed = fs::read(path).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn dpkg_greater(a: &str, b: &str) -> bool {
    std::process::Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .expect("dpkg runs")
        .success()
}

#[test]
fn cves_from_the_packages_own_changelogs() {
    let paragraphs = host_status_paragraphs();
    let os_release = fs::read_to_string("/usr/lib/os-release").unwrap();
    let codename = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("a Debian release with a codename")
        .to_string();

    // Sources whose newest changelog entry is the installed version, names
    // CVEs, and has an older entry to go back to. Only packages without a
    // binNMU or source version of their own are moved back.
    // source -> (installed version, previous version, entries).
    let mut chosen: BTreeMap<String, (String, String, Vec<Entry>)> = BTreeMap::new();
    for paragraph in &paragraphs {
        let name = field(paragraph, "Package").unwrap();
        let version = field(paragraph, "Version").unwrap_or("");
        let source = field(paragraph, "Source").unwrap_or(name);
        if source.contains('(') || chosen.contains_key(source) || chosen.len() >= 12 {
            continue;
        }
        let Some(text) = read_changelog(name) else {
            continue;
        };
        let entries = changelog_entries(source, &text);
        if entries.len() >= 2 && entries[0].0 == version && !entries[0].1.is_empty() {
            chosen.insert(
                source.to_string(),
                (version.to_string(), entries[1].0.clone(), entries),
            );
        }
    }
    assert!(
        chosen.len() >= 3,
        "too few packages on this machine with CVEs in their changelogs: {}",
        chosen.len()
    );

    // The tracker's form: each CVE fixed in the (oldest) entry naming it.
    let mut tracker = serde_json::Map::new();
    let mut expected: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (source, (_, previous, entries)) in &chosen {
        let mut fixed_in: BTreeMap<&str, &str> = BTreeMap::new();
        for (version, cves) in entries {
            for cve in cves {
                fixed_in.insert(cve, version);
            }
        }
        let mut cves = serde_json::Map::new();
        for (cve, version) in &fixed_in {
            cves.insert(
                cve.to_string(),
                serde_json::json!({"releases": {codename.clone(): {
                    "status": "resolved", "fixed_version": version, "urgency": "medium"}}}),
            );
            if dpkg_greater(version, previous) {
                expected.insert((source.clone(), cve.to_string(), version.to_string()));
            }
        }
        tracker.insert(source.clone(), serde_json::Value::Object(cves));
    }
    assert!(!expected.is_empty());

    let older: Vec<String> = paragraphs
        .iter()
        .map(|paragraph| {
            let name = field(paragraph, "Package").unwrap();
            let source = field(paragraph, "Source").unwrap_or(name);
            match chosen.get(source) {
                Some((installed, previous, _))
                    if field(paragraph, "Version") == Some(installed.as_str()) =>
                {
                    paragraph.replace(
                        &format!("\nVersion: {installed}\n"),
                        &format!("\nVersion: {previous}\n"),
                    )
                }
                _ => paragraph.clone(),
            }
        })
        .collect();

    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let db = VulnDb::open(&data_dir).unwrap();
    let tracker_path = work.path().join("tracker.json");
    fs::write(
        &tracker_path,
        serde_json::Value::Object(tracker).to_string(),
    )
    .unwrap();
    db.import_file(&tracker_path).unwrap();

    let scan = |name: &str, status: &[String]| {
        let layout = work.path().join(name);
        common::write_oci_layout(
            &layout,
            "latest",
            &[common::layer(&[
                file("etc/os-release", os_release.clone()),
                file("var/lib/dpkg/status", status_file(status)),
            ])],
        );
        let text = format!("oci:{}", layout.display());
        let index = index::index_image_source(
            &text,
            &Source::parse(&text).unwrap(),
            &LayerCache::disabled(),
        )
        .unwrap();
        match_image(&index, &db).unwrap()
    };

    let report = scan("older", &older);
    let found: BTreeSet<(String, String, String)> = report
        .findings
        .iter()
        .map(|f| {
            assert_eq!(f.state, FindingState::Fixed);
            (
                f.source_name.clone(),
                f.vulnerability.clone(),
                f.fixed_version.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, expected);

    let current = scan("current", &paragraphs);
    assert!(
        current.findings.is_empty(),
        "the installed versions fix every CVE their changelogs name: {:?}",
        current.findings
    );
}
