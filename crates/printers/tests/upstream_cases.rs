//! Cases ported as data from kube-apiserver's `pkg/printers/internalversion/printers_test.go`
//! (v1.33 era): each object is the Go test object in JSON shape, each expectation the
//! cells upstream asserts. Upstream runs many cases without the wide option; the server
//! always prints wide, so those cases check the leading cells and the wide cells follow.
//! Relative times ("10s ago") are fixed against `NOW`.

use std::time::{Duration, SystemTime};

use printers::{cells, columns, row_conditions};
use serde_json::{Value, json};

/// 2025-01-01T00:00:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

const TEN_SECONDS_AGO: &str = "2024-12-31T23:59:50Z";
const TWENTY_SECONDS_AGO: &str = "2024-12-31T23:59:40Z";
const TWO_MINUTES_AGO: &str = "2024-12-31T23:58:00Z";
const FIVE_DAYS_AGO: &str = "2024-12-27T00:00:00Z";
const TEN_DAYS_AGO: &str = "2024-12-22T00:00:00Z";
const TWENTY_DAYS_AGO: &str = "2024-12-12T00:00:00Z";
/// Upstream's `time.Now().Add(1.9e9)`: slightly in the future, printed "0s".
const IN_1_9_SECONDS: &str = "2025-01-01T00:00:01.9Z";

/// Asserts the leading cells and that the row is as long as the column list.
fn check(group: &str, kind: &str, object: Value, expected: Value) {
    let row = cells(group, kind, &object, now());
    let n_columns = columns(group, kind).expect("kind has a printer").len();
    assert_eq!(row.len(), n_columns, "{kind} row length: {row:?}");
    let expected = expected
        .as_array()
        .expect("expected cells are an array")
        .clone();
    assert_eq!(row[..expected.len()], expected[..], "{kind} {object}");
}

fn pod_with_statuses(name: &str, n_containers: usize, phase: &str, statuses: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"containers": vec![json!({}); n_containers]},
        "status": {"phase": phase, "containerStatuses": statuses}
    })
}

fn running() -> Value {
    json!({"running": {}})
}

fn terminated_at(finished_at: &str) -> Value {
    json!({"terminated": {"finishedAt": finished_at}})
}

