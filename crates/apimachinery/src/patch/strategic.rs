//! Kubernetes' strategic merge patch: a JSON merge patch whose lists merge item by
//! item where the schema says so, steered by `$patch`, `$retainKeys`,
//! `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` directives.
//!
//! The semantics are those of `k8s.io/apimachinery/pkg/util/strategicpatch`
//! applied server-side. Where upstream copies a patch value verbatim into a place
//! the original lacks (directives and all), this implementation applies it to an
//! empty value instead, so that no directive key ever reaches the result.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::schema::{FieldPatchMeta, ObjectSchema, PatchSchema, PatchStrategy};
use super::{PatchError, go_type_name, go_value, values_equal};

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

/// Applies a strategic merge patch to `original`, reading list strategies from
/// `schema` (the position of the document's root type). Both must be JSON objects.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: ObjectSchema<'_>,
) -> Result<Value, PatchError> {
    let (Value::Object(original), Value::Object(patch)) = (original, patch) else {
        return Err(PatchError::NotAnObject);
    };
    merge_map(original.clone(), patch, schema).map(Value::Object)
}

/// Applies a strategic merge patch to an object of a kind `schema` knows. For
/// other kinds (custom resources) it fails with
/// [`PatchError::StrategicMergeUnsupported`], which kube-apiserver answers with 415.
pub fn strategic_merge_patch_for_kind(
    original: &Value,
    patch: &Value,
    schema: &PatchSchema,
    api_version: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let Some(root) = schema.for_kind(api_version, kind) else {
        return Err(PatchError::StrategicMergeUnsupported {
            kind: format!("{api_version} {kind}"),
        });
    };
    strategic_merge_patch(original, patch, root)
}

/// The field a `<prefix>/<field>` directive key names.
fn directive_field<'a>(key: &'a str, prefix: &str) -> Result<&'a str, PatchError> {
    match key.split_once('/') {
        Some((found_prefix, field)) if found_prefix == prefix => Ok(field),
        _ if prefix == SET_ELEMENT_ORDER_PREFIX => Err(PatchError::BadSetElementOrderFormat),
        _ => Err(PatchError::BadPrimitiveListFormat),
    }
}

fn as_list(value: &Value) -> Result<&Vec<Value>, PatchError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(PatchError::WrongType {
            expected: "[]interface {}",
            received: go_type_name(other),
        }),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: ObjectSchema<'_>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE_MARKER);
                merge_map(Map::new(), &rest, schema)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::UnknownDirective {
                directive: go_value(directive),
                item: go_value(&Value::Object(patch.clone())),
            }),
        };
    }

    if let Some(retained) = patch.get(RETAIN_KEYS_DIRECTIVE) {
        let Value::Array(retained) = retained else {
            return Err(PatchError::BadRetainKeysFormat);
        };
        let is_retained = |key: &str| retained.iter().any(|item| item.as_str() == Some(key));
        for (key, value) in patch {
            let exempt = value.is_null()
                || key == RETAIN_KEYS_DIRECTIVE
                || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
                || key.starts_with(SET_ELEMENT_ORDER_PREFIX);
            if !exempt && !is_retained(key) {
                return Err(PatchError::BadRetainKeysFormat);
            }
        }
        original.retain(|key, _| is_retained(key));
    }

    let ordered_fields = apply_set_element_order(&mut original, patch, schema)?;

    let mut deletions = Vec::new();
    for (key, patch_value) in patch {
        if key == DIRECTIVE_MARKER
            || key == RETAIN_KEYS_DIRECTIVE
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
            || ordered_fields.contains(key.as_str())
        {
            continue;
        }
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            deletions.push((
                directive_field(key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?,
                patch_value,
            ));
            continue;
        }
        if patch_value.is_null() {
            original.remove(key);
            continue;
        }
        let (meta, field_schema) = schema.field(key);
        let merged = match original.remove(key) {
            None => fresh_value(patch_value, &meta, field_schema)?,
            Some(existing) => merge_value(existing, patch_value, &meta, field_schema)?,
        };
        original.insert(key.clone(), merged);
    }

    // Deletions come after additions: a patch made by diffing never names one item
    // in both, so the order only matters for hand-written patches.
    for (field, to_delete) in deletions {
        let Value::Array(to_delete) = to_delete else {
            return Err(PatchError::BadPrimitiveListFormat);
        };
        match original.get_mut(field) {
            // Upstream would store the deletion list as the field's value here.
            None => {}
            Some(Value::Array(items)) => {
                items.retain(|item| !to_delete.iter().any(|deleted| values_equal(item, deleted)))
            }
            Some(other) => {
                return Err(PatchError::WrongType {
                    expected: "[]interface {}",
                    received: go_type_name(other),
                });
            }
        }
    }
    Ok(original)
}

