//! Object mechanics every kind shares: metadata fields the server owns
//! (uid, creationTimestamp, generation, resourceVersion), generated names,
//! and how a stored value becomes an answer.

use serde_json::{Value, json};

/// Now, as Kubernetes writes times: RFC 3339, seconds, `Z`.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `generateName` plus five characters from kube-apiserver's alphabet
/// (no vowels, no look-alikes).
pub fn generate_name(prefix: &str) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    // The name is cut so that prefix and suffix fit 63 characters.
    let keep = prefix.len().min(58);
    format!("{}{suffix}", &prefix[..keep])
}

pub fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn uid_of(object: &Value) -> &str {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// The object as stored: without its resourceVersion (the store's
/// mod_revision is the version; storing it would be stale at once).
pub fn to_stored(object: &Value) -> Vec<u8> {
    if object.pointer("/metadata/resourceVersion").is_none() {
        return serde_json::to_vec(object).unwrap_or_default();
    }
    let mut stored = object.clone();
    if let Some(metadata) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// A stored value as an answer: its resourceVersion set from the revision.
pub fn from_stored(bytes: &[u8], mod_revision: i64) -> Option<Value> {
    let mut object: Value = serde_json::from_slice(bytes).ok()?;
    metadata_mut(&mut object).insert(
        "resourceVersion".to_string(),
        Value::String(mod_revision.to_string()),
    );
    Some(object)
}

/// Everything but metadata and status: a change here is a new generation.
pub fn spec_part(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    rest
}

pub fn labels_of(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops the metadata fields Go leaves out when empty (`omitempty`):
/// an emptied label or annotation map disappears, as on a real cluster.
pub fn drop_empty_metadata(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "managedFields",
        ] {
            let empty = match metadata.get(field) {
                Some(Value::Object(map)) => map.is_empty(),
                Some(Value::Array(items)) => items.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                metadata.remove(field);
            }
        }
    }
}

/// The strings of the array at `pointer` (items that are not strings left out).
pub fn strings_at(value: &Value, pointer: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A stored value with its resourceVersion set, and its labels, without
/// decoding more than its top level and its metadata: what the watch cache
/// keeps of each object and change.
pub fn stamp(
    stored: &[u8],
    mod_revision: i64,
) -> Option<(bytes::Bytes, std::collections::BTreeMap<String, String>)> {
    use serde_json::value::RawValue;
    let mut top: std::collections::BTreeMap<&str, &RawValue> =
        serde_json::from_slice(stored).ok()?;
    let mut metadata: serde_json::Map<String, Value> = match top.get("metadata") {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => serde_json::Map::new(),
    };
    metadata.insert(
        "resourceVersion".to_string(),
        Value::String(mod_revision.to_string()),
    );
    let labels = metadata
        .get("labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let metadata = serde_json::value::to_raw_value(&metadata).ok()?;
    top.insert("metadata", &metadata);
    let json = serde_json::to_vec(&top).ok()?;
    Some((bytes::Bytes::from(json), labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stamped_object_is_the_stored_one_with_its_resource_version() {
        let stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let (json, labels) = stamp(&serde_json::to_vec(&stored).unwrap(), 42).unwrap();
        let stamped: Value = serde_json::from_slice(&json).unwrap();
        let mut expected = stored.clone();
        expected["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(stamped, expected);
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        // The same as decoding and setting it.
        assert_eq!(
            from_stored(&serde_json::to_vec(&stored).unwrap(), 42).unwrap(),
            expected
        );
        assert!(stamp(b"not json", 1).is_none());
    }
}
