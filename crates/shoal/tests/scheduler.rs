//! The scheduler inside `shoal up`, driven by the real kubectl: Nodes made
//! through the API (no agents), pods with a nodeSelector, a toleration, an
//! anti-affinity rule and a spread constraint land where they must, a
//! cordoned node gets no new pods, a pod too big for every node stays
//! Pending with kube-scheduler's FailedScheduling message, and a node big
//! enough, added later, gets it bound.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use kube::{Kubectl, KubectlRelease, Shoal};

/// How long a pod may take to be bound (or an event to appear).
const SCHEDULING_TIMEOUT: Duration = Duration::from_secs(30);

fn node_manifest(name: &str, zone: &str, extra_labels: &str, taints: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
    topology.kubernetes.io/zone: {zone}
{extra_labels}spec:
{taints}  podCIDR: 10.244.0.0/24
"#
    )
}

fn node_status(memory: &str) -> String {
    format!(
        r#"{{"status":{{"capacity":{{"cpu":"4","memory":"{memory}","pods":"110"}},"allocatable":{{"cpu":"4","memory":"{memory}","pods":"110"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"hollow"}}]}}}}"#
    )
}

fn pod_manifest(name: &str, labels: &str, spec_extra: &str, memory: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
{labels}spec:
{spec_extra}  containers:
  - name: main
    image: registry.k8s.io/pause:3.10
    resources:
      requests:
        cpu: 100m
        memory: {memory}
"#
    )
}

fn apply(kubectl: &Kubectl, dir: &Path, name: &str, manifest: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).expect("write a manifest");
    kubectl.ok(&format!("kubectl apply -f '{}'", path.display()), dir);
}

fn add_node(
    kubectl: &Kubectl,
    dir: &Path,
    name: &str,
    zone: &str,
    memory: &str,
    labels: &str,
    taints: &str,
) {
    apply(
        kubectl,
        dir,
        name,
        &node_manifest(name, zone, labels, taints),
    );
    kubectl.ok(
        &format!(
            "kubectl patch node {name} --subresource=status --type=merge -p '{}'",
            node_status(memory)
        ),
        dir,
    );
}

/// Pod name → node name (empty while unbound).
fn placements(kubectl: &Kubectl, dir: &Path) -> BTreeMap<String, String> {
    let output = kubectl.ok(
        r#"kubectl get pods -o jsonpath='{range .items[*]}{.metadata.name}={.spec.nodeName}{"\n"}{end}'"#,
        dir,
    );
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(pod, node)| (pod.to_string(), node.to_string()))
        .collect()
}

