//! The resources shoal's API server serves, as the tests and the dump example
//! hand them to the crate, plus one custom resource.

use openapi::Resource;
use serde_json::json;

fn resource(
    group: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    subresources: &[&str],
) -> Resource {
    Resource {
        group: group.to_string(),
        version: "v1".to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
        namespaced,
        subresources: subresources.iter().map(|name| name.to_string()).collect(),
        custom_schema: None,
    }
}

/// The built-in resources, and `widgets.example.com/v1` Widget.
pub fn resources() -> Vec<Resource> {
    let mut resources = vec![
        resource("", "ConfigMap", "configmaps", true, &[]),
        resource("", "Endpoints", "endpoints", true, &[]),
        resource("", "Event", "events", true, &[]),
        resource("", "LimitRange", "limitranges", true, &[]),
        resource("", "Namespace", "namespaces", false, &["status"]),
        resource("", "Node", "nodes", false, &["status"]),
        resource(
            "",
            "Pod",
            "pods",
            true,
            &["status", "binding", "eviction", "log", "exec", "attach"],
        ),
        resource("", "ResourceQuota", "resourcequotas", true, &["status"]),
        resource("", "Secret", "secrets", true, &[]),
        resource("", "ServiceAccount", "serviceaccounts", true, &[]),
        resource("", "Service", "services", true, &["status"]),
        resource(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["status"],
        ),
        resource(
            "apps",
            "ControllerRevision",
            "controllerrevisions",
            true,
            &[],
        ),
        resource("apps", "DaemonSet", "daemonsets", true, &["status"]),
        resource(
            "apps",
            "Deployment",
            "deployments",
            true,
            &["status", "scale"],
        ),
        resource(
            "apps",
            "ReplicaSet",
            "replicasets",
            true,
            &["status", "scale"],
        ),
        resource(
            "apps",
            "StatefulSet",
            "statefulsets",
            true,
            &["status", "scale"],
        ),
        resource("batch", "Job", "jobs", true, &["status"]),
        resource("coordination.k8s.io", "Lease", "leases", true, &[]),
        resource(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslices",
            true,
            &[],
        ),
        resource(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["status"],
        ),
    ];
    let mut widget = resource("example.com", "Widget", "widgets", true, &["status"]);
    widget.custom_schema = Some(json!({
        "description": "A widget of the example shop.",
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "What the widget should be.",
                "properties": {
                    "color": { "type": "string", "description": "The widget's colour." },
                    "size": { "type": "integer", "description": "Size in centimetres." }
                },
                "required": ["color"]
            }
        }
    }));
    resources.push(widget);
    resources
}
