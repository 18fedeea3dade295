//! Shared by the scanner's integration tests: OCI image layouts written from
//! layers the tests make, and root filesystems made from this machine's own
//! dpkg database, so the packages scanned are real Debian packages.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use runtime::digest::Digest;

/// One entry of a layer tar.
pub enum Entry {
    File {
        path: String,
        text: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// `.wh.NAME` in NAME's directory: NAME is deleted.
    Whiteout {
        path: String,
    },
    /// `.wh..wh..opq` in the directory.
    Opaque {
        dir: String,
    },
}

pub fn file(path: &str, text: impl Into<String>) -> Entry {
    Entry::File {
        path: path.to_string(),
        text: text.into(),
    }
}

fn whiteout_path(path: &str, name: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, base)) => format!("{dir}/{name}{base}"),
        None => format!("{name}{path}"),
    }
}

fn new_header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// A gzip-compressed layer tar of `entries` (parent directories added).
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs_made = std::collections::BTreeSet::new();
    let mut add_parents = |builder: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            prefix = if prefix.is_empty() {
                part.to_string()
            } else {
                format!("{prefix}/{part}")
            };
            if dirs_made.insert(prefix.clone()) {
                let mut header = new_header();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{prefix}/"), &[][..])
                    .unwrap();
            }
        }
    };
    for entry in entries {
        let mut header = new_header();
        header.set_mode(0o644);
        match entry {
            Entry::File { path, text } => {
                add_parents(&mut builder, path);
                header.set_size(text.len() as u64);
                builder
                    .append_data(&mut header, path, text.as_bytes())
                    .unwrap();
            }
            Entry::Symlink { path, target } => {
                add_parents(&mut builder, path);
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Entry::Whiteout { path } => {
                add_parents(&mut builder, path);
                header.set_size(0);
                builder
                    .append_data(&mut header, whiteout_path(path, ".wh."), &[][..])
                    .unwrap();
            }
            Entry::Opaque { dir } => {
                let path = format!("{dir}/.wh..wh..opq");
                add_parents(&mut builder, &path);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
        }
    }
    let tar = builder.into_inner().unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar).unwrap();
    encoder.finish().unwrap()
}

fn tar_digest_of_gzip(blob: &[u8]) -> Digest {
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(blob), &mut tar).unwrap();
    Digest::of_bytes(&tar)
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let digest = Digest::of_bytes(bytes);
    fs::write(dir.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    digest
}

/// Writes an OCI image layout of `layers` (gzip blobs, bottom first) at
/// `dir`, tagged `tag`; returns the layers' digests.
pub fn write_oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> Vec<Digest> {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let digests: Vec<Digest> = layers.iter().map(|blob| put_blob(dir, blob)).collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|blob| tar_digest_of_gzip(blob).to_string())
        .collect();
    let config = serde_json::json!({
        "architecture": runtime::image::oci::host_architecture(),
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(dir, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().zip(&digests).map(|(blob, digest)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest.to_string(),
            "size": blob.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put_blob(dir, &manifest_bytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    digests
}

/// This machine's dpkg database as paragraphs (one per package).
pub fn host_status_paragraphs() -> Vec<String> {
    let text = fs::read_to_string("/var/lib/dpkg/status")
        .expect("the scanner's tests read this machine's /var/lib/dpkg/status (a Debian system)");
    text.split("\n\n")
        .map(|paragraph| paragraph.trim_matches('\n'))
        .filter(|paragraph| !paragraph.is_empty())
        .map(|paragraph| format!("{paragraph}\n"))
        .collect()
}

pub fn field<'a>(paragraph: &'a str, name: &str) -> Option<&'a str> {
    paragraph
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

/// Joins paragraphs into a status file.
pub fn status_file(paragraphs: &[String]) -> String {
    paragraphs.join("\n")
}

/// What `dpkg-query` lists for a database: name, architecture, version,
/// source name, source version, sorted.
pub fn dpkg_query(status_text: &str) -> Vec<(String, String, String, String, String)> {
    let admin_dir = tempfile::tempdir().unwrap();
    fs::write(admin_dir.path().join("status"), status_text).unwrap();
    fs::create_dir_all(admin_dir.path().join("info")).unwrap();
    fs::create_dir_all(admin_dir.path().join("updates")).unwrap();
    let output = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admin_dir.path().display()))
        .args([
            "-W",
            "-f=${Package}\t${Architecture}\t${Version}\t${source:Package}\t${source:Version}\n",
        ])
        .output()
        .expect("dpkg-query runs");
    assert!(
        output.status.success(),
        "dpkg-query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rows: Vec<_> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            (
                columns[0].to_string(),
                columns[1].to_string(),
                columns[2].to_string(),
                columns[3].to_string(),
                columns[4].to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}
