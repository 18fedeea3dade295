//! The Node authorizer's rule (kube-apiserver's Node authorizer with the
//! NodeRestriction admission's checks): an agent, user `system:node:NAME` in
//! `system:nodes`, reads what its pods need — pods, nodes, services and
//! their endpoints for the proxy, and only the Secrets, ConfigMaps,
//! PersistentVolumeClaims and ServiceAccounts its own pods refer to — and
//! writes only its own Node (and its status), its own Lease in
//! `kube-node-lease`, its pods' status and deletion, and events.
//!
//! What pods refer to is kept in `PodIndex`, which follows pods through
//! the watch cache as the RBAC index follows roles.

use std::collections::HashMap;

use parking_lot::RwLock;
use serde_json::Value;

use super::{Attributes, Decision};
use crate::server::User;

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of the agents' heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node an agent's user names, if the user is an agent's.
pub fn node_name(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|group| group == NODES_GROUP)).then_some(name)
}

/// The kinds a pod refers to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Referenced {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

impl Referenced {
    fn of_resource(resource: &str) -> Option<Referenced> {
        match resource {
            "secrets" => Some(Referenced::Secret),
            "configmaps" => Some(Referenced::ConfigMap),
            "persistentvolumeclaims" => Some(Referenced::Claim),
            "serviceaccounts" => Some(Referenced::ServiceAccount),
            _ => None,
        }
    }
}

/// One pod as the Node authorizer needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodFacts {
    node: String,
    references: Vec<(Referenced, String)>,
}

fn pod_facts(pod: &Value) -> PodFacts {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut references = Vec::new();
    let mut add = |kind: Referenced, name: Option<&Value>| {
        if let Some(name) = name.and_then(Value::as_str)
            && !name.is_empty()
            && !references.contains(&(kind, name.to_string()))
        {
            references.push((kind, name.to_string()));
        }
    };
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    add(
        Referenced::ServiceAccount,
        Some(
            spec.get("serviceAccountName")
                .unwrap_or(&Value::String("default".into())),
        ),
    );
    let items = |value: Option<&Value>| -> Vec<Value> {
        value.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    for secret in items(spec.get("imagePullSecrets")) {
        add(Referenced::Secret, secret.get("name"));
    }
    for volume in items(spec.get("volumes")) {
        add(Referenced::Secret, volume.pointer("/secret/secretName"));
        add(Referenced::ConfigMap, volume.pointer("/configMap/name"));
        add(
            Referenced::Claim,
            volume.pointer("/persistentVolumeClaim/claimName"),
        );
        for source in items(volume.pointer("/projected/sources")) {
            add(Referenced::Secret, source.pointer("/secret/name"));
            add(Referenced::ConfigMap, source.pointer("/configMap/name"));
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for container in items(spec.get(list)) {
            for env in items(container.get("env")) {
                add(
                    Referenced::Secret,
                    env.pointer("/valueFrom/secretKeyRef/name"),
                );
                add(
                    Referenced::ConfigMap,
                    env.pointer("/valueFrom/configMapKeyRef/name"),
                );
            }
            for from in items(container.get("envFrom")) {
                add(Referenced::Secret, from.pointer("/secretRef/name"));
                add(Referenced::ConfigMap, from.pointer("/configMapRef/name"));
            }
        }
    }
    PodFacts { node, references }
}

#[derive(Default)]
struct PodState {
    /// Pods by `namespace/name`.
    pods: HashMap<String, PodFacts>,
    /// How many of a node's pods refer to an object: node, then (kind,
    /// namespace, name).
    references: HashMap<String, HashMap<(Referenced, String, String), u32>>,
}

impl PodState {
    fn remove(&mut self, key: &str) {
        let Some(facts) = self.pods.remove(key) else {
            return;
        };
        let namespace = key.split_once('/').map_or("", |(namespace, _)| namespace);
        if let Some(counts) = self.references.get_mut(&facts.node) {
            for (kind, name) in facts.references {
                let entry = (kind, namespace.to_string(), name);
                if let Some(count) = counts.get_mut(&entry) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(&entry);
                    }
                }
            }
            if counts.is_empty() {
                self.references.remove(&facts.node);
            }
        }
    }

    fn insert(&mut self, key: &str, facts: PodFacts) {
        self.remove(key);
        let namespace = key.split_once('/').map_or("", |(namespace, _)| namespace);
        if !facts.node.is_empty() {
            let counts = self.references.entry(facts.node.clone()).or_default();
            for (kind, name) in &facts.references {
                *counts
                    .entry((*kind, namespace.to_string(), name.clone()))
                    .or_default() += 1;
            }
        }
        self.pods.insert(key.to_string(), facts);
    }
}

