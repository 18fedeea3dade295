//! Strategic merge patch cases ported as data from upstream's
//! `strategicpatch/patch_test.go` (its `MergeItem` test type), plus cases on
//! built-in kinds through the built-in schema.

use apimachinery::patch::{
    FieldPatchMeta, PatchError, PatchSchema, PatchStrategy, strategic_merge_patch,
    strategic_merge_patch_for_kind,
};
use serde_json::{Value, json};

/// Upstream's `MergeItem` and `RetainKeysMergeItem` test types, as a schema.
fn merge_item_schema() -> PatchSchema {
    let merge = |key: &str| FieldPatchMeta {
        strategy: PatchStrategy::Merge,
        merge_key: Some(key.to_string()),
        retain_keys: false,
    };
    let merge_primitives = FieldPatchMeta {
        strategy: PatchStrategy::Merge,
        merge_key: None,
        retain_keys: false,
    };
    let mut schema = PatchSchema::new();
    schema
        .add_field("MergeItem", "mergingList", merge("name"), Some("MergeItem"))
        .add_field(
            "MergeItem",
            "nonMergingList",
            FieldPatchMeta::default(),
            Some("MergeItem"),
        )
        .add_field(
            "MergeItem",
            "mergingIntList",
            merge_primitives.clone(),
            None,
        )
        .add_field(
            "MergeItem",
            "mergeItemPtr",
            merge("name"),
            Some("MergeItem"),
        )
        .add_field(
            "MergeItem",
            "replacingItem",
            FieldPatchMeta {
                strategy: PatchStrategy::Replace,
                ..FieldPatchMeta::default()
            },
            None,
        )
        .add_field(
            "MergeItem",
            "retainKeysMap",
            FieldPatchMeta {
                retain_keys: true,
                ..FieldPatchMeta::default()
            },
            Some("RetainKeysMergeItem"),
        )
        .add_field(
            "MergeItem",
            "retainKeysMergingList",
            FieldPatchMeta {
                retain_keys: true,
                ..merge("name")
            },
            Some("MergeItem"),
        )
        .add_field(
            "RetainKeysMergeItem",
            "mergingIntList",
            merge_primitives,
            None,
        )
        .add_field(
            "RetainKeysMergeItem",
            "mergingList",
            merge("name"),
            Some("MergeItem"),
        )
        .add_field(
            "RetainKeysMergeItem",
            "nonMergingList",
            FieldPatchMeta::default(),
            Some("MergeItem"),
        );
    schema
}

