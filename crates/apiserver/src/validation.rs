//! Validation of the fields users set, with kube-apiserver's field paths and
//! messages, collected in full: a 422 names every cause at once.

use serde_json::Value;

use crate::registry::{ResourceType, Shape};
use crate::status::Cause;

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(is_label_char)
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// Which name rule a kind's objects follow.
fn name_is_label(resource: &ResourceType) -> bool {
    matches!(
        (resource.group.as_str(), resource.kind.as_str()),
        ("", "Namespace") | ("", "Service")
    )
}

fn validate_name(resource: &ResourceType, object: &Value, causes: &mut Vec<Cause>) {
    let name = object.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None | Some("") => causes.push(Cause::required("metadata.name")),
        // RBAC's names are path segments (`system:node`, kube-apiserver's
        // `ValidateRBACName`).
        Some(name) if resource.group == "rbac.authorization.k8s.io" => {
            for (bad, message) in [
                (name == "." || name == "..", format!("may not be '{name}'")),
                (name.contains('/'), "may not contain '/'".to_string()),
                (name.contains('%'), "may not contain '%'".to_string()),
            ] {
                if bad {
                    causes.push(Cause::invalid(
                        "metadata.name",
                        &Value::String(name.to_string()),
                        &message,
                    ));
                }
            }
        }
        Some(name) => {
            let (valid, message) = if name_is_label(resource) {
                (is_dns1123_label(name), DNS1123_LABEL_MESSAGE)
            } else {
                (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MESSAGE)
            };
            if !valid {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &Value::String(name.to_string()),
                    message,
                ));
            }
        }
    }
}

