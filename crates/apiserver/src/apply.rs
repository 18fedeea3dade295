//! Server-side apply (`application/apply-patch+yaml`): the applied
//! configuration merged into the live object, and the manager recorded in
//! `managedFields` with operation `Apply`.
//!
//! This first version merges as a strategic merge patch (a merge patch for
//! custom resources) and records managers without field sets: it does not
//! yet remove fields a manager stopped applying, nor report conflicts
//! between managers.

use serde_json::Value;

use crate::registry::{ResourceType, Shape};
use crate::status::ApiError;

/// `value` without null fields: an applied configuration's nulls mean
/// "not set", not "delete".
pub fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key, strip_nulls(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

pub fn merge_applied(
    resource: &ResourceType,
    current: &Value,
    applied: &Value,
) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration is not an object",
        ));
    }
    let applied = strip_nulls(applied.clone());
    if resource.shape == Shape::Custom {
        let mut merged = current.clone();
        apimachinery::patch::merge_patch(&mut merged, &applied);
        return Ok(merged);
    }
    apimachinery::patch::strategic_merge_patch_for_kind(
        current,
        &applied,
        crate::patch_schema(),
        &resource.api_version(),
        &resource.kind,
    )
    .map_err(|error| ApiError::bad_request(error.to_string()))
}
