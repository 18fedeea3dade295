//! Tolerant reads from objects in Go's JSON shape: a missing, null or mistyped
//! field reads as Go's zero value, so no input can make a printer fail.

use serde_json::{Map, Value};

use crate::timestamp::{UnixNanos, parse_time, since};

/// The value at `path`, if every step is an object holding the key (null counts as absent).
pub(crate) fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut current = value;
    for key in path {
        current = current.as_object()?.get(*key)?;
    }
    if current.is_null() {
        None
    } else {
        Some(current)
    }
}

/// True when the field is present and not null: Go's "pointer is non-nil".
pub(crate) fn present(value: &Value, path: &[&str]) -> bool {
    get(value, path).is_some()
}

pub(crate) fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    get(value, path).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn int_at(value: &Value, path: &[&str]) -> i64 {
    get(value, path).and_then(as_int).unwrap_or(0)
}

/// An optional integer field (a Go `*int32`).
pub(crate) fn opt_int_at(value: &Value, path: &[&str]) -> Option<i64> {
    get(value, path).and_then(as_int)
}

pub(crate) fn bool_at(value: &Value, path: &[&str]) -> bool {
    get(value, path).and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn array_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    get(value, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn object_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(value, path).and_then(Value::as_object)
}

/// Number of entries of a map field (Go `len(map)`), zero when absent.
pub(crate) fn map_len(value: &Value, path: &[&str]) -> usize {
    object_at(value, path).map_or(0, Map::len)
}

pub(crate) fn as_int(value: &Value) -> Option<i64> {
    if let Some(signed) = value.as_i64() {
        return Some(signed);
    }
    if value.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // Float-to-int `as` saturates and maps NaN to zero.
    value.as_f64().map(|float| float as i64)
}

pub(crate) fn time_at(value: &Value, path: &[&str]) -> Option<UnixNanos> {
    parse_time(get(value, path))
}

pub(crate) fn name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"])
}

/// The Age cell: time since `metadata.creationTimestamp`.
pub(crate) fn age(object: &Value, now: UnixNanos) -> String {
    since(time_at(object, &["metadata", "creationTimestamp"]), now)
}

/// Go's `string(value)` for an IntOrString field.
pub(crate) fn int_or_string(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => as_int(other).unwrap_or(0).to_string(),
    }
}

/// The first condition of `type` in a conditions array (Go loops stop at the first match).
pub(crate) fn condition<'a>(conditions: &'a [Value], condition_type: &str) -> Option<&'a Value> {
    conditions
        .iter()
        .find(|condition| str_at(condition, &["type"]) == condition_type)
}

/// Container names and images joined by commas, as the wide Containers and Images cells.
pub(crate) fn container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers
        .iter()
        .map(|container| str_at(container, &["name"]))
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|container| str_at(container, &["image"]))
        .collect();
    (names.join(","), images.join(","))
}
