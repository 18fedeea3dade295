//! The `x-kubernetes-*` field extensions k8s-openapi's schemas leave out:
//! patch strategy and merge key (kubectl's client-side apply computes its
//! strategic merge patch from them) and list type and map keys (server-side
//! apply's list semantics).

use std::sync::OnceLock;

use apimachinery::patch::{FieldPatchMeta, PatchSchema, PatchStrategy};
use serde_json::{Value, json};

/// How a list field's items are identified, as upstream's `+listType` and
/// `+listMapKey` markers say.
enum ListType {
    Atomic,
    Set,
    Map(&'static [&'static str]),
}

/// List semantics of the fields of the served kinds that upstream marks
/// (type short name, field, list type). Lists not named here carry no
/// `x-kubernetes-list-type`, which consumers read as atomic.
const LIST_TYPES: &[(&str, &str, ListType)] = &[
    ("ObjectMeta", "finalizers", ListType::Set),
    ("ObjectMeta", "ownerReferences", ListType::Map(&["uid"])),
    ("PodSpec", "containers", ListType::Map(&["name"])),
    ("PodSpec", "initContainers", ListType::Map(&["name"])),
    ("PodSpec", "ephemeralContainers", ListType::Map(&["name"])),
    ("PodSpec", "volumes", ListType::Map(&["name"])),
    ("PodSpec", "imagePullSecrets", ListType::Map(&["name"])),
    ("PodSpec", "hostAliases", ListType::Map(&["ip"])),
    (
        "PodSpec",
        "topologySpreadConstraints",
        ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    ("PodSpec", "schedulingGates", ListType::Map(&["name"])),
    ("PodSpec", "resourceClaims", ListType::Map(&["name"])),
    ("PodSpec", "tolerations", ListType::Atomic),
    (
        "Container",
        "ports",
        ListType::Map(&["containerPort", "protocol"]),
    ),
    ("Container", "env", ListType::Map(&["name"])),
    ("Container", "volumeMounts", ListType::Map(&["mountPath"])),
    ("Container", "volumeDevices", ListType::Map(&["devicePath"])),
    ("Container", "command", ListType::Atomic),
    ("Container", "args", ListType::Atomic),
    ("Container", "envFrom", ListType::Atomic),
    (
        "EphemeralContainer",
        "ports",
        ListType::Map(&["containerPort", "protocol"]),
    ),
    ("EphemeralContainer", "env", ListType::Map(&["name"])),
    (
        "EphemeralContainer",
        "volumeMounts",
        ListType::Map(&["mountPath"]),
    ),
    (
        "EphemeralContainer",
        "volumeDevices",
        ListType::Map(&["devicePath"]),
    ),
    ("PodStatus", "conditions", ListType::Map(&["type"])),
    ("PodStatus", "podIPs", ListType::Map(&["ip"])),
    ("PodStatus", "hostIPs", ListType::Map(&["ip"])),
    ("NodeSpec", "podCIDRs", ListType::Set),
    ("NodeStatus", "conditions", ListType::Map(&["type"])),
    ("NodeStatus", "addresses", ListType::Map(&["type"])),
    ("ServiceSpec", "ports", ListType::Map(&["port", "protocol"])),
    ("ServiceSpec", "clusterIPs", ListType::Atomic),
    ("ServiceSpec", "ipFamilies", ListType::Atomic),
    ("ServiceStatus", "conditions", ListType::Map(&["type"])),
    ("NamespaceStatus", "conditions", ListType::Map(&["type"])),
    ("DeploymentStatus", "conditions", ListType::Map(&["type"])),
    ("ReplicaSetStatus", "conditions", ListType::Map(&["type"])),
    ("DaemonSetStatus", "conditions", ListType::Map(&["type"])),
    ("StatefulSetStatus", "conditions", ListType::Map(&["type"])),
    ("JobStatus", "conditions", ListType::Atomic),
    (
        "PodDisruptionBudgetStatus",
        "conditions",
        ListType::Map(&["type"]),
    ),
    (
        "CustomResourceDefinitionStatus",
        "conditions",
        ListType::Map(&["type"]),
    ),
    ("EndpointSlice", "endpoints", ListType::Atomic),
    ("EndpointSlice", "ports", ListType::Atomic),
];

/// Patch metadata of fields whose type shoal's patch table does not name,
/// because it shares another type's rules (an ephemeral container merges like
/// a container).
fn supplementary_patch_meta(type_name: &str, field: &str) -> Option<FieldPatchMeta> {
    let merge_key = match (type_name, field) {
        ("EphemeralContainer", "env") => "name",
        ("EphemeralContainer", "ports") => "containerPort",
        ("EphemeralContainer", "volumeMounts") => "mountPath",
        ("EphemeralContainer", "volumeDevices") => "devicePath",
        ("PodDisruptionBudgetStatus", "conditions") => "type",
        _ => return None,
    };
    Some(FieldPatchMeta {
        strategy: PatchStrategy::Merge,
        merge_key: Some(merge_key.to_string()),
        retain_keys: false,
    })
}

fn patch_schema() -> &'static PatchSchema {
    static BUILTIN: OnceLock<PatchSchema> = OnceLock::new();
    BUILTIN.get_or_init(PatchSchema::builtin)
}

/// `x-kubernetes-patch-strategy` as upstream spells it: `merge`, `replace`,
/// `retainKeys`, or `merge,retainKeys`.
fn patch_strategy_text(meta: &FieldPatchMeta) -> Option<String> {
    let mut parts = Vec::new();
    match meta.strategy {
        PatchStrategy::Default => {}
        PatchStrategy::Merge => parts.push("merge"),
        PatchStrategy::Replace => parts.push("replace"),
    }
    if meta.retain_keys {
        parts.push("retainKeys");
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Adds the patch and list extensions to the properties of component `name`.
/// Only upstream's own types (`io.k8s.*`) get them: shoal's tables are keyed by
/// upstream's type names, which a custom resource's types may reuse.
pub(crate) fn add_list_and_patch_extensions(name: &str, schema: &mut Value) {
    if !name.starts_with("io.k8s.") {
        return;
    }
    let Some(type_name) = name.rsplit('.').next() else {
        return;
    };
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    let position = patch_schema().for_type(type_name);
    for (field, property) in properties.iter_mut() {
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        let meta = supplementary_patch_meta(type_name, field)
            .or_else(|| position.map(|position| position.field(field).0));
        if let Some(meta) = meta {
            if let Some(key) = &meta.merge_key {
                property.insert("x-kubernetes-patch-merge-key".to_string(), json!(key));
            }
            if let Some(strategy) = patch_strategy_text(&meta) {
                property.insert("x-kubernetes-patch-strategy".to_string(), json!(strategy));
            }
        }
        let list_type = LIST_TYPES
            .iter()
            .find(|(list_type_name, list_field, _)| {
                *list_type_name == type_name && list_field == field
            })
            .map(|(_, _, list_type)| list_type);
        match list_type {
            Some(ListType::Atomic) => {
                property.insert("x-kubernetes-list-type".to_string(), json!("atomic"));
            }
            Some(ListType::Set) => {
                property.insert("x-kubernetes-list-type".to_string(), json!("set"));
            }
            Some(ListType::Map(keys)) => {
                property.insert("x-kubernetes-list-type".to_string(), json!("map"));
                property.insert("x-kubernetes-list-map-keys".to_string(), json!(keys));
            }
            None => {}
        }
    }
}
