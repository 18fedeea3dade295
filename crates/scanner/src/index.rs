//! The indexer: an image's layers merged in order into the packages the
//! image holds, each with the layer that introduced it. Each layer is read
//! once and its part cached by digest under `DATA_DIR/scanner/layers/`, so a
//! layer shared by many images is read once.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use runtime::digest::Digest;
use runtime::image::import::{self, Source};
use runtime::image::store::{Store, write_atomically};
use serde::{Deserialize, Serialize};

use crate::layer::{
    self, APK_INSTALLED_PATH, DPKG_STATUS_DIR, DPKG_STATUS_PATH, LayerFiles, OS_RELEASE_PATHS,
    RPMDB_PATHS,
};
use crate::packages::{self, InstalledPackage, OsRelease};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The content store could not give the image (not found, corrupt
    /// manifest or config): the runtime's own message.
    #[error("{0:#}")]
    Store(anyhow::Error),
    #[error("cannot import {source_text}: {error:#}")]
    Import {
        source_text: String,
        error: anyhow::Error,
    },
    #[error("cannot create a temporary store: {0}")]
    TempDir(std::io::Error),
}

/// An installed package and the layer that introduced it: the lowest layer
/// from which the package has been in the database at this version without
/// a break, so a layer that only rewrites the database (installing
/// something else) does not take the credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    #[serde(flatten)]
    pub installed: InstalledPackage,
    pub layer: Digest,
}

/// What the indexer found in an image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageIndex {
    /// The image as the user named it.
    pub image: String,
    pub manifest_digest: Digest,
    pub layers: Vec<Digest>,
    pub os: Option<OsRelease>,
    /// Sorted by name, then architecture.
    pub packages: Vec<Package>,
    /// What could not be indexed (a corrupt database, an unreadable layer),
    /// one line each naming the file or layer.
    pub warnings: Vec<String>,
}

/// Per-layer results on disk, keyed by the layer blob's digest.
pub struct LayerCache {
    dir: Option<PathBuf>,
}

/// Bumped when `LayerFiles` changes meaning, so old entries are re-read.
const CACHE_FORMAT: u32 = 3;

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    format: u32,
    layer: LayerFiles,
}

impl LayerCache {
    /// The cache under `DATA_DIR/scanner/layers`.
    pub fn open(data_dir: &Path) -> LayerCache {
        LayerCache {
            dir: Some(data_dir.join("scanner").join("layers")),
        }
    }

    /// No cache: every layer is read.
    pub fn disabled() -> LayerCache {
        LayerCache { dir: None }
    }

    fn entry_path(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{}.json", digest.hex())))
    }

    fn get(&self, digest: &Digest) -> Option<LayerFiles> {
        let bytes = fs::read(self.entry_path(digest)?).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        (entry.format == CACHE_FORMAT).then_some(entry.layer)
    }

    /// Best effort: a cache that cannot be written costs time, not results.
    fn put(&self, digest: &Digest, layer: &LayerFiles) {
        let (Some(dir), Some(path)) = (&self.dir, self.entry_path(digest)) else {
            return;
        };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let entry = CacheEntry {
            format: CACHE_FORMAT,
            layer: layer.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&entry) {
            let _ = write_atomically(&path, &bytes);
        }
    }
}

/// Indexes an image in the content store, named as `image import` and
/// `run` take it (NAME[:TAG], a digest or a digest prefix).
pub fn index_stored_image(
    store: &Store,
    image: &str,
    cache: &LayerCache,
) -> Result<ImageIndex, IndexError> {
    let manifest_digest = store.resolve(image).map_err(IndexError::Store)?;
    let loaded = store.load(&manifest_digest).map_err(IndexError::Store)?;
    let mut warnings = Vec::new();
    let mut layers = Vec::new();
    for descriptor in &loaded.manifest.layers {
        let digest = &descriptor.digest;
        let files = match cache.get(digest) {
            Some(files) => files,
            None => match layer::read_layer_blob(&store.blob_path(digest), digest) {
                Ok(files) => {
                    cache.put(digest, &files);
                    files
                }
                Err(error) => {
                    warnings.push(format!("{error}; the scan does not include this layer"));
                    LayerFiles::default()
                }
            },
        };
        layers.push((digest.clone(), files));
    }
    let merged = merge_layers(&layers);
    warnings.extend(merged.warnings);
    Ok(ImageIndex {
        image: image.to_string(),
        manifest_digest,
        layers: layers.into_iter().map(|(digest, _)| digest).collect(),
        os: merged.os,
        packages: merged.packages,
        warnings,
    })
}

