//! Resources that are another version's objects seen differently:
//! events.k8s.io/v1 Events are stored as core/v1 Events (one store, one
//! sequence of versions, as kube-apiserver keeps them) and converted on the
//! way in and out, field by field as upstream's conversion renames them.

use serde_json::{Map, Value};

use crate::registry::ResourceType;

/// (events.k8s.io/v1 name, core/v1 name): the fields the two versions name differently.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn is_events_v1(resource: &ResourceType) -> bool {
    resource.group == "events.k8s.io" && resource.kind == "Event"
}

/// Whether `resource`'s objects are converted between the store and the client.
pub fn converts(resource: &ResourceType) -> bool {
    is_events_v1(resource)
}

fn rename(object: Value, from_index: usize, api_version: &str) -> Value {
    let Value::Object(map) = object else {
        return object;
    };
    let mut renamed = Map::new();
    for (key, value) in map {
        let new_key = EVENT_RENAMES
            .iter()
            .find(|pair| [pair.0, pair.1][from_index] == key)
            .map(|pair| [pair.1, pair.0][from_index].to_string())
            .unwrap_or(key);
        renamed.insert(new_key, value);
    }
    renamed.insert(
        "apiVersion".to_string(),
        Value::String(api_version.to_string()),
    );
    Value::Object(renamed)
}

/// A stored object as `resource` shows it.
pub fn present(resource: &ResourceType, object: Value) -> Value {
    if is_events_v1(resource) {
        return rename(object, 1, "events.k8s.io/v1");
    }
    object
}

/// An object of `resource` as it is stored.
pub fn to_storage(resource: &ResourceType, object: Value) -> Value {
    if is_events_v1(resource) {
        return rename(object, 0, "v1");
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_convert_both_ways() {
        let registry = crate::registry::Registry::new();
        let events = registry
            .find("events.k8s.io", "v1", "events")
            .expect("served");
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "count": 2, "reason": "Started"});
        let shown = present(&events, core.clone());
        assert_eq!(
            shown,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "deprecatedCount": 2, "reason": "Started"})
        );
        assert_eq!(to_storage(&events, shown), core);
    }
}
