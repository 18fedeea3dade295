//! `image import`: brings an image into the content store from skopeo's
//! transports `oci:DIR[:TAG]` (an OCI image layout), `oci-archive:FILE[:TAG]`
//! (the same, as a tar) and `docker-archive:FILE` (what `docker save` writes).
//! Every blob is verified against its digest on the way in, layers are
//! unpacked once, and only then is the image's name recorded, so an
//! interrupted or failed import leaves no image behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::digest::{Digest, HashingReader};
use crate::image::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::image::reference::{DEFAULT_TAG, ImageRef};
use crate::image::store::{Store, remove_tree};

/// Where an image comes from, parsed from skopeo's `TRANSPORT:DETAILS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    OciLayout { dir: PathBuf, tag: Option<String> },
    OciArchive { file: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf },
}

impl Source {
    pub fn parse(text: &str) -> anyhow::Result<Source> {
        let Some((transport, details)) = text.split_once(':') else {
            bail!(
                "invalid image source {text:?}: expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE"
            );
        };
        if details.is_empty() {
            bail!("invalid image source {text:?}: the path is missing");
        }
        let split_tag = |details: &str| match details.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') && !path.is_empty() => {
                (PathBuf::from(path), Some(tag.to_string()))
            }
            _ => (PathBuf::from(details), None),
        };
        match transport {
            "oci" => {
                let (dir, tag) = split_tag(details);
                Ok(Source::OciLayout { dir, tag })
            }
            "oci-archive" => {
                let (file, tag) = split_tag(details);
                Ok(Source::OciArchive { file, tag })
            }
            // skopeo allows `docker-archive:FILE:REF`; the reference picks a
            // name, which `--name` does here.
            "docker-archive" => Ok(Source::DockerArchive {
                file: PathBuf::from(details.split(':').next().unwrap_or(details)),
            }),
            other => bail!(
                "unsupported image source transport {other:?}: use oci:, oci-archive: or docker-archive:"
            ),
        }
    }
}

/// Imports an image and names it; returns its name and manifest digest.
pub fn import(
    store: &Store,
    source: &Source,
    name: Option<&ImageRef>,
) -> anyhow::Result<(ImageRef, Digest)> {
    let _sweep_guard = store.sweep_guard(false)?;
    match source {
        Source::OciLayout { dir, tag } => import_oci_layout(store, dir, tag.as_deref(), name),
        Source::OciArchive { file, tag } => {
            let temp_dir = store.temp_path("oci-archive");
            let result = (|| {
                fs::create_dir(&temp_dir)?;
                let archive =
                    File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
                tar::Archive::new(BufReader::new(archive))
                    .unpack(&temp_dir)
                    .with_context(|| format!("{} is not a valid oci-archive", file.display()))?;
                let default_name = name
                    .cloned()
                    .or_else(|| default_name_for(file, tag.as_deref()));
                import_oci_layout(store, &temp_dir, tag.as_deref(), default_name.as_ref())
            })();
            remove_tree(&temp_dir);
            result
        }
        Source::DockerArchive { file } => import_docker_archive(store, file, name),
    }
}

/// The name an image gets when the user gave none: a full reference in the
/// layout's tag is used as is; otherwise the file or directory's name.
fn default_name_for(path: &Path, tag: Option<&str>) -> Option<ImageRef> {
    if let Some(tag) = tag
        && (tag.contains('/') || tag.contains(':'))
        && let Ok(reference) = ImageRef::parse(tag)
    {
        return Some(reference);
    }
    let stem = path.file_stem()?.to_str()?.to_ascii_lowercase();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    ImageRef::parse(&format!(
        "{}:{}",
        stem.trim_matches(|c: char| !c.is_ascii_alphanumeric()),
        tag.unwrap_or(DEFAULT_TAG)
    ))
    .ok()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))
}

fn import_oci_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    name: Option<&ImageRef>,
) -> anyhow::Result<(ImageRef, Digest)> {
    if !dir.join("oci-layout").is_file() {
        bail!(
            "{} is not an OCI image layout (no oci-layout file)",
            dir.display()
        );
    }
    let index: Index = read_json(&dir.join("index.json"))?;
    let candidates: Vec<&Descriptor> = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .filter(|descriptor| {
                descriptor
                    .annotations
                    .get(oci::ANNOTATION_REF_NAME)
                    .is_some_and(|name| name == tag)
            })
            .collect(),
        None => index.manifests.iter().collect(),
    };
    let descriptor = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => match tag {
            Some(tag) => bail!("{} has no image tagged {tag:?}", dir.display()),
            None => bail!("{} holds no image", dir.display()),
        },
        many => bail!(
            "{} holds {} images: pick one with oci:{}:TAG",
            dir.display(),
            many.len(),
            dir.display()
        ),
    };
    let blob_path = |digest: &Digest| dir.join("blobs/sha256").join(digest.hex());
    let descriptor = resolve_platform(&descriptor, &blob_path)?;
    let ref_name_tag = descriptor
        .annotations
        .get(oci::ANNOTATION_REF_NAME)
        .cloned();
    let reference = match name {
        Some(name) => name.clone(),
        None => default_name_for(dir, tag.or(ref_name_tag.as_deref())).with_context(|| {
            format!(
                "cannot make an image name from {}: give one with --name",
                dir.display()
            )
        })?,
    };
    let open_blob = |descriptor: &Descriptor| -> anyhow::Result<Box<dyn Read>> {
        let path = blob_path(&descriptor.digest);
        let file = File::open(&path).with_context(|| {
            format!(
                "blob {} is missing from {}",
                descriptor.digest,
                dir.display()
            )
        })?;
        Ok(Box::new(BufReader::new(file)))
    };
    store_image(store, &descriptor, &reference, open_blob)
}