/// (description, original, patch, expected result). Each upstream case with an
/// original, a two-way patch and a modified document, or a current document, a
/// three-way patch and a result, gives one application case here.
fn application_cases() -> Vec<(&'static str, Value, Value, Value)> {
    vec![
        (
            "unique scalars when merging lists",
            json!({"mergingIntList": [1, 2]}),
            json!({"mergingIntList": [2, 3]}),
            json!({"mergingIntList": [1, 2, 3]}),
        ),
        (
            "delete map from nested map",
            json!({"simpleMap": {"key1": 1, "key2": 1}}),
            json!({"simpleMap": {"$patch": "delete"}}),
            json!({"simpleMap": {}}),
        ),
        (
            "delete all items from merging list",
            json!({"mergingList": [{"name": 1}, {"name": 2}]}),
            json!({"mergingList": [{"$patch": "replace"}]}),
            json!({"mergingList": []}),
        ),
        (
            "merge empty merging lists",
            json!({"mergingList": []}),
            json!({"mergingList": []}),
            json!({"mergingList": []}),
        ),
        (
            "delete all keys from map",
            json!({"name": 1, "value": 1}),
            json!({"$patch": "replace"}),
            json!({}),
        ),
        (
            "add key and delete all keys from map",
            json!({"name": 1, "value": 1}),
            json!({"other": "a", "$patch": "replace"}),
            json!({"other": "a"}),
        ),
        (
            "de-duplicate entries in a merging list",
            json!({"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}),
            json!({"mergingList": [{"name": 2, "value": "a"}]}),
        ),
        (
            "retainKeys map can add a field when no retainKeys directive present",
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"value": "bar"}}),
            json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
        ),
        (
            "retainKeys map can change a field when no retainKeys directive present",
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {"value": "b"}}),
            json!({"retainKeysMap": {"name": "foo", "value": "b"}}),
        ),
        (
            "retainKeys map can delete a field when no retainKeys directive present",
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {"value": null}}),
            json!({"retainKeysMap": {"name": "foo"}}),
        ),
        (
            "retainKeys map merge an empty map",
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {}}),
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
        ),
        (
            "retainKeys list can add a field when no retainKeys directive present",
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}]}),
            json!({"retainKeysMergingList": [{"name": "foo", "value": "a"}]}),
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
        ),
        (
            "retainKeys list can delete a field when no retainKeys directive present",
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
            json!({"retainKeysMergingList": [{"name": "foo", "value": null}]}),
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}]}),
        ),
        (
            "preserve the order from the patch in a merging list",
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "other": "x"}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "value": "b", "other": "x"}]}),
        ),
        (
            "preserve the order from the patch in a merging list 2",
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"name": 2, "value": "b"}, {"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
        ),
        (
            "preserve the order from the patch in a merging int list",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"mergingIntList": [3, 1, 2]}),
            json!({"mergingIntList": [3, 1, 2]}),
        ),
        (
            "preserve the order from the patch in a merging int list 2",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"mergingIntList": [3, 1]}),
            json!({"mergingIntList": [2, 3, 1]}),
        ),
        (
            "$setElementOrder contains item that is not present in the list to be merged",
            json!({"mergingList": [{"name": 1}, {"name": 3}]}),
            json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                   "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        ),
        (
            "$setElementOrder contains item that is not present in the int list to be merged",
            json!({"mergingIntList": [1, 3]}),
            json!({"$setElementOrder/mergingIntList": [3, 2, 1]}),
            json!({"mergingIntList": [3, 1]}),
        ),
        (
            "nil patch",
            json!({"name": 1}),
            json!({}),
            json!({"name": 1}),
        ),
        (
            "add field to map",
            json!({"name": 1, "other": "a"}),
            json!({"value": 1}),
            json!({"name": 1, "value": 1, "other": "a"}),
        ),
        (
            "add field and delete field from map",
            json!({"name": 1, "other": "a"}),
            json!({"name": null, "value": 1}),
            json!({"value": 1, "other": "a"}),
        ),
        (
            "delete field from nested map",
            json!({"simpleMap": {"key1": 1, "key2": 1, "other": "a"}}),
            json!({"simpleMap": {"key2": null}}),
            json!({"simpleMap": {"key1": 1, "other": "a"}}),
        ),
        (
            "add field and delete all fields from map",
            json!({"name": 1, "value": 1, "other": "a"}),
            json!({"name": null, "value": null, "other": "a"}),
            json!({"other": "a"}),
        ),
        (
            "replace list of scalars with conflict",
            json!({"nonMergingIntList": [1, 4]}),
            json!({"nonMergingIntList": [2, 3]}),
            json!({"nonMergingIntList": [2, 3]}),
        ),
        (
            "delete all maps from merging list with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "other": "b"}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "$patch": "delete"}]}),
            json!({"mergingList": []}),
        ),
        (
            "delete all maps from empty merging list",
            json!({"mergingList": []}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "$patch": "delete"}]}),
            json!({"mergingList": []}),
        ),
        (
            "defined null values should propagate overwrite current fields (with conflict)",
            json!({"name": "a", "other": "a"}),
            json!({"name": 1, "value": 1, "other": null}),
            json!({"name": 1, "value": 1}),
        ),
        (
            "defined null values should propagate removing original fields",
            json!({"name": "original-name", "value": "original-value", "other": "current-other"}),
            json!({"name": "modified-name", "value": null}),
            json!({"name": "modified-name", "other": "current-other"}),
        ),
        (
            "delete items in lists of scalars",
            json!({"mergingIntList": [1, 2, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2, 4]}),
        ),
        (
            "delete all duplicate items in lists of scalars",
            json!({"mergingIntList": [1, 2, 3, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2, 4]}),
        ),
        (
            "add and delete items in lists of scalars",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 4], "$deleteFromPrimitiveList/mergingIntList": [3], "mergingIntList": [4]}),
            json!({"mergingIntList": [1, 2, 4]}),
        ),
        (
            "merge lists of maps",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
                   "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]}),
            json!({"mergingList": [{"name": 4, "value": 4}, {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
        ),
        (
            "merge lists of maps with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 3, "other": "b"}]}),
            json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                   "mergingList": [{"name": 2, "value": 2}, {"name": 3, "value": 3}]}),
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}]}),
        ),
        (
            "add field to map in merging list",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                   "mergingList": [{"name": 1, "value": 1}]}),
            json!({"mergingList": [{"name": 1, "value": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        ),
        // Cases of ours, for the parts of the semantics the ports above leave out.
        (
            "a new item without $setElementOrder goes before the server-only items",
            json!({"mergingList": [{"name": "a"}, {"name": "b"}]}),
            json!({"mergingList": [{"name": "c"}]}),
            json!({"mergingList": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}),
        ),
        (
            "non-merging list of maps is replaced",
            json!({"nonMergingList": [{"name": 1, "value": 1}, {"name": 2}]}),
            json!({"nonMergingList": [{"name": 1}]}),
            json!({"nonMergingList": [{"name": 1}]}),
        ),
        (
            "replace strategy replaces a map whole",
            json!({"replacingItem": {"a": 1, "b": 2}}),
            json!({"replacingItem": {"b": 3}}),
            json!({"replacingItem": {"b": 3}}),
        ),
        (
            "$retainKeys clears unlisted keys",
            json!({"retainKeysMap": {"name": "foo", "value": "a", "other": "x"}}),
            json!({"retainKeysMap": {"$retainKeys": ["name", "value"], "value": "b"}}),
            json!({"retainKeysMap": {"name": "foo", "value": "b"}}),
        ),
        (
            "nested merging lists merge recursively",
            json!({"mergingList": [{"name": 1, "mergingList": [{"name": "x", "value": 1}]}]}),
            json!({"mergingList": [{"name": 1, "mergingList": [{"name": "x", "other": 2}, {"name": "y"}]}]}),
            json!({"mergingList": [{"name": 1, "mergingList": [{"name": "x", "value": 1, "other": 2}, {"name": "y"}]}]}),
        ),
        (
            "directives in a list the original lacks take effect",
            json!({}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "simpleMap": {"a": null, "b": "c"}}]}),
            json!({"mergingList": [{"name": 2, "simpleMap": {"b": "c"}}]}),
        ),
        (
            "a value of another JSON type replaces",
            json!({"mergingList": "text"}),
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 1}]}),
        ),
    ]
}

