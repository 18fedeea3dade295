//! Which fields of which kinds merge, and on what key: the `patchStrategy` and
//! `patchMergeKey` struct tags of k8s.io/api, as data a strategic merge patch reads.

use std::collections::BTreeMap;

/// How a field's value combines with the patch's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatchStrategy {
    /// No tag: objects merge key by key, lists are replaced whole.
    #[default]
    Default,
    /// `patchStrategy:"merge"`: lists merge item by item (on the merge key for
    /// lists of objects, by value for lists of primitives).
    Merge,
    /// `patchStrategy:"replace"`: the patch's value replaces the field whole.
    Replace,
}

/// The patch metadata of one field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPatchMeta {
    pub strategy: PatchStrategy,
    /// `patchMergeKey`: the member identifying an item of a merging list of objects.
    pub merge_key: Option<String>,
    /// `retainKeys` in the tag: the patch may carry a `$retainKeys` list clearing
    /// every other member (used for union types such as a volume's source).
    pub retain_keys: bool,
}

#[derive(Clone, Debug)]
struct FieldDef {
    meta: FieldPatchMeta,
    /// The type of the field's object value, or of its list's items.
    value_type: Option<usize>,
}

#[derive(Clone, Debug)]
struct TypeDef {
    name: String,
    fields: BTreeMap<String, FieldDef>,
}

/// Patch metadata for a set of kinds: a graph of named object types whose fields
/// carry a strategy, a merge key and the type of their value. Fields the schema
/// does not name get the default strategy, so the table need only list the
/// fields that merge.
#[derive(Clone, Debug, Default)]
pub struct PatchSchema {
    types: Vec<TypeDef>,
    /// `"<apiVersion> <kind>"` to the kind's root type.
    kinds: BTreeMap<String, usize>,
}

/// A schema holding nothing: every field has the default strategy.
static SCHEMALESS: PatchSchema = PatchSchema {
    types: Vec::new(),
    kinds: BTreeMap::new(),
};

/// A position in a [`PatchSchema`]: the type of one object in a document.
#[derive(Clone, Copy, Debug)]
pub struct ObjectSchema<'a> {
    schema: &'a PatchSchema,
    type_idx: Option<usize>,
}

impl ObjectSchema<'static> {
    /// The position of an object no schema describes: maps merge, lists are replaced.
    pub fn schemaless() -> ObjectSchema<'static> {
        ObjectSchema {
            schema: &SCHEMALESS,
            type_idx: None,
        }
    }
}

impl<'a> ObjectSchema<'a> {
    /// The metadata of field `name` of this object, and the position of its value
    /// (of its items, for a list).
    pub fn field(&self, name: &str) -> (FieldPatchMeta, ObjectSchema<'a>) {
        let field = self
            .type_idx
            .and_then(|type_idx| self.schema.types.get(type_idx))
            .and_then(|type_def| type_def.fields.get(name));
        match field {
            Some(field) => (
                field.meta.clone(),
                ObjectSchema {
                    schema: self.schema,
                    type_idx: field.value_type,
                },
            ),
            None => (
                FieldPatchMeta::default(),
                ObjectSchema {
                    schema: self.schema,
                    type_idx: None,
                },
            ),
        }
    }

    /// The name of the type at this position, if the schema knows it.
    pub fn type_name(&self) -> Option<&'a str> {
        let type_idx = self.type_idx?;
        self.schema
            .types
            .get(type_idx)
            .map(|type_def| type_def.name.as_str())
    }
}

impl PatchSchema {
    /// An empty schema, to be filled with [`PatchSchema::add_field`] and
    /// [`PatchSchema::add_kind`].
    pub fn new() -> PatchSchema {
        PatchSchema::default()
    }

    fn type_idx(&mut self, name: &str) -> usize {
        if let Some(type_idx) = self.types.iter().position(|type_def| type_def.name == name) {
            return type_idx;
        }
        self.types.push(TypeDef {
            name: name.to_string(),
            fields: BTreeMap::new(),
        });
        self.types.len() - 1
    }

    /// Declares field `field` of type `type_name` (creating the type if new), with
    /// its metadata and the type of its value or list items.
    pub fn add_field(
        &mut self,
        type_name: &str,
        field: &str,
        meta: FieldPatchMeta,
        value_type: Option<&str>,
    ) -> &mut PatchSchema {
        let value_type = value_type.map(|value_type| self.type_idx(value_type));
        let type_idx = self.type_idx(type_name);
        self.types[type_idx]
            .fields
            .insert(field.to_string(), FieldDef { meta, value_type });
        self
    }

    /// Declares that objects of `api_version`/`kind` have root type `type_name`.
    pub fn add_kind(&mut self, api_version: &str, kind: &str, type_name: &str) -> &mut PatchSchema {
        let type_idx = self.type_idx(type_name);
        self.kinds.insert(format!("{api_version} {kind}"), type_idx);
        self
    }

