//! `kubectl drain` honouring a PodDisruptionBudget, on three machines: a
//! Deployment's three replicas all on one machine (the others cordoned
//! while they start), a budget of `minAvailable: 2`, then `kubectl drain`
//! of that machine. kubectl evicts the three pods at once; the API server
//! lets one go and answers 429 for the others until a replacement is Ready
//! elsewhere, so the drain finishes with the workload moved and at no time
//! fewer than two replicas Ready.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use machines::Machines;

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox:1
        command: [sleep, '3600']
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels:
      app: web
";

/// Ready replicas not being deleted, and their nodes.
fn ready(cluster: &Machines) -> Vec<String> {
    let out = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        r#"jsonpath={range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 2 && fields[1] == "True").then(|| fields[0].to_string())
        })
        .collect()
}

#[test]
fn a_drain_moves_a_workload_without_breaking_its_budget() {
    let cluster = Arc::new(Machines::start(2));
    cluster.kubectl_ok(&["cordon", "server"]);
    cluster.kubectl_ok(&["cordon", "agent-2"]);
    cluster.apply(MANIFEST);
    cluster.wait_until(
        &["get", "pods", "-l", "app=web", "-o", "wide"],
        Duration::from_secs(60),
        |_| {
            ready(&cluster)
                .iter()
                .filter(|node| *node == "agent-1")
                .count()
                == 3
        },
    );
    cluster.kubectl_ok(&["uncordon", "server"]);
    cluster.kubectl_ok(&["uncordon", "agent-2"]);
    cluster.wait_until(
        &[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.disruptionsAllowed}",
        ],
        Duration::from_secs(30),
        |allowed| allowed.trim() == "1",
    );

    // Watch the Ready count through the drain.
    let draining = Arc::new(AtomicBool::new(true));
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let sampler = {
        let (cluster, draining, fewest) = (
            Arc::clone(&cluster),
            Arc::clone(&draining),
            Arc::clone(&fewest),
        );
        std::thread::spawn(move || {
            while draining.load(Ordering::Relaxed) {
                fewest.fetch_min(ready(&cluster).len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let drain = cluster.kubectl(&["drain", "agent-1", "--ignore-daemonsets", "--timeout=120s"]);
    draining.store(false, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    let stdout = String::from_utf8_lossy(&drain.stdout);
    let stderr = String::from_utf8_lossy(&drain.stderr);
    assert!(
        drain.status.success(),
        "kubectl drain failed:\n{stdout}\n{stderr}\n{}",
        cluster.logs()
    );
    assert!(stdout.contains("node/agent-1 drained"), "{stdout}");
    // The budget held some evictions back (429, retried by kubectl).
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "no eviction was refused:\n{stderr}"
    );
    let fewest = fewest.load(Ordering::Relaxed);
    assert!(
        fewest >= 2,
        "only {fewest} replicas were Ready during the drain"
    );
    // The workload moved off the drained machine.
    cluster.wait_until(
        &["get", "pods", "-l", "app=web", "-o", "wide"],
        Duration::from_secs(60),
        |_| {
            let nodes = ready(&cluster);
            nodes.len() == 3 && nodes.iter().all(|node| node != "agent-1")
        },
    );
    let unschedulable = cluster.kubectl_ok(&[
        "get",
        "node",
        "agent-1",
        "-o",
        "jsonpath={.spec.unschedulable}",
    ]);
    assert_eq!(unschedulable.trim(), "true");
}