/// Label keys and values, as metav1 validates them.
fn validate_labels(labels: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        let name = key.rsplit('/').next().unwrap_or(key);
        let prefix = key.len() > name.len();
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        let prefix_ok = !prefix || is_dns1123_subdomain(&key[..key.len() - name.len() - 1]);
        if !name_ok || !prefix_ok {
            causes.push(Cause::invalid(
                path,
                &Value::String(key.clone()),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ));
        }
        let value_text = value.as_str().unwrap_or("");
        let value_ok = value_text.len() <= 63
            && value_text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && (value_text.is_empty()
                || (value_text.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && value_text.ends_with(|c: char| c.is_ascii_alphanumeric())));
        if !value_ok {
            causes.push(Cause::invalid(
                path,
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required(format!("{path}.containers")));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(containers) if containers.is_empty() => {
            causes.push(Cause::required(format!("{path}.containers")))
        }
        Some(containers) => {
            let mut seen = Vec::new();
            for (index, container) in containers.iter().enumerate() {
                let at = format!("{path}.containers[{index}]");
                match container.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(format!("{at}.name"))),
                    Some(name) => {
                        if !is_dns1123_label(name) {
                            causes.push(Cause::invalid(
                                format!("{at}.name"),
                                &Value::String(name.to_string()),
                                DNS1123_LABEL_MESSAGE,
                            ));
                        } else if seen.contains(&name) {
                            causes.push(Cause {
                                reason: "FieldValueDuplicate",
                                field: format!("{at}.name"),
                                message: format!("Duplicate value: \"{name}\""),
                            });
                        }
                        seen.push(name);
                    }
                }
                if container
                    .get("image")
                    .and_then(Value::as_str)
                    .is_none_or(|image| image.trim().is_empty())
                {
                    causes.push(Cause::required(format!("{at}.image")));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy")
        && !matches!(policy.as_str(), Some("Always" | "OnFailure" | "Never"))
    {
        causes.push(Cause::unsupported(
            format!("{path}.restartPolicy"),
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
}

/// A workload's selector must be given and match its template's labels.
fn validate_selector_and_template(object: &Value, causes: &mut Vec<Cause>) {
    let selector = object.pointer("/spec/selector");
    let match_labels = selector
        .and_then(|selector| selector.get("matchLabels"))
        .and_then(Value::as_object);
    let expressions = selector
        .and_then(|selector| selector.get("matchExpressions"))
        .and_then(Value::as_array);
    if match_labels.is_none_or(|labels| labels.is_empty())
        && expressions.is_none_or(|expressions| expressions.is_empty())
    {
        causes.push(Cause::required("spec.selector"));
        return;
    }
    let template_labels = object.pointer("/spec/template/metadata/labels");
    let empty = serde_json::Map::new();
    let labels = template_labels.and_then(Value::as_object).unwrap_or(&empty);
    let matches = match_labels.is_none_or(|wanted| {
        wanted
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    });
    if !matches {
        let rendered: Vec<String> = labels
            .iter()
            .map(|(key, value)| format!("\"{key}\":\"{}\"", value.as_str().unwrap_or("")))
            .collect();
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec.template.metadata.labels".to_string(),
            message: format!(
                "Invalid value: map[string]string{{{}}}: `selector` does not match template `labels`",
                rendered.join(", ")
            ),
        });
    }
}

fn validate_non_negative(object: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Some(value) = object.pointer(pointer)
        && value.as_i64().is_some_and(|number| number < 0)
    {
        causes.push(Cause::invalid(
            field,
            value,
            "must be greater than or equal to 0",
        ));
    }
}

/// Every problem with `object` as an object of `resource`.
pub fn validate(resource: &ResourceType, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_name(resource, object, &mut causes);
    validate_labels(
        object.pointer("/metadata/labels"),
        "metadata.labels",
        &mut causes,
    );
    if resource.shape == Shape::Custom {
        return causes;
    }
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("", "Pod") => validate_pod_spec(object.get("spec"), "spec", &mut causes),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            validate_non_negative(object, "/spec/replicas", "spec.replicas", &mut causes);
            validate_selector_and_template(object, &mut causes);
            validate_labels(
                object.pointer("/spec/template/metadata/labels"),
                "spec.template.metadata.labels",
                &mut causes,
            );
            validate_pod_spec(
                object.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
        }
        ("batch", "Job") => {
            validate_non_negative(object, "/spec/parallelism", "spec.parallelism", &mut causes);
            validate_non_negative(object, "/spec/completions", "spec.completions", &mut causes);
            validate_pod_spec(
                object.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            if let Some(policy) = object.pointer("/spec/template/spec/restartPolicy")
                && !matches!(policy.as_str(), Some("OnFailure" | "Never"))
            {
                causes.push(Cause::unsupported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    &["OnFailure", "Never"],
                ));
            }
        }
        ("", "Service") => {
            let ports = object.pointer("/spec/ports").and_then(Value::as_array);
            let service_type = object.pointer("/spec/type").and_then(Value::as_str);
            if ports.is_none_or(|ports| ports.is_empty()) && service_type != Some("ExternalName") {
                let headless =
                    object.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
                if !headless {
                    causes.push(Cause::required("spec.ports"));
                }
            }
            let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
            if let Some(given) = object.pointer("/spec/type")
                && !given.as_str().is_some_and(|given| types.contains(&given))
            {
                causes.push(Cause::unsupported("spec.type", given, &types));
            }
            if let Some(given) = object.pointer("/spec/sessionAffinity")
                && !matches!(given.as_str(), Some("ClientIP" | "None"))
            {
                causes.push(Cause::unsupported(
                    "spec.sessionAffinity",
                    given,
                    &["ClientIP", "None"],
                ));
            }
            let n_ports = ports.map_or(0, Vec::len);
            let mut names = std::collections::HashSet::new();
            for (index, port) in ports.into_iter().flatten().enumerate() {
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{index}].port"),
                        port.get("port").unwrap_or(&Value::Null),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                let name = port.get("name").and_then(Value::as_str).unwrap_or("");
                if n_ports > 1 && name.is_empty() {
                    causes.push(Cause::required(format!("spec.ports[{index}].name")));
                } else if !name.is_empty() && !names.insert(name) {
                    causes.push(Cause::duplicate(
                        format!("spec.ports[{index}].name"),
                        &Value::String(name.to_string()),
                    ));
                }
                if let Some(protocol) = port.get("protocol")
                    && !matches!(protocol.as_str(), Some("TCP" | "UDP" | "SCTP"))
                {
                    causes.push(Cause::unsupported(
                        format!("spec.ports[{index}].protocol"),
                        protocol,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
                let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
                if node_port != 0 && service_type == Some("ClusterIP") {
                    causes.push(Cause::forbidden(
                        format!("spec.ports[{index}].nodePort"),
                        "may not be used when `type` is 'ClusterIP'",
                    ));
                }
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(is_dns1123_subdomain("dex.example-1"));
        assert!(!is_dns1123_subdomain("Dex"));
        assert!(!is_dns1123_subdomain("dex-"));
        assert!(is_dns1123_label("kube-system"));
        assert!(!is_dns1123_label("a.b"));
    }
}