    /// The root of a kind, or `None` when the schema does not know it (a custom
    /// resource: strategic merge patch does not apply).
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<ObjectSchema<'_>> {
        let type_idx = *self.kinds.get(&format!("{api_version} {kind}"))?;
        Some(ObjectSchema {
            schema: self,
            type_idx: Some(type_idx),
        })
    }

    /// The root of a named type (for tests and for documents that are not whole objects).
    pub fn for_type(&self, type_name: &str) -> Option<ObjectSchema<'_>> {
        let type_idx = self
            .types
            .iter()
            .position(|type_def| type_def.name == type_name)?;
        Some(ObjectSchema {
            schema: self,
            type_idx: Some(type_idx),
        })
    }

    /// The metadata of the field at `path` (field names from the object's root; list
    /// items are not counted: `["spec", "template", "spec", "containers", "env"]`).
    /// `None` when the kind is unknown; default metadata for fields not in the table.
    pub fn field_meta(
        &self,
        api_version: &str,
        kind: &str,
        path: &[&str],
    ) -> Option<FieldPatchMeta> {
        let mut position = self.for_kind(api_version, kind)?;
        let mut meta = FieldPatchMeta::default();
        for name in path {
            (meta, position) = position.field(name);
        }
        Some(meta)
    }

    /// The schema of the built-in kinds shoal serves, from the struct tags of
    /// k8s.io/api. Lists not named here are replaced whole, as untagged lists are
    /// upstream.
    pub fn builtin() -> PatchSchema {
        let mut schema = PatchSchema::new();
        let merge = |key: &str| FieldPatchMeta {
            strategy: PatchStrategy::Merge,
            merge_key: Some(key.to_string()),
            retain_keys: false,
        };
        let merge_retaining = |key: &str| FieldPatchMeta {
            retain_keys: true,
            ..merge(key)
        };
        let merge_primitives = FieldPatchMeta {
            strategy: PatchStrategy::Merge,
            merge_key: None,
            retain_keys: false,
        };
        let retaining = FieldPatchMeta {
            retain_keys: true,
            ..FieldPatchMeta::default()
        };
        let plain = FieldPatchMeta::default;

        schema
            .add_field("ObjectMeta", "ownerReferences", merge("uid"), None)
            .add_field("ObjectMeta", "finalizers", merge_primitives.clone(), None);

        for list in ["containers", "initContainers", "ephemeralContainers"] {
            schema.add_field("PodSpec", list, merge("name"), Some("Container"));
        }
        schema
            .add_field("PodSpec", "volumes", merge_retaining("name"), None)
            .add_field("PodSpec", "imagePullSecrets", merge("name"), None)
            .add_field("PodSpec", "hostAliases", merge("ip"), None)
            .add_field(
                "PodSpec",
                "topologySpreadConstraints",
                merge("topologyKey"),
                None,
            )
            .add_field("PodSpec", "schedulingGates", merge("name"), None)
            .add_field("PodSpec", "resourceClaims", merge_retaining("name"), None)
            .add_field("Container", "env", merge("name"), None)
            .add_field("Container", "ports", merge("containerPort"), None)
            .add_field("Container", "volumeMounts", merge("mountPath"), None)
            .add_field("Container", "volumeDevices", merge("devicePath"), None)
            .add_field("PodStatus", "conditions", merge("type"), None)
            .add_field("PodStatus", "podIPs", merge("ip"), None)
            .add_field("PodStatus", "hostIPs", merge("ip"), None)
            .add_field(
                "PodStatus",
                "resourceClaimStatuses",
                merge_retaining("name"),
                None,
            )
            .add_field("PodTemplateSpec", "metadata", plain(), Some("ObjectMeta"))
            .add_field("PodTemplateSpec", "spec", plain(), Some("PodSpec"))
            .add_field("NodeSpec", "podCIDRs", merge_primitives, None)
            .add_field("NodeStatus", "conditions", merge("type"), None)
            .add_field("NodeStatus", "addresses", merge("type"), None)
            .add_field("ServiceSpec", "ports", merge("port"), None)
            .add_field("ServiceAccount", "secrets", merge("name"), None)
            .add_field("DeploymentSpec", "strategy", retaining, None);

        // Objects whose status is only a list of conditions merged on type.
        for status in [
            "ServiceStatus",
            "NamespaceStatus",
            "PersistentVolumeClaimStatus",
            "DeploymentStatus",
            "ReplicaSetStatus",
            "DaemonSetStatus",
            "StatefulSetStatus",
            "JobStatus",
            "ReplicationControllerStatus",
        ] {
            schema.add_field(status, "conditions", merge("type"), None);
        }
        // Workload specs embedding a pod template at spec.template.
        for spec in [
            "DeploymentSpec",
            "ReplicaSetSpec",
            "DaemonSetSpec",
            "StatefulSetSpec",
            "JobSpec",
            "ReplicationControllerSpec",
        ] {
            schema.add_field(spec, "template", plain(), Some("PodTemplateSpec"));
        }
        schema
            .add_field("JobTemplateSpec", "metadata", plain(), Some("ObjectMeta"))
            .add_field("JobTemplateSpec", "spec", plain(), Some("JobSpec"))
            .add_field(
                "CronJobSpec",
                "jobTemplate",
                plain(),
                Some("JobTemplateSpec"),
            )
            .add_field("PodTemplate", "template", plain(), Some("PodTemplateSpec"));

        let kinds: [(&str, &str, Option<&str>, Option<&str>); 20] = [
            ("v1", "Pod", Some("PodSpec"), Some("PodStatus")),
            ("v1", "Node", Some("NodeSpec"), Some("NodeStatus")),
            ("v1", "Service", Some("ServiceSpec"), Some("ServiceStatus")),
            ("v1", "Namespace", None, Some("NamespaceStatus")),
            (
                "v1",
                "PersistentVolumeClaim",
                None,
                Some("PersistentVolumeClaimStatus"),
            ),
            (
                "v1",
                "ReplicationController",
                Some("ReplicationControllerSpec"),
                Some("ReplicationControllerStatus"),
            ),
            ("v1", "PodTemplate", None, None),
            ("v1", "ServiceAccount", None, None),
            ("v1", "ConfigMap", None, None),
            ("v1", "Secret", None, None),
            ("v1", "Endpoints", None, None),
            ("v1", "Event", None, None),
            ("v1", "PersistentVolume", None, None),
            (
                "apps/v1",
                "Deployment",
                Some("DeploymentSpec"),
                Some("DeploymentStatus"),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                Some("ReplicaSetSpec"),
                Some("ReplicaSetStatus"),
            ),
            (
                "apps/v1",
                "DaemonSet",
                Some("DaemonSetSpec"),
                Some("DaemonSetStatus"),
            ),
            (
                "apps/v1",
                "StatefulSet",
                Some("StatefulSetSpec"),
                Some("StatefulSetStatus"),
            ),
            ("batch/v1", "Job", Some("JobSpec"), Some("JobStatus")),
            ("batch/v1", "CronJob", Some("CronJobSpec"), None),
            ("coordination.k8s.io/v1", "Lease", None, None),
        ];
        for (api_version, kind, spec, status) in kinds {
            schema.add_field(kind, "metadata", plain(), Some("ObjectMeta"));
            if let Some(spec) = spec {
                schema.add_field(kind, "spec", plain(), Some(spec));
            }
            if let Some(status) = status {
                schema.add_field(kind, "status", plain(), Some(status));
            }
            schema.add_kind(api_version, kind, kind);
        }
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_spec_rules_apply_wherever_a_pod_template_is() {
        let schema = PatchSchema::builtin();
        let env_paths: [(&str, &str, &[&str]); 7] = [
            ("v1", "Pod", &["spec", "containers", "env"]),
            (
                "apps/v1",
                "Deployment",
                &["spec", "template", "spec", "containers", "env"],
            ),
            (
                "apps/v1",
                "ReplicaSet",
                &["spec", "template", "spec", "initContainers", "env"],
            ),
            (
                "apps/v1",
                "DaemonSet",
                &["spec", "template", "spec", "containers", "env"],
            ),
            (
                "apps/v1",
                "StatefulSet",
                &["spec", "template", "spec", "containers", "env"],
            ),
            (
                "batch/v1",
                "Job",
                &["spec", "template", "spec", "containers", "env"],
            ),
            (
                "batch/v1",
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                    "env",
                ],
            ),
        ];
        for (api_version, kind, path) in env_paths {
            let meta = schema.field_meta(api_version, kind, path).unwrap();
            assert_eq!(meta.strategy, PatchStrategy::Merge, "{kind} {path:?}");
            assert_eq!(meta.merge_key.as_deref(), Some("name"), "{kind} {path:?}");
        }
    }

    #[test]
    fn table_entries() {
        let schema = PatchSchema::builtin();
        let key = |api_version: &str, kind: &str, path: &[&str]| {
            schema
                .field_meta(api_version, kind, path)
                .and_then(|meta| meta.merge_key)
        };
        assert_eq!(
            key("v1", "Pod", &["metadata", "ownerReferences"]).as_deref(),
            Some("uid")
        );
        assert_eq!(
            key("v1", "Pod", &["spec", "containers", "ports"]).as_deref(),
            Some("containerPort")
        );
        assert_eq!(
            key("v1", "Service", &["spec", "ports"]).as_deref(),
            Some("port")
        );
        assert_eq!(
            key("v1", "Node", &["status", "addresses"]).as_deref(),
            Some("type")
        );
        assert_eq!(
            key("v1", "Pod", &["status", "podIPs"]).as_deref(),
            Some("ip")
        );
        assert_eq!(
            key("apps/v1", "StatefulSet", &["status", "conditions"]).as_deref(),
            Some("type")
        );
        let finalizers = schema
            .field_meta("v1", "Pod", &["metadata", "finalizers"])
            .unwrap();
        assert_eq!(
            (finalizers.strategy, finalizers.merge_key),
            (PatchStrategy::Merge, None)
        );
        let taints = schema
            .field_meta("v1", "Node", &["spec", "taints"])
            .unwrap();
        assert_eq!(taints.strategy, PatchStrategy::Default);
        assert!(
            schema
                .field_meta("v1", "Pod", &["spec", "volumes"])
                .unwrap()
                .retain_keys
        );
        assert!(
            schema
                .field_meta("example.com/v1", "Widget", &["spec"])
                .is_none()
        );
    }
}