/// Indexes an image given as `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
/// `docker-archive:FILE`: it is imported, verified blob by blob as
/// `image import` does, into a store of its own that is removed after.
pub fn index_image_source(
    source_text: &str,
    source: &Source,
    cache: &LayerCache,
) -> Result<ImageIndex, IndexError> {
    let temp_dir = tempfile::Builder::new()
        .prefix("shoal-scan-")
        .tempdir()
        .map_err(IndexError::TempDir)?;
    let store = Store::open(temp_dir.path()).map_err(IndexError::Store)?;
    let (_, digest) = import::import(&store, source, None).map_err(|error| IndexError::Import {
        source_text: source_text.to_string(),
        error,
    })?;
    let mut index = index_stored_image(&store, &digest.to_string(), cache)?;
    index.image = source_text.to_string();
    Ok(index)
}

/// What the merged layers hold.
pub struct Merged {
    pub os: Option<OsRelease>,
    pub packages: Vec<Package>,
    pub warnings: Vec<String>,
}

fn is_package_database(path: &str) -> bool {
    path == DPKG_STATUS_PATH
        || path == APK_INSTALLED_PATH
        || RPMDB_PATHS.contains(&path)
        || path.starts_with(&format!("{DPKG_STATUS_DIR}/"))
}

fn is_hidden_by(path: &str, removed: &str) -> bool {
    removed.is_empty()
        || path == removed
        || path
            .strip_prefix(removed)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Merges layers bottom to top: a layer's opaque directories and whiteouts
/// hide what lower layers hold below them, then its own files replace
/// lower ones at the same path.
pub fn merge_layers(layers: &[(Digest, LayerFiles)]) -> Merged {
    // path -> index of the layer whose file is visible there.
    let mut visible: BTreeMap<String, usize> = BTreeMap::new();
    // (kind, name, architecture) -> (version, index of the introducing layer).
    type Key = (packages::PackageKind, String, String);
    let mut introduced: HashMap<Key, (String, usize)> = HashMap::new();
    let mut current: Vec<InstalledPackage> = Vec::new();
    let mut warnings = Vec::new();
    for (layer_idx, (_, files)) in layers.iter().enumerate() {
        let mut database_changed = false;
        for removed in files.opaque_dirs.iter().chain(&files.whiteouts) {
            visible.retain(|path, _| {
                let hidden = is_hidden_by(path, removed);
                database_changed |= hidden && is_package_database(path);
                !hidden
            });
        }
        for path in files.files.keys() {
            database_changed |= is_package_database(path);
            visible.insert(path.clone(), layer_idx);
        }
        if !database_changed {
            continue;
        }
        warnings.retain(|warning: &String| !warning.starts_with("database "));
        current.clear();
        for (path, &owner_idx) in &visible {
            let (digest, owner) = &layers[owner_idx];
            let text = &owner.files[path];
            let parsed = if path == APK_INSTALLED_PATH {
                packages::parse_apk_installed(text, &format!("/{path}"))
            } else if RPMDB_PATHS.contains(&path.as_str()) {
                packages::parse_rpm_listing(text, &format!("/{path}"))
            } else if is_package_database(path) {
                packages::parse_dpkg_status(text, &format!("/{path}"))
            } else {
                continue;
            };
            match parsed {
                Ok(found) => current.extend(found),
                Err(error) => warnings.push(format!(
                    "database {error} (layer {digest}): its packages are not listed"
                )),
            }
        }
        let mut still_there: HashMap<Key, (String, usize)> = HashMap::new();
        for package in &current {
            let key = (
                package.kind,
                package.name.clone(),
                package.architecture.clone(),
            );
            let since = match introduced.get(&key) {
                Some((version, since)) if *version == package.version => *since,
                _ => layer_idx,
            };
            still_there.insert(key, (package.version.clone(), since));
        }
        introduced = still_there;
    }
    let os = OS_RELEASE_PATHS.iter().find_map(|path| {
        let owner_idx = visible.get(*path)?;
        Some(packages::parse_os_release(
            &layers[*owner_idx].1.files[*path],
        ))
    });
    let mut packages: Vec<Package> = current
        .into_iter()
        .map(|installed| {
            let key = (
                installed.kind,
                installed.name.clone(),
                installed.architecture.clone(),
            );
            let layer_idx = introduced.get(&key).map_or(0, |(_, since)| *since);
            Package {
                installed,
                layer: layers[layer_idx].0.clone(),
            }
        })
        .collect();
    packages.sort_by(|a, b| {
        (
            &a.installed.name,
            &a.installed.architecture,
            a.installed.kind,
        )
            .cmp(&(
                &b.installed.name,
                &b.installed.architecture,
                b.installed.kind,
            ))
    });
    Merged {
        os,
        packages,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    fn status(entries: &[(&str, &str)]) -> String {
        entries
            .iter()
            .map(|(name, version)| {
                format!("Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n")
            })
            .collect()
    }

    fn layer(files: &[(&str, String)], whiteouts: &[&str], opaque: &[&str]) -> LayerFiles {
        LayerFiles {
            files: files
                .iter()
                .map(|(path, text)| (path.to_string(), text.clone()))
                .collect(),
            whiteouts: whiteouts.iter().map(|s| s.to_string()).collect(),
            opaque_dirs: opaque.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn listing(merged: &Merged) -> Vec<(String, String, Digest)> {
        merged
            .packages
            .iter()
            .map(|p| {
                (
                    p.installed.name.clone(),
                    p.installed.version.clone(),
                    p.layer.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_rewritten_database_keeps_each_package_s_introducing_layer() {
        let layers = vec![
            (
                digest(1),
                layer(
                    &[
                        ("etc/os-release", "ID=debian\nVERSION_ID=12\n".to_string()),
                        (DPKG_STATUS_PATH, status(&[("a", "1"), ("b", "1")])),
                    ],
                    &[],
                    &[],
                ),
            ),
            (digest(2), layer(&[], &[], &[])),
            (
                digest(3),
                layer(
                    &[(
                        DPKG_STATUS_PATH,
                        status(&[("a", "1"), ("b", "2"), ("c", "1")]),
                    )],
                    &[],
                    &[],
                ),
            ),
        ];
        let merged = merge_layers(&layers);
        assert_eq!(
            listing(&merged),
            vec![
                ("a".into(), "1".into(), digest(1)),
                ("b".into(), "2".into(), digest(3)),
                ("c".into(), "1".into(), digest(3)),
            ]
        );
        assert_eq!(merged.os.unwrap().id, "debian");
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_databases() {
        let status_d = |name: &str| format!("{DPKG_STATUS_DIR}/{name}");
        let layers = vec![
            (
                digest(1),
                layer(
                    &[
                        (&status_d("x"), status(&[("x", "1")])),
                        (&status_d("y"), status(&[("y", "1")])),
                        (&status_d("z"), status(&[("z", "1")])),
                    ],
                    &[],
                    &[],
                ),
            ),
            (digest(2), layer(&[], &[&status_d("y")], &[])),
        ];
        let merged = merge_layers(&layers);
        assert_eq!(
            listing(&merged),
            vec![
                ("x".into(), "1".into(), digest(1)),
                ("z".into(), "1".into(), digest(1)),
            ]
        );
        let mut opaque = layers.clone();
        opaque.push((
            digest(3),
            layer(
                &[(&status_d("w"), status(&[("w", "5")]))],
                &[],
                &[DPKG_STATUS_DIR],
            ),
        ));
        assert_eq!(
            listing(&merge_layers(&opaque)),
            vec![("w".into(), "5".into(), digest(3))]
        );
        let mut whole_dir = layers;
        whole_dir.push((digest(4), layer(&[], &["var/lib"], &[])));
        assert!(merge_layers(&whole_dir).packages.is_empty());
    }

    #[test]
    fn a_corrupt_database_is_a_warning_and_the_rest_is_listed() {
        let layers = vec![(
            digest(1),
            layer(
                &[
                    (DPKG_STATUS_PATH, "Package: a\nno colon here\n".to_string()),
                    (&format!("{DPKG_STATUS_DIR}/b"), status(&[("b", "1")])),
                ],
                &[],
                &[],
            ),
        )];
        let merged = merge_layers(&layers);
        assert_eq!(listing(&merged), vec![("b".into(), "1".into(), digest(1))]);
        assert_eq!(merged.warnings.len(), 1);
        assert!(
            merged.warnings[0].contains("/var/lib/dpkg/status:2"),
            "{}",
            merged.warnings[0]
        );
    }
}
