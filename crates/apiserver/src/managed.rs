//! Field ownership (`metadata.managedFields`), as server-side apply keeps
//! it: each manager owns a set of fields, in Kubernetes' `FieldsV1` form
//! (`f:<field>`, `k:{<merge key>}` for items of keyed lists, `v:<value>` for
//! items of sets). An apply owns what it sets and conflicts with another
//! manager's differing value unless forced; an update takes the fields it
//! changed; a field an applier stops applying, and no one else owns, is
//! removed.

use std::collections::BTreeSet;

use apimachinery::patch::{ObjectSchema, PatchStrategy};
use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// `f:<name>`
    Field(String),
    /// `k:{...}`: a keyed list item, by its key fields (JSON text).
    Key(String),
    /// `v:<json>`: an item of a set-like list.
    Value(String),
    /// `.`: the item itself.
    Itself,
}

type Path = Vec<Step>;

impl Step {
    fn encode(&self) -> String {
        match self {
            Step::Field(name) => format!("f:{name}"),
            Step::Key(key) => format!("k:{key}"),
            Step::Value(value) => format!("v:{value}"),
            Step::Itself => ".".to_string(),
        }
    }

    fn decode(text: &str) -> Option<Step> {
        if text == "." {
            return Some(Step::Itself);
        }
        let (prefix, rest) = text.split_at(text.find(':')?);
        let rest = &rest[1..];
        match prefix {
            "f" => Some(Step::Field(rest.to_string())),
            "k" => Some(Step::Key(rest.to_string())),
            "v" => Some(Step::Value(rest.to_string())),
            _ => None,
        }
    }
}

/// Fields the server owns, never a manager's.
fn is_server_field(path: &[Step]) -> bool {
    match path {
        [Step::Field(top), ..] if top == "apiVersion" || top == "kind" || top == "status" => true,
        [Step::Field(metadata), Step::Field(field), ..] if metadata == "metadata" => !matches!(
            field.as_str(),
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        ),
        _ => false,
    }
}

/// The leaf paths of `value`'s fields.
fn leaves(value: &Value, schema: ObjectSchema<'_>, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Value::Object(map) = value else {
        out.insert(prefix.clone());
        return;
    };
    if map.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (name, child) in map {
        let (meta, child_schema) = schema.field(name);
        prefix.push(Step::Field(name.clone()));
        match child {
            Value::Array(items) if meta.strategy == PatchStrategy::Merge => {
                for item in items {
                    let step = match (&meta.merge_key, item) {
                        (Some(key), Value::Object(fields)) => {
                            let key_value = fields.get(key).cloned().unwrap_or(Value::Null);
                            Step::Key(json!({ key: key_value }).to_string())
                        }
                        _ => Step::Value(item.to_string()),
                    };
                    prefix.push(step);
                    if item.is_object() {
                        prefix.push(Step::Itself);
                        out.insert(prefix.clone());
                        prefix.pop();
                        leaves(item, child_schema, prefix, out);
                    } else {
                        out.insert(prefix.clone());
                    }
                    prefix.pop();
                }
            }
            Value::Object(_) => leaves(child, child_schema, prefix, out),
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

fn field_paths(value: &Value, schema: ObjectSchema<'_>) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(value, schema, &mut Vec::new(), &mut out);
    out.retain(|path| !path.is_empty() && !is_server_field(path));
    out
}

/// A set of paths as `FieldsV1` JSON.
fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for step in path {
            let entry = node
                .entry(step.encode())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            node = entry.as_object_mut().expect("made an object above");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(value: &Value) -> BTreeSet<Path> {
    fn walk(node: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = node.as_object() else { return };
        if map.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (key, child) in map {
            let Some(step) = Step::decode(key) else {
                continue;
            };
            prefix.push(step);
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// The value at a field path, if present.
fn value_at<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = path.split_first() else {
        return Some(value);
    };
    match step {
        Step::Field(name) => value_at(value.get(name)?, rest),
        Step::Itself => Some(value),
        Step::Key(key) => {
            let wanted: Map<String, Value> = serde_json::from_str(key).ok()?;
            let item = value.as_array()?.iter().find(|item| {
                wanted
                    .iter()
                    .all(|(field, expected)| item.get(field) == Some(expected))
            })?;
            value_at(item, rest)
        }
        Step::Value(text) => {
            let wanted: Value = serde_json::from_str(text).ok()?;
            value
                .as_array()?
                .iter()
                .find(|item| **item == wanted)
                .map(|_| value)
        }
    }
}

/// Removes the field at `path` (an item's own `.` removes the item).
fn remove_at(value: &mut Value, path: &[Step]) {
    match path {
        [] => {}
        [Step::Field(name)] => {
            if let Some(map) = value.as_object_mut() {
                map.remove(name);
            }
        }
        [Step::Key(key), Step::Itself] | [Step::Key(key)] => {
            let Ok(wanted) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            if let Some(items) = value.as_array_mut() {
                items.retain(|item| {
                    !wanted
                        .iter()
                        .all(|(field, expected)| item.get(field) == Some(expected))
                });
            }
        }
        [Step::Value(text)] => {
            let Ok(wanted) = serde_json::from_str::<Value>(text) else {
                return;
            };
            if let Some(items) = value.as_array_mut() {
                items.retain(|item| *item != wanted);
            }
        }
        [Step::Field(name), rest @ ..] => {
            if let Some(child) = value.get_mut(name) {
                remove_at(child, rest);
            }
        }
        [Step::Key(key), rest @ ..] => {
            let Ok(wanted) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            if let Some(item) = value.as_array_mut().and_then(|items| {
                items.iter_mut().find(|item| {
                    wanted
                        .iter()
                        .all(|(field, expected)| item.get(field) == Some(expected))
                })
            }) {
                remove_at(item, rest);
            }
        }
        _ => {}
    }
}

/// A path as kubectl shows it: `.spec.containers[name="dex"].image`.
fn render(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                text.push('.');
                text.push_str(name);
            }
            Step::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let rendered: Vec<String> = fields
                    .iter()
                    .map(|(field, value)| format!("{field}={value}"))
                    .collect();
                text.push_str(&format!("[{}]", rendered.join(",")));
            }
            Step::Value(value) => text.push_str(&format!("[{value}]")),
            Step::Itself => {}
        }
    }
    text
}

/// One manager's entry in managedFields.
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Value,
    subresource: Option<String>,
    fields: BTreeSet<Path>,
}

