//! Property: for every kind, any JSON object yields exactly one cell per
//! column and never a panic. Objects are generated from a vocabulary of the
//! field names the printers read, so the generator reaches deep paths with
//! wrong types, nulls, odd timestamps and huge numbers.

use std::time::{Duration, SystemTime};

use printers::{
    CustomColumn, cells, columns, custom_cells, custom_columns, default_columns, row_conditions,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "Node"),
    ("", "Namespace"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "Event"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "DaemonSet"),
    ("apps", "StatefulSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("coordination.k8s.io", "Lease"),
    ("policy", "PodDisruptionBudget"),
    ("events.k8s.io", "Event"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
];

const FIELD_NAMES: &[&str] = &[
    "metadata",
    "name",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "ownerReferences",
    "controller",
    "apiVersion",
    "kind",
    "spec",
    "status",
    "containers",
    "initContainers",
    "restartPolicy",
    "image",
    "containerStatuses",
    "initContainerStatuses",
    "state",
    "lastState",
    "waiting",
    "running",
    "terminated",
    "reason",
    "exitCode",
    "signal",
    "finishedAt",
    "ready",
    "started",
    "restartCount",
    "conditions",
    "type",
    "phase",
    "podIPs",
    "ip",
    "nodeName",
    "nominatedNodeName",
    "readinessGates",
    "conditionType",
    "unschedulable",
    "nodeInfo",
    "addresses",
    "address",
    "kubeletVersion",
    "clusterIPs",
    "clusterIP",
    "externalIPs",
    "ports",
    "port",
    "nodePort",
    "protocol",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "loadBalancer",
    "ingress",
    "hostname",
    "externalName",
    "subsets",
    "endpoints",
    "data",
    "binaryData",
    "secrets",
    "hard",
    "used",
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "availableReplicas",
    "template",
    "completions",
    "parallelism",
    "succeeded",
    "startTime",
    "completionTime",
    "addressType",
    "holderIdentity",
    "minAvailable",
    "maxUnavailable",
    "disruptionsAllowed",
    "involvedObject",
    "regarding",
    "series",
    "count",
    "lastObservedTime",
    "eventTime",
    "firstTimestamp",
    "lastTimestamp",
    "source",
    "component",
    "host",
    "message",
    "note",
    "revision",
    "nodeSelector",
    "desiredNumberScheduled",
    "limits.cpu",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|float| serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("True".to_string()),
            Just("Always".to_string()),
            Just("Ready".to_string()),
            Just("LoadBalancer".to_string()),
            Just("0001-01-01T00:00:00Z".to_string()),
            Just("9999-12-31T23:59:59.999999999+23:59".to_string()),
            Just("1900-02-29T00:00:00Z".to_string()),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELD_NAMES), inner), 0..6).prop_map(
                |entries| {
                    let mut object = Map::new();
                    for (key, value) in entries {
                        object.insert(key.to_string(), value);
                    }
                    Value::Object(object)
                }
            ),
        ]
    })
}

fn now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        Just(SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600)),
        (0u64..u64::from(u32::MAX) * 16)
            .prop_map(|seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn cells_match_columns_for_any_object(object in json_value(), now in now()) {
        for (group, kind) in KINDS {
            let n_columns = columns(group, kind).unwrap_or_else(default_columns).len();
            let row = cells(group, kind, &object, now);
            prop_assert_eq!(row.len(), n_columns, "{}/{}", group, kind);
            let _ = row_conditions(group, kind, &object);
        }
    }

    #[test]
    fn custom_cells_match_custom_columns(
        object in json_value(),
        paths in prop::collection::vec(
            prop_oneof![
                Just(".spec.replicas".to_string()),
                Just(".status.conditions[?(@.type==\"Ready\")].status".to_string()),
                Just(".metadata.creationTimestamp".to_string()),
                Just(".spec.containers[*].image".to_string()),
                Just(".status.conditions[-1].count".to_string()),
                "[.\\[\\]a-z0-9?@=\"'()*\\-]{0,24}",
            ],
            0..4,
        ),
        types in prop::collection::vec(prop::sample::select(&["string", "integer", "number", "boolean", "date", "other"][..]), 4),
        now in now(),
    ) {
        let defined: Vec<CustomColumn> = paths
            .iter()
            .zip(types.iter())
            .map(|(path, column_type)| CustomColumn {
                name: path.clone(),
                column_type: column_type.to_string(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: path.clone(),
            })
            .collect();
        prop_assert_eq!(custom_cells(&defined, &object, now).len(), custom_columns(&defined).len());
    }
}
