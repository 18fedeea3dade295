//! Server-side printing: the Table kubectl asks for with `kubectl get`
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the
//! columns a real cluster shows for each kind and the object (or its
//! metadata) in each row, so `--show-labels`, `-L` and `-A` work.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// The Table version an Accept header asks for, if it asks for a Table.
pub fn wants_table(accept: &str) -> Option<&'static str> {
    for media in crate::body::accepted(accept) {
        if media.shape == Some("Table") && media.group == Some("meta.k8s.io") {
            match media.version {
                Some("v1") => return Some("v1"),
                Some("v1beta1") => return Some("v1beta1"),
                _ => {}
            }
        }
    }
    None
}

/// How one row's cells are made.
type Cells<'a> = Box<dyn Fn(&Value) -> Vec<Value> + 'a>;

/// The columns and the cell function of a resource's printer: a CRD's
/// additional printer columns, a built-in kind's own printer, or
/// kube-apiserver's default (Name, Created At).
fn printer(resource: &ResourceType) -> (Vec<printers::Column>, Cells<'_>) {
    let now = std::time::SystemTime::now();
    if resource.shape == crate::registry::Shape::Custom {
        let defined: Vec<printers::CustomColumn> = resource
            .printer_columns
            .iter()
            .map(|column| printers::CustomColumn {
                name: column.name.clone(),
                column_type: column.column_type.clone(),
                format: column.format.clone(),
                description: column.description.clone(),
                priority: column.priority as i32,
                json_path: column.json_path.clone(),
            })
            .collect();
        let columns = printers::custom_columns(&defined);
        return (
            columns,
            Box::new(move |object| printers::custom_cells(&defined, object, now)),
        );
    }
    if let Some(columns) = printers::columns(&resource.group, &resource.kind) {
        return (
            columns,
            Box::new(move |object| printers::cells(&resource.group, &resource.kind, object, now)),
        );
    }
    (
        printers::default_columns(),
        Box::new(move |object| printers::default_cells(object, now)),
    )
}

/// A Table of `objects`. `include_object` is the query's (`Metadata` by
/// default, `Object`, `None`); `headers` false leaves the column
/// definitions out (watch events after the first).
pub fn table(
    resource: &ResourceType,
    objects: Vec<Value>,
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
    // The objects are taken, not copied: a row keeps its object (or just
    // its metadata) as it is.
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|mut object| {
            let mut row = serde_json::Map::new();
            row.insert("cells".to_string(), Value::Array(cells(&object)));
            let conditions = printers::row_conditions(&resource.group, &resource.kind, &object);
            if !conditions.is_empty() {
                row.insert("conditions".to_string(), Value::Array(conditions));
            }
            match include_object.unwrap_or("Metadata") {
                "None" => {}
                "Object" => {
                    row.insert("object".to_string(), object);
                }
                _ => {
                    let metadata = object
                        .get_mut("metadata")
                        .map(Value::take)
                        .unwrap_or_else(|| json!({}));
                    let mut partial = serde_json::Map::new();
                    partial.insert("kind".to_string(), json!("PartialObjectMetadata"));
                    partial.insert(
                        "apiVersion".to_string(),
                        Value::String(format!("meta.k8s.io/{version}")),
                    );
                    partial.insert("metadata".to_string(), metadata);
                    row.insert("object".to_string(), Value::Object(partial));
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut table = serde_json::Map::new();
    table.insert("kind".to_string(), json!("Table"));
    table.insert(
        "apiVersion".to_string(),
        Value::String(format!("meta.k8s.io/{version}")),
    );
    table.insert("metadata".to_string(), list_metadata.clone());
    table.insert(
        "columnDefinitions".to_string(),
        if headers {
            Value::Array(column_definitions)
        } else {
            Value::Null
        },
    );
    table.insert("rows".to_string(), Value::Array(rows));
    Value::Object(table)
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
