//! Pods: READY, STATUS (the reason logic of `kubectl get pods`), RESTARTS with
//! the time of the last restart, and the wide IP, NODE, NOMINATED NODE and
//! READINESS GATES columns.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{age_column, name_column, text, wide};
use crate::object::{
    age, array_at, bool_at, condition, get, int_at, name, present, str_at, time_at,
};
use crate::timestamp::{UnixNanos, since};

pub(crate) fn columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Ready",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        text(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        text(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        age_column(),
        wide(
            "IP",
            "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        ),
        wide(
            "Node",
            "NodeName indicates in which node this pod is scheduled.",
        ),
        wide(
            "Nominated Node",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
        ),
        wide(
            "Readiness Gates",
            "If specified, all readiness gates will be evaluated for pod readiness.",
        ),
    ]
}

/// A restartable init container is a sidecar: `restartPolicy: Always`.
fn is_sidecar(container: Option<&&Value>) -> bool {
    container.is_some_and(|container| str_at(container, &["restartPolicy"]) == "Always")
}

/// The restart count and latest `lastState.terminated.finishedAt` of a set of statuses.
#[derive(Default)]
struct Restarts {
    count: i64,
    last: Option<UnixNanos>,
}

impl Restarts {
    fn record(&mut self, status: &Value) {
        self.count = self.count.saturating_add(int_at(status, &["restartCount"]));
        if present(status, &["lastState", "terminated"]) {
            let finished = time_at(status, &["lastState", "terminated", "finishedAt"]);
            if finished > self.last {
                self.last = finished;
            }
        }
    }
}

pub(crate) fn cells(pod: &Value, now: UnixNanos) -> Vec<Value> {
    let init_containers = array_at(pod, &["spec", "initContainers"]);
    let containers = array_at(pod, &["spec", "containers"]);
    let conditions = array_at(pod, &["status", "conditions"]);
    let phase = str_at(pod, &["status", "phase"]);
    let pod_reason = str_at(pod, &["status", "reason"]);

    let mut reason = if pod_reason.is_empty() {
        phase.to_string()
    } else {
        pod_reason.to_string()
    };
    let scheduling_gated = conditions.iter().any(|condition| {
        str_at(condition, &["type"]) == "PodScheduled"
            && str_at(condition, &["reason"]) == "SchedulingGated"
    });
    if scheduling_gated {
        reason = "SchedulingGated".to_string();
    }

    let init_by_name: HashMap<&str, &Value> = init_containers
        .iter()
        .map(|container| (str_at(container, &["name"]), container))
        .collect();
    let n_sidecars = init_containers
        .iter()
        .filter(|container| is_sidecar(Some(container)))
        .count();
    let total_containers = containers.len() + n_sidecars;
    let mut ready_containers = 0usize;

    let mut restarts = Restarts::default();
    let mut sidecar_restarts = Restarts::default();
    let mut initializing = false;
    let init_statuses = array_at(pod, &["status", "initContainerStatuses"]);
    for (status_idx, status) in init_statuses.iter().enumerate() {
        restarts.record(status);
        let sidecar = is_sidecar(init_by_name.get(str_at(status, &["name"])));
        if sidecar {
            sidecar_restarts.record(status);
        }
        let terminated = present(status, &["state", "terminated"]);
        let exit_code = int_at(status, &["state", "terminated", "exitCode"]);
        if terminated && exit_code == 0 {
            continue;
        }
        if sidecar && bool_at(status, &["started"]) {
            if bool_at(status, &["ready"]) {
                ready_containers += 1;
            }
            continue;
        }
        let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
        if terminated {
            let terminated_reason = str_at(status, &["state", "terminated", "reason"]);
            let signal = int_at(status, &["state", "terminated", "signal"]);
            reason = if !terminated_reason.is_empty() {
                format!("Init:{terminated_reason}")
            } else if signal != 0 {
                format!("Init:Signal:{signal}")
            } else {
                format!("Init:ExitCode:{exit_code}")
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{status_idx}/{}", init_containers.len());
        }
        initializing = true;
        break;
    }

    let initialized = condition(conditions, "Initialized")
        .is_some_and(|condition| str_at(condition, &["status"]) == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        let mut has_running = false;
        for status in array_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts.record(status);
            let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
            let terminated = present(status, &["state", "terminated"]);
            let terminated_reason = str_at(status, &["state", "terminated", "reason"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated && !terminated_reason.is_empty() {
                reason = terminated_reason.to_string();
            } else if terminated {
                let signal = int_at(status, &["state", "terminated", "signal"]);
                let exit_code = int_at(status, &["state", "terminated", "exitCode"]);
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{exit_code}")
                };
            } else if bool_at(status, &["ready"]) && present(status, &["state", "running"]) {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod whose last container completed but another still runs is not "Completed".
        if reason == "Completed" && has_running {
            let ready = conditions.iter().any(|condition| {
                str_at(condition, &["type"]) == "Ready" && str_at(condition, &["status"]) == "True"
            });
            reason = if ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = present(pod, &["metadata", "deletionTimestamp"]);
    if deleting && pod_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_text = match restarts.last {
        Some(last) if restarts.count != 0 => {
            format!("{} ({} ago)", restarts.count, since(Some(last), now))
        }
        _ => restarts.count.to_string(),
    };

    vec![
        json!(name(pod)),
        json!(format!("{ready_containers}/{total_containers}")),
        json!(reason),
        json!(restarts_text),
        json!(age(pod, now)),
        json!(or_none(first_pod_ip(pod))),
        json!(or_none(str_at(pod, &["spec", "nodeName"]))),
        json!(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
        json!(readiness_gates(pod, conditions)),
    ]
}

fn first_pod_ip(pod: &Value) -> &str {
    array_at(pod, &["status", "podIPs"])
        .first()
        .map(|pod_ip| str_at(pod_ip, &["ip"]))
        .unwrap_or("")
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "<none>" } else { text }
}

/// "true gates/all gates", where a gate counts when its condition (the first of that type) is True.
fn readiness_gates(pod: &Value, conditions: &[Value]) -> String {
    let gates = array_at(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let n_true = gates
        .iter()
        .filter(|gate| {
            condition(conditions, str_at(gate, &["conditionType"]))
                .is_some_and(|condition| str_at(condition, &["status"]) == "True")
        })
        .count();
    format!("{n_true}/{}", gates.len())
}

pub(crate) fn row_conditions(pod: &Value) -> Vec<Value> {
    let (reason, message) = match get(pod, &["status", "phase"]).and_then(Value::as_str) {
        Some("Succeeded") => ("Succeeded", "The pod has completed successfully."),
        Some("Failed") => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}