/// Follows an index entry that is itself an index (a multi-platform image)
/// to the manifest for this machine.
fn resolve_platform(
    descriptor: &Descriptor,
    blob_path: &dyn Fn(&Digest) -> PathBuf,
) -> anyhow::Result<Descriptor> {
    let mut descriptor = descriptor.clone();
    // Bounded: an index of indexes deeper than this is not a real image.
    for _ in 0..4 {
        if !Index::is_index_media_type(&descriptor.media_type) {
            return Ok(descriptor);
        }
        let index: Index = read_json(&blob_path(&descriptor.digest))?;
        descriptor = index.manifest_for_host().cloned().with_context(|| {
            format!(
                "image index {} has no linux/{} image",
                descriptor.digest,
                oci::host_architecture()
            )
        })?;
    }
    bail!("image index {} is nested too deeply", descriptor.digest)
}

/// The largest manifest or image config shoal reads into memory (registries
/// refuse manifests over 4 MiB; configs are a few KiB).
pub(crate) const MAX_JSON_BYTES: u64 = 8 << 20;

/// Brings a manifest, its config and layers into the store and names the
/// image. Every blob is first staged in `tmp/`, checked against its digest
/// and size as it streams in; only when all are verified are they renamed
/// into place, so a corrupt or tampered blob leaves nothing in the store.
/// Then the layers are unpacked (checking their diff ids) and the name is
/// recorded last. Blobs already in the store are not read again.
pub(crate) fn store_image(
    store: &Store,
    manifest_descriptor: &Descriptor,
    reference: &ImageRef,
    open_blob: impl Fn(&Descriptor) -> anyhow::Result<Box<dyn Read>>,
) -> anyhow::Result<(ImageRef, Digest)> {
    let mut manifest_bytes = Vec::new();
    open_blob(manifest_descriptor)?
        .take(MAX_JSON_BYTES)
        .read_to_end(&mut manifest_bytes)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).with_context(|| {
        format!(
            "manifest {} is not a valid image manifest",
            manifest_descriptor.digest
        )
    })?;
    let mut staged = vec![store.stage_blob(&manifest_bytes[..], manifest_descriptor)?];
    oci::check_media_types(&manifest)?;
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        store.read_blob(&manifest.config.digest)?
    } else {
        let mut bytes = Vec::new();
        open_blob(&manifest.config)?
            .take(MAX_JSON_BYTES)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read config {}", manifest.config.digest))?;
        staged.push(store.stage_blob(&bytes[..], &manifest.config)?);
        bytes
    };
    let config: ImageConfig = serde_json::from_slice(&config_bytes).with_context(|| {
        format!(
            "config {} is not a valid image config",
            manifest.config.digest
        )
    })?;
    check_platform(&config)?;
    if !config.rootfs.diff_ids.is_empty() && config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "config {} lists {} layers but manifest {} has {}",
            manifest.config.digest,
            config.rootfs.diff_ids.len(),
            manifest_descriptor.digest,
            manifest.layers.len()
        );
    }
    for layer in &manifest.layers {
        if !store.has_blob(&layer.digest) {
            staged.push(store.stage_blob(open_blob(layer)?, layer)?);
        }
    }
    for blob in staged {
        blob.commit()?;
    }
    for (layer_idx, layer) in manifest.layers.iter().enumerate() {
        store.unpack_layer(layer, config.rootfs.diff_ids.get(layer_idx))?;
    }
    let _lock = store.lock()?;
    store.tag(reference, &manifest_descriptor.digest)?;
    Ok((reference.clone(), manifest_descriptor.digest.clone()))
}

fn check_platform(config: &ImageConfig) -> anyhow::Result<()> {
    let here = oci::host_architecture();
    if (!config.os.is_empty() && config.os != "linux")
        || (!config.architecture.is_empty() && config.architecture != here)
    {
        bail!(
            "image is for {}/{}, not linux/{here}",
            config.os,
            config.architecture
        );
    }
    Ok(())
}