/// The pods, as the Node authorizer needs them.
#[derive(Default)]
pub struct PodIndex {
    state: RwLock<PodState>,
}

pub const PODS_PREFIX: &str = "/registry/pods/";

impl PodIndex {
    pub fn handle(&self, event: super::rbac::Event) {
        let key_of = |key: &str| key.strip_prefix(PODS_PREFIX).unwrap_or(key).to_string();
        match event {
            super::rbac::Event::Reset(pods) => {
                let mut state = PodState::default();
                for (key, pod) in pods {
                    state.insert(&key_of(&key), pod_facts(&pod));
                }
                *self.state.write() = state;
            }
            super::rbac::Event::Put(key, pod) => {
                self.state.write().insert(&key_of(&key), pod_facts(&pod))
            }
            super::rbac::Event::Delete(key) => self.state.write().remove(&key_of(&key)),
        }
    }

    /// The node a pod is bound to ("" when unbound or unknown).
    fn node_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.state
            .read()
            .pods
            .get(&format!("{namespace}/{name}"))
            .map(|facts| facts.node.clone())
    }

    fn node_refers_to(&self, node: &str, kind: Referenced, namespace: &str, name: &str) -> bool {
        self.state
            .read()
            .references
            .get(node)
            .is_some_and(|counts| {
                counts.contains_key(&(kind, namespace.to_string(), name.to_string()))
            })
    }
}

const READ: &[&str] = &["get", "list", "watch"];

/// Allowed when the pod is bound to `node`; else NodeRestriction's refusal
/// ("node "n1" can only `action` pods with spec.nodeName set to itself").
fn own_pod(pods: &PodIndex, node: &str, attributes: &Attributes<'_>, action: &str) -> Decision {
    if pods
        .node_of(attributes.namespace, attributes.name)
        .as_deref()
        == Some(node)
    {
        Decision::Allow
    } else {
        Decision::Refused(format!(
            "pods {:?} is forbidden: node {node:?} can only {action} pods with spec.nodeName set to itself",
            attributes.name
        ))
    }
}

/// The Node authorizer's decision for node `node`.
pub fn authorize(pods: &PodIndex, node: &str, attributes: &Attributes<'_>) -> Decision {
    if !attributes.resource_request {
        return Decision::Deny(String::new());
    }
    let verb = attributes.verb;
    let read = READ.contains(&verb);
    let allow = |allowed: bool| {
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        }
    };
    match (
        attributes.api_group,
        attributes.resource,
        attributes.subresource,
    ) {
        ("", "nodes", "") if read => Decision::Allow,
        // The body's name is checked by `admit_create`.
        ("", "nodes", "") if verb == "create" => Decision::Allow,
        ("", "nodes", "" | "status") if matches!(verb, "get" | "update" | "patch" | "delete") => {
            if attributes.name == node {
                Decision::Allow
            } else {
                Decision::Refused(format!(
                    "nodes {:?} is forbidden: node {node:?} is not allowed to modify node {:?}",
                    attributes.name, attributes.name
                ))
            }
        }
        ("", "pods", "" | "status") if read => Decision::Allow,
        ("", "pods", "status") if matches!(verb, "update" | "patch") => {
            own_pod(pods, node, attributes, "update pod status for")
        }
        ("", "pods", "") if verb == "delete" => own_pod(pods, node, attributes, "delete"),
        ("", "services" | "endpoints", "") | ("discovery.k8s.io", "endpointslices", "") => {
            allow(read)
        }
        ("", "events", "") | ("events.k8s.io", "events", "") => {
            allow(matches!(verb, "create" | "update" | "patch"))
        }
        ("coordination.k8s.io", "leases", "") if attributes.namespace == NODE_LEASE_NAMESPACE => {
            // A create's name is in its body: `admit_create` checks it.
            if verb == "create"
                || (attributes.name == node
                    && matches!(verb, "get" | "update" | "patch" | "delete"))
            {
                Decision::Allow
            } else {
                Decision::Refused(format!(
                    "leases.coordination.k8s.io {:?} is forbidden: can only access node lease with the same name as the requesting node",
                    attributes.name
                ))
            }
        }
        ("", resource, "") => match Referenced::of_resource(resource) {
            Some(kind) => {
                if verb != "get" {
                    return Decision::Deny("can only get individual resources of this type".into());
                }
                if pods.node_refers_to(node, kind, attributes.namespace, attributes.name) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "no relationship found between node '{node}' and this object"
                    ))
                }
            }
            None => Decision::Deny(String::new()),
        },
        _ => Decision::Deny(String::new()),
    }
}

