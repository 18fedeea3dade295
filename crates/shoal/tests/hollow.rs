//! `shoal bench hollow-nodes` at small scale against a real `shoal up` and
//! its scheduler: 200 hollow nodes, 2,000 pods. Every pod is bound exactly
//! once, to a registered hollow node, and no node holds more pods than its
//! capacity, as the bench reports and as kubectl independently lists.
//! The full scale (10,000 nodes, 300,000 pods) is a separate command (see
//! BENCHMARKS.md).

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use kube::{Kubectl, KubectlRelease, Shoal};
use serde_json::Value;

const BENCH_TIMEOUT: Duration = Duration::from_secs(240);
const N_NODES: u64 = 200;
const N_PODS: u64 = 2_000;
/// A hollow node's pod capacity.
const NODE_PODS: usize = 110;

#[test]
fn hollow_nodes_get_every_pod_bound_once_within_capacity() {
    let shoal = Shoal::start_with(&["--disable-agent", "--disable-controllers"]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(["bench", "--output", "json", "hollow-nodes"])
        .arg(format!("--kubeconfig={}", shoal.kubeconfig.display()))
        .args([
            "--nodes",
            &N_NODES.to_string(),
            "--pods",
            &N_PODS.to_string(),
        ])
        .args(["--concurrency", "32", "--stall-timeout", "30"]);
    let output = common::run_with_watchdog(command, None, BENCH_TIMEOUT);
    assert!(
        output.status.success(),
        "shoal bench hollow-nodes failed: {}\n{}",
        common::describe_output(&output),
        shoal.log()
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON summary");
    let details = &summary["details"];
    assert_eq!(details["pods_bound"], N_PODS, "{summary}");
    assert_eq!(details["pods_unbound"], 0, "{summary}");
    assert_eq!(details["bound_twice"], 0, "{summary}");
    assert_eq!(details["bound_to_unknown_node"], 0, "{summary}");
    assert_eq!(details["nodes_over_capacity"], 0, "{summary}");
    for section in summary["sections"].as_array().expect("sections") {
        if section["name"] != "renew node leases"
            && section["name"] != "mark pods running (status patch)"
        {
            assert_eq!(section["errors"], 0, "{section}");
        }
    }
    assert_eq!(summary["sections"][1]["requests"], N_PODS, "{summary}");
    assert!(
        details["bindings_per_second"].as_f64().expect("a rate") > 0.0,
        "{summary}"
    );

    // kubectl's view of the same pods.
    let namespace = details["namespace"].as_str().expect("the run's namespace");
    let kubectl = Kubectl::new(KubectlRelease::Newest, &shoal);
    let listing = kubectl.ok(
        &format!(
            r#"kubectl get pods -n {namespace} -o jsonpath='{{range .items[*]}}{{.metadata.name}} {{.spec.nodeName}}{{"\n"}}{{end}}'"#
        ),
        shoal.dir.path(),
    );
    let nodes = kubectl.ok(
        r#"kubectl get nodes -l type=hollow -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'"#,
        shoal.dir.path(),
    );
    let registered: std::collections::HashSet<&str> = nodes.lines().collect();
    assert_eq!(registered.len() as u64, N_NODES);
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    let mut n_pods = 0;
    for line in listing.lines() {
        let (pod, node) = line.split_once(' ').unwrap_or((line, ""));
        assert!(
            registered.contains(node),
            "{pod} is bound to {node:?}, not a hollow node"
        );
        *per_node.entry(node).or_default() += 1;
        n_pods += 1;
    }
    assert_eq!(n_pods, N_PODS);
    let fullest = per_node.values().max().copied().unwrap_or(0);
    assert!(fullest <= NODE_PODS, "a node holds {fullest} pods");
    // The default scores spread 2,000 pods over 200 empty nodes.
    assert!(
        per_node.len() as u64 >= N_NODES / 2,
        "only {} nodes used",
        per_node.len()
    );
}

/// The controllers at small scale: a Deployment made with 0 replicas on 50
/// hollow nodes, scaled to 200 and rolled to a new template (maxSurge 25%).
/// The bench times both (the figures at full scale are in BENCHMARKS.md);
/// here the outcome is checked through kubectl: every replica updated and
/// available, the old ReplicaSet at 0, exactly 200 pods, all of the new
/// template's hash. (Hollow nodes renew their Leases every 10 s, so the
/// grace period is raised to 40 s, as for the full-scale runs.)
#[test]
fn a_deployment_scales_and_rolls_on_hollow_nodes() {
    const REPLICAS: u64 = 200;
    let shoal = Shoal::start_with(&["--disable-agent", "--node-monitor-grace-period=40s"]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command
        .args(["bench", "--output", "json", "hollow-nodes"])
        .arg(format!("--kubeconfig={}", shoal.kubeconfig.display()))
        .args(["--nodes", "50", "--pods", "0"])
        .args([
            "--deployment-replicas",
            &REPLICAS.to_string(),
            "--rolling-update",
        ])
        .args(["--concurrency", "32", "--stall-timeout", "30"]);
    let output = common::run_with_watchdog(command, None, BENCH_TIMEOUT);
    assert!(
        output.status.success(),
        "shoal bench hollow-nodes failed: {}\n{}",
        common::describe_output(&output),
        shoal.log()
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON summary");
    let details = &summary["details"];
    for figure in [
        "scale_to_all_bound_seconds",
        "scale_to_all_available_seconds",
        "rolling_update_seconds",
    ] {
        assert!(
            details[figure]
                .as_f64()
                .is_some_and(|seconds| seconds > 0.0),
            "{figure}: {summary}"
        );
    }
    assert_eq!(details["bound_to_unknown_node"], 0, "{summary}");

    let namespace = details["namespace"].as_str().expect("the run's namespace");
    let kubectl = Kubectl::new(KubectlRelease::Newest, &shoal);
    let dir = shoal.dir.path();
    let status = kubectl.ok(
        &format!(
            "kubectl get deployment hollow-web -n {namespace} -o jsonpath='{{.status.replicas}} {{.status.updatedReplicas}} {{.status.availableReplicas}}'"
        ),
        dir,
    );
    assert_eq!(status.trim(), format!("{REPLICAS} {REPLICAS} {REPLICAS}"));
    let sets = kubectl.ok(
        &format!(
            r#"kubectl get rs -n {namespace} -o jsonpath='{{range .items[*]}}{{.metadata.annotations.deployment\.kubernetes\.io/revision}} {{.spec.replicas}} {{.metadata.labels.pod-template-hash}}{{"\n"}}{{end}}'"#
        ),
        dir,
    );
    let mut sets: Vec<&str> = sets.lines().collect();
    sets.sort();
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert!(
        sets[0].starts_with("1 0 "),
        "the old ReplicaSet is at 0: {sets:?}"
    );
    assert!(
        sets[1].starts_with(&format!("2 {REPLICAS} ")),
        "the new one holds every replica: {sets:?}"
    );
    let new_hash = sets[1].rsplit(' ').next().expect("a hash");
    let pods = kubectl.ok(
        &format!(
            r#"kubectl get pods -n {namespace} -l app=hollow-web -o jsonpath='{{range .items[*]}}{{.metadata.labels.pod-template-hash}}{{"\n"}}{{end}}'"#
        ),
        dir,
    );
    let hashes: Vec<&str> = pods.lines().collect();
    assert_eq!(hashes.len() as u64, REPLICAS, "pods left over");
    assert!(hashes.iter().all(|hash| *hash == new_hash), "{hashes:?}");
}
