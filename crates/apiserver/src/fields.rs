//! The fields each kind can be selected by (`?fieldSelector=`), as
//! kube-apiserver's field label conversions allow them, and their values.

use serde_json::Value;

use crate::registry::ResourceType;

/// The fields of a kind beyond `metadata.name` and `metadata.namespace`,
/// with the JSON pointer each reads.
fn kind_fields(resource: &ResourceType) -> &'static [(&'static str, &'static str)] {
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("", "Pod") => &[
            ("spec.nodeName", "/spec/nodeName"),
            ("spec.restartPolicy", "/spec/restartPolicy"),
            ("spec.schedulerName", "/spec/schedulerName"),
            ("spec.serviceAccountName", "/spec/serviceAccountName"),
            ("spec.hostNetwork", "/spec/hostNetwork"),
            ("status.phase", "/status/phase"),
            ("status.podIP", "/status/podIP"),
            ("status.nominatedNodeName", "/status/nominatedNodeName"),
        ],
        ("", "Event") => &[
            ("involvedObject.kind", "/involvedObject/kind"),
            ("involvedObject.namespace", "/involvedObject/namespace"),
            ("involvedObject.name", "/involvedObject/name"),
            ("involvedObject.uid", "/involvedObject/uid"),
            ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
            (
                "involvedObject.resourceVersion",
                "/involvedObject/resourceVersion",
            ),
            ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
            ("reason", "/reason"),
            ("reportingComponent", "/reportingComponent"),
            ("source", "/source/component"),
            ("type", "/type"),
        ],
        ("", "Node") => &[("spec.unschedulable", "/spec/unschedulable")],
        ("", "Namespace") => &[("status.phase", "/status/phase")],
        ("", "Secret") => &[("type", "/type")],
        ("", "Service") => &[
            ("spec.clusterIP", "/spec/clusterIP"),
            ("spec.type", "/spec/type"),
        ],
        ("apps", "ReplicaSet") => &[("status.replicas", "/status/replicas")],
        ("batch", "Job") => &[("status.successful", "/status/successful")],
        _ => &[],
    }
}

pub fn supported(resource: &ResourceType, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || kind_fields(resource).iter().any(|(name, _)| *name == field)
}

/// A field's value as the selector compares it: text, with absent fields
/// as "" and booleans and numbers as Go prints them.
pub fn value(resource: &ResourceType, object: &Value, field: &str) -> Option<String> {
    let pointer = match field {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        _ => kind_fields(resource)
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, pointer)| *pointer)?,
    };
    Some(match object.pointer(pointer) {
        None | Some(Value::Null) => match field {
            // Unset booleans read as Go's zero value.
            "spec.unschedulable" | "spec.hostNetwork" => "false".to_string(),
            "status.replicas" | "status.successful" => "0".to_string(),
            _ => String::new(),
        },
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    })
}
