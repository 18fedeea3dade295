//! The built-in kinds whose schemas shoal knows: each group/version/kind mapped
//! to the k8s-openapi type that describes it.

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::autoscaling::v1 as autoscaling;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::{JsonSchema, Schema, SchemaGenerator};

/// One kind and the type whose JSON schema describes it.
#[derive(Clone, Copy)]
pub(crate) struct BuiltinKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Registers the type (and every type it refers to) with the generator and
    /// returns a `$ref` to it.
    pub register: fn(&mut SchemaGenerator) -> Schema,
    /// The component name, upstream's Go package path and type name
    /// (`io.k8s.api.apps.v1.Deployment`).
    pub schema_name: fn() -> std::borrow::Cow<'static, str>,
}

const fn kind<T: JsonSchema>(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
) -> BuiltinKind {
    BuiltinKind {
        group,
        version,
        kind,
        register: SchemaGenerator::subschema_for::<T>,
        schema_name: T::schema_name,
    }
}

/// The kinds served as resources, and the kinds their subresources and meta
/// operations carry (Scale, Eviction, Binding, Status).
static BUILTIN_KINDS: &[BuiltinKind] = &[
    kind::<core::ConfigMap>("", "v1", "ConfigMap"),
    kind::<core::Endpoints>("", "v1", "Endpoints"),
    kind::<core::Event>("", "v1", "Event"),
    kind::<core::LimitRange>("", "v1", "LimitRange"),
    kind::<core::Namespace>("", "v1", "Namespace"),
    kind::<core::Node>("", "v1", "Node"),
    kind::<core::Pod>("", "v1", "Pod"),
    kind::<core::ResourceQuota>("", "v1", "ResourceQuota"),
    kind::<core::Secret>("", "v1", "Secret"),
    kind::<core::ServiceAccount>("", "v1", "ServiceAccount"),
    kind::<core::Service>("", "v1", "Service"),
    kind::<core::Binding>("", "v1", "Binding"),
    kind::<meta::Status>("", "v1", "Status"),
    kind::<apiextensions::CustomResourceDefinition>(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
    ),
    kind::<apps::ControllerRevision>("apps", "v1", "ControllerRevision"),
    kind::<apps::DaemonSet>("apps", "v1", "DaemonSet"),
    kind::<apps::Deployment>("apps", "v1", "Deployment"),
    kind::<apps::ReplicaSet>("apps", "v1", "ReplicaSet"),
    kind::<apps::StatefulSet>("apps", "v1", "StatefulSet"),
    kind::<autoscaling::Scale>("autoscaling", "v1", "Scale"),
    kind::<batch::CronJob>("batch", "v1", "CronJob"),
    kind::<batch::Job>("batch", "v1", "Job"),
    kind::<coordination::Lease>("coordination.k8s.io", "v1", "Lease"),
    kind::<discovery::EndpointSlice>("discovery.k8s.io", "v1", "EndpointSlice"),
    kind::<events::Event>("events.k8s.io", "v1", "Event"),
    kind::<policy::PodDisruptionBudget>("policy", "v1", "PodDisruptionBudget"),
    kind::<policy::Eviction>("policy", "v1", "Eviction"),
];

/// The built-in kind `group`/`version`/`kind`, if shoal has its schema.
pub(crate) fn builtin_kind(group: &str, version: &str, kind: &str) -> Option<&'static BuiltinKind> {
    BUILTIN_KINDS
        .iter()
        .find(|entry| entry.group == group && entry.version == version && entry.kind == kind)
}

/// The group/version/kind a built-in component describes, found by its name.
pub(crate) fn kind_of_schema(schema_name: &str) -> Option<&'static BuiltinKind> {
    BUILTIN_KINDS
        .iter()
        .find(|entry| (entry.schema_name)() == schema_name)
}

/// The meta types every document refers to from its operations.
pub(crate) fn register_meta_types(generator: &mut SchemaGenerator) {
    generator.subschema_for::<meta::ObjectMeta>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::Patch>();
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::WatchEvent<core::Pod>>();
}

/// Component names of the meta types operations refer to.
pub(crate) mod names {
    pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
    pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
    pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
    pub const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
    pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
}