#[test]
fn upstream_application_cases() {
    let schema = merge_item_schema();
    let root = schema.for_type("MergeItem").unwrap();
    for (description, original, patch, expected) in application_cases() {
        let result = strategic_merge_patch(&original, &patch, root)
            .unwrap_or_else(|error| panic!("{description}: {error}"));
        assert_eq!(result, expected, "{description}");
    }
}

#[test]
fn upstream_error_cases() {
    let schema = merge_item_schema();
    let root = schema.for_type("MergeItem").unwrap();
    let cases = [
        (
            "should check if order in $setElementOrder and patch list match",
            json!({"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]}),
            json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                   "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
            "doesn't match",
        ),
        (
            "should check if order in $setElementOrder and patch int list match",
            json!({"mergingIntList": [1, 3, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
            "doesn't match",
        ),
        (
            "missing merge key should error out",
            json!({"mergingList": [{"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"value": "b"}]}),
            "map: map[value:b] does not contain declared merge key: name",
        ),
        (
            "unknown list directive",
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 1, "$patch": "frob"}]}),
            "unknown patch type: frob in map: map[$patch:frob name:1]",
        ),
        (
            "merge directive in a list",
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 1, "$patch": "merge"}]}),
            "merging lists cannot yet be specified in the patch",
        ),
        (
            "retainKeys that does not list a patched key",
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"$retainKeys": ["name"], "value": "b"}}),
            "invalid patch format of retainKeys",
        ),
        (
            "lists of lists",
            json!({"mergingIntList": [[1]]}),
            json!({"mergingIntList": [[2]]}),
            "lists of lists are not supported",
        ),
        (
            "mixed element types",
            json!({"mergingIntList": [1]}),
            json!({"mergingIntList": ["a"]}),
            "list element types are not identical: [[1] [a]]",
        ),
        (
            "deletion list that is not a list",
            json!({"mergingIntList": [1]}),
            json!({"$deleteFromPrimitiveList/mergingIntList": 1}),
            "invalid patch format of primitive list",
        ),
    ];
    for (description, original, patch, expected) in cases {
        let error = strategic_merge_patch(&original, &patch, root)
            .expect_err(description)
            .to_string();
        assert!(error.contains(expected), "{description}: {error}");
    }
}

