//! Label maps and label selectors printed as apimachinery prints them
//! (`labels.FormatLabels`, `metav1.FormatLabelSelector`).

use serde_json::{Map, Value};

/// `k1=v1,k2=v2` sorted by key; "<none>" when empty.
pub(crate) fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.as_str(), value.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort_unstable();
    let parts: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    parts.join(",")
}

/// A `metav1.LabelSelector` as `FormatLabelSelector` shows it: "<none>" when it
/// selects nothing or everything, "<error>" when it cannot be converted.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Err(InvalidSelector) => "<error>".to_string(),
        Ok(text) if text.is_empty() => "<none>".to_string(),
        Ok(text) => text,
    }
}

#[derive(Debug)]
pub(crate) struct InvalidSelector;

/// The string of `metav1.LabelSelectorAsSelector(selector)`: empty for a nil or
/// empty selector, requirements sorted by key otherwise.
pub(crate) fn selector_string(selector: Option<&Value>) -> Result<String, InvalidSelector> {
    let Some(selector) = selector.filter(|selector| !selector.is_null()) else {
        return Ok(String::new());
    };
    let Some(selector) = selector.as_object() else {
        return Err(InvalidSelector);
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in match_labels {
            requirements.push((
                key.clone(),
                format!("{key}={}", value.as_str().unwrap_or("")),
            ));
        }
    }
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for expression in expressions {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
        let operator = expression
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|values| {
                values
                    .iter()
                    .map(|value| value.as_str().unwrap_or(""))
                    .collect()
            })
            .unwrap_or_default();
        values.sort_unstable();
        values.dedup();
        let text = match operator {
            "In" | "NotIn" if values.is_empty() => return Err(InvalidSelector),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(InvalidSelector),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(InvalidSelector),
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|left, right| left.0.cmp(&right.0));
    let parts: Vec<String> = requirements.into_iter().map(|(_, text)| text).collect();
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_sorted_or_none() {
        let labels = json!({"b": "2", "a": "1"});
        assert_eq!(format_labels(labels.as_object()), "a=1,b=2");
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn selectors_render_like_apimachinery() {
        let selector = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"}
            ]
        });
        assert_eq!(
            format_label_selector(Some(&selector)),
            "app=web,!canary,tier in (a,b),zone"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        let broken = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert_eq!(format_label_selector(Some(&broken)), "<error>");
    }
}
