//! The default roles and bindings, made at start as kube-apiserver's RBAC
//! bootstrap policy makes them, as far as shoal's users and components
//! need them: `cluster-admin` (bound to `system:masters`), the aggregated
//! `admin`, `edit` and `view`, `system:discovery`, `system:basic-user`,
//! `system:public-info-viewer`, and a role for each of shoal's own
//! components that reaches the API over the network (the scheduler, the
//! controllers, the cluster DNS), each with its own user.
//!
//! A default object someone changed is left alone when it is annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`; otherwise its
//! rules (or its aggregation rule) are put back, as kube-apiserver does at
//! every start.

use serde_json::{Value, json};

/// The users shoal's components connect as (each a client certificate).
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
pub const CONTROLLERS_USER: &str = "system:kube-controller-manager";
pub const DNS_USER: &str = "system:shoal:dns";

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const BOOTSTRAPPING_LABEL: &str = "kubernetes.io/bootstrapping";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    let mut all_labels = serde_json::Map::new();
    all_labels.insert(BOOTSTRAPPING_LABEL.into(), "rbac-defaults".into());
    for (key, value) in labels {
        all_labels.insert(key.to_string(), value.to_string().into());
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": all_labels, "annotations": {AUTOUPDATE: "true"}},
        "rules": rules,
    })
}

fn aggregated_role(name: &str, labels: &[(&str, &str)], selector_label: &str) -> Value {
    let mut role = cluster_role(name, labels, Vec::new());
    role["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {selector_label: "true"}}
    ]});
    role
}

fn binding(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    role_kind: &str,
    subjects: &[(&str, &str)],
) -> Value {
    let mut metadata = json!({"name": name, "labels": {BOOTSTRAPPING_LABEL: "rbac-defaults"}, "annotations": {AUTOUPDATE: "true"}});
    if let Some(namespace) = namespace {
        metadata["namespace"] = namespace.into();
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": subjects.iter().map(|(kind, name)| json!({
            "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name
        })).collect::<Vec<_>>(),
    })
}

const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let core = &[""][..];
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        aggregated_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            vec![
                rule(
                    READ,
                    core,
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], core, &["serviceaccounts"]),
                rule(
                    WRITE,
                    core,
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(&["create"], core, &["pods/eviction"]),
                rule(
                    WRITE,
                    core,
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], core, &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(WRITE, &["coordination.k8s.io"], &["leases"]),
                rule(WRITE, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            vec![
                rule(
                    READ,
                    core,
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    core,
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, core, &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(READ, &["coordination.k8s.io"], &["leases"]),
                rule(READ, &["events.k8s.io"], &["events"]),
            ],
        ),
        // shoal's scheduler: kube-scheduler's role, as far as it applies.
        cluster_role(
            SCHEDULER_USER,
            &[],
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                rule(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                rule(
                    READ,
                    core,
                    &[
                        "nodes",
                        "namespaces",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "replicationcontrollers",
                        "services",
                    ],
                ),
                rule(&["delete", "get", "list", "watch"], core, &["pods"]),
                rule(&["create"], core, &["bindings", "pods/binding"]),
                rule(&["patch", "update"], core, &["pods/status"]),
                rule(READ, &["apps"], &["replicasets", "statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "csidrivers",
                        "csinodes",
                        "csistoragecapacities",
                        "storageclasses",
                    ],
                ),
            ],
        ),
        // shoal's controllers run in one process with one user: they read
        // everything and write the kinds they manage, nothing else (no
        // Secrets, no RBAC).
        cluster_role(
            CONTROLLERS_USER,
            &[],
            vec![
                rule(READ, &["*"], &["*"]),
                rule(
                    WRITE,
                    core,
                    &[
                        "pods",
                        "pods/status",
                        "nodes",
                        "nodes/status",
                        "endpoints",
                        "services",
                        "services/status",
                        "events",
                    ],
                ),
                rule(&["create"], core, &["pods/eviction", "pods/binding"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    WRITE,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(WRITE, &["discovery.k8s.io"], &["endpointslices"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets/status"]),
                rule(WRITE, &["coordination.k8s.io"], &["leases"]),
                rule(WRITE, &["events.k8s.io"], &["events"]),
            ],
        ),
        // The cluster DNS reads services and their endpoints everywhere;
        // its writes (the kube-dns Service) are a Role in kube-system.
        cluster_role(
            DNS_USER,
            &[],
            vec![
                rule(READ, core, &["endpoints", "namespaces", "pods", "services"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings, each named as its role.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "ClusterRoleBinding",
            "cluster-admin",
            None,
            "ClusterRole",
            &[("Group", super::PRIVILEGED_GROUP)],
        ),
        binding(
            "ClusterRoleBinding",
            "system:discovery",
            None,
            "ClusterRole",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "ClusterRoleBinding",
            "system:basic-user",
            None,
            "ClusterRole",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "ClusterRoleBinding",
            "system:public-info-viewer",
            None,
            "ClusterRole",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "ClusterRoleBinding",
            SCHEDULER_USER,
            None,
            "ClusterRole",
            &[("User", SCHEDULER_USER)],
        ),
        binding(
            "ClusterRoleBinding",
            CONTROLLERS_USER,
            None,
            "ClusterRole",
            &[("User", CONTROLLERS_USER)],
        ),
        binding(
            "ClusterRoleBinding",
            DNS_USER,
            None,
            "ClusterRole",
            &[("User", DNS_USER)],
        ),
    ]
}

/// The default Roles and RoleBindings in kube-system.
pub fn namespaced() -> Vec<(&'static str, Value)> {
    let mut role = cluster_role(
        DNS_USER,
        &[],
        vec![
            rule(READ_WRITE, &[""], &["endpoints", "services"]),
            rule(READ_WRITE, &["discovery.k8s.io"], &["endpointslices"]),
        ],
    );
    role["kind"] = "Role".into();
    role["metadata"]["namespace"] = "kube-system".into();
    vec![
        ("roles", role),
        (
            "rolebindings",
            binding(
                "RoleBinding",
                DNS_USER,
                Some("kube-system"),
                "Role",
                &[("User", DNS_USER)],
            ),
        ),
    ]
}

/// Whether the stored default `current` should be put back to `wanted`:
/// not when an admin turned autoupdate off, and only when what grants
/// differs (rules, aggregation rule, role reference or subjects).
pub fn needs_reconcile(current: &Value, wanted: &Value) -> bool {
    if current.pointer(&format!(
        "/metadata/annotations/{}",
        AUTOUPDATE.replace('/', "~1")
    )) == Some(&Value::String("false".into()))
    {
        return false;
    }
    if wanted.get("aggregationRule").is_some() {
        return current.get("aggregationRule") != wanted.get("aggregationRule");
    }
    ["rules", "roleRef", "subjects"]
        .iter()
        .any(|field| current.get(*field) != wanted.get(*field))
}