/// Docker Hub names as docker shows them: `docker.io/library/busybox` is
/// `busybox`, `docker.io/umoci/busybox` is `umoci/busybox`.
fn short_docker_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// One image in a docker archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker_archive(
    store: &Store,
    file: &Path,
    name: Option<&ImageRef>,
) -> anyhow::Result<(ImageRef, Digest)> {
    // A docker archive names its files by path, not digest, and the
    // manifest may come after the layers, so it is unpacked first.
    let temp_dir = store.temp_path("docker-archive");
    let result = (|| {
        fs::create_dir(&temp_dir)?;
        let archive =
            File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        tar::Archive::new(BufReader::new(archive))
            .unpack(&temp_dir)
            .with_context(|| format!("{} is not a valid docker-archive", file.display()))?;
        let entries: Vec<DockerArchiveEntry> = read_json(&temp_dir.join("manifest.json"))
            .with_context(|| format!("{} is not a valid docker-archive", file.display()))?;
        let entry = match entries.as_slice() {
            [one] => one,
            [] => bail!("{} holds no image", file.display()),
            many => bail!(
                "{} holds {} images; shoal imports archives of one image",
                file.display(),
                many.len()
            ),
        };
        let reference = match name {
            Some(name) => name.clone(),
            None => match entry.repo_tags.as_ref().and_then(|tags| tags.first()) {
                Some(tag) => ImageRef::parse(short_docker_name(tag))?,
                None => default_name_for(file, None).with_context(|| {
                    format!(
                        "cannot make an image name from {}: give one with --name",
                        file.display()
                    )
                })?,
            },
        };
        let inside = |relative: &str| -> anyhow::Result<PathBuf> {
            let path = Path::new(relative);
            if path.is_absolute()
                || path
                    .components()
                    .any(|component| matches!(component, std::path::Component::ParentDir))
            {
                bail!(
                    "{} names a file outside the archive: {relative}",
                    file.display()
                );
            }
            Ok(temp_dir.join(path))
        };
        let describe = |path: &Path, media_type: &str| -> anyhow::Result<Descriptor> {
            let reader = File::open(path)
                .with_context(|| format!("{} is missing from the archive", path.display()))?;
            let (digest, size) = HashingReader::new(reader).finish()?;
            Ok(Descriptor {
                media_type: media_type.to_string(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            })
        };
        let config_path = inside(&entry.config)?;
        let config = describe(&config_path, oci::MEDIA_TYPE_OCI_CONFIG)?;
        let mut layers = Vec::new();
        let mut layer_paths = BTreeMap::new();
        for layer in &entry.layers {
            let path = inside(layer)?;
            let mut magic = [0u8; 4];
            let has_magic = File::open(&path)
                .and_then(|mut file| file.read_exact(&mut magic))
                .is_ok();
            let media_type = if has_magic && magic.starts_with(&[0x1f, 0x8b]) {
                oci::MEDIA_TYPE_OCI_LAYER_GZIP
            } else if has_magic && crate::image::zstd::is_zstd(&magic) {
                oci::MEDIA_TYPE_OCI_LAYER_ZSTD
            } else {
                oci::MEDIA_TYPE_OCI_LAYER
            };
            let descriptor = describe(&path, media_type)?;
            layer_paths.insert(descriptor.digest.clone(), path);
            layers.push(descriptor);
        }
        // The manifest docker does not ship is made here, deterministically,
        // so the same archive always gets the same digest.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_OCI_MANIFEST.to_string()),
            config: config.clone(),
            layers,
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_descriptor = Descriptor {
            media_type: oci::MEDIA_TYPE_OCI_MANIFEST.to_string(),
            digest: Digest::of_bytes(&manifest_bytes),
            size: manifest_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let open_blob = |descriptor: &Descriptor| -> anyhow::Result<Box<dyn Read>> {
            if descriptor.digest == manifest_descriptor.digest {
                return Ok(Box::new(std::io::Cursor::new(manifest_bytes.clone())));
            }
            let path = if descriptor.digest == config.digest {
                &config_path
            } else {
                &layer_paths[&descriptor.digest]
            };
            Ok(Box::new(BufReader::new(File::open(path)?)))
        };
        store_image(store, &manifest_descriptor, &reference, open_blob)
    })();
    remove_tree(&temp_dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_skopeo_syntax() {
        assert_eq!(
            Source::parse("oci:/tmp/layout:1.0").unwrap(),
            Source::OciLayout {
                dir: "/tmp/layout".into(),
                tag: Some("1.0".into())
            }
        );
        assert_eq!(
            Source::parse("oci:layout").unwrap(),
            Source::OciLayout {
                dir: "layout".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/tmp/a.tar").unwrap(),
            Source::DockerArchive {
                file: "/tmp/a.tar".into()
            }
        );
        assert!(Source::parse("docker://busybox").is_err());
        assert!(Source::parse("busybox").is_err());
        assert!(Source::parse("oci:").is_err());
    }
}