fn read_entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|entry| Entry {
                    manager: entry
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    operation: entry
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .to_string(),
                    api_version: entry
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    time: entry.get("time").cloned().unwrap_or(Value::Null),
                    subresource: entry
                        .get("subresource")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    fields: entry
                        .get("fieldsV1")
                        .map(from_fields_v1)
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|entry| !entry.fields.is_empty())
        .map(|entry| {
            let mut value = json!({
                "manager": entry.manager,
                "operation": entry.operation,
                "apiVersion": entry.api_version,
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&entry.fields),
            });
            if let Some(subresource) = entry.subresource {
                value["subresource"] = json!(subresource);
            }
            value
        })
        .collect();
    let metadata = crate::objects::metadata_mut(object);
    if list.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".to_string(), Value::Array(list));
    }
}

/// Records an update (create, PUT, non-apply PATCH) by `manager`: it owns
/// the fields it set or changed, which no other manager owns any longer.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    schema: ObjectSchema<'_>,
) {
    let mut entries = read_entries(old.unwrap_or(&Value::Null));
    let new_paths = field_paths(new, schema);
    let changed: BTreeSet<Path> = match old {
        None => new_paths.clone(),
        Some(old) => new_paths
            .iter()
            .filter(|path| value_at(old, path) != value_at(new, path))
            .cloned()
            .collect(),
    };
    // Fields gone from the object are owned by no one.
    for entry in &mut entries {
        entry.fields.retain(|path| new_paths.contains(path));
        if entry.manager != manager || entry.operation != "Update" {
            entry.fields.retain(|path| !changed.contains(path));
        }
    }
    let subresource = subresource.map(str::to_string);
    match entries.iter_mut().find(|entry| {
        entry.manager == manager && entry.operation == "Update" && entry.subresource == subresource
    }) {
        Some(entry) => {
            if !changed.is_empty() {
                entry.time = json!(crate::objects::now());
            }
            entry.fields.extend(changed);
            entry.api_version = api_version.to_string();
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".to_string(),
            api_version: api_version.to_string(),
            time: json!(crate::objects::now()),
            subresource,
            fields: changed,
        }),
        None => {}
    }
    write_entries(new, entries);
}

/// A field another manager owns with another value.
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

