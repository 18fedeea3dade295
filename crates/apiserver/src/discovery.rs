//! Discovery: what groups, versions and resources the server has, in the
//! three forms clients ask for — aggregated discovery v2 (kubectl 1.30+),
//! v2beta1 (kubectl 1.27–1.29), and the legacy per-group-version documents
//! (`kubectl drain`, the Python dynamic client) — and `/version`.

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceType};

/// The Kubernetes release whose API shoal serves. kubectl's gcloud
/// dispatcher picks its binary by this minor version.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub const KUBE_GIT_VERSION: &str = "v1.33.0+shoal";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "emulationMajor": KUBE_MAJOR,
        "emulationMinor": KUBE_MINOR,
        "minCompatibilityMajor": KUBE_MAJOR,
        "minCompatibilityMinor": "32",
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (shoal is written in Rust)",
        "compiler": "rustc",
        "platform": format!("linux/{}", go_arch()),
    })
}

/// Go's name for this machine's architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which discovery document an Accept header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Aggregated(&'static str),
    Legacy,
}

/// Reads an Accept header the way client-go writes it: the first media type
/// naming `g=apidiscovery.k8s.io;as=APIGroupDiscoveryList` with a version
/// shoal serves decides; otherwise the legacy documents.
pub fn negotiate(accept: &str) -> Form {
    for media in crate::body::accepted(accept) {
        if media.group == Some("apidiscovery.k8s.io")
            && media.shape == Some("APIGroupDiscoveryList")
        {
            match media.version {
                Some("v2") => return Form::Aggregated("v2"),
                Some("v2beta1") => return Form::Aggregated("v2beta1"),
                _ => {}
            }
        }
    }
    Form::Legacy
}

pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// A subresource's answer kind and verbs: (group, version, kind, verbs).
fn subresource_facts(
    resource: &ResourceType,
    subresource: &str,
) -> (String, String, String, &'static [&'static str]) {
    let same = (
        resource.group.clone(),
        resource.version.clone(),
        resource.kind.clone(),
    );
    let (group, version, kind) = match subresource {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "binding" => (String::new(), "v1".into(), "Binding".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        "exec" => (String::new(), "v1".into(), "PodExecOptions".into()),
        "attach" => (String::new(), "v1".into(), "PodAttachOptions".into()),
        _ => same,
    };
    let verbs: &'static [&'static str] = match subresource {
        "binding" | "eviction" => &["create"],
        "log" => &["get"],
        "exec" | "attach" => &["create", "get"],
        "finalize" => &["update"],
        _ => &["get", "patch", "update"],
    };
    (group, version, kind, verbs)
}

fn aggregated_resource(resource: &ResourceType) -> Value {
    let subresources: Vec<Value> = resource
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, kind, verbs) = subresource_facts(resource, sub);
            json!({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": verbs,
            })
        })
        .collect();
    let mut entry = json!({
        "resource": resource.plural,
        "responseKind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
        "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": resource.singular,
        "verbs": resource.verbs(),
    });
    if !resource.short_names.is_empty() {
        entry["shortNames"] = json!(resource.short_names);
    }
    if !resource.categories.is_empty() {
        entry["categories"] = json!(resource.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

fn aggregated_group(registry: &Registry, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = registry
                .of_group_version(group, version)
                .iter()
                .map(|resource| aggregated_resource(resource))
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": versions})
}

/// `/api` or `/apis` in aggregated form.
pub fn aggregated(registry: &Registry, core: bool, version: &str) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(registry, "", &["v1".to_string()])]
    } else {
        registry
            .groups()
            .iter()
            .map(|group| aggregated_group(registry, &group.group, &group.versions))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// Legacy `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn legacy_group(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// Legacy `/apis`.
pub fn api_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|group| legacy_group(&group.group, &group.versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `/apis/{group}`, or None when the group is not served.
pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    registry
        .groups()
        .iter()
        .find(|served| served.group == group)
        .map(|served| {
            let mut document = legacy_group(&served.group, &served.versions);
            document["kind"] = json!("APIGroup");
            document["apiVersion"] = json!("v1");
            document
        })
}

/// Legacy `/api/v1` or `/apis/{group}/{version}`, or None when not served.
pub fn api_resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = registry.of_group_version(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut listed = Vec::new();
    for resource in &resources {
        let mut entry = json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": resource.verbs(),
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        if !resource.categories.is_empty() {
            entry["categories"] = json!(resource.categories);
        }
        listed.push(entry);
        for sub in &resource.subresources {
            let (sub_group, sub_version, kind, verbs) = subresource_facts(resource, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if sub_group != resource.group || sub_version != resource.version {
                entry["group"] = json!(sub_group);
                entry["version"] = json!(sub_version);
            }
            listed.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": listed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_the_form_client_go_asks_for_first() {
        let kubectl_130 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(kubectl_130), Form::Aggregated("v2"));
        let kubectl_127 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(kubectl_127), Form::Aggregated("v2beta1"));
        assert_eq!(negotiate("application/json"), Form::Legacy);
        assert_eq!(
            negotiate("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io"),
            Form::Aggregated("v2")
        );
    }

    #[test]
    fn pods_eviction_is_listed_for_drain() {
        let registry = Registry::new();
        let list = api_resource_list(&registry, "", "v1").expect("core is served");
        let eviction = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == "pods/eviction")
            .expect("pods/eviction listed");
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["version"], "v1");
        assert_eq!(eviction["kind"], "Eviction");
    }
}
