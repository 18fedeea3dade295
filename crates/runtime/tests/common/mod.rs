//! Shared by the runtime's integration tests: builds busybox images (an OCI
//! layout and a docker archive) from Debian's `busybox-static`, and runs the
//! `shoal-runtime` driver against a throwaway data directory.

#![allow(dead_code)]

pub mod pods;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "ls", "ps", "hostname", "id", "sleep", "env", "pwd",
    "ip", "kill", "head", "tr", "date", "test", "[", "wc", "grep", "touch", "mkdir", "rm",
    "timeout", "stat", "readlink", "nc", "wget", "httpd",
];

/// Fails the test with a pointer to the setup script when the machine lacks
/// what the container tests need (root and busybox-static).
pub fn require_container_support() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the runtime's container tests run as root (namespaces, mounts, cgroups)"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: run crates/runtime/install-deps.sh (Debian's busybox-static)"
    );
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One file in a layer.
pub enum Entry {
    File {
        path: String,
        bytes: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// A tar of `entries`, as a layer blob.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::File { path, bytes, mode } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, path, &bytes[..]).unwrap();
            }
            Entry::Dir { path } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The base layer: busybox, its applets, and minimal /etc files.
pub fn busybox_entries() -> Vec<Entry> {
    let mut entries = vec![
        Entry::Dir { path: "bin".into() },
        Entry::File {
            path: "bin/busybox".into(),
            bytes: fs::read(BUSYBOX).unwrap(),
            mode: 0o755,
        },
    ];
    for applet in APPLETS {
        entries.push(Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    entries.push(Entry::Dir { path: "etc".into() });
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        bytes:
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        mode: 0o644,
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        bytes: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        mode: 0o644,
    });
    entries.push(Entry::Dir { path: "tmp".into() });
    entries
}

fn image_config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin", "GREETING=hello from the image"],
            "Cmd": ["/bin/sh", "-c", "echo default command"],
            "WorkingDir": "/tmp",
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids.iter().map(|hex| format!("sha256:{hex}")).collect::<Vec<_>>() },
    }))
    .unwrap()
}

/// `bytes` compressed by Debian's `zstd` command (which writes content
/// checksums), as `n_frames` frames: the input cut in that many pieces,
/// each compressed on its own, concatenated (a valid zstd stream, as
/// `pzstd` writes).
pub fn zstd(bytes: &[u8], n_frames: usize) -> Vec<u8> {
    let piece_len = bytes.len().div_ceil(n_frames.max(1)).max(1);
    let mut stream = Vec::new();
    for piece in bytes.chunks(piece_len) {
        let mut child = Command::new("zstd")
            .args(["-q", "-c", "-3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run zstd: run crates/runtime/install-deps.sh (Debian's zstd)");
        let mut stdin = child.stdin.take().unwrap();
        let piece = piece.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&piece).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(output.status.success(), "zstd failed");
        stream.extend(output.stdout);
    }
    stream
}

/// How a layer is stored in a layout.
#[derive(Clone)]
pub enum Compression {
    Gzip,
    /// zstd, in this many frames.
    Zstd(usize),
    /// These bytes, whatever the tar is, as a zstd layer (for corrupt ones).
    ZstdBlob(Vec<u8>),
}

/// Writes an OCI image layout at `dir` holding one image tagged `tag`, made
/// of `layers` (uncompressed tars; gzip-compressed in the layout).
pub fn write_oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> String {
    let layers: Vec<(Vec<u8>, Compression)> = layers
        .iter()
        .map(|layer| (layer.clone(), Compression::Gzip))
        .collect();
    write_oci_layout_compressed(dir, tag, &layers, None)
}

/// Like [`write_oci_layout`], each layer compressed its own way; with
/// `diff_ids`, the config claims those instead of the layers' own.
pub fn write_oci_layout_compressed(
    dir: &Path,
    tag: &str,
    layers: &[(Vec<u8>, Compression)],
    diff_ids: Option<Vec<String>>,
) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        hex
    };
    let diff_ids: Vec<String> =
        diff_ids.unwrap_or_else(|| layers.iter().map(|(layer, _)| sha256_hex(layer)).collect());
    let mut layer_descriptors = Vec::new();
    for (layer, compression) in layers {
        let (compressed, media_type) = match compression {
            Compression::Gzip => (gzip(layer), "application/vnd.oci.image.layer.v1.tar+gzip"),
            Compression::Zstd(n_frames) => (
                zstd(layer, *n_frames),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            Compression::ZstdBlob(blob) => {
                (blob.clone(), "application/vnd.oci.image.layer.v1.tar+zstd")
            }
        };
        let hex = put(&compressed);
        layer_descriptors.push(serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{hex}"),
            "size": compressed.len(),
        }));
    }
    let config = image_config(&diff_ids);
    let config_hex = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_hex}"), "size": config.len() },
        "layers": layer_descriptors,
    }))
    .unwrap();
    let manifest_hex = put(&manifest);
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_hex}"),
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    manifest_hex
}

/// Writes a docker archive (as `docker save` does: uncompressed layers named
/// by path, a `manifest.json`) holding one image tagged `repo_tag`.
pub fn write_docker_archive(path: &Path, repo_tag: &str, layers: &[Vec<u8>]) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        builder.append_data(&mut header, name, bytes).unwrap();
    };
    let diff_ids: Vec<String> = layers.iter().map(|layer| sha256_hex(layer)).collect();
    let config = image_config(&diff_ids);
    let config_name = format!("{}.json", sha256_hex(&config));
    append(&config_name, &config);
    let mut layer_names = Vec::new();
    for (layer, hex) in layers.iter().zip(&diff_ids) {
        let name = format!("{hex}/layer.tar");
        append(&name, layer);
        layer_names.push(name);
    }
    let manifest = serde_json::to_vec(&serde_json::json!([{ "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names }])).unwrap();
    append("manifest.json", &manifest);
    fs::write(path, builder.into_inner().unwrap()).unwrap();
}

/// A throwaway data directory and the driver binary to run against it.
pub struct Shoal {
    pub data_dir: tempfile::TempDir,
}

impl Drop for Shoal {
    /// A test that fails half-way must not leave containers running (they
    /// would hold the test runner's output open): remove them all.
    fn drop(&mut self) {
        let Ok(output) = self.command(&["ps", "--output", "json"]).output() else {
            return;
        };
        let Ok(rows) = serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout) else {
            return;
        };
        for row in rows {
            if let Some(id) = row["id"].as_str() {
                let _ = self.command(&["rm", "--force", id]).output();
            }
        }
    }
}

impl Shoal {
    pub fn new() -> Shoal {
        Shoal {
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal-runtime"));
        command
            .args(args)
            .env("SHOAL_DATA_DIR", self.data_dir.path())
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "shoal-runtime {args:?} failed ({:?}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and expects failure with `code`; returns stderr, which must be
    /// one line.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            output.status.code(),
            Some(code),
            "shoal-runtime {args:?}: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "expected a one-line error, got: {stderr}"
        );
        stderr
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.data_dir.path().join("runtime")
    }

    /// Imports a one-layer busybox image as `name`.
    pub fn import_busybox(&self, name: &str) -> String {
        let layout = self
            .data_dir
            .path()
            .join(format!("layout-{}", name.replace(['/', ':'], "-")));
        let manifest_hex = write_oci_layout(&layout, "latest", &[layer_tar(&busybox_entries())]);
        self.ok(&[
            "image",
            "import",
            &format!("oci:{}:latest", layout.display()),
            "--name",
            name,
        ]);
        manifest_hex
    }
}