/// Waits until every pod in `pods` is bound; returns all placements.
fn wait_bound(
    kubectl: &Kubectl,
    dir: &Path,
    shoal: &Shoal,
    pods: &[&str],
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + SCHEDULING_TIMEOUT;
    loop {
        let placed = placements(kubectl, dir);
        if pods
            .iter()
            .all(|pod| placed.get(*pod).is_some_and(|node| !node.is_empty()))
        {
            return placed;
        }
        assert!(
            Instant::now() < deadline,
            "pods {pods:?} not all bound within {SCHEDULING_TIMEOUT:?}: {placed:?}\n{}",
            shoal.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_output(kubectl: &Kubectl, dir: &Path, command: &str, wanted: &str) -> String {
    let deadline = Instant::now() + SCHEDULING_TIMEOUT;
    loop {
        let output = kubectl.ok(command, dir);
        if output.contains(wanted) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "`{command}` did not show {wanted:?} within {SCHEDULING_TIMEOUT:?}:\n{output}"
        );
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn pods_land_where_their_constraints_allow() {
    let shoal = Shoal::start_with(&["--disable-agent", "--disable-controllers"]);
    let kubectl = Kubectl::new(KubectlRelease::Newest, &shoal);
    let dir = shoal.dir.path().to_path_buf();
    add_node(
        &kubectl,
        &dir,
        "node-a",
        "zone-a",
        "8Gi",
        "    disk: ssd\n",
        "",
    );
    add_node(&kubectl, &dir, "node-b", "zone-b", "8Gi", "", "");
    add_node(
        &kubectl,
        &dir,
        "node-c",
        "zone-b",
        "8Gi",
        "",
        "  taints:\n  - key: dedicated\n    value: gpu\n    effect: NoSchedule\n",
    );

    apply(
        &kubectl,
        &dir,
        "selector",
        &pod_manifest(
            "selector",
            "    app: selector\n",
            "  nodeSelector:\n    disk: ssd\n",
            "64Mi",
        ),
    );
    apply(
        &kubectl,
        &dir,
        "tolerant",
        &pod_manifest(
            "tolerant",
            "    app: tolerant\n",
            "  nodeSelector:\n    kubernetes.io/hostname: node-c\n  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: gpu\n    effect: NoSchedule\n",
            "64Mi",
        ),
    );
    let anti_affinity = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels:\n            app: web\n        topologyKey: kubernetes.io/hostname\n";
    for name in ["web-1", "web-2"] {
        apply(
            &kubectl,
            &dir,
            name,
            &pod_manifest(name, "    app: web\n", anti_affinity, "64Mi"),
        );
    }
    let spread = "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector:\n      matchLabels:\n        app: spread\n";
    let spread_pods = ["spread-1", "spread-2", "spread-3", "spread-4"];
    for name in spread_pods {
        apply(
            &kubectl,
            &dir,
            name,
            &pod_manifest(name, "    app: spread\n", spread, "64Mi"),
        );
        // One at a time, as a controller's creates arrive.
        wait_bound(&kubectl, &dir, &shoal, &[name]);
    }
    let placed = wait_bound(
        &kubectl,
        &dir,
        &shoal,
        &["selector", "tolerant", "web-1", "web-2"],
    );
    assert_eq!(placed["selector"], "node-a");
    assert_eq!(placed["tolerant"], "node-c");
    assert_ne!(
        placed["web-1"], placed["web-2"],
        "anti-affinity: {placed:?}"
    );
    for web in ["web-1", "web-2"] {
        assert_ne!(
            placed[web], "node-c",
            "{web} does not tolerate node-c's taint"
        );
    }
    let in_zone_a = spread_pods
        .iter()
        .filter(|pod| placed[**pod] == "node-a")
        .count();
    assert_eq!(
        in_zone_a, 2,
        "the spread pods split 2/2 across the zones: {placed:?}"
    );

    // A cordoned node takes no new pods.
    kubectl.ok("kubectl cordon node-b", &dir);
    let after: Vec<String> = (1..=4).map(|idx| format!("after-cordon-{idx}")).collect();
    for name in &after {
        apply(
            &kubectl,
            &dir,
            name,
            &pod_manifest(name, "    app: after\n", "", "64Mi"),
        );
    }
    let names: Vec<&str> = after.iter().map(String::as_str).collect();
    let placed = wait_bound(&kubectl, &dir, &shoal, &names);
    for name in &names {
        assert_eq!(
            placed[*name], "node-a",
            "{name} avoided the cordoned node-b and the tainted node-c"
        );
    }

    // Too big for every node: Pending, with the reason per node count.
    apply(
        &kubectl,
        &dir,
        "huge",
        &pod_manifest("huge", "    app: huge\n", "", "100Gi"),
    );
    let expected = "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable.";
    let events = wait_for_output(&kubectl, &dir, "kubectl get events", expected);
    assert!(events.contains("FailedScheduling"), "{events}");
    let describe = kubectl.ok("kubectl describe pod huge", &dir);
    assert!(describe.contains("Status:           Pending"), "{describe}");
    assert!(describe.contains("FailedScheduling"), "{describe}");
    assert!(describe.contains("default-scheduler"), "{describe}");
    assert!(describe.contains(expected), "{describe}");
    let condition = kubectl.ok(
        r#"kubectl get pod huge -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}'"#,
        &dir,
    );
    assert_eq!(condition.trim(), "Unschedulable");
    let scheduled = kubectl.ok("kubectl describe pod selector", &dir);
    assert!(
        scheduled.contains("Successfully assigned default/selector to node-a"),
        "{scheduled}"
    );

    // A node big enough arrives: the waiting pod is retried and bound there.
    add_node(&kubectl, &dir, "node-big", "zone-a", "256Gi", "", "");
    let placed = wait_bound(&kubectl, &dir, &shoal, &["huge"]);
    assert_eq!(placed["huge"], "node-big");
    let lease = kubectl.ok(
        "kubectl get lease kube-scheduler -n kube-system -o jsonpath='{.spec.holderIdentity}'",
        &dir,
    );
    assert!(!lease.trim().is_empty(), "the scheduler holds its lease");
}

/// Kills `shoal up` (SIGKILL, the scheduler mid-binding) and starts it
/// again: the new scheduler waits out the old one's Lease, then binds the
/// rest, and no pod bound before the kill moves (a binding is a conditional
/// write: the API refuses a second one with 409).
#[test]
fn a_killed_scheduler_binds_no_pod_twice() {
    let mut shoal = Shoal::start_with(&["--disable-agent", "--disable-controllers"]);
    let kubectl = Kubectl::new(KubectlRelease::Newest, &shoal);
    let dir = shoal.dir.path().to_path_buf();
    for idx in 0..5 {
        add_node(
            &kubectl,
            &dir,
            &format!("node-{idx}"),
            "zone-a",
            "64Gi",
            "",
            "",
        );
    }
    let n_pods = 600;
    let mut manifest = String::new();
    for idx in 0..n_pods {
        manifest.push_str("---\n");
        manifest.push_str(&pod_manifest(
            &format!("pod-{idx}"),
            "    app: churn\n",
            "",
            "64Mi",
        ));
    }
    let path = dir.join("pods.yaml");
    std::fs::write(&path, manifest).expect("write the pods");
    // Kill shoal once some pods are bound, while the rest are still being
    // created and bound.
    let creating = kube::Background::spawn(
        kubectl.command(&format!("kubectl create -f '{}'", path.display()), &dir),
    );
    let deadline = Instant::now() + SCHEDULING_TIMEOUT;
    loop {
        let bound = placements(&kubectl, &dir)
            .values()
            .filter(|node| !node.is_empty())
            .count();
        if bound >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "no pods bound:\n{}", shoal.log());
        thread::sleep(Duration::from_millis(50));
    }
    shoal.kill();
    drop(creating);
    shoal.relaunch();
    // Nothing binds until the new instance has waited out the killed one's
    // Lease (15 s), so this is the state at the kill.
    let before = placements(&kubectl, &dir);
    let names: Vec<&str> = before.keys().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let placed = placements(&kubectl, &dir);
        if names
            .iter()
            .all(|pod| placed.get(*pod).is_some_and(|node| !node.is_empty()))
        {
            break placed;
        }
        assert!(
            Instant::now() < deadline,
            "not all bound after the restart: {placed:?}\n{}",
            shoal.log()
        );
        thread::sleep(Duration::from_millis(500));
    };
    for (pod, node) in &before {
        if !node.is_empty() {
            assert_eq!(&after[pod], node, "{pod} moved after the restart");
        }
    }
    // A second binding of a bound pod is refused.
    let binding = dir.join("binding.json");
    std::fs::write(
        &binding,
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"pod-0"},"target":{"apiVersion":"v1","kind":"Node","name":"node-4"}}"#,
    )
    .expect("write a binding");
    let output = kubectl.run(
        &format!(
            "kubectl create -f '{}' --raw /api/v1/namespaces/default/pods/pod-0/binding",
            binding.display()
        ),
        &dir,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a second binding succeeded");
    assert!(
        stderr.contains("already assigned")
            || stderr.contains("Conflict")
            || stderr.contains("409"),
        "{stderr}"
    );
}