#[test]
fn deployment_containers_merge_by_name_and_env_by_name() {
    let schema = PatchSchema::builtin();
    let original = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "finalizers": ["a"], "labels": {"app": "web"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}
    });
    let patch = json!({
        "metadata": {"finalizers": ["b"], "labels": {"tier": "front"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "20"}, {"name": "A", "$patch": "delete"}]}
        ]}}}
    });
    let result =
        strategic_merge_patch_for_kind(&original, &patch, &schema, "apps/v1", "Deployment")
            .unwrap();
    assert_eq!(
        result,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": ["b", "a"], "labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "20"}]},
                {"name": "sidecar", "image": "proxy:1"}
            ]}}}
        })
    );
}

#[test]
fn node_taints_replace_and_status_conditions_merge() {
    let schema = PatchSchema::builtin();
    let original = json!({
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}
    });
    let patch = json!({
        "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    });
    let result = strategic_merge_patch_for_kind(&original, &patch, &schema, "v1", "Node").unwrap();
    assert_eq!(
        result["spec"]["taints"],
        json!([{"key": "b", "effect": "NoExecute"}])
    );
    assert_eq!(
        result["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}])
    );
}

#[test]
fn pod_volumes_retain_keys() {
    let schema = PatchSchema::builtin();
    let original = json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}]}});
    let patch = json!({"spec": {"volumes": [
        {"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/srv"}}
    ]}});
    let result = strategic_merge_patch_for_kind(&original, &patch, &schema, "v1", "Pod").unwrap();
    assert_eq!(
        result,
        json!({"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/srv"}}]}})
    );
}

#[test]
fn custom_resources_are_refused_with_upstreams_415_text() {
    let schema = PatchSchema::builtin();
    let error =
        strategic_merge_patch_for_kind(&json!({}), &json!({}), &schema, "example.com/v1", "Widget")
            .unwrap_err();
    assert!(matches!(
        error,
        PatchError::StrategicMergeUnsupported { .. }
    ));
    assert_eq!(
        error.to_string(),
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
}

#[test]
fn documents_must_be_objects() {
    let schema = PatchSchema::builtin();
    let root = schema.for_kind("v1", "Pod").unwrap();
    assert_eq!(
        strategic_merge_patch(&json!({}), &json!([1]), root),
        Err(PatchError::NotAnObject)
    );
}
