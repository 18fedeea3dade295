//! `vulndb import`: OSV files and zips and the Debian Security Tracker's
//! JSON, all-or-nothing per file, re-imports replacing what they replace.

use std::io::Write;

use scanner::severity::Severity;
use scanner::vulndb::{RangeEvent, SOURCE_DEBIAN_TRACKER, SOURCE_OSV, VulnDb, VulnDbError};

fn osv(id: &str, ecosystem: &str, package: &str, fixed: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "modified": "2026-01-01T00:00:00Z",
        "aliases": ["CVE-2026-0001"],
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": package},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            "ecosystem_specific": {"urgency": "high"},
        }],
    })
}

fn write_zip(path: &std::path::Path, entries: &[(&str, String)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, text) in entries {
        zip.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn osv_files_and_zips_import_whole_or_not_at_all() {
    let work = tempfile::tempdir().unwrap();
    let db = VulnDb::open(work.path()).unwrap();
    let single = work.path().join("one.json");
    std::fs::write(
        &single,
        osv("DSA-1", "Debian:12", "openssl", "3.0.1-1").to_string(),
    )
    .unwrap();
    let report = db.import_file(&single).unwrap();
    assert_eq!((report.n_advisories, report.n_records), (1, 1));
    let found = db.advisories_for("debian:12", "openssl").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].severity, Severity::High);
    assert_eq!(
        found[0].events,
        vec![
            RangeEvent::Introduced("0".into()),
            RangeEvent::Fixed("3.0.1-1".into())
        ]
    );

    // A zip with one malformed advisory imports nothing, not even the
    // good ones before it.
    let bad_zip = work.path().join("bad.zip");
    write_zip(
        &bad_zip,
        &[
            (
                "DSA-2.json",
                osv("DSA-2", "Debian:12", "curl", "8.0-1").to_string(),
            ),
            (
                "DSA-3.json",
                "{\"id\": \"DSA-3\", \"affected\": [".to_string(),
            ),
        ],
    );
    let error = db.import_file(&bad_zip).unwrap_err();
    assert!(matches!(error, VulnDbError::Malformed { .. }), "{error}");
    assert!(error.to_string().contains("bad.zip!DSA-3.json"), "{error}");
    assert!(db.advisories_for("debian:12", "curl").unwrap().is_empty());

    let good_zip = work.path().join("all.zip");
    write_zip(
        &good_zip,
        &[
            (
                "DSA-2.json",
                osv("DSA-2", "Debian:12", "curl", "8.0-1").to_string(),
            ),
            (
                "USN-1.json",
                osv("USN-1", "Ubuntu:22.04:LTS", "curl", "7.81-1").to_string(),
            ),
            (
                "PYSEC-1.json",
                osv("PYSEC-1", "PyPI", "requests", "2.0").to_string(),
            ),
        ],
    );
    let report = db.import_file(&good_zip).unwrap();
    assert_eq!(report.n_records, 2, "PyPI is not an OS ecosystem");
    assert_eq!(db.advisories_for("debian:12", "curl").unwrap().len(), 1);
    assert_eq!(db.advisories_for("ubuntu:22.04", "curl").unwrap().len(), 1);

    // A newer revision of DSA-1 that moved to another package replaces the
    // old record instead of adding to it.
    std::fs::write(
        &single,
        osv("DSA-1", "Debian:12", "openssl3", "3.0.2-1").to_string(),
    )
    .unwrap();
    db.import_file(&single).unwrap();
    assert!(
        db.advisories_for("debian:12", "openssl")
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.advisories_for("debian:12", "openssl3").unwrap().len(), 1);

    let status = db.status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].source, SOURCE_OSV);
    assert_eq!(status[0].n_advisories, 3);
}

#[test]
fn the_debian_tracker_s_json_replaces_its_earlier_import() {
    let work = tempfile::tempdir().unwrap();
    let db = VulnDb::open(work.path()).unwrap();
    let tracker = work.path().join("tracker.json");
    std::fs::write(
        &tracker,
        serde_json::json!({
            "glibc": {
                "CVE-1": {"releases": {
                    "bookworm": {"status": "resolved", "fixed_version": "2.36-9+deb12u5", "urgency": "low**"},
                    "bullseye": {"status": "open", "urgency": "not yet assigned"},
                }},
                "CVE-2": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "0", "urgency": "unimportant"}}},
            }
        })
        .to_string(),
    )
    .unwrap();
    let report = db.import_file(&tracker).unwrap();
    assert_eq!((report.n_advisories, report.n_records), (2, 3));
    let bookworm = db.advisories_for("debian:bookworm", "glibc").unwrap();
    assert_eq!(bookworm.len(), 2);
    assert_eq!(bookworm[0].severity, Severity::Low);
    assert!(bookworm[1].not_affected);
    let bullseye = db.advisories_for("debian:bullseye", "glibc").unwrap();
    assert_eq!(bullseye[0].events, vec![RangeEvent::Introduced("0".into())]);
    assert_eq!(bullseye[0].severity, Severity::Unknown);

    // A bad tracker file leaves the earlier import whole.
    let broken = work.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"glibc": {"CVE-3": {"releases": {"bookworm": {"status": "weird"}}}}}"#,
    )
    .unwrap();
    let error = db.import_file(&broken).unwrap_err();
    assert!(
        error.to_string().contains("unknown status \"weird\""),
        "{error}"
    );
    assert_eq!(
        db.advisories_for("debian:bookworm", "glibc").unwrap().len(),
        2
    );

    // The next day's file is the whole data set: what it no longer lists goes.
    std::fs::write(
        &tracker,
        r#"{"zlib": {"CVE-9": {"releases": {"bookworm": {"status": "open", "urgency": "high"}}}}}"#,
    )
    .unwrap();
    db.import_file(&tracker).unwrap();
    assert!(
        db.advisories_for("debian:bookworm", "glibc")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.advisories_for("debian:bookworm", "zlib").unwrap().len(),
        1
    );
    let status = db.status().unwrap();
    assert_eq!(status[0].source, SOURCE_DEBIAN_TRACKER);
    assert_eq!(status[0].n_advisories, 1);
}
