//! Custom resources checked against their CRD's structural schema, as
//! kube-apiserver does: defaults filled in, unknown fields pruned (or refused
//! under `fieldValidation=Strict`), types, required fields, enums and bounds
//! validated, every problem reported as a 422 cause.

use serde_json::{Map, Value};

use crate::status::Cause;

/// What checking an object against its schema found.
#[derive(Default)]
pub struct Checked {
    pub causes: Vec<Cause>,
    /// Fields the schema does not declare (they were pruned).
    pub unknown_fields: Vec<String>,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("\"{text}\""),
        other => other.to_string(),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Fills in `default`s, recursively, where fields are absent.
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    if !map.contains_key(name)
                        && let Some(default) = property.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_defaults(child, property);
                    }
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    apply_defaults(child, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Checks `value` at `path` against `schema`, pruning undeclared fields.
pub fn check(value: &mut Value, schema: &Value, path: &str, checked: &mut Checked) {
    // A null is not checked: kube-apiserver drops nulls of non-nullable
    // fields before validating, and a nullable one may be null.
    if value.is_null() {
        return;
    }
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !matches!(value, Value::String(_)) && type_name(value) != "integer" {
            checked.causes.push(Cause {
                reason: "FieldValueInvalid",
                field: path.to_string(),
                message: format!(
                    "Invalid value: {}: {path} in body must be of type integer,string: {}",
                    shown(value),
                    shown(value)
                ),
            });
        }
        return;
    }
    if let Some(wanted) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let fits = actual == wanted || (wanted == "number" && actual == "integer");
        if !fits {
            checked.causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.to_string(),
                message: format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {wanted}: \"{actual}\""
                ),
            });
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(shown).collect();
        checked.causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                listed.join(", ")
            ),
        });
    }
    match value {
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or(0.0);
            if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
                && number < minimum
            {
                checked.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.to_string(),
                    message: format!("Invalid value: {number}: {path} in body should be greater than or equal to {minimum}"),
                });
            }
            if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
                && number > maximum
            {
                checked.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.to_string(),
                    message: format!("Invalid value: {number}: {path} in body should be less than or equal to {maximum}"),
                });
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                checked.causes.push(Cause {
                    reason: "FieldValueTooLong",
                    field: path.to_string(),
                    message: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                checked.causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: path.to_string(),
                    message: format!("Invalid value: \"{text}\": {path} in body should be at least {min} chars long"),
                });
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                checked.causes.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.to_string(),
                    message: format!("Too many: {}: must have at most {max} items", items.len()),
                });
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter_mut().enumerate() {
                    check(item, item_schema, &format!("{path}[{index}]"), checked);
                }
            }
        }
        Value::Object(map) => {
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if map.get(required).is_none_or(Value::is_null) {
                    checked.causes.push(Cause::required(join(path, required)));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let mut pruned = Vec::new();
            for (name, child) in map.iter_mut() {
                let at = join(path, name);
                if let Some(property) = properties.and_then(|properties| properties.get(name)) {
                    check(child, property, &at, checked);
                } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                    check(child, additional, &at, checked);
                } else if !preserve && additional != Some(&Value::Bool(true)) {
                    pruned.push(name.clone());
                    checked.unknown_fields.push(at);
                }
            }
            for name in pruned {
                map.remove(&name);
            }
        }
        _ => {}
    }
}

/// Checks a whole custom object: apiVersion, kind and metadata are the
/// server's; the rest is checked against `schema`.
pub fn check_object(object: &mut Value, schema: &Value) -> Checked {
    let mut checked = Checked::default();
    let Some(map) = object.as_object_mut() else {
        return checked;
    };
    let mut rest: Map<String, Value> = Map::new();
    for key in map.keys().cloned().collect::<Vec<_>>() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
            && let Some(value) = map.remove(&key)
        {
            rest.insert(key, value);
        }
    }
    let mut rest = Value::Object(rest);
    apply_defaults(&mut rest, schema);
    check(&mut rest, schema, "", &mut checked);
    if let Value::Object(rest) = rest {
        map.extend(rest);
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab_schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["cronSpec"], "properties": {
            "cronSpec": {"type": "string"},
            "replicas": {"type": "integer", "default": 1, "minimum": 0},
            "mode": {"type": "string", "enum": ["a", "b"]}
        }}}})
    }

    #[test]
    fn defaults_fill_absent_fields_and_unknown_fields_are_pruned() {
        let mut object = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "c"},
            "spec": {"cronSpec": "* * * * *", "extra": true}});
        let checked = check_object(&mut object, &crontab_schema());
        assert!(checked.causes.is_empty());
        assert_eq!(checked.unknown_fields, vec!["spec.extra".to_string()]);
        assert_eq!(object["spec"]["replicas"], 1);
        assert!(object["spec"].get("extra").is_none());
    }

    #[test]
    fn every_problem_is_a_cause() {
        let mut object = json!({"metadata": {"name": "c"},
            "spec": {"replicas": "two", "mode": "z"}});
        let checked = check_object(&mut object, &crontab_schema());
        let fields: Vec<&str> = checked
            .causes
            .iter()
            .map(|cause| cause.field.as_str())
            .collect();
        assert_eq!(fields, vec!["spec.cronSpec", "spec.mode", "spec.replicas"]);
        assert_eq!(
            checked.causes[2].message,
            "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
        );
    }
}
