//! `shoal image scan` and `shoal vulndb` as a user runs them: the real
//! binary on an OCI layout made here, its tables, JSON and exit statuses.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

const STATUS: &str = "\
Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo (1.0-1)
Version: 1.0-1+b1

Package: foo-utils
Status: install ok installed
Architecture: amd64
Source: foo
Version: 1.0-1

Package: bar
Status: install ok installed
Architecture: all
Version: 2:3.1-4

Package: gone
Status: deinstall ok config-files
Architecture: all
Version: 1
";

fn sha256_hex(bytes: &[u8]) -> String {
    // The binary computes digests; the test asks `sha256sum`, a separate
    // implementation.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    fs::write(&path, bytes).unwrap();
    let output = Command::new("sha256sum").arg(&path).output().unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

fn write_layout(dir: &Path) {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, text) in [
        (
            "etc/os-release",
            "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
        ),
        ("var/lib/dpkg/status", STATUS),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, path, text.as_bytes())
            .unwrap();
    }
    let layer = builder.into_inner().unwrap();
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(&manifest), "size": manifest.len(),
    }]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn shoal(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_DATA_DIR", data_dir)
        .args(args)
        .output()
        .expect("shoal runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn scan_vulndb_import_report_and_exit_statuses() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let layout = work.path().join("layout");
    write_layout(&layout);
    let image = format!("oci:{}", layout.display());

    // Without vulnerability data: the OS and the package list.
    let listing = shoal(&data_dir, &["image", "scan", &image]);
    assert!(listing.status.success(), "{listing:?}");
    let text = stdout(&listing);
    assert!(
        text.contains("os debian 12 (bookworm)\n3 packages\n"),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|line| !line.starts_with("PACKAGE"))
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.iter().map(|row| row[..3].to_vec()).collect::<Vec<_>>(),
        vec![
            vec!["bar", "2:3.1-4", "all"],
            vec!["foo-utils", "1.0-1", "amd64"],
            vec!["libfoo1", "1.0-1+b1", "amd64"],
        ]
    );
    assert_eq!(rows[2][3..5], ["foo", "1.0-1"]);

    // Advisories: an OSV file for foo, and a malformed one that is refused.
    let osv = work.path().join("DSA-9999-1.json");
    fs::write(
        &osv,
        json!({
            "id": "DSA-9999-1", "modified": "2026-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "foo"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0-2"}]}],
                "ecosystem_specific": {"urgency": "high"}}],
        })
        .to_string(),
    )
    .unwrap();
    let bad = work.path().join("bad.json");
    fs::write(&bad, "{\"id\": ").unwrap();
    let import = shoal(
        &data_dir,
        &[
            "vulndb",
            "import",
            osv.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(import.status.code(), Some(1), "{import:?}");
    assert!(stdout(&import).starts_with("imported osv: 1 advisories"));
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(stderr.contains("bad.json:1:"), "{stderr}");
    let status = shoal(&data_dir, &["vulndb", "status"]);
    let status_text = stdout(&status);
    let status_rows: Vec<Vec<&str>> = status_text
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(status_rows.len(), 2, "{status_text}");
    assert_eq!(status_rows[1][..2], ["osv", "1"], "{status_text}");

    let report = shoal(&data_dir, &["image", "scan", &image, "--fail-on", "high"]);
    assert_eq!(report.status.code(), Some(1), "{report:?}");
    let text = stdout(&report);
    assert!(
        text.contains("2 vulnerabilities: 2 with a fix, 0 without"),
        "{text}"
    );
    assert!(
        text.contains(
            "upgrade foo 1.0-1 -> 1.0-2 (foo-utils, libfoo1): clears 1 (DSA-9999-1, worst high)"
        ),
        "{text}"
    );
    let quiet = shoal(
        &data_dir,
        &["image", "scan", &image, "--fail-on", "critical"],
    );
    assert_eq!(quiet.status.code(), Some(0), "{quiet:?}");

    let json_report = shoal(&data_dir, &["image", "scan", &image, "--output", "json"]);
    let document: serde_json::Value = serde_json::from_slice(&json_report.stdout).unwrap();
    let findings = document["matches"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["fixed_version"], "1.0-2");
    assert_eq!(document["update_actions"][0]["upgrade_to"], "1.0-2");

    let missing = shoal(&data_dir, &["image", "scan", "nothere:1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "error: image nothere:1 not found"
    );
}