/// Server-side apply of `applied` by `manager` over `live`: the merged
/// object (with managedFields), or the conflicts when not forced.
pub fn apply(
    live: &Value,
    merged: Value,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    schema: ObjectSchema<'_>,
) -> Result<Value, Vec<Conflict>> {
    let mut merged = merged;
    let mut entries = read_entries(live);
    let applied_paths = field_paths(applied, schema);
    let mut conflicts = Vec::new();
    for entry in &mut entries {
        if entry.manager == manager && entry.operation == "Apply" {
            continue;
        }
        let overlapping: Vec<Path> = entry
            .fields
            .iter()
            .filter(|path| applied_paths.contains(*path))
            .filter(|path| value_at(applied, path) != value_at(live, path))
            .cloned()
            .collect();
        if force {
            entry.fields.retain(|path| !overlapping.contains(path));
        } else {
            conflicts.extend(overlapping.iter().map(|path| Conflict {
                manager: entry.manager.clone(),
                api_version: entry.api_version.clone(),
                field: render(path),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    // Fields this manager applied before and no longer does, and that no
    // one else owns, are removed.
    let previous: BTreeSet<Path> = entries
        .iter()
        .filter(|entry| entry.manager == manager && entry.operation == "Apply")
        .flat_map(|entry| entry.fields.iter().cloned())
        .collect();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|entry| !(entry.manager == manager && entry.operation == "Apply"))
        .flat_map(|entry| entry.fields.iter().cloned())
        .collect();
    for path in previous.difference(&applied_paths) {
        if !others.contains(path) {
            remove_at(&mut merged, path);
        }
    }
    entries.retain(|entry| !(entry.manager == manager && entry.operation == "Apply"));
    entries.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".to_string(),
        api_version: api_version.to_string(),
        time: json!(crate::objects::now()),
        subresource: None,
        fields: applied_paths,
    });
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// The 409 kube-apiserver answers for apply conflicts.
pub fn conflict_error(conflicts: &[Conflict]) -> crate::status::ApiError {
    let count = conflicts.len();
    let mut message = format!(
        "Apply failed with {count} conflict{}: ",
        if count == 1 { "" } else { "s" }
    );
    let mut managers: Vec<(&str, &str)> = Vec::new();
    for conflict in conflicts {
        let pair = (conflict.manager.as_str(), conflict.api_version.as_str());
        if !managers.contains(&pair) {
            managers.push(pair);
        }
    }
    let parts: Vec<String> = managers
        .iter()
        .map(|(manager, api_version)| {
            let fields: Vec<&str> = conflicts
                .iter()
                .filter(|conflict| conflict.manager == *manager)
                .map(|conflict| conflict.field.as_str())
                .collect();
            if fields.len() == 1 {
                format!(
                    "conflict with \"{manager}\" using {api_version}: {}",
                    fields[0]
                )
            } else {
                let listed: Vec<String> = fields.iter().map(|field| format!("- {field}")).collect();
                format!(
                    "conflicts with \"{manager}\" using {api_version}:\n{}",
                    listed.join("\n")
                )
            }
        })
        .collect();
    message.push_str(&parts.join("\n"));
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|conflict| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{}\" using {}", conflict.manager, conflict.api_version),
                "field": conflict.field,
            })
        })
        .collect();
    crate::status::ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(json!({ "causes": causes })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment_schema() -> ObjectSchema<'static> {
        crate::patch_schema()
            .for_kind("apps/v1", "Deployment")
            .expect("the built-in schema knows Deployments")
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn fields_v1_names_keyed_items_by_their_merge_key() {
        let paths = field_paths(&deployment(2, "nginx"), deployment_schema());
        let fields = to_fields_v1(&paths);
        assert_eq!(
            fields,
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}}})
        );
        assert_eq!(from_fields_v1(&fields), paths);
    }

    #[test]
    fn an_apply_conflicts_with_another_managers_differing_value_unless_forced() {
        let mut live = deployment(2, "nginx");
        record_update(
            None,
            &mut live,
            "kubectl-create",
            "apps/v1",
            None,
            deployment_schema(),
        );
        let applied = deployment(3, "nginx");
        let conflicts = match apply(
            &live,
            applied.clone(),
            &applied,
            "kubectl",
            "apps/v1",
            false,
            deployment_schema(),
        ) {
            Err(conflicts) => conflicts,
            Ok(_) => panic!("a differing replicas owned by kubectl-create must conflict"),
        };
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, ".spec.replicas");
        let error = conflict_error(&conflicts);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        );
        let forced = apply(
            &live,
            applied.clone(),
            &applied,
            "kubectl",
            "apps/v1",
            true,
            deployment_schema(),
        )
        .unwrap_or_else(|_| panic!("forced apply takes ownership"));
        let entries = read_entries(&forced);
        let creator = entries
            .iter()
            .find(|entry| entry.manager == "kubectl-create")
            .expect("kept");
        assert!(!creator.fields.contains(&vec![
            Step::Field("spec".into()),
            Step::Field("replicas".into())
        ]));
    }

    #[test]
    fn a_field_the_applier_stops_applying_is_removed() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let schema = ObjectSchema::schemaless();
        let first = apply(&live, live.clone(), &live, "me", "v1", false, schema)
            .unwrap_or_else(|_| panic!("no conflict"));
        let second_applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let second = apply(
            &first,
            first.clone(),
            &second_applied,
            "me",
            "v1",
            false,
            schema,
        )
        .unwrap_or_else(|_| panic!("no conflict"));
        assert_eq!(second["data"], json!({"a": "1"}));
    }
}
