//! Keeps what the API serves in step with what is stored: a
//! CustomResourceDefinition written makes its resources served, one
//! deleted removes them (and their objects); a Service deleted gives its
//! addresses back.

use serde_json::{Value, json};

use crate::Api;
use crate::registry::{PrinterColumn, ResourceType, Shape};

fn is_crd(resource: &ResourceType) -> bool {
    resource.group == "apiextensions.k8s.io" && resource.kind == "CustomResourceDefinition"
}

/// The resources a CRD defines: one per served version.
pub fn resources_of(crd: &Value) -> Vec<ResourceType> {
    let spec = crd.get("spec").cloned().unwrap_or_else(|| json!({}));
    let text = |pointer: &str| {
        spec.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let strings = |pointer: &str| crate::objects::strings_at(&spec, pointer);
    let group = text("/group");
    let kind = text("/names/kind");
    let plural = text("/names/plural");
    let singular = {
        let given = text("/names/singular");
        if given.is_empty() {
            kind.to_lowercase()
        } else {
            given
        }
    };
    let namespaced = text("/scope") != "Cluster";
    let mut resources = Vec::new();
    for version in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if version.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = version.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() || group.is_empty() || plural.is_empty() || kind.is_empty() {
            continue;
        }
        let mut subresources = Vec::new();
        if version.pointer("/subresources/status").is_some() {
            subresources.push("status".to_string());
        }
        if version.pointer("/subresources/scale").is_some() {
            subresources.push("scale".to_string());
        }
        let printer_columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|columns| {
                columns
                    .iter()
                    .map(|column| PrinterColumn {
                        name: column
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        column_type: column
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_string(),
                        format: column
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        json_path: column
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        priority: column.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        description: column
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        resources.push(ResourceType {
            group: group.clone(),
            version: name.to_string(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings("/names/shortNames"),
            categories: strings("/names/categories"),
            subresources,
            storage: format!("{group}/{plural}"),
            shape: Shape::Custom,
            printer_columns,
            schema: version.pointer("/schema/openAPIV3Schema").cloned(),
        });
    }
    resources
}

/// After an object was stored.
pub fn after_write(api: &Api, resource: &ResourceType, object: &Value) {
    if is_crd(resource) {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if object.pointer("/metadata/deletionTimestamp").is_none() {
            api.registry.set_custom(name, resources_of(object));
        }
    }
}

/// After an object was deleted from the store.
pub fn after_delete(api: &Api, resource: &ResourceType, object: &Value) {
    if is_crd(resource) {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        api.registry.remove_custom(&name);
        // The custom objects go with their definition.
        let group = object
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = object
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !group.is_empty() && !plural.is_empty() {
            let prefix = format!("/registry/{group}/{plural}/");
            api.spawn_store_cleanup(prefix);
        }
    }
    if resource.group.is_empty() && resource.kind == "Service" {
        api.spawn_service_release(object.clone());
    }
}
