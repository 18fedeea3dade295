//! What differs by kind: decoding into the typed schema (k8s-openapi's
//! types, which carry Go's JSON shape), the defaults kube-apiserver fills
//! in, and the validation it does on the fields users set.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::registry::{ResourceType, Shape};

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

/// The outcome of decoding a body into its kind's schema.
pub struct Decoded {
    /// The object in Go's JSON shape.
    pub object: Value,
    /// Fields the schema does not know, as paths (`spec.foo`).
    pub unknown_fields: Vec<String>,
}

fn round_trip<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(&value).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        }
    })?;
    serde_json::to_value(typed).map_err(|error| error.to_string())
}

/// Decodes `value` with the typed schema of `resource`'s kind: type errors
/// are returned as text (the caller makes the 400), unknown fields listed.
pub fn decode(resource: &ResourceType, value: Value) -> Result<Decoded, String> {
    if resource.shape == Shape::Custom {
        return Ok(Decoded {
            object: value,
            unknown_fields: Vec::new(),
        });
    }
    let input = value.clone();
    let typed = match (resource.group.as_str(), resource.kind.as_str()) {
        ("", "ConfigMap") => round_trip::<core::ConfigMap>(value),
        ("", "Endpoints") => round_trip::<core::Endpoints>(value),
        ("", "Event") => round_trip::<core::Event>(value),
        ("", "LimitRange") => round_trip::<core::LimitRange>(value),
        ("", "Namespace") => round_trip::<core::Namespace>(value),
        ("", "Node") => round_trip::<core::Node>(value),
        ("", "Pod") => round_trip::<core::Pod>(value),
        ("", "ResourceQuota") => round_trip::<core::ResourceQuota>(value),
        ("", "Secret") => round_trip::<core::Secret>(value),
        ("", "ServiceAccount") => round_trip::<core::ServiceAccount>(value),
        ("", "Service") => round_trip::<core::Service>(value),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            round_trip::<apiextensions::CustomResourceDefinition>(value)
        }
        ("apps", "ControllerRevision") => round_trip::<apps::ControllerRevision>(value),
        ("apps", "DaemonSet") => round_trip::<apps::DaemonSet>(value),
        ("apps", "Deployment") => round_trip::<apps::Deployment>(value),
        ("apps", "ReplicaSet") => round_trip::<apps::ReplicaSet>(value),
        ("apps", "StatefulSet") => round_trip::<apps::StatefulSet>(value),
        ("batch", "CronJob") => round_trip::<batch::CronJob>(value),
        ("batch", "Job") => round_trip::<batch::Job>(value),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::Lease>(value),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::EndpointSlice>(value),
        ("events.k8s.io", "Event") => round_trip::<k8s_openapi::api::events::v1::Event>(value),
        ("policy", "PodDisruptionBudget") => round_trip::<policy::PodDisruptionBudget>(value),
        ("rbac.authorization.k8s.io", "ClusterRole") => round_trip::<rbac::ClusterRole>(value),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            round_trip::<rbac::ClusterRoleBinding>(value)
        }
        ("rbac.authorization.k8s.io", "Role") => round_trip::<rbac::Role>(value),
        ("rbac.authorization.k8s.io", "RoleBinding") => round_trip::<rbac::RoleBinding>(value),
        _ => Ok(value),
    }?;
    let mut unknown_fields = Vec::new();
    find_unknown(&input, &typed, "", &mut unknown_fields);
    Ok(Decoded {
        object: typed,
        unknown_fields,
    })
}

/// Fields of `input` that decoding dropped: what the schema does not know.
/// A dropped null or empty value is not unknown: Go's decoder drops those too.
fn find_unknown(input: &Value, decoded: &Value, path: &str, unknown: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(input), Value::Object(decoded)) => {
            for (key, value) in input {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match decoded.get(key) {
                    Some(kept) => find_unknown(value, kept, &field, unknown),
                    None if is_empty(value) => {}
                    // Free-form maps (labels, data) are kept whole, so a
                    // missing key is a field the schema does not have.
                    None => unknown.push(field),
                }
            }
        }
        (Value::Array(input), Value::Array(decoded)) => {
            for (index, (item, kept)) in input.iter().zip(decoded).enumerate() {
                find_unknown(item, kept, &format!("{path}[{index}]"), unknown);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn set_default(object: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = object
        && map.get(key).is_none_or(Value::is_null)
    {
        map.insert(key.to_string(), value);
    }
}

fn child<'a>(object: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    object.as_object_mut()?.get_mut(key)
}

/// An object child, made when absent.
fn ensure_object<'a>(object: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = object.as_object_mut()?;
    let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry.is_object().then_some(entry)
}

