//! Serving OpenAPI: `/openapi/v3` (the index), one v3 document per
//! group-version, and `/openapi/v2` as protobuf for kubectl 1.27/1.28. The
//! documents come from the `openapi` crate and are kept until the set of
//! served resources changes.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::registry::Registry;
use crate::respond;
use crate::server::Body;
use crate::status::ApiError;

struct Documents {
    generation: u64,
    index: Bytes,
    /// By path below `/openapi/v3/` (`apis/apps/v1`): the exact bytes hashed.
    group_versions: HashMap<String, Bytes>,
    v2: Bytes,
}

#[derive(Default)]
pub struct OpenApi {
    documents: Mutex<Option<std::sync::Arc<Documents>>>,
}

fn resources(registry: &Registry) -> Vec<openapi::Resource> {
    registry
        .all()
        .iter()
        .map(|resource| openapi::Resource {
            group: resource.group.clone(),
            version: resource.version.clone(),
            kind: resource.kind.clone(),
            plural: resource.plural.clone(),
            namespaced: resource.namespaced,
            subresources: resource.subresources.clone(),
            custom_schema: resource.schema.clone(),
        })
        .collect()
}

impl OpenApi {
    fn documents(&self, registry: &Registry) -> std::sync::Arc<Documents> {
        let generation = registry.generation();
        let mut cached = self.documents.lock();
        if let Some(documents) = cached.as_ref()
            && documents.generation == generation
        {
            return std::sync::Arc::clone(documents);
        }
        let resources = resources(registry);
        let mut group_versions = HashMap::new();
        let mut seen = Vec::new();
        for resource in &resources {
            let pair = (resource.group.clone(), resource.version.clone());
            if seen.contains(&pair) {
                continue;
            }
            seen.push(pair);
            if let Some(document) =
                openapi::v3_document(&resources, &resource.group, &resource.version)
            {
                group_versions.insert(
                    openapi::group_version_path(&resource.group, &resource.version),
                    Bytes::from(serde_json::to_vec(&document).unwrap_or_default()),
                );
            }
        }
        let documents = std::sync::Arc::new(Documents {
            generation,
            index: Bytes::from(
                serde_json::to_vec(&openapi::v3_index(&resources)).unwrap_or_default(),
            ),
            group_versions,
            v2: Bytes::from(openapi::v2_protobuf(&resources)),
        });
        *cached = Some(std::sync::Arc::clone(&documents));
        documents
    }

    /// Answers a GET below `/openapi/`; `rest` is the path after it.
    pub fn serve(&self, registry: &Registry, rest: &[&str], accept: &str) -> hyper::Response<Body> {
        let documents = self.documents(registry);
        let (bytes, content_type) = match rest {
            ["v3"] => (documents.index.clone(), "application/json"),
            ["v3", path @ ..] => match documents.group_versions.get(&path.join("/")) {
                Some(bytes) => (bytes.clone(), "application/json"),
                None => return respond::error(&ApiError::not_found_path()),
            },
            ["v2"] if accept.contains("protobuf") => {
                (documents.v2.clone(), openapi::V2_PROTOBUF_MEDIA_TYPE)
            }
            _ => return respond::error(&ApiError::not_found_path()),
        };
        hyper::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::VARY, "Accept")
            .body(respond::full(bytes))
            .unwrap_or_else(|_| respond::error(&ApiError::internal("building the response")))
    }
}
