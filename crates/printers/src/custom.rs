//! Tables for kinds without a built-in printer: the default table convertor
//! (NAME, CREATED AT) and CustomResourceDefinition `additionalPrinterColumns`.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{CREATION_TIMESTAMP_DESCRIPTION, column, name_column};
use crate::jsonpath::JsonPath;
use crate::object::{as_int, name, time_at};
use crate::timestamp::{format_rfc3339_utc, parse_rfc3339, since, unix_nanos};

/// kube-apiserver's default table convertor: Name, and Created At typed
/// "date" (kubectl turns the RFC 3339 cell into an age).
pub fn default_columns() -> Vec<Column> {
    vec![
        name_column(),
        column("Created At", "date", 0, CREATION_TIMESTAMP_DESCRIPTION),
    ]
}

/// The name and `creationTimestamp` in UTC RFC 3339 ("0001-01-01T00:00:00Z" when unset).
/// `now` is unused; it keeps the signature in line with [`crate::cells`].
pub fn default_cells(object: &Value, _now: SystemTime) -> Vec<Value> {
    let created = time_at(object, &["metadata", "creationTimestamp"]);
    vec![json!(name(object)), json!(format_rfc3339_utc(created))]
}

/// One `additionalPrinterColumns` entry of a CustomResourceDefinition version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomColumn {
    pub name: String,
    pub column_type: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    pub json_path: String,
}

/// A CRD version without printer columns gets an Age column (type "date" on
/// `.metadata.creationTimestamp`); one with any columns gets exactly those.
fn served_columns(defined: &[CustomColumn]) -> Vec<CustomColumn> {
    if !defined.is_empty() {
        return defined.to_vec();
    }
    vec![CustomColumn {
        name: "Age".to_string(),
        column_type: "date".to_string(),
        format: String::new(),
        description: CREATION_TIMESTAMP_DESCRIPTION.to_string(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".to_string(),
    }]
}

/// The Name column followed by the CRD's columns (or the default Age column).
pub fn custom_columns(defined: &[CustomColumn]) -> Vec<Column> {
    let mut columns = vec![name_column()];
    for custom in served_columns(defined) {
        let description = if custom.description.is_empty() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                custom.json_path
            )
        } else {
            custom.description
        };
        columns.push(Column {
            name: custom.name,
            column_type: custom.column_type,
            format: custom.format,
            description,
            priority: custom.priority,
        });
    }
    columns
}

/// The object's name, then one cell per column: null where the path selects
/// nothing (or does not parse), a date as an age, a string column as
/// client-go's JSONPath prints the value.
pub fn custom_cells(defined: &[CustomColumn], object: &Value, now: SystemTime) -> Vec<Value> {
    let now = unix_nanos(now);
    let mut cells = vec![json!(name(object))];
    for custom in served_columns(defined) {
        let selected = JsonPath::parse(&custom.json_path)
            .ok()
            .and_then(|path| path.first(object).cloned());
        let cell = match selected {
            None => Value::Null,
            Some(value) => typed_cell(&custom.column_type, &value, now),
        };
        cells.push(cell);
    }
    cells
}

fn typed_cell(column_type: &str, value: &Value, now: i128) -> Value {
    match (column_type, value) {
        ("string", value) => json!(jsonpath_text(value)),
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(_)) => json!(as_int(value).unwrap_or(0)),
        ("number", Value::Number(number)) => {
            number.as_f64().map_or(Value::Null, |float| json!(float))
        }
        ("boolean", Value::Bool(flag)) => json!(flag),
        ("date", Value::String(text)) => json!(date_cell(text, now)),
        _ => Value::Null,
    }
}

/// metav1.Time's query-parameter parsing: empty is unset, otherwise RFC 3339 or "<invalid>".
fn date_cell(text: &str, now: i128) -> String {
    if text.is_empty() {
        return "<unknown>".to_string();
    }
    match parse_rfc3339(text) {
        None => "<invalid>".to_string(),
        Some(time) if time == -62_135_596_800 * 1_000_000_000 => "<unknown>".to_string(),
        Some(time) => since(Some(time), now),
    }
}

/// How client-go's JSONPath prints one value: strings raw, maps and arrays as
/// compact Go JSON, numbers and booleans with Go's `%v`, null as "<no value>".
fn jsonpath_text(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".to_string(),
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => go_number_text(number),
        Value::Array(_) | Value::Object(_) => go_json(value),
    }
}

/// Unstructured JSON keeps whole numbers as int64 (printed as such) and
/// others as float64, printed by Go's `%v` (shortest `%g`, exponent from 1e+06 up).
fn go_number_text(number: &serde_json::Number) -> String {
    if let Some(signed) = number.as_i64() {
        return signed.to_string();
    }
    if let Some(unsigned) = number.as_u64() {
        return unsigned.to_string();
    }
    let float = number.as_f64().unwrap_or(0.0);
    let (mantissa, exponent) = shortest_scientific(float);
    if !(-4..6).contains(&exponent) {
        format!(
            "{mantissa}e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        )
    } else {
        format!("{float}")
    }
}

/// The shortest round-trip digits of `float` as ("d.ddd", decimal exponent).
fn shortest_scientific(float: f64) -> (String, i32) {
    let text = format!("{float:e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => (mantissa.to_string(), exponent.parse().unwrap_or(0)),
        None => (text, 0),
    }
}

/// Go's `json.Marshal` of an unstructured value: sorted keys, HTML-safe escapes.
fn go_json(value: &Value) -> String {
    let mut out = String::new();
    write_go_json(value, &mut out);
    out
}

fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => out.push_str(&go_json_number(number)),
        Value::String(text) => write_go_json_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (item_idx, item) in items.iter().enumerate() {
                if item_idx > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            out.push('{');
            for (key_idx, key) in keys.into_iter().enumerate() {
                if key_idx > 0 {
                    out.push(',');
                }
                write_go_json_string(key, out);
                out.push(':');
                write_go_json(&object[key.as_str()], out);
            }
            out.push('}');
        }
    }
}

/// encoding/json floats: plain decimal, exponent form below 1e-6 and from 1e21.
fn go_json_number(number: &serde_json::Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    let float = number.as_f64().unwrap_or(0.0);
    let magnitude = float.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        let (mantissa, exponent) = shortest_scientific(float);
        return format!(
            "{mantissa}e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        )
        .replace("e-0", "e-");
    }
    format!("{float}")
}

fn write_go_json_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(character)));
            }
            control if u32::from(control) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_value_printing() {
        assert_eq!(jsonpath_text(&json!(3)), "3");
        assert_eq!(jsonpath_text(&json!(1.5)), "1.5");
        assert_eq!(jsonpath_text(&json!(12_345_678.5)), "1.23456785e+07");
        assert_eq!(jsonpath_text(&json!(0.00001)), "1e-05");
        assert_eq!(jsonpath_text(&json!(true)), "true");
        assert_eq!(jsonpath_text(&Value::Null), "<no value>");
        assert_eq!(
            jsonpath_text(&json!({"b": [1, "<x>"], "a": 0.5})),
            r#"{"a":0.5,"b":[1,"\u003cx\u003e"]}"#
        );
        assert_eq!(go_json(&json!(1e-7)), "1e-7");
        assert_eq!(go_json(&json!(1e21)), "1e+21");
    }
}
