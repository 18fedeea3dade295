//! Matching speed: 1,000 installed packages against 100,000 advisories
//! (Debian tracker form, imported into a fresh database). Prints the import
//! time and the best and median of 20 matches. `cargo run --release -p
//! scanner --example match_bench`; the figures go in BENCHMARKS.md.

use std::time::Instant;

use runtime::digest::Digest;
use scanner::index::{ImageIndex, Package};
use scanner::matcher::match_image;
use scanner::packages::{InstalledPackage, OsRelease, PackageKind};
use scanner::vulndb::VulnDb;

/// The allocator the `shoal` binary runs the matcher on.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const N_PACKAGES: usize = 1_000;
const N_ADVISORIES: usize = 100_000;

fn main() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let per_package = N_ADVISORIES / N_PACKAGES;
    let mut tracker = serde_json::Map::new();
    for package_idx in 0..N_PACKAGES {
        let mut cves = serde_json::Map::new();
        for cve_idx in 0..per_package {
            // A third fixed after the installed version, a third before, a
            // third open: every verdict is exercised.
            let release = match cve_idx % 3 {
                0 => {
                    serde_json::json!({"status": "resolved", "fixed_version": "1.2-3+deb12u1", "urgency": "high"})
                }
                1 => {
                    serde_json::json!({"status": "resolved", "fixed_version": "1.1-1", "urgency": "low"})
                }
                _ => serde_json::json!({"status": "open", "urgency": "medium"}),
            };
            cves.insert(
                format!("CVE-2099-{package_idx:04}{cve_idx:03}"),
                serde_json::json!({"releases": {"bookworm": release}}),
            );
        }
        tracker.insert(
            format!("source{package_idx}"),
            serde_json::Value::Object(cves),
        );
    }
    let tracker_path = work.path().join("tracker.json");
    std::fs::write(
        &tracker_path,
        serde_json::Value::Object(tracker).to_string(),
    )
    .expect("write the tracker file");
    let db = VulnDb::open(work.path()).expect("open the database");
    let started = Instant::now();
    let imported = db.import_file(&tracker_path).expect("import");
    println!(
        "import: {} advisories in {:.0} ms",
        imported.n_records,
        started.elapsed().as_secs_f64() * 1000.0
    );

    let layer = Digest::of_bytes(b"layer");
    let index = ImageIndex {
        image: "bench".to_string(),
        manifest_digest: Digest::of_bytes(b"manifest"),
        layers: vec![layer.clone()],
        os: Some(OsRelease {
            id: "debian".to_string(),
            version_id: Some("12".to_string()),
            version_codename: Some("bookworm".to_string()),
            pretty_name: None,
        }),
        packages: (0..N_PACKAGES)
            .map(|package_idx| Package {
                installed: InstalledPackage {
                    kind: PackageKind::Deb,
                    name: format!("lib{package_idx}"),
                    version: "1.2-3".to_string(),
                    architecture: "amd64".to_string(),
                    source_name: format!("source{package_idx}"),
                    source_version: "1.2-3".to_string(),
                },
                layer: layer.clone(),
            })
            .collect(),
        warnings: Vec::new(),
    };
    // Where the time goes: reading and decoding the advisories alone.
    let mut read_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let reader = db.reader().expect("a read transaction");
        let mut n_read = 0;
        for package in &index.packages {
            n_read += reader
                .advisories_for("debian:bookworm", &package.installed.source_name)
                .expect("read")
                .len();
        }
        assert_eq!(n_read, N_ADVISORIES);
        read_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    read_ms.sort_by(f64::total_cmp);
    println!(
        "read and decode the {N_ADVISORIES} advisories alone: best {:.1} ms, median {:.1} ms",
        read_ms[0], read_ms[2]
    );
    let mut timings_ms = Vec::new();
    let mut n_findings = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let report = match_image(&index, &db).expect("match");
        timings_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        n_findings = report.findings.len();
    }
    timings_ms.sort_by(f64::total_cmp);
    println!(
        "match: {N_PACKAGES} packages, {N_ADVISORIES} advisories, {n_findings} findings: best {:.1} ms, median {:.1} ms",
        timings_ms[0], timings_ms[10]
    );
}
