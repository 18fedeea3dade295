//! Nodes: STATUS from the Ready condition plus SchedulingDisabled, ROLES from
//! `node-role.kubernetes.io/*` labels, VERSION, and the wide address and
//! system-info columns.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{age_column, name_column, text, wide};
use crate::object::{age, array_at, bool_at, name, object_at, str_at};
use crate::timestamp::UnixNanos;

const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";
const LEGACY_ROLE_LABEL: &str = "kubernetes.io/role";

pub(crate) fn columns() -> Vec<Column> {
    let addresses = "List of addresses reachable to the node.";
    vec![
        name_column(),
        text("Status", "The status of the node"),
        text("Roles", "The roles of the node"),
        age_column(),
        text("Version", "Kubelet Version reported by the node."),
        wide("Internal-IP", addresses),
        wide("External-IP", addresses),
        wide(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        wide(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        wide(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ]
}

pub(crate) fn cells(node: &Value, now: UnixNanos) -> Vec<Value> {
    // Only the Ready condition is shown; a later duplicate overrides an earlier one.
    let ready = array_at(node, &["status", "conditions"])
        .iter()
        .rfind(|condition| str_at(condition, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(condition) if str_at(condition, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let roles = roles(node);
    let node_info = |field: &str| -> String {
        let value = str_at(node, &["status", "nodeInfo", field]);
        if value.is_empty() {
            "<unknown>".to_string()
        } else {
            value.to_string()
        }
    };
    vec![
        json!(name(node)),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles
        }),
        json!(age(node, now)),
        json!(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(first_address(node, "InternalIP")),
        json!(first_address(node, "ExternalIP")),
        json!(node_info("osImage")),
        json!(node_info("kernelVersion")),
        json!(node_info("containerRuntimeVersion")),
    ]
}

fn roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in object_at(node, &["metadata", "labels"])
        .into_iter()
        .flatten()
    {
        if let Some(role) = key.strip_prefix(ROLE_LABEL_PREFIX) {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == LEGACY_ROLE_LABEL
            && let Some(role) = value.as_str().filter(|role| !role.is_empty())
        {
            roles.insert(role.to_string());
        }
    }
    roles.into_iter().collect::<Vec<_>>().join(",")
}

fn first_address(node: &Value, address_type: &str) -> String {
    array_at(node, &["status", "addresses"])
        .iter()
        .find(|address| str_at(address, &["type"]) == address_type)
        .map_or_else(
            || "<none>".to_string(),
            |address| str_at(address, &["address"]).to_string(),
        )
}
