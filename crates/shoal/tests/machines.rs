//! A cluster of three machines on network-namespace test hosts: one server
//! (`shoal up`, which also runs an agent) and two machines that joined with
//! `shoal up --join URL --token TOKEN`. Pods run on every machine and reach
//! each other by IP across machines.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::time::Duration;

use machines::Machines;

/// A web server pod on `node` serving `/www/index.html` with its own name.
fn web_pod(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  nodeName: {node}
  containers:
  - name: web
    image: busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo served by {name} > /www/index.html; exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /index.html, port: 8080}}
      periodSeconds: 1
"#
    )
}

/// A pod on `node` that fetches `url` once and exits 0 only if the answer
/// names `expected`.
fn client_pod(name: &str, node: &str, url: &str, expected: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  restartPolicy: Never
  containers:
  - name: fetch
    image: busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "timeout 5 wget -q -O - {url} | grep -q '{expected}'"]
"#
    )
}

#[test]
fn pods_run_on_every_machine_and_reach_each_other_across_machines() {
    let cluster = Machines::start(2);
    let nodes = cluster.kubectl_ok(&["get", "nodes", "-o", "wide", "--no-headers"]);
    for machine in &cluster.machines {
        assert!(
            nodes
                .lines()
                .any(|line| line.starts_with(&machine.name) && line.contains(&machine.ip)),
            "node {} with InternalIP {} is missing:\n{nodes}",
            machine.name,
            machine.ip
        );
    }
    // Each node has a pod range of its own.
    let ranges = cluster.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
    let mut ranges: Vec<&str> = ranges.split_whitespace().collect();
    ranges.sort();
    ranges.dedup();
    assert_eq!(ranges.len(), 3, "three distinct pod ranges: {ranges:?}");

    let names: Vec<String> = cluster.machines.iter().map(|m| m.name.clone()).collect();
    for (index, node) in names.iter().enumerate() {
        cluster.apply(&web_pod(&format!("web-{index}"), node));
    }
    let pods = cluster.wait_until(
        &["get", "pods", "-o", "wide", "--no-headers"],
        Duration::from_secs(60),
        |text| {
            text.lines()
                .filter(|line| line.contains("1/1") && line.contains("Running"))
                .count()
                == 3
        },
    );
    let mut ips = Vec::new();
    for (index, node) in names.iter().enumerate() {
        let pod = format!("web-{index}");
        assert_eq!(cluster.pod_field(&pod, ".spec.nodeName"), *node, "{pods}");
        let ip = cluster.pod_field(&pod, ".status.podIP");
        let host_ip = cluster.pod_field(&pod, ".status.hostIP");
        assert_eq!(host_ip, cluster.machines[index].ip);
        assert!(
            ip.starts_with("10.42."),
            "pod IP {ip} is not in the cluster range"
        );
        ips.push(ip);
    }
    // From the last machine's pods to every machine's, by pod IP.
    let from = names.last().unwrap().clone();
    for (index, ip) in ips.iter().enumerate() {
        let name = format!("fetch-{index}");
        cluster.apply(&client_pod(
            &name,
            &from,
            &format!("http://{ip}:8080/index.html"),
            &format!("served by web-{index}"),
        ));
        let phase = cluster.wait_until(
            &["get", "pod", &name, "-o", "jsonpath={.status.phase}"],
            Duration::from_secs(30),
            |phase| phase == "Succeeded" || phase == "Failed",
        );
        assert_eq!(
            phase,
            "Succeeded",
            "a pod on {from} could not fetch from web-{index} at {ip}:\n{}\n{}",
            cluster.kubectl_ok(&["describe", "pod", &name]),
            cluster.network_state()
        );
    }
    // kubectl exec reaches the pods on every machine, through each
    // machine's agent.
    for index in 0..names.len() {
        let served = cluster.kubectl_ok(&[
            "exec",
            &format!("web-{index}"),
            "--",
            "cat",
            "/www/index.html",
        ]);
        assert_eq!(served.trim(), format!("served by web-{index}"));
    }
    // kubectl run: the scheduler places it, its agent runs it, logs and
    // exit codes come back.
    cluster.kubectl_ok(&[
        "run",
        "hello",
        "--image=busybox:1",
        "--image-pull-policy=Never",
        "--",
        "sh",
        "-c",
        "echo hello from $(hostname); sleep 3600",
    ]);
    cluster.wait_until(
        &["get", "pod", "hello", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |phase| phase == "Running",
    );
    let node = cluster.pod_field("hello", ".spec.nodeName");
    assert!(names.contains(&node), "hello was placed on {node:?}");
    cluster.wait_until(&["logs", "hello"], Duration::from_secs(10), |logs| {
        logs.trim() == "hello from hello"
    });
    let output = cluster.kubectl(&["exec", "hello", "--", "sh", "-c", "exit 7"]);
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        common::describe_output(&output)
    );

    // A graceful delete returns once the agent has stopped the pod.
    cluster.kubectl_ok(&["delete", "pod", "web-1", "--grace-period=1"]);
    let left = cluster.kubectl_ok(&["get", "pods", "--no-headers"]);
    assert!(!left.contains("web-1"), "{left}");

    // Draining a machine cordons it and evicts its pods (these have no
    // controller, hence --force); the agent stops them.
    let drained = names[2].clone();
    let output = cluster.kubectl_ok(&[
        "drain",
        &drained,
        "--ignore-daemonsets",
        "--force",
        "--grace-period=1",
        "--timeout=60s",
    ]);
    assert!(
        output.contains(&format!("node/{drained} drained")),
        "{output}"
    );
    let node = cluster.kubectl_ok(&["get", "node", &drained, "--no-headers"]);
    assert!(node.contains("SchedulingDisabled"), "{node}");
    let left = cluster.kubectl_ok(&["get", "pods", "-o", "wide", "--no-headers"]);
    assert!(
        !left.lines().any(|line| line.contains(&drained)),
        "pods left on the drained node:\n{left}"
    );
    assert!(left.contains("web-0"), "{left}");
}