/// A patch value for a field the original lacks (or holds with another JSON
/// type): applied to nothing, so that its directives take effect and its nulls
/// vanish.
fn fresh_value(
    patch_value: &Value,
    meta: &FieldPatchMeta,
    schema: ObjectSchema<'_>,
) -> Result<Value, PatchError> {
    match patch_value {
        Value::Object(patch_members) => {
            merge_map(Map::new(), patch_members, schema).map(Value::Object)
        }
        Value::Array(items) if meta.strategy == PatchStrategy::Merge => {
            merge_list(Vec::new(), items, meta.merge_key.as_deref(), schema).map(Value::Array)
        }
        other => Ok(other.clone()),
    }
}

fn merge_value(
    existing: Value,
    patch_value: &Value,
    meta: &FieldPatchMeta,
    schema: ObjectSchema<'_>,
) -> Result<Value, PatchError> {
    match (existing, patch_value) {
        (Value::Object(existing), Value::Object(patch_members)) => {
            if meta.strategy == PatchStrategy::Replace {
                fresh_value(patch_value, meta, schema)
            } else {
                merge_map(existing, patch_members, schema).map(Value::Object)
            }
        }
        (Value::Array(existing), Value::Array(items)) => {
            if meta.strategy == PatchStrategy::Merge {
                merge_list(existing, items, meta.merge_key.as_deref(), schema).map(Value::Array)
            } else {
                Ok(patch_value.clone())
            }
        }
        _ => fresh_value(patch_value, meta, schema),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Null,
    Bool,
    Number,
    String,
    Object,
}

/// The one JSON type of the items of some lists, as upstream's `sliceElementType`
/// requires; `None` when there are no items.
fn element_kind(lists: &[&[Value]]) -> Result<Option<ElementKind>, PatchError> {
    let mut kind = None;
    for item in lists.iter().flat_map(|list| list.iter()) {
        let item_kind = match item {
            Value::Null => ElementKind::Null,
            Value::Bool(_) => ElementKind::Bool,
            Value::Number(_) => ElementKind::Number,
            Value::String(_) => ElementKind::String,
            Value::Object(_) => ElementKind::Object,
            Value::Array(_) => return Err(PatchError::ListOfLists),
        };
        match kind {
            None => kind = Some(item_kind),
            Some(previous) if previous != item_kind => {
                let rendered: Vec<String> = lists
                    .iter()
                    .map(|list| go_value(&Value::Array(list.to_vec())))
                    .collect();
                return Err(PatchError::MixedListElements {
                    lists: format!("[{}]", rendered.join(" ")),
                });
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

fn no_merge_key(item: &Value, merge_key: &str) -> PatchError {
    PatchError::NoMergeKey {
        item: go_value(item),
        merge_key: merge_key.to_string(),
    }
}

/// The merge key's value of a list item, which must be an object holding it.
fn merge_key_value<'v>(item: &'v Value, merge_key: &str) -> Result<&'v Value, PatchError> {
    match item {
        Value::Object(members) => members
            .get(merge_key)
            .ok_or_else(|| no_merge_key(item, merge_key)),
        other => Err(PatchError::WrongType {
            expected: "map[string]interface {}",
            received: go_type_name(other),
        }),
    }
}

/// Where `item` is in `order`: by merge key for objects, by value otherwise.
fn position_in(order: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    match merge_key {
        None => order
            .iter()
            .position(|candidate| values_equal(candidate, item)),
        Some(merge_key) => {
            let wanted = item.get(merge_key);
            order
                .iter()
                .position(|candidate| match (candidate.get(merge_key), wanted) {
                    (Some(left), Some(right)) => values_equal(left, right),
                    (None, None) => true,
                    _ => false,
                })
        }
    }
}

fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    merge_key: Option<&str>,
    item_schema: ObjectSchema<'_>,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if element_kind(&[&original, patch])? != Some(ElementKind::Object) {
        // A list of primitives merges as a set union.
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.iter().chain(patch) {
            if !merged.iter().any(|kept| values_equal(kept, item)) {
                merged.push(item.clone());
            }
        }
        let (patch_items, server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|item| position_in(patch, item, None).is_some());
        return Ok(normalize_element_order(
            patch_items,
            server_only,
            patch,
            &original,
            None,
        ));
    }
    let Some(merge_key) = merge_key else {
        return Err(PatchError::NoMergeKeyDeclared);
    };

    let mut original = original;
    let mut replace = false;
    let mut plain_items: Vec<&Map<String, Value>> = Vec::new();
    for item in patch {
        let Value::Object(members) = item else {
            // element_kind found only objects.
            return Err(PatchError::ListOfLists);
        };
        match members.get(DIRECTIVE_MARKER) {
            None => plain_items.push(members),
            Some(directive) => match directive.as_str() {
                Some("delete") => {
                    let doomed = merge_key_value(item, merge_key)?;
                    original.retain(|candidate| {
                        !candidate
                            .get(merge_key)
                            .is_some_and(|value| values_equal(value, doomed))
                    });
                }
                Some("replace") => replace = true,
                Some("merge") => return Err(PatchError::MergeDirectiveInList),
                _ => {
                    return Err(PatchError::UnknownDirective {
                        directive: go_value(directive),
                        item: go_value(item),
                    });
                }
            },
        }
    }

    if replace {
        // `$patch: replace` in a list: the patch's other items are the whole list.
        let mut replaced = Vec::with_capacity(plain_items.len());
        for members in plain_items {
            let item = Value::Object(members.clone());
            merge_key_value(&item, merge_key)?;
            replaced.push(Value::Object(merge_map(Map::new(), members, item_schema)?));
        }
        return Ok(replaced);
    }

    let server_order = original.clone();
    let mut merged = original;
    for members in &plain_items {
        let item = Value::Object((*members).clone());
        let key_value = merge_key_value(&item, merge_key)?;
        let found = merged.iter().position(|candidate| {
            candidate
                .get(merge_key)
                .is_some_and(|value| values_equal(value, key_value))
        });
        match found {
            Some(position) => {
                let Value::Object(existing) = std::mem::take(&mut merged[position]) else {
                    return Err(PatchError::WrongType {
                        expected: "map[string]interface {}",
                        received: go_type_name(&merged[position]),
                    });
                };
                merged[position] = Value::Object(merge_map(existing, members, item_schema)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), members, item_schema)?)),
        }
    }

    let patch_order: Vec<Value> = plain_items
        .iter()
        .map(|members| Value::Object((*members).clone()))
        .collect();
    let mut patch_items = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        merge_key_value(&item, merge_key)?;
        if position_in(&patch_order, &item, Some(merge_key)).is_some() {
            patch_items.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok(normalize_element_order(
        patch_items,
        server_only,
        &patch_order,
        &server_order,
        Some(merge_key),
    ))
}

