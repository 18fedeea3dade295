//! The default table convertor and CRD `additionalPrinterColumns`, checked
//! against apiserver's `rest.defaultTableConvertor` and apiextensions'
//! `tableconvertor` behaviour.

use std::time::{Duration, SystemTime};

use printers::{
    CustomColumn, cells, columns, custom_cells, custom_columns, default_cells, default_columns,
};
use serde_json::{Value, json};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

fn custom(name: &str, column_type: &str, json_path: &str) -> CustomColumn {
    CustomColumn {
        name: name.to_string(),
        column_type: column_type.to_string(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: json_path.to_string(),
    }
}

#[test]
fn default_table_is_name_and_created_at() {
    let columns = default_columns();
    let layout: Vec<(&str, &str, &str)> = columns
        .iter()
        .map(|column| {
            (
                column.name.as_str(),
                column.column_type.as_str(),
                column.format.as_str(),
            )
        })
        .collect();
    assert_eq!(
        layout,
        [("Name", "string", "name"), ("Created At", "date", "")]
    );
    let limit_range =
        json!({"metadata": {"name": "limits", "creationTimestamp": "2024-06-01T10:20:30Z"}});
    assert_eq!(
        default_cells(&limit_range, now()),
        vec![json!("limits"), json!("2024-06-01T10:20:30Z")]
    );
    // Kinds without a printer fall back to the default cells.
    assert_eq!(
        cells("", "LimitRange", &limit_range, now()),
        default_cells(&limit_range, now())
    );
    // Offsets are normalised to UTC; an unset timestamp prints Go's zero time.
    let offset =
        json!({"metadata": {"name": "x", "creationTimestamp": "2024-06-01T12:20:30+02:00"}});
    assert_eq!(
        default_cells(&offset, now())[1],
        json!("2024-06-01T10:20:30Z")
    );
    assert_eq!(
        default_cells(&json!({}), now()),
        vec![json!(""), json!("0001-01-01T00:00:00Z")]
    );
}

#[test]
fn crd_without_columns_gets_age() {
    let columns = custom_columns(&[]);
    let layout: Vec<(&str, &str)> = columns
        .iter()
        .map(|column| (column.name.as_str(), column.column_type.as_str()))
        .collect();
    assert_eq!(layout, [("Name", "string"), ("Age", "date")]);
    let object =
        json!({"metadata": {"name": "thing", "creationTimestamp": "2024-12-31T23:55:00Z"}});
    assert_eq!(
        custom_cells(&[], &object, now()),
        vec![json!("thing"), json!("5m")]
    );
}

#[test]
fn crd_columns_are_used_as_defined() {
    let defined = vec![
        custom("Replicas", "integer", ".spec.replicas"),
        CustomColumn {
            description: "Readiness".to_string(),
            priority: 1,
            ..custom(
                "Ready",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status",
            )
        },
        custom("Ratio", "number", ".status.ratio"),
        custom("Paused", "boolean", ".spec.paused"),
        custom("Started", "date", ".status.startTime"),
        custom("Missing", "string", ".status.nothing"),
        custom("Selector", "string", ".spec.selector"),
        custom("Bad Date", "date", ".spec.when"),
    ];
    let columns = custom_columns(&defined);
    let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
    // No Age column is added when the CRD defines its own columns.
    assert_eq!(
        names,
        [
            "Name", "Replicas", "Ready", "Ratio", "Paused", "Started", "Missing", "Selector",
            "Bad Date"
        ]
    );
    assert_eq!(
        columns[1].description,
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    );
    assert_eq!(columns[2].description, "Readiness");
    assert_eq!(columns[2].priority, 1);

    let object = json!({
        "metadata": {"name": "db1"},
        "spec": {"replicas": 3.0, "paused": false, "selector": {"matchLabels": {"app": "db"}}, "when": "yesterday"},
        "status": {"ratio": 0.5, "startTime": "2024-12-31T21:00:00Z", "conditions": [{"type": "Ready", "status": "True"}]}
    });
    assert_eq!(
        custom_cells(&defined, &object, now()),
        vec![
            json!("db1"),
            json!(3),
            json!("True"),
            json!(0.5),
            json!(false),
            json!("3h"),
            Value::Null,
            json!(r#"{"matchLabels":{"app":"db"}}"#),
            json!("<invalid>"),
        ]
    );
    // Mistyped values print as null, as upstream's cellForJSONValue does.
    let mistyped =
        json!({"metadata": {"name": "db2"}, "spec": {"replicas": "three", "paused": "no"}});
    let row = custom_cells(&defined, &mistyped, now());
    assert_eq!(row.len(), columns.len());
    assert_eq!(row[1], Value::Null);
    assert_eq!(row[4], Value::Null);
}

#[test]
fn unparsable_paths_keep_the_row_shape() {
    let defined = vec![custom("Broken", "string", ".spec[")];
    let row = custom_cells(&defined, &json!({"metadata": {"name": "x"}}), now());
    assert_eq!(row, vec![json!("x"), Value::Null]);
}

#[test]
fn built_in_column_count_matches_cells_for_empty_objects() {
    let kinds = [
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
    ];
    for (group, kind) in kinds {
        let n_columns = columns(group, kind).expect("printer").len();
        for object in [json!({}), Value::Null, json!([]), json!("pod")] {
            assert_eq!(
                cells(group, kind, &object, now()).len(),
                n_columns,
                "{group}/{kind} {object}"
            );
        }
    }
}
