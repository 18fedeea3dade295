//! The OpenAPI v3 documents shoal's Kubernetes API serves at `/openapi/v3`,
//! built from the resources it serves, as kube-openapi builds kube-apiserver's.
//!
//! kubectl reads them for three things: `explain` (the component schemas and
//! their descriptions), `apply`/`create -f`/`replace` validation (a PATCH
//! operation carrying `x-kubernetes-group-version-kind` and a `fieldValidation`
//! parameter tells kubectl the server validates, so it sends
//! `fieldValidation=Strict`), and client-side apply's strategic merge patch
//! (`x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy`).
//!
//! Built-in kinds' schemas, with upstream's descriptions and required lists, come
//! from k8s-openapi's `schemars` implementations (Kubernetes 1.33); the patch
//! extensions come from `apimachinery`'s patch table; custom resources' from
//! their CRD's `openAPIV3Schema`.
//!
//! `/openapi/v2` ([`v2_protobuf`]) is for kubectl 1.27 and 1.28 only, which fetch
//! it before validating; it carries operations but no schemas.
//!
//! How a server answers, as kube-apiserver (kube-openapi's `handler3`) does:
//! - `GET /openapi/v3`: [`v3_index`] as JSON.
//! - `GET /openapi/v3/{path}` ([`parse_group_version_path`]): the bytes of
//!   `serde_json::to_vec(&v3_document(..))`, `ETag` the quoted [`v3_hash`]. With a
//!   `hash` query parameter that differs from the current hash, a 301 to the
//!   current `serverRelativeURL`; with one that matches, also
//!   `Cache-Control: public, immutable` (clients then keep the document).
//! - `GET /openapi/v2` with an `Accept` naming protobuf: [`v2_protobuf`] with
//!   `Content-Type` [`V2_PROTOBUF_MEDIA_TYPE`].
//!
//! The crate is pure: no I/O, no global mutable state, no panics. Documents are
//! rebuilt on every call (tens of milliseconds for `api/v1`), so a server should
//! keep them and their hashes until the set of served resources changes.

mod extensions;
mod paths;
mod registry;
mod schemas;
mod v2;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

pub use v2::{V2_PROTOBUF_MEDIA_TYPE, v2_protobuf};

/// One resource the API server serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource name in URLs (`deployments`).
    pub plural: String,
    pub namespaced: bool,
    /// The subresources served: `status`, `scale`, `binding`, `eviction`, `log`,
    /// `exec`, `attach`. Others are left out of the document.
    pub subresources: Vec<String>,
    /// A CRD's `openAPIV3Schema`; `None` for built-in kinds.
    pub custom_schema: Option<Value>,
}

/// The Kubernetes release whose schemas the documents carry (k8s-openapi's
/// `v1_33` feature), written in the documents' `info.version`.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// The URL path of a group-version's document below `/openapi/v3/`: `api/v1`
/// for the core group, `apis/{group}/{version}` for the others.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The group and version of a document path below `/openapi/v3/` (`api/v1`,
/// `apis/apps/v1`), or `None` for any other path.
pub fn parse_group_version_path(path: &str) -> Option<(&str, &str)> {
    let is_segment = |segment: &str| !segment.is_empty() && !segment.contains('/');
    let (group, version) = match path.strip_prefix("apis/") {
        Some(rest) => rest
            .split_once('/')
            .filter(|(group, _)| is_segment(group))?,
        None => ("", path.strip_prefix("api/")?),
    };
    is_segment(version).then_some((group, version))
}

/// The group-versions served, each once, in the order first seen.
pub(crate) fn group_versions(resources: &[Resource]) -> Vec<(&str, &str)> {
    let mut group_versions: Vec<(&str, &str)> = Vec::new();
    for resource in resources {
        let group_version = (resource.group.as_str(), resource.version.as_str());
        if !group_versions.contains(&group_version) {
            group_versions.push(group_version);
        }
    }
    group_versions
}

/// `/openapi/v3`: the index of the group-version documents,
/// `{"paths": {"apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=…"}, …}}`.
/// The hash is [`v3_hash`] of the document; clients cache documents by URL, so
/// it changes whenever the document does.
pub fn v3_index(resources: &[Resource]) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(resources) {
        let Some(document) = v3_document(resources, group, version) else {
            continue;
        };
        let path = group_version_path(group, version);
        let url = format!("/openapi/v3/{path}?hash={}", v3_hash(&document));
        paths.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`: the OpenAPI 3.0
/// document of one group-version, or `None` when no resource of it is served.
pub fn v3_document(resources: &[Resource], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = resources
        .iter()
        .filter(|resource| resource.group == group && resource.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    Some(json!({
        "components": { "schemas": schemas::components(&served) },
        "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
        "openapi": "3.0.0",
        "paths": paths::paths(&served, group, version),
    }))
}

/// The content hash of a document, as kube-openapi computes it: the upper-case
/// hex SHA-512 of the document's JSON. It is the hash of
/// `serde_json::to_vec(document)`, so the server must answer with exactly those
/// bytes (they are the same on every serialization of the same value).
pub fn v3_hash(document: &Value) -> String {
    // Serializing a `Value` cannot fail: its keys are strings and it holds no
    // non-finite numbers. Were it to, the empty hash input still gives a stable
    // (if uninformative) hash rather than a panic.
    let bytes = serde_json::to_vec(document).unwrap_or_default();
    let digest = Sha512::digest(&bytes);
    digest.iter().map(|byte| format!("{byte:02X}")).collect()
}