#[test]
fn pod_status_ready_and_restarts() {
    let cases = [
        // Name, number of containers, restarts, container ready status.
        (
            pod_with_statuses(
                "test1",
                2,
                "podPhase",
                json!([
                    {"ready": true, "restartCount": 3, "state": running()},
                    {"restartCount": 3}
                ]),
            ),
            json!(["test1", "1/2", "podPhase", "6", "<unknown>"]),
        ),
        // A container error overwrites the pod phase.
        (
            pod_with_statuses(
                "test2",
                2,
                "podPhase",
                json!([
                    {"ready": true, "restartCount": 3, "state": running()},
                    {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3}
                ]),
            ),
            json!(["test2", "1/2", "ContainerWaitingReason", "6", "<unknown>"]),
        ),
        // With a terminated container too, the first container's reason wins.
        (
            pod_with_statuses(
                "test3",
                2,
                "podPhase",
                json!([
                    {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3},
                    {"state": {"terminated": {"reason": "ContainerTerminatedReason"}}, "restartCount": 3}
                ]),
            ),
            json!(["test3", "0/2", "ContainerWaitingReason", "6", "<unknown>"]),
        ),
        // Ready is not enough for reporting running.
        (
            pod_with_statuses(
                "test4",
                2,
                "podPhase",
                json!([
                    {"ready": true, "restartCount": 3, "state": running()},
                    {"ready": true, "restartCount": 3}
                ]),
            ),
            json!(["test4", "1/2", "podPhase", "6", "<unknown>"]),
        ),
        // The pod reason overrides the phase.
        (
            json!({
                "metadata": {"name": "test5"},
                "spec": {"containers": [{}, {}]},
                "status": {"reason": "podReason", "phase": "podPhase", "containerStatuses": [
                    {"ready": true, "restartCount": 3, "state": running()},
                    {"ready": true, "restartCount": 3}
                ]}
            }),
            json!(["test5", "1/2", "podReason", "6", "<unknown>"]),
        ),
        // One container running, one completed, no Ready condition.
        (
            pod_with_statuses(
                "test6",
                2,
                "Running",
                json!([
                    {"ready": true, "restartCount": 3, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
                    {"ready": true, "restartCount": 3, "state": running()}
                ]),
            ),
            json!(["test6", "1/2", "NotReady", "6", "<unknown>"]),
        ),
        // The same with a Ready condition.
        (
            json!({
                "metadata": {"name": "test6"},
                "spec": {"containers": [{}, {}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"ready": true, "restartCount": 3, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
                    {"ready": true, "restartCount": 3, "state": running()}
                ], "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": "2025-01-01T00:00:00Z"}]}
            }),
            json!(["test6", "1/2", "Running", "6", "<unknown>"]),
        ),
        // One init container restarting, one container not running.
        (
            json!({
                "metadata": {"name": "test7"},
                "spec": {"initContainers": [{}], "containers": [{}]},
                "status": {"phase": "podPhase",
                    "initContainerStatuses": [{"ready": false, "restartCount": 3, "state": running(), "lastState": terminated_at(TEN_SECONDS_AGO)}],
                    "containerStatuses": [{"ready": false, "restartCount": 0, "state": {"waiting": {}}}]}
            }),
            json!(["test7", "0/1", "Init:0/1", "3 (10s ago)", "<unknown>"]),
        ),
        // Two init containers, one restarting and one not running.
        (
            json!({
                "metadata": {"name": "test8"},
                "spec": {"initContainers": [{}, {}], "containers": [{}]},
                "status": {"phase": "podPhase",
                    "initContainerStatuses": [
                        {"ready": false, "restartCount": 3, "state": running(), "lastState": terminated_at(TEN_SECONDS_AGO)},
                        {"ready": false, "state": {"waiting": {}}}
                    ],
                    "containerStatuses": [{"ready": false, "state": {"waiting": {}}}]}
            }),
            json!(["test8", "0/1", "Init:0/2", "3 (10s ago)", "<unknown>"]),
        ),
        // Two init containers, one completed without restarts and one restarting.
        (
            json!({
                "metadata": {"name": "test9"},
                "spec": {"initContainers": [{}, {}], "containers": [{}]},
                "status": {"phase": "podPhase",
                    "initContainerStatuses": [
                        {"ready": false, "state": {"terminated": {}}},
                        {"ready": false, "restartCount": 3, "state": running(), "lastState": terminated_at(TEN_SECONDS_AGO)}
                    ],
                    "containerStatuses": [{"ready": false, "state": {"waiting": {}}}]}
            }),
            json!(["test9", "0/1", "Init:1/2", "3 (10s ago)", "<unknown>"]),
        ),
        // Two init containers, one completed with restarts and one restarting.
        (
            json!({
                "metadata": {"name": "test10"},
                "spec": {"initContainers": [{}, {}], "containers": [{}]},
                "status": {"phase": "podPhase",
                    "initContainerStatuses": [
                        {"ready": false, "restartCount": 2, "state": {"terminated": {}}, "lastState": terminated_at(TWO_MINUTES_AGO)},
                        {"ready": false, "restartCount": 3, "state": running(), "lastState": terminated_at(TEN_SECONDS_AGO)}
                    ],
                    "containerStatuses": [{"ready": false, "state": {"waiting": {}}}]}
            }),
            json!(["test10", "0/1", "Init:1/2", "5 (10s ago)", "<unknown>"]),
        ),
        // One init container completed with restarts, one container restarting.
        (
            json!({
                "metadata": {"name": "test11"},
                "spec": {"initContainers": [{}], "containers": [{}]},
                "status": {"phase": "Running",
                    "initContainerStatuses": [
                        {"ready": false, "restartCount": 2, "state": {"terminated": {}}, "lastState": terminated_at(TWO_MINUTES_AGO)}
                    ],
                    "containerStatuses": [
                        {"ready": false, "restartCount": 4, "state": running(), "lastState": terminated_at(TWENTY_SECONDS_AGO)}
                    ]}
            }),
            json!(["test11", "0/1", "Running", "4 (20s ago)", "<unknown>"]),
        ),
        // One container that restarted 5d ago.
        (
            pod_with_statuses(
                "test12",
                1,
                "Running",
                json!([
                    {"ready": true, "restartCount": 3, "state": running(), "lastState": terminated_at(FIVE_DAYS_AGO)}
                ]),
            ),
            json!(["test12", "1/1", "Running", "3 (5d ago)", "<unknown>"]),
        ),
        // Two containers, one never restarted, the other 10d ago.
        (
            pod_with_statuses(
                "test13",
                2,
                "Running",
                json!([
                    {"ready": true, "restartCount": 0, "state": running()},
                    {"ready": true, "restartCount": 3, "state": running(), "lastState": terminated_at(TEN_DAYS_AGO)}
                ]),
            ),
            json!(["test13", "2/2", "Running", "3 (10d ago)", "<unknown>"]),
        ),
        // Two containers restarted 5d and 20d ago: the latest restart is shown.
        (
            pod_with_statuses(
                "test14",
                2,
                "Running",
                json!([
                    {"ready": true, "restartCount": 6, "state": running(), "lastState": terminated_at(FIVE_DAYS_AGO)},
                    {"ready": true, "restartCount": 3, "state": running(), "lastState": terminated_at(TWENTY_DAYS_AGO)}
                ]),
            ),
            json!(["test14", "2/2", "Running", "9 (5d ago)", "<unknown>"]),
        ),
        // PodScheduled condition with reason SchedulingGated.
        (
            json!({
                "metadata": {"name": "test15"},
                "spec": {"containers": [{}, {}]},
                "status": {"phase": "podPhase", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
            }),
            json!(["test15", "0/2", "SchedulingGated", "0", "<unknown>"]),
        ),
        // Succeeded.
        (
            pod_with_statuses(
                "test16",
                1,
                "Succeeded",
                json!([
                    {"ready": false, "restartCount": 0, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
                ]),
            ),
            json!(["test16", "0/1", "Completed", "0", "<unknown>"]),
        ),
        // Failed.
        (
            pod_with_statuses(
                "test17",
                1,
                "Failed",
                json!([
                    {"ready": false, "restartCount": 0, "state": {"terminated": {"reason": "Error", "exitCode": 1}}}
                ]),
            ),
            json!(["test17", "0/1", "Error", "0", "<unknown>"]),
        ),
    ];
    for (pod, expected) in cases {
        check("", "Pod", pod, expected);
    }
}

#[test]
fn pod_deletion() {
    let deleting = |name: &str, phase: &str, statuses: Value| {
        json!({
            "metadata": {"name": name, "deletionTimestamp": TEN_SECONDS_AGO},
            "spec": {"containers": [{}]},
            "status": {"phase": phase, "containerStatuses": statuses}
        })
    };
    // A succeeded pod being deleted stays Completed.
    check(
        "",
        "Pod",
        deleting(
            "test18",
            "Succeeded",
            json!([{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]),
        ),
        json!(["test18", "0/1", "Completed", "0", "<unknown>"]),
    );
    check(
        "",
        "Pod",
        deleting(
            "test19",
            "Running",
            json!([{"ready": false, "state": running()}]),
        ),
        json!(["test19", "0/1", "Terminating", "0", "<unknown>"]),
    );
    check(
        "",
        "Pod",
        json!({"metadata": {"name": "test20", "deletionTimestamp": TEN_SECONDS_AGO}, "spec": {"containers": [{}]}, "status": {"phase": "Pending"}}),
        json!(["test20", "0/1", "Terminating", "0", "<unknown>"]),
    );
    // Not in upstream's table but in its code: a deleted pod on a lost node is Unknown.
    check(
        "",
        "Pod",
        json!({"metadata": {"name": "lost", "deletionTimestamp": TEN_SECONDS_AGO}, "spec": {"containers": [{}]}, "status": {"phase": "Running", "reason": "NodeLost"}}),
        json!(["lost", "0/1", "Unknown", "0", "<unknown>"]),
    );
}

#[test]
fn pod_with_restartable_init_containers() {
    let sidecars = json!([
        {"name": "restartable-init-1", "restartPolicy": "Always"},
        {"name": "restartable-init-2", "restartPolicy": "Always"}
    ]);
    let cases = [
        // The first sidecar running but not started.
        (
            json!({
                "metadata": {"name": "test1"},
                "spec": {"initContainers": sidecars, "containers": [{}]},
                "status": {"phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "restartable-init-1", "ready": false, "restartCount": 3, "state": running(), "started": false, "lastState": terminated_at(TEN_SECONDS_AGO)},
                        {"name": "restartable-init-2", "ready": false, "state": {"waiting": {}}, "started": false}
                    ],
                    "containerStatuses": [{"ready": false, "restartCount": 0, "state": {"waiting": {}}}],
                    "conditions": [{"type": "Initialized", "status": "False"}]}
            }),
            json!(["test1", "0/3", "Init:0/2", "3 (10s ago)", "<unknown>"]),
        ),
        // The first sidecar started, the second running but not started.
        (
            json!({
                "metadata": {"name": "test1"},
                "spec": {"initContainers": sidecars, "containers": [{}]},
                "status": {"phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "restartable-init-1", "ready": false, "restartCount": 3, "state": running(), "started": true, "lastState": terminated_at(TEN_SECONDS_AGO)},
                        {"name": "restartable-init-2", "ready": false, "state": running(), "started": false}
                    ],
                    "containerStatuses": [{"ready": false, "restartCount": 0, "state": {"waiting": {}}}],
                    "conditions": [{"type": "Initialized", "status": "False"}]}
            }),
            json!(["test1", "0/3", "Init:1/2", "3 (10s ago)", "<unknown>"]),
        ),
        // Both sidecars started and one container running.
        (
            json!({
                "metadata": {"name": "test2"},
                "spec": {"initContainers": sidecars, "containers": [{}]},
                "status": {"phase": "Running",
                    "initContainerStatuses": [
                        {"name": "restartable-init-1", "ready": false, "restartCount": 3, "state": running(), "started": true, "lastState": terminated_at(TEN_SECONDS_AGO)},
                        {"name": "restartable-init-2", "ready": false, "state": running(), "started": true}
                    ],
                    "containerStatuses": [{"ready": true, "restartCount": 4, "state": running(), "lastState": terminated_at(TWENTY_SECONDS_AGO)}],
                    "conditions": [{"type": "Initialized", "status": "True"}]}
            }),
            json!(["test2", "1/3", "Running", "7 (10s ago)", "<unknown>"]),
        ),
        // Sidecars terminated with non-zero codes, the container completed.
        (
            json!({
                "metadata": {"name": "test3"},
                "spec": {"initContainers": sidecars, "containers": [{}]},
                "status": {"phase": "Succeeded",
                    "initContainerStatuses": [
                        {"name": "restartable-init-1", "ready": false, "restartCount": 3, "state": {"terminated": {"reason": "Error", "exitCode": 137}}, "started": false, "lastState": terminated_at(TEN_SECONDS_AGO)},
                        {"name": "restartable-init-2", "ready": false, "state": {"terminated": {"reason": "Error", "exitCode": 137}}, "started": false}
                    ],
                    "containerStatuses": [{"ready": false, "restartCount": 4, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}, "lastState": terminated_at(TWENTY_SECONDS_AGO)}],
                    "conditions": [{"type": "Initialized", "status": "True"}]}
            }),
            json!(["test3", "0/3", "Completed", "7 (10s ago)", "<unknown>"]),
        ),
        // Statuses for containers that do not exist in the spec.
        (
            json!({
                "metadata": {"name": "test4"},
                "spec": {
                    "initContainers": [{"name": "init1", "image": "initimage"}, {"name": "sidecar1", "image": "sidecarimage", "restartPolicy": "Always"}],
                    "containers": [{"name": "container1", "image": "containerimage"}]
                },
                "status": {"phase": "Running",
                    "initContainerStatuses": [{"name": "initinvalid"}, {"name": "init1"}, {"name": "sidecar1"}],
                    "containerStatuses": [{"name": "containerinvalid"}, {"name": "container1"}]}
            }),
            json!(["test4", "0/2", "Init:0/2", "0", "<unknown>"]),
        ),
    ];
    for (pod, expected) in cases {
        check("", "Pod", pod, expected);
    }
}