/// The pull policy kube-apiserver picks: Always for `:latest` or no tag.
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(container: &mut Value) {
    set_default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set_default(container, "terminationMessagePolicy", json!("File"));
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    set_default(
        container,
        "imagePullPolicy",
        json!(default_pull_policy(&image)),
    );
    set_default(container, "resources", json!({}));
    if let Some(Value::Array(ports)) = child(container, "ports") {
        for port in ports {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

/// PodSpec defaults (for pods and for templates).
fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = child(spec, list) {
            containers.iter_mut().for_each(default_container);
        }
    }
}

fn default_template(spec: &mut Value) {
    if let Some(template) = ensure_object(spec, "template") {
        if let Some(metadata) = ensure_object(template, "metadata") {
            set_default(metadata, "creationTimestamp", Value::Null);
        }
        if let Some(pod_spec) = ensure_object(template, "spec") {
            default_pod_spec(pod_spec);
        }
    }
}

/// kube-apiserver's DefaultTolerationSeconds admission: a new pod that
/// does not tolerate the `node.kubernetes.io/not-ready` (or `unreachable`)
/// `NoExecute` taint gets a toleration of it for `not_ready_seconds` (or
/// `unreachable_seconds`). A toleration of 0 s is written as such (as
/// upstream does with `--default-unreachable-toleration-seconds=0`): the
/// pod is evicted as soon as its node is marked.
pub fn default_tolerations(object: &mut Value, not_ready_seconds: i64, unreachable_seconds: i64) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerated = |key: &str| {
        existing.iter().any(|toleration| {
            let field = |name: &str| toleration.get(name).and_then(Value::as_str).unwrap_or("");
            (field("key") == key || field("key").is_empty())
                && (field("effect") == "NoExecute" || field("effect").is_empty())
        })
    };
    let mut tolerations = existing.clone();
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", not_ready_seconds),
        ("node.kubernetes.io/unreachable", unreachable_seconds),
    ] {
        if !tolerated(key) {
            tolerations.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds
            }));
        }
    }
    if tolerations.len() != existing.len() {
        spec.insert("tolerations".to_string(), Value::Array(tolerations));
    }
}