/// NodeRestriction's check of what a node creates: a Node or a Lease in
/// `kube-node-lease` only under its own name.
pub fn admit_create(
    user: &User,
    info: &super::RequestInfo,
    body: &[u8],
) -> Result<(), crate::status::ApiError> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    if info.verb != "create" || !info.subresource.is_empty() {
        return Ok(());
    }
    let lease = info.api_group == "coordination.k8s.io" && info.resource == "leases";
    let node_object = info.api_group.is_empty() && info.resource == "nodes";
    if !lease && !node_object {
        return Ok(());
    }
    let name = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|object| {
            object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    if name == node {
        return Ok(());
    }
    let message = if lease {
        format!(
            "leases.coordination.k8s.io {name:?} is forbidden: can only access node lease with the same name as the requesting node"
        )
    } else {
        format!("nodes {name:?} is forbidden: node {node:?} is not allowed to modify node {name:?}")
    };
    Err(crate::status::ApiError::forbidden(
        message,
        serde_json::json!({"name": name, "kind": info.resource}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_user(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        pods: &PodIndex,
        user: &User,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        namespace: &str,
        name: &str,
    ) -> Decision {
        let attributes = Attributes {
            user,
            verb,
            resource_request: true,
            path: "",
            api_group: group,
            api_version: "v1",
            namespace,
            resource,
            subresource: sub,
            name,
        };
        authorize(pods, node_name(user).unwrap(), &attributes)
    }

    #[test]
    fn a_node_reaches_only_its_own() {
        let pods = PodIndex::default();
        pods.handle(super::super::rbac::Event::Reset(vec![(
            "/registry/pods/web/a".into(),
            json!({"spec": {"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "tls"}}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}),
        )]));
        pods.handle(super::super::rbac::Event::Put(
            "/registry/pods/web/b".into(),
            json!({"spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "other"}}], "containers": []}}),
        ));
        let n1 = node_user("n1");
        let allow = Decision::Allow;
        assert_eq!(
            check(&pods, &n1, "get", "", "secrets", "", "web", "tls"),
            allow
        );
        assert_eq!(
            check(&pods, &n1, "get", "", "configmaps", "", "web", "settings"),
            allow
        );
        assert_eq!(
            check(
                &pods,
                &n1,
                "get",
                "",
                "serviceaccounts",
                "",
                "web",
                "default"
            ),
            allow
        );
        assert_eq!(
            check(&pods, &n1, "get", "", "secrets", "", "web", "other"),
            Decision::Deny("no relationship found between node 'n1' and this object".into())
        );
        assert!(matches!(
            check(&pods, &n1, "list", "", "secrets", "", "web", ""),
            Decision::Deny(_)
        ));
        assert_eq!(
            check(&pods, &n1, "patch", "", "pods", "status", "web", "a"),
            allow
        );
        assert_eq!(
            check(&pods, &n1, "patch", "", "pods", "status", "web", "b"),
            Decision::Refused(r#"pods "b" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself"#.into())
        );
        assert!(matches!(
            check(&pods, &n1, "delete", "", "pods", "", "web", "b"),
            Decision::Refused(_)
        ));
        assert_eq!(
            check(&pods, &n1, "delete", "", "pods", "", "web", "a"),
            allow
        );
        assert_eq!(
            check(&pods, &n1, "patch", "", "nodes", "status", "", "n1"),
            allow
        );
        assert!(matches!(
            check(&pods, &n1, "patch", "", "nodes", "", "", "n2"),
            Decision::Refused(_)
        ));
        assert_eq!(
            check(
                &pods,
                &n1,
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                "n1"
            ),
            allow
        );
        assert!(matches!(
            check(
                &pods,
                &n1,
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                "n2"
            ),
            Decision::Refused(_)
        ));
        assert!(matches!(
            check(&pods, &n1, "create", "", "pods", "", "web", ""),
            Decision::Deny(_)
        ));
        assert!(matches!(
            check(&pods, &n1, "list", "apps", "deployments", "", "", ""),
            Decision::Deny(_)
        ));
        // Moving a pod away ends the node's claim on what it refers to.
        pods.handle(super::super::rbac::Event::Delete(
            "/registry/pods/web/a".into(),
        ));
        assert!(matches!(
            check(&pods, &n1, "get", "", "secrets", "", "web", "tls"),
            Decision::Deny(_)
        ));
    }
}