#[test]
fn pod_wide_columns() {
    let gates = json!([{"conditionType": "condition1"}, {"conditionType": "condition2"}, {"conditionType": "condition3"}]);
    let conditions = json!([{"type": "condition1", "status": "False"}, {"type": "condition2", "status": "True"}]);
    let statuses =
        json!([{"ready": true, "restartCount": 3, "state": running()}, {"restartCount": 3}]);
    check(
        "",
        "Pod",
        json!({
            "metadata": {"name": "test1"},
            "spec": {"containers": [{}, {}], "nodeName": "test1", "readinessGates": gates},
            "status": {"conditions": conditions, "phase": "podPhase", "podIPs": [{"ip": "1.1.1.1"}], "containerStatuses": statuses, "nominatedNodeName": "node1"}
        }),
        json!([
            "test1",
            "1/2",
            "podPhase",
            "6",
            "<unknown>",
            "1.1.1.1",
            "test1",
            "node1",
            "1/3"
        ]),
    );
    check(
        "",
        "Pod",
        json!({
            "metadata": {"name": "test1"},
            "spec": {"containers": [{}, {}], "nodeName": "test1", "readinessGates": gates},
            "status": {"conditions": conditions, "phase": "podPhase", "podIPs": [{"ip": "1.1.1.1"}, {"ip": "2001:db8::"}], "containerStatuses": statuses, "nominatedNodeName": "node1"}
        }),
        json!([
            "test1",
            "1/2",
            "podPhase",
            "6",
            "<unknown>",
            "1.1.1.1",
            "test1",
            "node1",
            "1/3"
        ]),
    );
    check(
        "",
        "Pod",
        json!({
            "metadata": {"name": "test2"},
            "spec": {"containers": [{}, {}], "nodeName": ""},
            "status": {"phase": "podPhase", "containerStatuses": [
                {"ready": true, "restartCount": 3, "state": running()},
                {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3}
            ]}
        }),
        json!([
            "test2",
            "1/2",
            "ContainerWaitingReason",
            "6",
            "<unknown>",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
}

#[test]
fn pod_row_conditions() {
    let phase = |phase: &str| json!({"metadata": {"name": "p"}, "status": {"phase": phase}});
    assert!(row_conditions("", "Pod", &phase("Running")).is_empty());
    assert_eq!(
        row_conditions("", "Pod", &phase("Succeeded")),
        vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
        ]
    );
    assert_eq!(
        row_conditions("", "Pod", &phase("Failed")),
        vec![
            json!({"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."})
        ]
    );
}

#[test]
fn node_status() {
    let node = |name: &str, unschedulable: bool, conditions: Value| json!({"metadata": {"name": name}, "spec": {"unschedulable": unschedulable}, "status": {"conditions": conditions}});
    let cases = [
        (
            node("foo1", false, json!([{"type": "Ready", "status": "True"}])),
            "Ready",
        ),
        (
            node("foo2", true, json!([{"type": "Ready", "status": "True"}])),
            "Ready,SchedulingDisabled",
        ),
        (
            node(
                "foo3",
                false,
                json!([{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "True"}]),
            ),
            "Ready",
        ),
        (
            node("foo4", false, json!([{"type": "Ready", "status": "False"}])),
            "NotReady",
        ),
        (
            node("foo5", true, json!([{"type": "Ready", "status": "False"}])),
            "NotReady,SchedulingDisabled",
        ),
        (
            node(
                "foo6",
                false,
                json!([{"type": "InvalidValue", "status": "True"}]),
            ),
            "Unknown",
        ),
        (node("foo7", false, json!([{}])), "Unknown"),
        (
            node(
                "foo8",
                true,
                json!([{"type": "InvalidValue", "status": "True"}]),
            ),
            "Unknown,SchedulingDisabled",
        ),
        (
            node("foo9", true, json!([{}])),
            "Unknown,SchedulingDisabled",
        ),
    ];
    for (node, status) in cases {
        let name = node["metadata"]["name"].clone();
        check(
            "",
            "Node",
            node,
            json!([name, status, "<none>", "<unknown>", ""]),
        );
    }
}

#[test]
fn node_roles_and_name() {
    check(
        "",
        "Node",
        json!({"metadata": {"name": "foo9"}}),
        json!(["foo9", "Unknown", "<none>", "<unknown>", ""]),
    );
    check(
        "",
        "Node",
        json!({"metadata": {"name": "foo10", "labels": {
            "node-role.kubernetes.io/master": "", "node-role.kubernetes.io/control-plane": "",
            "node-role.kubernetes.io/proxy": "", "kubernetes.io/role": "node"
        }}}),
        json!([
            "foo10",
            "Unknown",
            "control-plane,master,node,proxy",
            "<unknown>",
            ""
        ]),
    );
    check(
        "",
        "Node",
        json!({"metadata": {"name": "foo11", "labels": {"kubernetes.io/role": "node"}}}),
        json!(["foo11", "Unknown", "node", "<unknown>", ""]),
    );
    check(
        "",
        "Node",
        json!({"metadata": {"name": "127.0.0.1"}, "status": {}}),
        json!(["127.0.0.1", "Unknown", "<none>", "<unknown>", ""]),
    );
    check(
        "",
        "Node",
        json!({"metadata": {"name": ""}, "status": {}}),
        json!(["", "Unknown", "<none>", "<unknown>", ""]),
    );
}

#[test]
fn node_wide_columns() {
    let external = json!([{"type": "ExternalIP", "address": "1.1.1.1"}]);
    let cases = [
        (
            json!({"osImage": "fake-os-image"}),
            external.clone(),
            json!([
                "<none>",
                "1.1.1.1",
                "fake-os-image",
                "<unknown>",
                "<unknown>"
            ]),
        ),
        (
            json!({"kernelVersion": "fake-kernel-version"}),
            external.clone(),
            json!([
                "<none>",
                "1.1.1.1",
                "<unknown>",
                "fake-kernel-version",
                "<unknown>"
            ]),
        ),
        (
            json!({"containerRuntimeVersion": "foo://1.2.3"}),
            external.clone(),
            json!(["<none>", "1.1.1.1", "<unknown>", "<unknown>", "foo://1.2.3"]),
        ),
        (
            json!({}),
            external,
            json!(["<none>", "1.1.1.1", "<unknown>", "<unknown>", "<unknown>"]),
        ),
        (
            json!({}),
            json!([{"type": "InternalIP", "address": "1.1.1.1"}]),
            json!(["1.1.1.1", "<none>", "<unknown>", "<unknown>", "<unknown>"]),
        ),
        (
            json!({}),
            json!([{"type": "ExternalIP", "address": "2.2.2.2"}, {"type": "InternalIP", "address": "3.3.3.3"}, {"type": "ExternalIP", "address": "4.4.4.4"}]),
            json!(["3.3.3.3", "2.2.2.2", "<unknown>", "<unknown>", "<unknown>"]),
        ),
        (
            json!({}),
            json!([{"type": "InternalIP", "address": "2.2.2.2"}, {"type": "ExternalIP", "address": "3.3.3.3"}, {"type": "InternalIP", "address": "4.4.4.4"}]),
            json!(["2.2.2.2", "3.3.3.3", "<unknown>", "<unknown>", "<unknown>"]),
        ),
    ];
    for (node_info, addresses, wide) in cases {
        let node = json!({"metadata": {"name": "foo"}, "status": {"nodeInfo": node_info, "addresses": addresses}});
        let mut expected = vec![
            json!("foo"),
            json!("Unknown"),
            json!("<none>"),
            json!("<unknown>"),
            json!(""),
        ];
        expected.extend(wide.as_array().expect("array").iter().cloned());
        check("", "Node", node, Value::Array(expected));
    }
}

#[test]
fn service_load_balancer() {
    let service = |name: &str, cluster_ip: &str, ports: Value, ingress: Value, selector: Value| {
        json!({
            "metadata": {"name": name},
            "spec": {"clusterIPs": [cluster_ip], "type": "LoadBalancer", "ports": ports, "selector": selector},
            "status": {"loadBalancer": {"ingress": ingress}}
        })
    };
    let three_ports = json!([{"port": 80, "protocol": "TCP"}, {"port": 8090, "protocol": "UDP"}, {"port": 8000, "protocol": "TCP"}]);
    check(
        "",
        "Service",
        service(
            "service1",
            "1.2.3.4",
            json!([{"port": 80, "protocol": "TCP"}]),
            json!([{"ip": "2.3.4.5"}, {"ip": "3.4.5.6"}]),
            json!(null),
        ),
        json!([
            "service1",
            "LoadBalancer",
            "1.2.3.4",
            "2.3.4.5,3.4.5.6",
            "80/TCP",
            "<unknown>",
            "<none>"
        ]),
    );
    check(
        "",
        "Service",
        service(
            "service2",
            "1.3.4.5",
            json!([{"port": 80, "protocol": "TCP"}, {"port": 8090, "protocol": "UDP"}, {"port": 8000, "protocol": "TCP"}, {"port": 7777, "protocol": "SCTP"}]),
            json!(null),
            json!(null),
        ),
        json!([
            "service2",
            "LoadBalancer",
            "1.3.4.5",
            "<pending>",
            "80/TCP,8090/UDP,8000/TCP,7777/SCTP",
            "<unknown>"
        ]),
    );
    check(
        "",
        "Service",
        service(
            "service3",
            "1.4.5.6",
            three_ports.clone(),
            json!([{"ip": "2.3.4.5"}]),
            json!(null),
        ),
        json!([
            "service3",
            "LoadBalancer",
            "1.4.5.6",
            "2.3.4.5",
            "80/TCP,8090/UDP,8000/TCP",
            "<unknown>"
        ]),
    );
    // Upstream clips this to "2.3.4.5,3.4.5..." only without the wide option,
    // which the server never uses.
    check(
        "",
        "Service",
        service(
            "service4",
            "1.5.6.7",
            three_ports,
            json!([{"ip": "2.3.4.5"}, {"ip": "3.4.5.6"}, {"ip": "5.6.7.8", "hostname": "host5678"}]),
            json!({"foo": "bar"}),
        ),
        json!([
            "service4",
            "LoadBalancer",
            "1.5.6.7",
            "2.3.4.5,3.4.5.6,5.6.7.8",
            "80/TCP,8090/UDP,8000/TCP",
            "<unknown>",
            "foo=bar"
        ]),
    );
}

/// Derived from upstream's `makePortString` and `getServiceExternalIP`.
#[test]
fn service_types_and_ports() {
    let service = |spec: Value| json!({"metadata": {"name": "svc", "creationTimestamp": TEN_SECONDS_AGO}, "spec": spec});
    check(
        "",
        "Service",
        service(
            json!({"type": "ClusterIP", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web", "tier": "a"}}),
        ),
        json!([
            "svc",
            "ClusterIP",
            "10.0.0.1",
            "<none>",
            "80/TCP",
            "10s",
            "app=web,tier=a"
        ]),
    );
    check(
        "",
        "Service",
        service(
            json!({"type": "NodePort", "clusterIPs": ["10.0.0.2"], "externalIPs": ["1.2.3.4", "5.6.7.8"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
        ),
        json!([
            "svc",
            "NodePort",
            "10.0.0.2",
            "1.2.3.4,5.6.7.8",
            "80:30080/TCP",
            "10s",
            "<none>"
        ]),
    );
    check(
        "",
        "Service",
        service(json!({"type": "ExternalName", "externalName": "example.com"})),
        json!([
            "svc",
            "ExternalName",
            "<none>",
            "example.com",
            "<none>",
            "10s",
            "<none>"
        ]),
    );
    check(
        "",
        "Service",
        service(json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]})),
        json!([
            "svc",
            "ClusterIP",
            "None",
            "<none>",
            "<none>",
            "10s",
            "<none>"
        ]),
    );
}

#[test]
fn deployment() {
    let deployment = json!({
        "metadata": {"name": "test1", "creationTimestamp": IN_1_9_SECONDS},
        "spec": {
            "replicas": 5,
            "template": {"spec": {"containers": [
                {"name": "fake-container1", "image": "fake-image1"},
                {"name": "fake-container2", "image": "fake-image2"}
            ]}},
            "selector": {"matchLabels": {"foo": "bar"}}
        },
        "status": {"replicas": 10, "updatedReplicas": 2, "availableReplicas": 1, "unavailableReplicas": 4}
    });
    check(
        "apps",
        "Deployment",
        deployment,
        json!([
            "test1",
            "0/5",
            2,
            1,
            "0s",
            "fake-container1,fake-container2",
            "fake-image1,fake-image2",
            "foo=bar"
        ]),
    );
    // A Deployment without a selector prints an empty selector, not "<none>".
    check(
        "apps",
        "Deployment",
        json!({"metadata": {"name": "bare"}}),
        json!(["bare", "0/0", 0, 0, "<unknown>", "", "", ""]),
    );
}

/// ReplicaSet has no table case upstream; expectations follow `printReplicaSet`.
#[test]
fn replica_set() {
    check(
        "apps",
        "ReplicaSet",
        json!({
            "metadata": {"name": "web-5d4f8", "creationTimestamp": TWO_MINUTES_AGO},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f8"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}
        }),
        json!([
            "web-5d4f8",
            3,
            3,
            2,
            "2m",
            "web",
            "nginx:1.27",
            "app=web,pod-template-hash=5d4f8"
        ]),
    );
    check(
        "apps",
        "ReplicaSet",
        json!({"metadata": {"name": "empty"}}),
        json!(["empty", 0, 0, 0, "<unknown>", "", "", "<none>"]),
    );
}

#[test]
fn daemon_set() {
    check(
        "apps",
        "DaemonSet",
        json!({
            "metadata": {"name": "test1", "creationTimestamp": IN_1_9_SECONDS},
            "spec": {
                "template": {"spec": {"containers": [
                    {"name": "fake-container1", "image": "fake-image1"},
                    {"name": "fake-container2", "image": "fake-image2"}
                ]}},
                "selector": {"matchLabels": {"foo": "bar"}}
            },
            "status": {"currentNumberScheduled": 2, "desiredNumberScheduled": 3, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 0}
        }),
        json!([
            "test1",
            3,
            2,
            1,
            2,
            0,
            "<none>",
            "0s",
            "fake-container1,fake-container2",
            "fake-image1,fake-image2",
            "foo=bar"
        ]),
    );
}

#[test]
fn job() {
    let containers = json!([
        {"name": "fake-job-container1", "image": "fake-job-image1"},
        {"name": "fake-job-container2", "image": "fake-job-image2"}
    ]);
    check(
        "batch",
        "Job",
        json!({
            "metadata": {"name": "job1", "creationTimestamp": IN_1_9_SECONDS},
            "spec": {"completions": 2, "template": {"spec": {"containers": containers}}, "selector": {"matchLabels": {"job-label": "job-label-value"}}},
            "status": {"succeeded": 1}
        }),
        json!([
            "job1",
            "Running",
            "1/2",
            "",
            "0s",
            "fake-job-container1,fake-job-container2",
            "fake-job-image1,fake-job-image2",
            "job-label=job-label-value"
        ]),
    );
    let cases = [
        // Ten-year age: upstream's `AddDate(-10, 0, 0)`.
        (
            json!({"metadata": {"name": "job2", "creationTimestamp": "2015-01-01T00:00:00Z"}, "status": {"succeeded": 0}}),
            json!(["job2", "Running", "0/1", "", "10y"]),
        ),
        // Finished: duration from start to completion.
        (
            json!({"metadata": {"name": "job3", "creationTimestamp": "2015-01-04T00:00:00Z"},
                   "status": {"startTime": "2025-01-01T00:01:00Z", "completionTime": "2025-01-01T00:31:00Z"}}),
            json!(["job3", "Running", "0/1", "30m", "10y"]),
        ),
        // Running: duration from start to now.
        (
            json!({"metadata": {"name": "job4", "creationTimestamp": "2015-01-04T00:00:00Z"}, "status": {"startTime": "2024-12-31T23:40:00Z"}}),
            json!(["job4", "Running", "0/1", "20m", "10y"]),
        ),
        (
            json!({"metadata": {"name": "job5", "creationTimestamp": IN_1_9_SECONDS}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
            json!(["job5", "Complete", "0/1", "", "0s"]),
        ),
        (
            json!({"metadata": {"name": "job6", "creationTimestamp": IN_1_9_SECONDS}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}),
            json!(["job6", "Failed", "0/1", "", "0s"]),
        ),
        (
            json!({"metadata": {"name": "job7", "creationTimestamp": IN_1_9_SECONDS}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
            json!(["job7", "Suspended", "0/1", "", "0s"]),
        ),
        (
            json!({"metadata": {"name": "job8", "creationTimestamp": IN_1_9_SECONDS}, "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}),
            json!(["job8", "FailureTarget", "0/1", "", "0s"]),
        ),
        (
            json!({"metadata": {"name": "job9", "creationTimestamp": IN_1_9_SECONDS, "deletionTimestamp": IN_1_9_SECONDS}}),
            json!(["job9", "Terminating", "0/1", "", "0s"]),
        ),
        // From `printJob`: parallel jobs without completions.
        (
            json!({"metadata": {"name": "job10"}, "spec": {"parallelism": 3}, "status": {"succeeded": 1}}),
            json!(["job10", "Running", "1/1 of 3", "", "<unknown>"]),
        ),
    ];
    for (job, expected) in cases {
        check("batch", "Job", job, expected);
    }
}

/// EndpointSlice expectations follow `formatDiscoveryPorts`, `formatDiscoveryEndpoints`
/// and `listWithMoreString`.
#[test]
fn endpoint_slice() {
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({
            "metadata": {"name": "abcslice.123", "creationTimestamp": TEN_SECONDS_AGO},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.2.3", "2001:db8::1234:5678"]}]
        }),
        json!([
            "abcslice.123",
            "IPv4",
            "80",
            "10.1.2.3,2001:db8::1234:5678",
            "10s"
        ]),
    );
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({
            "metadata": {"name": "longerslicename.123"},
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}, {"name": "named"}, {}, {"port": 8080}],
            "endpoints": [{"addresses": ["10.1.2.3", "2001:db8::1234:5678"]}, {"addresses": ["10.2.3.4", "2001:db8::2345:6789"]}]
        }),
        json!([
            "longerslicename.123",
            "IPv6",
            "80,443,named + 2 more...",
            "10.1.2.3,2001:db8::1234:5678,10.2.3.4 + 1 more...",
            "<unknown>"
        ]),
    );
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": {"name": "empty"}, "addressType": "FQDN"}),
        json!(["empty", "FQDN", "<unset>", "<unset>", "<unknown>"]),
    );
}

/// Endpoints follow `formatEndpoints`: at most three host:port pairs.
#[test]
fn endpoints() {
    check(
        "",
        "Endpoints",
        json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}
        ]}),
        json!([
            "web",
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
            "<unknown>"
        ]),
    );
    check(
        "",
        "Endpoints",
        json!({"metadata": {"name": "headless"}, "subsets": [{"addresses": [{"ip": "fd00::1"}]}]}),
        json!(["headless", "fd00::1", "<unknown>"]),
    );
    check(
        "",
        "Endpoints",
        json!({"metadata": {"name": "none"}}),
        json!(["none", "<none>", "<unknown>"]),
    );
}

#[test]
fn events() {
    let three_days_ago = "2024-12-29T00:00:00Z";
    let two_days_ago = "2024-12-30T00:00:00Z";
    check(
        "",
        "Event",
        json!({
            "metadata": {"name": "event6"},
            "source": {"component": "kubelet", "host": "Node1"},
            "involvedObject": {"kind": "Deployment", "name": "Deployment Name", "fieldPath": "spec.containers{foo}"},
            "series": {"count": 2, "lastObservedTime": "2024-12-30T00:00:00.000000Z"},
            "reason": "Event Reason", "message": "Message Data",
            "eventTime": "2024-12-29T00:00:00.000000Z", "type": "Warning"
        }),
        json!([
            "2d",
            "Warning",
            "Event Reason",
            "deployment/Deployment Name",
            "spec.containers{foo}",
            "kubelet, Node1",
            "Message Data",
            "3d",
            2,
            "event6"
        ]),
    );
    // Singleton event without first/last timestamps or count.
    check(
        "",
        "Event",
        json!({
            "metadata": {"name": "event7"},
            "source": {"component": "kubelet", "host": "Node1"},
            "involvedObject": {"kind": "Deployment", "name": "Deployment Name", "fieldPath": "spec.containers{foo}"},
            "reason": "Event Reason", "message": "Message Data",
            "eventTime": "2024-12-29T00:00:00.000000Z", "type": "Warning"
        }),
        json!([
            "3d",
            "Warning",
            "Event Reason",
            "deployment/Deployment Name",
            "spec.containers{foo}",
            "kubelet, Node1",
            "Message Data",
            "3d",
            1,
            "event7"
        ]),
    );
    // Empty source: reporting controller and instance stand in.
    check(
        "",
        "Event",
        json!({
            "metadata": {"name": "event2"},
            "reportingComponent": "kubelet", "reportingController": "kubelet", "reportingInstance": "test",
            "involvedObject": {"kind": "Deployment", "name": "Deployment Name", "fieldPath": "spec.containers{foo}"},
            "reason": "Event Reason", "message": "Message Data",
            "firstTimestamp": three_days_ago, "lastTimestamp": two_days_ago, "count": 6, "type": "Warning"
        }),
        json!([
            "2d",
            "Warning",
            "Event Reason",
            "deployment/Deployment Name",
            "spec.containers{foo}",
            "kubelet, test",
            "Message Data",
            "3d",
            6,
            "event2"
        ]),
    );
    // The same event through events.k8s.io/v1 prints identically.
    check(
        "events.k8s.io",
        "Event",
        json!({
            "metadata": {"name": "event2"},
            "reportingController": "kubelet", "reportingInstance": "test",
            "regarding": {"kind": "Deployment", "name": "Deployment Name", "fieldPath": "spec.containers{foo}"},
            "reason": "Event Reason", "note": "Message Data\n",
            "deprecatedFirstTimestamp": three_days_ago, "deprecatedLastTimestamp": two_days_ago, "deprecatedCount": 6, "type": "Warning"
        }),
        json!([
            "2d",
            "Warning",
            "Event Reason",
            "deployment/Deployment Name",
            "spec.containers{foo}",
            "kubelet, test",
            "Message Data",
            "3d",
            6,
            "event2"
        ]),
    );
}

#[test]
fn namespace_secret_service_account() {
    check(
        "",
        "Namespace",
        json!({"metadata": {"name": "namespace1", "creationTimestamp": IN_1_9_SECONDS}, "status": {"phase": "FooStatus"}}),
        json!(["namespace1", "FooStatus", "0s"]),
    );
    check(
        "",
        "Namespace",
        json!({"metadata": {"name": "namespace2"}}),
        json!(["namespace2", "", "<unknown>"]),
    );
    check(
        "",
        "Secret",
        json!({"metadata": {"name": "secret1", "creationTimestamp": IN_1_9_SECONDS}, "type": "kubernetes.io/service-account-token", "data": {"token": "c2VjcmV0IGRhdGE="}}),
        json!(["secret1", "kubernetes.io/service-account-token", 1, "0s"]),
    );
    check(
        "",
        "Secret",
        json!({"metadata": {"name": "secret1", "creationTimestamp": IN_1_9_SECONDS}, "type": "kubernetes.io/service-account-token"}),
        json!(["secret1", "kubernetes.io/service-account-token", 0, "0s"]),
    );
    check(
        "",
        "ServiceAccount",
        json!({"metadata": {"name": "sa1", "creationTimestamp": IN_1_9_SECONDS}, "secrets": []}),
        json!(["sa1", 0, "0s"]),
    );
    check(
        "",
        "ServiceAccount",
        json!({"metadata": {"name": "sa1", "creationTimestamp": IN_1_9_SECONDS}, "secrets": [{"name": "Secret1"}, {"name": "Secret2"}]}),
        json!(["sa1", 2, "0s"]),
    );
}

/// Printers without a table case upstream, checked against their code.
#[test]
fn small_printers() {
    check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
        json!(["cm", 3, "<unknown>"]),
    );
    check(
        "",
        "ResourceQuota",
        json!({"metadata": {"name": "quota"}, "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi", "limits.memory": "2Gi"},
            "used": {"pods": "3", "limits.cpu": "500m"}
        }}),
        json!([
            "quota",
            "pods: 3/10, requests.memory: 0/1Gi",
            "limits.cpu: 500m/2, limits.memory: 0/2Gi",
            "<unknown>"
        ]),
    );
    check(
        "apps",
        "StatefulSet",
        json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:17"}]}}}, "status": {"readyReplicas": 2}}),
        json!(["db", "2/3", "<unknown>", "pg", "postgres:17"]),
    );
    check(
        "apps",
        "ControllerRevision",
        json!({"metadata": {"name": "web-7b9", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "web", "controller": true}
        ]}, "revision": 4}),
        json!(["web-7b9", "daemonset.apps/web", 4, "<unknown>"]),
    );
    check(
        "apps",
        "ControllerRevision",
        json!({"metadata": {"name": "orphan"}, "revision": 1}),
        json!(["orphan", "<none>", 1, "<unknown>"]),
    );
    check(
        "coordination.k8s.io",
        "Lease",
        json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "node1_abc"}}),
        json!(["kube-scheduler", "node1_abc", "<unknown>"]),
    );
    check(
        "policy",
        "PodDisruptionBudget",
        json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}}),
        json!(["pdb", "2", "N/A", 1, "<unknown>"]),
    );
    check(
        "policy",
        "PodDisruptionBudget",
        json!({"metadata": {"name": "pdb"}, "spec": {"maxUnavailable": "25%"}}),
        json!(["pdb", "N/A", "25%", 0, "<unknown>"]),
    );
}

#[test]
fn column_layouts() {
    let names = |group: &str, kind: &str| -> Vec<(String, i32)> {
        columns(group, kind)
            .expect("printer")
            .into_iter()
            .map(|column| (column.name, column.priority))
            .collect()
    };
    let expect = |list: &[(&str, i32)]| -> Vec<(String, i32)> {
        list.iter()
            .map(|(name, priority)| (name.to_string(), *priority))
            .collect()
    };
    assert_eq!(
        names("", "Pod"),
        expect(&[
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ])
    );
    assert_eq!(
        names("events.k8s.io", "Event"),
        expect(&[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ])
    );
    let pod = columns("", "Pod").expect("printer");
    assert_eq!(pod[0].format, "name");
    assert_eq!(pod[3].column_type, "string");
    assert!(columns("", "LimitRange").is_none());
    assert!(columns("apiextensions.k8s.io", "CustomResourceDefinition").is_none());
}