/// Fills in what kube-apiserver defaults for `resource`'s kind, so `get -o
/// yaml` shows what a real cluster shows.
pub fn apply_defaults(resource: &ResourceType, object: &mut Value) {
    if resource.shape == Shape::Custom {
        return;
    }
    match (resource.group.as_str(), resource.kind.as_str()) {
        ("", "Namespace") => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(metadata) = ensure_object(object, "metadata")
                && let Some(labels) = ensure_object(metadata, "labels")
            {
                set_default(labels, "kubernetes.io/metadata.name", json!(name));
            }
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = ensure_object(object, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        ("", "Pod") => {
            if let Some(spec) = ensure_object(object, "spec") {
                default_pod_spec(spec);
                set_default(spec, "serviceAccountName", json!("default"));
                set_default(spec, "serviceAccount", json!("default"));
                set_default(spec, "enableServiceLinks", json!(true));
                set_default(spec, "priority", json!(0));
                set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
            let qos = qos_class(object);
            if let Some(status) = ensure_object(object, "status") {
                set_default(status, "phase", json!("Pending"));
                set_default(status, "qosClass", json!(qos));
            }
        }
        ("", "Secret") => set_default(object, "type", json!("Opaque")),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            // shoal serves a CRD's resources as soon as it is stored: its
            // names are accepted and it is established at once.
            let names = object.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let stored: Vec<Value> = object
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|versions| {
                    versions
                        .iter()
                        .filter(|version| version.get("storage") == Some(&json!(true)))
                        .filter_map(|version| version.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let now = crate::objects::now();
            if let Some(status) = ensure_object(object, "status")
                && status.get("conditions").is_none()
            {
                status["acceptedNames"] = names;
                status["storedVersions"] = json!(stored);
                status["conditions"] = json!([
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": now,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ]);
            }
        }
        ("", "Service") => {
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                let service_type = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let service_type = service_type.as_str();
                if matches!(service_type, "NodePort" | "LoadBalancer") {
                    set_default(spec, "externalTrafficPolicy", json!("Cluster"));
                }
                // Upstream's default stickiness: three hours.
                if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP")
                    && spec
                        .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                        .is_none_or(Value::is_null)
                {
                    spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
                }
                if service_type != "ExternalName" {
                    set_default(spec, "ipFamilies", json!(["IPv4"]));
                    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                }
                if let Some(Value::Array(ports)) = child(spec, "ports") {
                    for port in ports {
                        set_default(port, "protocol", json!("TCP"));
                        let number = port.get("port").cloned().unwrap_or(Value::Null);
                        set_default(port, "targetPort", number);
                    }
                }
            }
            if let Some(status) = ensure_object(object, "status") {
                set_default(status, "loadBalancer", json!({}));
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = ensure_object(spec, "strategy") {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate"))
                        && let Some(rolling) = ensure_object(strategy, "rollingUpdate")
                    {
                        set_default(rolling, "maxUnavailable", json!("25%"));
                        set_default(rolling, "maxSurge", json!("25%"));
                    }
                }
                default_template(spec);
            }
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "replicas", json!(1));
                default_template(spec);
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                if let Some(strategy) = ensure_object(spec, "updateStrategy") {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate"))
                        && let Some(rolling) = ensure_object(strategy, "rollingUpdate")
                    {
                        set_default(rolling, "maxUnavailable", json!(1));
                        set_default(rolling, "maxSurge", json!(0));
                    }
                }
                default_template(spec);
            }
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                if let Some(strategy) = ensure_object(spec, "updateStrategy") {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate"))
                        && let Some(rolling) = ensure_object(strategy, "rollingUpdate")
                    {
                        set_default(rolling, "partition", json!(0));
                    }
                }
                default_template(spec);
            }
        }
        ("batch", "CronJob") => {
            if let Some(spec) = ensure_object(object, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
        }
        ("batch", "Job") => {
            if let Some(spec) = ensure_object(object, "spec") {
                let completions_set = spec.get("completions").is_some_and(|v| !v.is_null());
                let parallelism_set = spec.get("parallelism").is_some_and(|v| !v.is_null());
                if !completions_set && !parallelism_set {
                    set_default(spec, "completions", json!(1));
                }
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
                default_template(spec);
            }
        }
        _ => {}
    }
}

/// What kube-apiserver adds at creation once the object has its uid: a
/// Job's generated selector and the labels that match it.
pub fn on_create(resource: &ResourceType, object: &mut Value) {
    if (resource.group.as_str(), resource.kind.as_str()) != ("batch", "Job") {
        return;
    }
    let manual = object
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manual {
        return;
    }
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = ensure_object(object, "spec") else {
        return;
    };
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    if let Some(template) = ensure_object(spec, "template")
        && let Some(metadata) = ensure_object(template, "metadata")
        && let Some(labels) = ensure_object(metadata, "labels")
    {
        labels["batch.kubernetes.io/controller-uid"] = json!(uid);
        labels["batch.kubernetes.io/job-name"] = json!(name);
        labels["controller-uid"] = json!(uid);
        labels["job-name"] = json!(name);
    }
}

/// A pod's QoS class from its containers' requests and limits (the rule
/// kube-apiserver applies: no requests or limits at all is BestEffort;
/// requests equal to limits for CPU and memory everywhere is Guaranteed).
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        let requests = container.pointer("/resources/requests");
        let limits = container.pointer("/resources/limits");
        let has = |value: Option<&Value>| {
            value
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        };
        if has(requests) || has(limits) {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tolerations(object: &Value) -> Vec<(String, Option<i64>)> {
        object["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|toleration| {
                (
                    toleration["key"].as_str().unwrap_or("").to_string(),
                    toleration["tolerationSeconds"].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn a_pod_without_tolerations_gets_both_with_the_configured_seconds() {
        let mut pod = json!({"spec": {"containers": []}});
        default_tolerations(&mut pod, 0, 7);
        assert_eq!(
            tolerations(&pod),
            vec![
                ("node.kubernetes.io/not-ready".to_string(), Some(0)),
                ("node.kubernetes.io/unreachable".to_string(), Some(7)),
            ]
        );
    }

    #[test]
    fn a_pod_that_tolerates_a_taint_keeps_its_own_toleration() {
        let mut pod = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
        ]}});
        default_tolerations(&mut pod, 0, 0);
        assert_eq!(
            tolerations(&pod),
            vec![
                ("node.kubernetes.io/unreachable".to_string(), Some(60)),
                ("dedicated".to_string(), None),
                ("node.kubernetes.io/not-ready".to_string(), Some(0)),
            ]
        );
        // A toleration of every taint (empty key, Exists) covers both.
        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_tolerations(&mut everything, 0, 0);
        assert_eq!(tolerations(&everything).len(), 1);
    }
}