/// Orders a merged list as upstream does: the patch's items in the patch's
/// order, the server-only items in the original's order, then the two interleaved
/// by the original's order, patch items first where the original does not decide.
fn normalize_element_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    // Items not in their order list keep their relative place after those that are.
    let sort_key = |order: &[Value], item: &Value| {
        position_in(order, item, merge_key).map_or((1, 0), |position| (0, position))
    };
    patch_items.sort_by_cached_key(|item| sort_key(patch_order, item));
    server_only.sort_by_cached_key(|item| sort_key(server_order, item));

    let mut result = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(left_item), Some(right_item)) => {
                match (
                    position_in(server_order, left_item, merge_key),
                    position_in(server_order, right_item, merge_key),
                ) {
                    (Some(left_position), Some(right_position)) => left_position < right_position,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        result.extend(next);
    }
    result
}

/// Applies every `$setElementOrder/<field>` directive of `patch`: merges the
/// field's list and orders it by the directive. Returns the fields so handled.
fn apply_set_element_order<'p>(
    original: &mut Map<String, Value>,
    patch: &'p Map<String, Value>,
    schema: ObjectSchema<'_>,
) -> Result<BTreeSet<&'p str>, PatchError> {
    let mut handled = BTreeSet::new();
    for (key, order_value) in patch {
        if !key.starts_with(SET_ELEMENT_ORDER_PREFIX) {
            continue;
        }
        let field = directive_field(key, SET_ELEMENT_ORDER_PREFIX)?;
        let order = as_list(order_value)?;
        let original_list = original.get(field).map(as_list).transpose()?.cloned();
        let patch_list = patch.get(field).map(as_list).transpose()?;
        let (meta, item_schema) = schema.field(field);
        let merge_key = meta.merge_key.as_deref();
        validate_patch_with_order(patch_list.map_or(&[][..], Vec::as_slice), order, merge_key)?;

        let merged = match (&original_list, patch_list) {
            (None, None) => continue,
            (Some(existing), None) => existing.clone(),
            (None, Some(items)) => {
                match fresh_value(&Value::Array(items.clone()), &meta, item_schema)? {
                    Value::Array(items) => items,
                    other => vec![other],
                }
            }
            (Some(existing), Some(items)) => {
                if meta.strategy == PatchStrategy::Merge {
                    merge_list(existing.clone(), items, merge_key, item_schema)?
                } else {
                    items.clone()
                }
            }
        };
        let mut in_order = Vec::new();
        let mut server_only = Vec::new();
        for item in merged {
            let listed = match merge_key {
                Some(merge_key) => {
                    let key_value = merge_key_value(&item, merge_key)?;
                    let mut listed = false;
                    for ordered in order {
                        if merge_key_value(ordered, merge_key)
                            .is_ok_and(|value| values_equal(value, key_value))
                        {
                            listed = true;
                            break;
                        }
                        if !ordered.is_object() {
                            return Err(PatchError::WrongType {
                                expected: "map[string]interface {}",
                                received: go_type_name(ordered),
                            });
                        }
                    }
                    listed
                }
                None => order.iter().any(|ordered| values_equal(ordered, &item)),
            };
            if listed {
                in_order.push(item);
            } else {
                server_only.push(item);
            }
        }
        if let Some(merge_key) = merge_key {
            for ordered in order {
                merge_key_value(ordered, merge_key)?;
            }
        }
        let server_order = original_list.unwrap_or_default();
        let ordered =
            normalize_element_order(in_order, server_only, order, &server_order, merge_key);
        original.insert(field.to_string(), Value::Array(ordered));
        handled.insert(field);
    }
    Ok(handled)
}

/// Checks that the patch list's items appear in the `$setElementOrder` list, in
/// the same relative order (items being deleted are exempt).
fn validate_patch_with_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let kept: Vec<&Value> = patch_list
        .iter()
        .filter(|item| {
            merge_key.is_none()
                || item.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some("delete")
        })
        .collect();
    let (mut patch_idx, mut order_idx) = (0, 0);
    while patch_idx < kept.len() && order_idx < order.len() {
        let item = kept[patch_idx];
        if item.get(DIRECTIVE_MARKER).is_some() {
            patch_idx += 1;
            continue;
        }
        let equal = match merge_key {
            None => values_equal(item, &order[order_idx]),
            Some(merge_key) => values_equal(
                merge_key_value(item, merge_key)?,
                merge_key_value(&order[order_idx], merge_key)?,
            ),
        };
        if equal {
            patch_idx += 1;
        }
        order_idx += 1;
    }
    if patch_idx < kept.len() {
        return Err(PatchError::SetElementOrderMismatch {
            patch_list: go_value(&Value::Array(patch_list.to_vec())),
            order_list: go_value(&Value::Array(order.to_vec())),
        });
    }
    Ok(())
}
