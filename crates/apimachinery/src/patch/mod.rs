//! The three patch formats the API server accepts: JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902), and Kubernetes' strategic merge patch.

mod json_patch;
mod merge_patch;
mod schema;
mod strategic;

use serde_json::Value;

pub use json_patch::json_patch;
pub use merge_patch::merge_patch;
pub use schema::{FieldPatchMeta, ObjectSchema, PatchSchema, PatchStrategy};
pub use strategic::{strategic_merge_patch, strategic_merge_patch_for_kind};

/// Why a patch could not be applied. JSON patch texts follow the
/// `evanphx/json-patch` library kube-apiserver uses; strategic merge patch texts
/// follow `k8s.io/apimachinery`'s `strategicpatch` and `mergepatch` packages.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The JSON patch document is not a list of operation objects, or an operation
    /// lacks a field it needs.
    #[error("invalid JSON patch: operation {op_idx}: {reason}")]
    MalformedOperation { op_idx: usize, reason: String },
    /// An `op` other than add, remove, replace, move, copy, test.
    #[error("Unexpected kind: {op}")]
    UnknownOperation { op: String },
    /// A path that is not a JSON pointer (does not start with `/`).
    #[error("{op} operation failed to decode path: invalid JSON pointer {path:?}")]
    InvalidPointer { op: &'static str, path: String },
    /// The parent of the target location does not exist.
    #[error("{op} operation does not apply: doc is missing path: \"{path}\": missing value")]
    MissingPath { op: &'static str, path: String },
    /// `replace` of a location that does not exist.
    #[error("replace operation does not apply: doc is missing key: {path}: missing value")]
    MissingKey { path: String },
    /// `move` or `copy` from a location that does not exist.
    #[error("{op} operation does not apply: doc is missing from path: {from}: missing value")]
    MissingFrom { op: &'static str, from: String },
    /// `remove` of an object member that does not exist.
    #[error(
        "error in remove for path: '{path}': Unable to remove nonexistent key: {key}: missing value"
    )]
    NonexistentKey { path: String, key: String },
    /// An array index that is not a number or is out of range.
    #[error(
        "error in {op} for path: '{path}': Unable to access invalid index: {index}: invalid index referenced"
    )]
    InvalidIndex {
        op: &'static str,
        path: String,
        index: String,
    },
    /// `move` of a location into one of its own children.
    #[error("move operation does not apply: {from} is a parent of {path}")]
    MoveIntoChild { from: String, path: String },
    /// A `test` operation found a different value.
    #[error("testing value {path} failed: test failed")]
    TestFailed { path: String },

    /// A strategic merge patch or the object it applies to is not a JSON object.
    #[error("invalid JSON document")]
    NotAnObject,
    /// Strategic merge patch on a kind with no patch schema (custom resources);
    /// kube-apiserver answers 415 Unsupported Media Type with this text.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    StrategicMergeUnsupported { kind: String },
    /// A list of lists where a merging list was expected.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// Items of different JSON types in one merging list.
    #[error("list element types are not identical: {lists}")]
    MixedListElements { lists: String },
    /// A value of the wrong JSON type where a directive or merge needs a given one.
    #[error("expected a {expected}, but received a {received}")]
    WrongType {
        expected: &'static str,
        received: &'static str,
    },
    /// A merging-list item without the list's merge key.
    #[error("map: {item} does not contain declared merge key: {merge_key}")]
    NoMergeKey { item: String, merge_key: String },
    /// A merging list of objects whose schema names no merge key.
    #[error("cannot merge lists without merge key for type struct")]
    NoMergeKeyDeclared,
    /// A `$patch` value other than the directives allowed where it appears.
    #[error("unknown patch type: {directive} in map: {item}")]
    UnknownDirective { directive: String, item: String },
    /// `$patch: merge` on a list item; upstream rejects it.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// `$deleteFromPrimitiveList/<field>` whose value is not a list.
    #[error("invalid patch format of primitive list")]
    BadPrimitiveListFormat,
    /// `$retainKeys` that is not a list, or a patch setting a key it does not retain.
    #[error("invalid patch format of retainKeys")]
    BadRetainKeysFormat,
    /// `$setElementOrder/<field>` that is not a list.
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrderFormat,
    /// A patch list whose order contradicts its `$setElementOrder` list.
    #[error(
        "The order in patch list:\n{patch_list}\n doesn't match $setElementOrder list:\n{order_list}\n"
    )]
    SetElementOrderMismatch {
        patch_list: String,
        order_list: String,
    },
}

/// JSON equality as Go's decoded values compare: numbers by value, so `1` and
/// `1.0` are equal.
pub(crate) fn values_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => {
            if left.is_f64() || right.is_f64() {
                left.as_f64() == right.as_f64()
            } else {
                left == right
            }
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| values_equal(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, left)| {
                    right
                        .get(key)
                        .is_some_and(|right| values_equal(left, right))
                })
        }
        _ => left == right,
    }
}

/// A JSON value as Go's `%v` prints a decoded one (`map[a:1 b:[x y]]`), for
/// messages that quote patch content the way kube-apiserver does.
pub(crate) fn go_value(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() < 1e21 => format!("{float:.0}"),
            _ => number.to_string(),
        },
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_value).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            let entries: Vec<String> = entries
                .into_iter()
                .map(|(key, value)| format!("{key}:{}", go_value(value)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// The Go type name of a decoded JSON value, for type-mismatch messages.
pub(crate) fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}
