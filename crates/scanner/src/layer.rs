//! One layer's part in the scan: the package-database and os-release files
//! it holds, and the whiteouts and opaque directories that hide what lower
//! layers hold at those paths. Read from the layer's blob as a tar stream,
//! hashed on the way so a blob that does not match its digest is refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use runtime::digest::{Digest, HashingReader};
use runtime::image::zstd::{ZstdDecoder, is_zstd};
use serde::{Deserialize, Serialize};

/// The files the indexer reads, as paths relative to the root.
pub const OS_RELEASE_PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];
pub const DPKG_STATUS_PATH: &str = "var/lib/dpkg/status";
/// Distroless images keep one status file per package here instead.
pub const DPKG_STATUS_DIR: &str = "var/lib/dpkg/status.d";
pub const APK_INSTALLED_PATH: &str = "lib/apk/db/installed";
/// rpm's SQLite database: RHEL 9 and its rebuilds keep it under
/// `/var/lib/rpm`, Fedora under `/usr/lib/sysimage/rpm`.
pub const RPMDB_PATHS: [&str; 2] = [
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
];

/// A database file larger than this is refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {digest}: cannot read {path}: {source}")]
    Open {
        digest: Digest,
        path: String,
        source: io::Error,
    },
    #[error("layer {digest} is not a valid tar stream: {source}")]
    Tar { digest: Digest, source: io::Error },
    #[error("layer {digest} fails verification: its blob hashes to {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("layer {digest}: {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { digest: Digest, path: String },
}

/// What one layer contributes at the paths the indexer reads. Whiteouts
/// and opaque directories apply to lower layers only, as in the OCI spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFiles {
    /// Path (relative, no leading `/`) to the file's text.
    pub files: BTreeMap<String, String>,
    /// Paths a `.wh.NAME` entry removed (the path and all below it).
    pub whiteouts: Vec<String>,
    /// Directories a `.wh..wh..opq` entry made opaque.
    pub opaque_dirs: Vec<String>,
}

/// Whether the indexer reads the file at `path`.
pub fn is_wanted_file(path: &str) -> bool {
    OS_RELEASE_PATHS.contains(&path)
        || path == DPKG_STATUS_PATH
        || path == APK_INSTALLED_PATH
        || RPMDB_PATHS.contains(&path)
        || path
            .strip_prefix(DPKG_STATUS_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            // distroless keeps each package's `NAME.md5sums` beside it.
            .is_some_and(|name| {
                !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums")
            })
}

/// Whether removing or hiding `path` (and everything below it) can change
/// what the indexer sees.
fn covers_wanted(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let dir_prefix = format!("{path}/");
    is_wanted_file(path)
        || OS_RELEASE_PATHS
            .iter()
            .chain([DPKG_STATUS_PATH, APK_INSTALLED_PATH, DPKG_STATUS_DIR].iter())
            .chain(RPMDB_PATHS.iter())
            .any(|wanted| wanted.starts_with(&dir_prefix) || *wanted == path)
}

/// A tar entry's path as the indexer keys it: no leading `./` or `/`, no
/// trailing `/`.
pub fn normalize(path: &str) -> String {
    let mut path = path;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            break;
        }
    }
    let path = path.trim_end_matches('/');
    if path == "." {
        return String::new();
    }
    path.to_string()
}

/// Reads a layer blob (gzip, zstd or plain tar, told by its first bytes)
/// and checks that the whole blob hashes to `digest`.
pub fn read_layer_blob(blob_path: &Path, digest: &Digest) -> Result<LayerFiles, LayerError> {
    let file = File::open(blob_path).map_err(|source| LayerError::Open {
        digest: digest.clone(),
        path: blob_path.display().to_string(),
        source,
    })?;
    let mut blob = BufReader::with_capacity(1 << 20, HashingReader::new(file));
    let tar_error = |source| LayerError::Tar {
        digest: digest.clone(),
        source,
    };
    let head = blob.fill_buf().map_err(tar_error)?;
    let (files, hashing) = if head.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = GzDecoder::new(blob);
        let files = read_tar(&mut decoder, digest)?;
        drain(&mut decoder).map_err(tar_error)?;
        (files, decoder.into_inner().into_inner())
    } else if is_zstd(head) {
        let mut decoder = ZstdDecoder::new(blob);
        let files = read_tar(&mut decoder, digest)?;
        drain(&mut decoder).map_err(tar_error)?;
        (files, decoder.into_inner().into_inner())
    } else {
        let files = read_tar(&mut blob, digest)?;
        drain(&mut blob).map_err(tar_error)?;
        (files, blob.into_inner())
    };
    let (actual, _) = hashing.finish().map_err(tar_error)?;
    if &actual != digest {
        return Err(LayerError::DigestMismatch {
            digest: digest.clone(),
            actual,
        });
    }
    Ok(files)
}

/// Reads what is left of a stream, so the blob's digest covers all of it.
fn drain(reader: &mut impl Read) -> io::Result<()> {
    io::copy(reader, &mut io::sink()).map(|_| ())
}

/// Collects the wanted files, whiteouts and opaque directories of a tar.
pub fn read_tar(reader: &mut impl Read, digest: &Digest) -> Result<LayerFiles, LayerError> {
    let tar_error = |source| LayerError::Tar {
        digest: digest.clone(),
        source,
    };
    let mut layer = LayerFiles::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let raw_path = entry.path().map_err(tar_error)?;
        let path = normalize(&raw_path.to_string_lossy());
        let (dir, file_name) = match path.rsplit_once('/') {
            Some((dir, name)) => (dir.to_string(), name.to_string()),
            None => (String::new(), path.clone()),
        };
        if file_name == ".wh..wh..opq" {
            if covers_wanted(&dir) {
                layer.opaque_dirs.push(dir);
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let hidden = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            if covers_wanted(&hidden) {
                layer.whiteouts.push(hidden);
            }
            continue;
        }
        if !is_wanted_file(&path) || !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > MAX_FILE_BYTES {
            return Err(LayerError::TooLarge {
                digest: digest.clone(),
                path,
            });
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(tar_error)?;
        let text = if RPMDB_PATHS.contains(&path.as_str()) {
            crate::packages::rpm_listing(&bytes)
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        layer.files.insert(path, text);
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_paths() {
        assert!(is_wanted_file("var/lib/dpkg/status"));
        assert!(is_wanted_file("var/lib/dpkg/status.d/base-files"));
        assert!(!is_wanted_file("var/lib/dpkg/status.d"));
        assert!(!is_wanted_file("var/lib/dpkg/status.d/base-files.md5sums"));
        assert!(!is_wanted_file("var/lib/dpkg/status.d/a/b"));
        assert!(!is_wanted_file("var/lib/dpkg/status-old"));
        assert!(covers_wanted("var"));
        assert!(covers_wanted("var/lib/dpkg"));
        assert!(covers_wanted("var/lib/dpkg/status.d"));
        assert!(!covers_wanted("var/lib/apt"));
        assert!(!covers_wanted("usr/bin"));
        assert_eq!(normalize("./var/lib/dpkg/"), "var/lib/dpkg");
        assert_eq!(normalize("/etc/os-release"), "etc/os-release");
        assert_eq!(normalize("./"), "");
    }
}
