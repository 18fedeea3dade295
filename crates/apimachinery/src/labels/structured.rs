//! The structured `metav1.LabelSelector` (`matchLabels`, `matchExpressions`) as
//! JSON, turned into a [`Selector`] the way `metav1.LabelSelectorAsSelector` does.

use serde_json::Value;

use super::{Operator, Requirement, Selector, SelectorError};

fn malformed(reason: impl Into<String>) -> SelectorError {
    SelectorError::Malformed {
        reason: reason.into(),
    }
}

impl Selector {
    /// Converts a `metav1.LabelSelector` in its JSON form. `null` selects nothing;
    /// `{}` (no labels, no expressions) selects everything. Requirements are checked
    /// as `labels.NewRequirement` checks them; `matchLabels` is read in key order, so
    /// of several bad entries the first by key is reported.
    pub fn from_label_selector(selector: &Value) -> Result<Selector, SelectorError> {
        let object = match selector {
            Value::Null => return Ok(Selector::nothing()),
            Value::Object(object) => object,
            _ => return Err(malformed("a label selector must be an object")),
        };
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(match_labels)) => {
                let mut entries: Vec<(&String, &Value)> = match_labels.iter().collect();
                entries.sort_by(|left, right| left.0.cmp(right.0));
                for (key, value) in entries {
                    let Value::String(value) = value else {
                        return Err(malformed(format!("matchLabels.{key} must be a string")));
                    };
                    requirements.push(
                        Requirement::new(key.clone(), Operator::Equals, vec![value.clone()])
                            .map_err(SelectorError::Invalid)?,
                    );
                }
            }
            Some(_) => return Err(malformed("matchLabels must be an object")),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for (expression_idx, expression) in expressions.iter().enumerate() {
                    requirements.push(expression_requirement(expression_idx, expression)?);
                }
            }
            Some(_) => return Err(malformed("matchExpressions must be a list")),
        }
        Ok(Selector::from_requirements(requirements))
    }
}

fn expression_requirement(
    expression_idx: usize,
    expression: &Value,
) -> Result<Requirement, SelectorError> {
    let Value::Object(expression) = expression else {
        return Err(malformed(format!(
            "matchExpressions[{expression_idx}] must be an object"
        )));
    };
    let string_field = |name: &str| match expression.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(malformed(format!(
            "matchExpressions[{expression_idx}].{name} must be a string"
        ))),
    };
    let key = string_field("key")?;
    let operator_name = string_field("operator")?;
    let operator = match operator_name.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        _ => {
            return Err(SelectorError::UnknownOperator {
                operator: operator_name,
            });
        }
    };
    let values = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| match value {
                Value::String(text) => Ok(text.clone()),
                _ => Err(malformed(format!(
                    "matchExpressions[{expression_idx}].values must be strings"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(malformed(format!(
                "matchExpressions[{expression_idx}].values must be a list"
            )));
        }
    };
    Requirement::new(key, operator, values).map_err(|mut errors| {
        // Upstream copies the values with append([]string(nil), ...), so an empty
        // list shows as a nil slice.
        for error in &mut errors.0 {
            if error.value == "[]string{}" {
                error.value = "[]string(nil)".to_string();
            }
        }
        SelectorError::Invalid(errors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn null_empty_and_full() {
        assert!(
            Selector::from_label_selector(&Value::Null)
                .unwrap()
                .matches_nothing()
        );
        assert!(
            Selector::from_label_selector(&json!({}))
                .unwrap()
                .is_empty()
        );
        let selector = Selector::from_label_selector(&json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["b"]},
                {"key": "owner", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert_eq!(
            selector.to_string(),
            "app=web,!canary,env in (prod,staging),owner,tier=front,zone notin (b)"
        );
        let labels: BTreeMap<String, String> = [
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod"),
            ("owner", "me"),
        ]
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        assert!(selector.matches(&labels));
    }

    #[test]
    fn upstream_error_texts() {
        let error = |selector: Value| {
            Selector::from_label_selector(&selector)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})),
            "\"Gt\" is not a valid pod selector operator"
        );
        assert_eq!(
            error(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            error(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
            ),
            "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            error(json!({"matchLabels": {"a": "b c"}})),
            "values[0][a]: Invalid value: \"b c\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert!(
            error(json!({"matchLabels": {"-a": "-b"}}))
                .starts_with("[key: Invalid value: \"-a\": name part must")
        );
        assert_eq!(
            error(json!({"matchLabels": ["a"]})),
            "invalid label selector: matchLabels must be an object"
        );
    }
}
