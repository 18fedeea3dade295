//! apps/v1 workloads: Deployment, ReplicaSet, DaemonSet, StatefulSet and ControllerRevision.

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{
    CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION, age_column, integer, name_column, text, wide,
};
use crate::labels::{format_label_selector, format_labels, selector_string};
use crate::object::{age, array_at, container_cells, get, int_at, name, object_at, str_at};
use crate::timestamp::UnixNanos;

fn template_containers(object: &Value) -> &[Value] {
    array_at(object, &["spec", "template", "spec", "containers"])
}

pub(crate) fn deployment_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Ready", "Number of the pod with ready state"),
        text(
            "Up-to-date",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        text(
            "Available",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        age_column(),
        wide("Containers", CONTAINERS_DESCRIPTION),
        wide("Images", IMAGES_DESCRIPTION),
        wide(
            "Selector",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
        ),
    ]
}

pub(crate) fn deployment_cells(deployment: &Value, now: UnixNanos) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(deployment));
    // Unlike the other workloads, Deployment prints the raw selector string:
    // empty (not "<none>") for a nil or empty selector.
    let selector = selector_string(get(deployment, &["spec", "selector"]))
        .unwrap_or_else(|_| "<invalid>".to_string());
    vec![
        json!(name(deployment)),
        json!(format!(
            "{}/{}",
            int_at(deployment, &["status", "readyReplicas"]),
            int_at(deployment, &["spec", "replicas"])
        )),
        json!(int_at(deployment, &["status", "updatedReplicas"])),
        json!(int_at(deployment, &["status", "availableReplicas"])),
        json!(age(deployment, now)),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

pub(crate) fn replica_set_columns() -> Vec<Column> {
    vec![
        name_column(),
        integer("Desired", "Replicas is the number of desired replicas."),
        integer(
            "Current",
            "Replicas is the most recently observed number of replicas.",
        ),
        integer(
            "Ready",
            "The number of ready replicas for this replica set.",
        ),
        age_column(),
        wide("Containers", CONTAINERS_DESCRIPTION),
        wide("Images", IMAGES_DESCRIPTION),
        wide(
            "Selector",
            "Selector is a label query over pods that should match the replica count.",
        ),
    ]
}

pub(crate) fn replica_set_cells(replica_set: &Value, now: UnixNanos) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(replica_set));
    vec![
        json!(name(replica_set)),
        json!(int_at(replica_set, &["spec", "replicas"])),
        json!(int_at(replica_set, &["status", "replicas"])),
        json!(int_at(replica_set, &["status", "readyReplicas"])),
        json!(age(replica_set, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(get(
            replica_set,
            &["spec", "selector"]
        ))),
    ]
}

pub(crate) fn daemon_set_columns() -> Vec<Column> {
    vec![
        name_column(),
        integer(
            "Desired",
            "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
        ),
        integer(
            "Current",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
        ),
        integer(
            "Ready",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
        ),
        integer(
            "Up-to-date",
            "The total number of nodes that are running updated daemon pod",
        ),
        integer(
            "Available",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
        ),
        text(
            "Node Selector",
            "NodeSelector is a selector which must be true for the pod to fit on a node.",
        ),
        age_column(),
        wide("Containers", CONTAINERS_DESCRIPTION),
        wide("Images", IMAGES_DESCRIPTION),
        wide(
            "Selector",
            "A label query over pods that are managed by the daemon set.",
        ),
    ]
}

pub(crate) fn daemon_set_cells(daemon_set: &Value, now: UnixNanos) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(daemon_set));
    let status = |field: &str| int_at(daemon_set, &["status", field]);
    vec![
        json!(name(daemon_set)),
        json!(status("desiredNumberScheduled")),
        json!(status("currentNumberScheduled")),
        json!(status("numberReady")),
        json!(status("updatedNumberScheduled")),
        json!(status("numberAvailable")),
        json!(format_labels(object_at(
            daemon_set,
            &["spec", "template", "spec", "nodeSelector"]
        ))),
        json!(age(daemon_set, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(get(
            daemon_set,
            &["spec", "selector"]
        ))),
    ]
}

pub(crate) fn stateful_set_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Ready", "Number of the pod with ready state"),
        age_column(),
        wide("Containers", CONTAINERS_DESCRIPTION),
        wide("Images", IMAGES_DESCRIPTION),
    ]
}

pub(crate) fn stateful_set_cells(stateful_set: &Value, now: UnixNanos) -> Vec<Value> {
    let (names, images) = container_cells(template_containers(stateful_set));
    vec![
        json!(name(stateful_set)),
        json!(format!(
            "{}/{}",
            int_at(stateful_set, &["status", "readyReplicas"]),
            int_at(stateful_set, &["spec", "replicas"])
        )),
        json!(age(stateful_set, now)),
        json!(names),
        json!(images),
    ]
}

pub(crate) fn controller_revision_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Controller", "Controller of the object"),
        text(
            "Revision",
            "Revision indicates the revision of the state represented by Data.",
        ),
        age_column(),
    ]
}

pub(crate) fn controller_revision_cells(revision: &Value, now: UnixNanos) -> Vec<Value> {
    let controller = array_at(revision, &["metadata", "ownerReferences"])
        .iter()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(|| "<none>".to_string(), controller_name);
    vec![
        json!(name(revision)),
        json!(controller),
        json!(int_at(revision, &["revision"])),
        json!(age(revision, now)),
    ]
}

/// "kind.group/name" in lower case ("daemonset.apps/web"); just the name when
/// the reference has neither kind nor group.
fn controller_name(owner: &Value) -> String {
    let owner_name = str_at(owner, &["name"]);
    let kind = str_at(owner, &["kind"]);
    let api_version = str_at(owner, &["apiVersion"]);
    // schema.ParseGroupVersion: "v1" has no group, "apps/v1" has "apps".
    let group = match api_version.split_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    let group_kind = match (kind.is_empty(), group.is_empty()) {
        (true, true) => return owner_name.to_string(),
        (_, true) => kind.to_string(),
        _ => format!("{kind}.{group}"),
    };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}
