//! What the API serves: every resource type, built in or defined by a
//! CustomResourceDefinition, with the facts discovery, routing, storage and
//! printing need about it.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// How a resource's objects are shaped and checked beyond the generic rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A built-in kind with a typed schema (decoding, defaulting, validation
    /// and printing by kind).
    BuiltIn,
    /// A custom resource: JSON as given, checked against its CRD's schema.
    Custom,
}

/// One resource of one group-version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The URL segment: `deployments`.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// `status`, `scale`, `binding`, `eviction`, `log`, `exec`, `attach`.
    pub subresources: Vec<String>,
    /// The store key prefix after `/registry/` (kube-apiserver's: `minions` for nodes).
    pub storage: String,
    pub shape: Shape,
    /// Extra printer columns of a custom resource: (name, type, JSONPath, priority).
    pub printer_columns: Vec<PrinterColumn>,
    /// A custom resource's `openAPIV3Schema`, for validation and OpenAPI.
    pub schema: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub column_type: String,
    pub format: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

impl ResourceType {
    /// `name` qualified by the group: `apps/v1` (joined by `/`), or
    /// `deployments.apps` (by `.`); the core group's names stand alone.
    fn qualified(&self, name: &str, separator: char) -> String {
        if self.group.is_empty() {
            name.to_string()
        } else if separator == '/' {
            format!("{}/{name}", self.group)
        } else {
            format!("{name}.{}", self.group)
        }
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        self.qualified(&self.version, '/')
    }

    /// `deployments.apps`, or `pods`: the name errors use.
    pub fn qualified_plural(&self) -> String {
        self.qualified(&self.plural, '.')
    }

    /// `Deployment.apps`, or `Pod`: the name validation errors use.
    pub fn qualified_kind(&self) -> String {
        self.qualified(&self.kind, '.')
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|sub| sub == name)
    }

    /// The verbs of the resource itself (not its subresources).
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// The store prefix every object of this resource is under.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(namespace) if self.namespaced => {
                format!("/registry/{}/{namespace}/{name}", self.storage)
            }
            _ => format!("/registry/{}/{name}", self.storage),
        }
    }
}

struct BuiltIn {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    storage: &'static str,
}

const ALL: &[&str] = &["all"];

/// The built-in resources, in kube-apiserver's order of groups.
const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        storage: "configmaps",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        storage: "services/endpoints",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        storage: "events",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "LimitRange",
        plural: "limitranges",
        namespaced: true,
        short_names: &["limits"],
        categories: &[],
        subresources: &[],
        storage: "limitranges",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["finalize", "status"],
        storage: "namespaces",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        storage: "minions",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &["attach", "binding", "eviction", "exec", "log", "status"],
        storage: "pods",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "ResourceQuota",
        plural: "resourcequotas",
        namespaced: true,
        short_names: &["quota"],
        categories: &[],
        subresources: &["status"],
        storage: "resourcequotas",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "secrets",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &[],
        storage: "serviceaccounts",
    },
    BuiltIn {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &["status"],
        storage: "services/specs",
    },
    BuiltIn {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: &["status"],
        storage: "apiextensions.k8s.io/customresourcedefinitions",
    },
    BuiltIn {
        group: "apps",
        version: "v1",
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "controllerrevisions",
    },
    BuiltIn {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        subresources: &["status"],
        storage: "daemonsets",
    },
    BuiltIn {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &["scale", "status"],
        storage: "deployments",
    },
    BuiltIn {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &["scale", "status"],
        storage: "replicasets",
    },
    BuiltIn {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        namespaced: true,
        short_names: &["sts"],
        categories: ALL,
        subresources: &["scale", "status"],
        storage: "statefulsets",
    },
    BuiltIn {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        namespaced: true,
        short_names: &["cj"],
        categories: ALL,
        subresources: &["status"],
        storage: "cronjobs",
    },
    BuiltIn {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        namespaced: true,
        short_names: &[],
        categories: ALL,
        subresources: &["status"],
        storage: "jobs",
    },
    BuiltIn {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "leases",
    },
    BuiltIn {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "endpointslices",
    },
    BuiltIn {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        storage: "events",
    },
    BuiltIn {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        subresources: &["status"],
        storage: "poddisruptionbudgets",
    },
    BuiltIn {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "clusterrolebindings",
    },
    BuiltIn {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "clusterroles",
    },
    BuiltIn {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "rolebindings",
    },
    BuiltIn {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        storage: "roles",
    },
];

/// Every resource served now; custom resources come and go with their CRDs.
pub struct Registry {
    resources: RwLock<Vec<Arc<ResourceType>>>,
    /// Raised whenever the set of resources changes (OpenAPI is rebuilt then).
    generation: std::sync::atomic::AtomicU64,
}

/// A group with its versions in preference order.
pub struct GroupVersions {
    pub group: String,
    pub versions: Vec<String>,
}

impl Registry {
    pub fn new() -> Registry {
        let resources = BUILT_IN
            .iter()
            .map(|built_in| {
                Arc::new(ResourceType {
                    group: built_in.group.to_string(),
                    version: built_in.version.to_string(),
                    kind: built_in.kind.to_string(),
                    plural: built_in.plural.to_string(),
                    singular: built_in.kind.to_lowercase(),
                    namespaced: built_in.namespaced,
                    short_names: built_in.short_names.iter().map(|s| s.to_string()).collect(),
                    categories: built_in.categories.iter().map(|s| s.to_string()).collect(),
                    subresources: built_in
                        .subresources
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    storage: built_in.storage.to_string(),
                    shape: Shape::BuiltIn,
                    printer_columns: Vec::new(),
                    schema: None,
                })
            })
            .collect();
        Registry {
            resources: RwLock::new(resources),
            generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The resource at `/apis/{group}/{version}/{plural}` (group "" for `/api/v1`).
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.resources
            .read()
            .iter()
            .find(|resource| {
                resource.group == group && resource.version == version && resource.plural == plural
            })
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.resources.read().clone()
    }

    /// The resources of one group-version, sorted by name.
    pub fn of_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        let mut found: Vec<_> = self
            .resources
            .read()
            .iter()
            .filter(|resource| resource.group == group && resource.version == version)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.plural.cmp(&b.plural));
        found
    }

    /// The named groups (not the core group), in the order served.
    pub fn groups(&self) -> Vec<GroupVersions> {
        let mut groups: Vec<GroupVersions> = Vec::new();
        let mut versions_seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for resource in self.resources.read().iter() {
            if resource.group.is_empty() {
                continue;
            }
            let versions = versions_seen.entry(resource.group.clone()).or_default();
            if !versions.contains(&resource.version) {
                versions.push(resource.version.clone());
            }
            if !groups.iter().any(|group| group.group == resource.group) {
                groups.push(GroupVersions {
                    group: resource.group.clone(),
                    versions: Vec::new(),
                });
            }
        }
        for group in &mut groups {
            group.versions = versions_seen.remove(&group.group).unwrap_or_default();
        }
        groups
    }

    /// Serves the resources a CRD defines (replacing what it defined before).
    pub fn set_custom(&self, crd_name: &str, resources: Vec<ResourceType>) {
        let mut all = self.resources.write();
        all.retain(|resource| {
            !(resource.shape == Shape::Custom
                && format!("{}.{}", resource.plural, resource.group) == crd_name)
        });
        all.extend(resources.into_iter().map(Arc::new));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Changes whenever a resource is added or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn remove_custom(&self, crd_name: &str) {
        self.set_custom(crd_name, Vec::new());
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}
