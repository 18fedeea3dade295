//! `components.schemas` of one group-version document: the served kinds' schemas
//! (from k8s-openapi for built-ins, from the CRD for custom resources), their
//! list kinds, the meta types operations refer to, and the `x-kubernetes-*`
//! extensions kubectl reads.

use serde_json::{Map, Value, json};

use k8s_openapi::schemars::SchemaGenerator;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::transform::{RemoveRefSiblings, ReplaceBoolSchemas};

use crate::Resource;
use crate::extensions;
use crate::registry::{self, names};

/// A component reference as OpenAPI 3 spells it.
pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The component name of `group`/`version`/`kind`: upstream's Go package path for
/// built-ins, the reversed group for custom resources (`stable.example.com`,
/// `v1`, `CronTab` is `com.example.stable.v1.CronTab`, as the apiextensions
/// server names them).
pub(crate) fn kind_schema_name(resource: &Resource) -> String {
    if resource.custom_schema.is_none()
        && let Some(builtin) =
            registry::builtin_kind(&resource.group, &resource.version, &resource.kind)
    {
        return (builtin.schema_name)().into_owned();
    }
    custom_schema_name(&resource.group, &resource.version, &resource.kind)
}

fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    if group.is_empty() {
        return format!("io.k8s.api.core.{version}.{kind}");
    }
    let reversed_group: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed_group.join("."))
}

/// The component name of a kind's list (`io.k8s.api.apps.v1.DeploymentList`).
pub(crate) fn list_schema_name(resource: &Resource) -> String {
    format!("{}List", kind_schema_name(resource))
}

/// The schema-less object a kind gets when shoal has no schema for it: any
/// fields pass, so validation never rejects what the server would accept.
fn open_object_schema(kind: &str) -> Value {
    json!({
        "description": format!("{kind} is served without a published schema."),
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `x-kubernetes-group-version-kind` as schemas carry it: a list of one.
fn gvk_list(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "kind": kind, "version": version }])
}

/// The standard `apiVersion` and `kind` properties of a top-level object.
fn type_meta_properties() -> [(String, Value); 2] {
    [
        (
            "apiVersion".to_string(),
            json!({
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            }),
        ),
        (
            "kind".to_string(),
            json!({
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            }),
        ),
    ]
}

/// The list kind of `resource`: `items` of the kind, and list metadata.
fn list_schema(resource: &Resource) -> Value {
    let mut properties: Map<String, Value> = type_meta_properties().into_iter().collect();
    properties.insert(
        "items".to_string(),
        json!({
            "description": format!("The {} objects in the list.", resource.kind),
            "items": schema_ref(&kind_schema_name(resource)),
            "type": "array",
        }),
    );
    properties.insert(
        "metadata".to_string(),
        json!({
            "allOf": [schema_ref(names::LIST_META)],
            "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
        }),
    );
    json!({
        "description": format!("{}List is a list of {} objects.", resource.kind, resource.kind),
        "properties": properties,
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind":
            gvk_list(&resource.group, &resource.version, &format!("{}List", resource.kind)),
    })
}

/// A custom resource's schema: the CRD's `openAPIV3Schema` with the standard
/// `apiVersion`, `kind` and `metadata` properties set, as the apiextensions
/// server publishes it. A schema that is not an object is treated as absent.
fn custom_resource_schema(resource: &Resource, custom_schema: &Value) -> Value {
    let Some(custom) = custom_schema.as_object() else {
        return open_object_schema(&resource.kind);
    };
    let mut schema = custom.clone();
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(properties) = properties.as_object_mut() {
        for (name, property) in type_meta_properties() {
            properties.insert(name, property);
        }
        properties.insert(
            "metadata".to_string(),
            json!({
                "allOf": [schema_ref(names::OBJECT_META)],
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            }),
        );
    }
    schema
        .entry("type")
        .or_insert_with(|| Value::String("object".to_string()));
    Value::Object(schema)
}

fn generator() -> SchemaGenerator {
    let mut replace_bool_schemas = ReplaceBoolSchemas::default();
    replace_bool_schemas.skip_additional_properties = true;
    SchemaSettings::openapi3()
        .with(|settings| {
            settings.meta_schema = None;
            // Upstream wraps a `$ref` that has a description beside it in
            // `allOf`, which is what RemoveRefSiblings does; the other OpenAPI 3
            // transforms concern Rust types (Option, consts) k8s-openapi's
            // hand-written schemas do not use.
            settings.transforms = vec![
                Box::new(replace_bool_schemas),
                Box::new(RemoveRefSiblings::default()),
            ];
        })
        .into_generator()
}

/// The `components.schemas` of a document serving `resources` (all of one
/// group-version).
pub(crate) fn components(resources: &[&Resource]) -> Map<String, Value> {
    let mut generator = generator();
    registry::register_meta_types(&mut generator);
    for resource in resources {
        if resource.custom_schema.is_some() {
            continue;
        }
        if let Some(builtin) =
            registry::builtin_kind(&resource.group, &resource.version, &resource.kind)
        {
            (builtin.register)(&mut generator);
        }
        for subresource in &resource.subresources {
            let carried = match subresource.as_str() {
                "scale" => registry::builtin_kind("autoscaling", "v1", "Scale"),
                "eviction" => registry::builtin_kind("policy", "v1", "Eviction"),
                "binding" => registry::builtin_kind("", "v1", "Binding"),
                _ => None,
            };
            if let Some(carried) = carried {
                (carried.register)(&mut generator);
            }
        }
    }
    let mut schemas = generator.take_definitions(true);

    for (name, schema) in schemas.iter_mut() {
        if let Some(builtin) = registry::kind_of_schema(name)
            && let Some(object) = schema.as_object_mut()
        {
            object.insert(
                "x-kubernetes-group-version-kind".to_string(),
                gvk_list(builtin.group, builtin.version, builtin.kind),
            );
        }
        extensions::add_list_and_patch_extensions(name, schema);
    }

    for resource in resources {
        let name = kind_schema_name(resource);
        if !schemas.contains_key(&name) {
            let mut schema = match &resource.custom_schema {
                Some(custom_schema) => custom_resource_schema(resource, custom_schema),
                None => open_object_schema(&resource.kind),
            };
            if let Some(object) = schema.as_object_mut() {
                object.insert(
                    "x-kubernetes-group-version-kind".to_string(),
                    gvk_list(&resource.group, &resource.version, &resource.kind),
                );
            }
            schemas.insert(name, schema);
        }
        schemas.insert(list_schema_name(resource), list_schema(resource));
    }
    schemas
}
