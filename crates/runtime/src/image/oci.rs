//! The parts of the OCI image format (and docker's v2 schema, which has the
//! same shape) that shoal reads: index, manifest, descriptor and image config.
//! Unknown fields are ignored; blobs are stored byte for byte as imported, so
//! their digests never change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The annotation an OCI layout's index uses to name (tag) a manifest.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// Whether a descriptor in an index points at a nested index (a
    /// multi-platform image) rather than at a manifest.
    pub fn is_index_media_type(media_type: &str) -> bool {
        media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST
    }

    /// The entry for this machine's platform (linux and [`host_architecture`]).
    pub fn manifest_for_host(&self) -> Option<&Descriptor> {
        let here = host_architecture();
        self.manifests.iter().find(|candidate| {
            candidate
                .platform
                .as_ref()
                .is_some_and(|platform| platform.os == "linux" && platform.architecture == here)
        })
    }
}

/// Whether a manifest's own media type is one shoal reads as an image
/// manifest (OCI's, or docker's v2 schema 2, which has the same shape).
pub fn is_manifest_media_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}

/// Checks that a manifest describes a container image shoal can run: a
/// config it reads and layers it can unpack. Docker's v2 media types are the
/// same formats under other names and are kept as they are, so a manifest's
/// digest is the one its registry or layout gave it.
pub fn check_media_types(manifest: &Manifest) -> anyhow::Result<()> {
    let config_type = manifest.config.media_type.as_str();
    if config_type != MEDIA_TYPE_OCI_CONFIG && config_type != MEDIA_TYPE_DOCKER_CONFIG {
        anyhow::bail!(
            "unsupported media type {config_type:?} for the image config: not a container image"
        );
    }
    for layer in &manifest.layers {
        let layer_type = layer.media_type.as_str();
        if ![
            MEDIA_TYPE_OCI_LAYER,
            MEDIA_TYPE_OCI_LAYER_GZIP,
            MEDIA_TYPE_OCI_LAYER_ZSTD,
            MEDIA_TYPE_DOCKER_LAYER_GZIP,
        ]
        .contains(&layer_type)
        {
            anyhow::bail!(
                "unsupported media type {layer_type:?} for layer {}",
                layer.digest
            );
        }
    }
    Ok(())
}

/// This machine's architecture as OCI names it (`amd64`, `arm64`, ...).
pub fn host_architecture() -> String {
    std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64")
}

/// An image's configuration: what to run and how, and the layers' diff ids.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: ExecConfig,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of_bytes(media_type.as_bytes()),
            size: 1,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    fn manifest(config_type: &str, layer_types: &[&str]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: None,
            config: descriptor(config_type),
            layers: layer_types.iter().map(|kind| descriptor(kind)).collect(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn oci_and_docker_v2_images_pass_and_other_media_types_are_refused() {
        check_media_types(&manifest(
            MEDIA_TYPE_OCI_CONFIG,
            &[MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER],
        ))
        .unwrap();
        check_media_types(&manifest(
            MEDIA_TYPE_DOCKER_CONFIG,
            &[MEDIA_TYPE_DOCKER_LAYER_GZIP],
        ))
        .unwrap();
        check_media_types(&manifest(
            MEDIA_TYPE_OCI_CONFIG,
            &[MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_LAYER_GZIP],
        ))
        .unwrap();
        let error = check_media_types(&manifest(
            "application/vnd.cncf.helm.config.v1+json",
            &[MEDIA_TYPE_OCI_LAYER_GZIP],
        ))
        .unwrap_err();
        assert!(
            error.to_string().contains("unsupported media type"),
            "{error}"
        );
        let error = check_media_types(&manifest(
            MEDIA_TYPE_OCI_CONFIG,
            &["application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
        ))
        .unwrap_err();
        assert!(
            error.to_string().contains("unsupported media type"),
            "{error}"
        );
    }

    #[test]
    fn the_host_entry_of_an_index_is_picked_by_os_and_architecture() {
        let mut arm = descriptor(MEDIA_TYPE_OCI_MANIFEST);
        arm.platform = Some(Platform {
            architecture: "not-this-one".into(),
            os: "linux".into(),
        });
        let mut windows = descriptor(MEDIA_TYPE_OCI_MANIFEST);
        windows.platform = Some(Platform {
            architecture: host_architecture(),
            os: "windows".into(),
        });
        let mut here = descriptor(MEDIA_TYPE_DOCKER_MANIFEST);
        here.platform = Some(Platform {
            architecture: host_architecture(),
            os: "linux".into(),
        });
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![arm.clone(), windows.clone(), here.clone()],
        };
        assert_eq!(index.manifest_for_host().unwrap().digest, here.digest);
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![arm, windows],
        };
        assert!(index.manifest_for_host().is_none());
    }
}
