//! Machine failure on network-namespace hosts with real pods: a host
//! killed outright (its shoal and every container process) has its pods
//! evicted within seconds and, when it returns, runs none of them again; a
//! partition of most agents from the server trips the brake (nothing is
//! evicted) and heals; a node that flaps between Ready and not does not
//! leave pods running twice.
//!
//! The timings are shoal's defaults: a Lease renewed every 2 s, a node
//! Unknown after 8 s without one, pods without a toleration of their own
//! evicted at once.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use machines::Machines;

/// A long-running pod on `node`.
fn sleeper(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: sleeper}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  containers:
  - name: sleep
    image: busybox:1
    imagePullPolicy: Never
    command: ["sleep", "100000"]
"#
    )
}

/// One pod as the API shows it.
#[derive(Clone, Debug)]
struct PodRow {
    uid: String,
    node: String,
    phase: String,
    terminating: bool,
}

fn pods(cluster: &Machines) -> BTreeMap<String, PodRow> {
    let text = cluster.kubectl_ok(&["get", "pods", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&text).expect("a pod list");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|pod| {
            let field = |path: &str| {
                pod.pointer(path)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            (
                field("/metadata/name"),
                PodRow {
                    uid: field("/metadata/uid"),
                    node: field("/spec/nodeName"),
                    phase: field("/status/phase"),
                    terminating: pod.pointer("/metadata/deletionTimestamp").is_some(),
                },
            )
        })
        .collect()
}

/// Polls `check` on the pods every 200 ms until it holds or `timeout`.
fn wait_pods(
    cluster: &Machines,
    timeout: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<String, PodRow>) -> bool,
) -> BTreeMap<String, PodRow> {
    let deadline = Instant::now() + timeout;
    loop {
        let current = pods(cluster);
        if check(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; pods: {current:#?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node_json(cluster: &Machines, name: &str) -> serde_json::Value {
    serde_json::from_str(&cluster.kubectl_ok(&["get", "node", name, "-o", "json"])).expect("a node")
}

fn ready_of(node: &serde_json::Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
        .and_then(|ready| ready["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn taints_of(node: &serde_json::Value) -> Vec<String> {
    let mut taints: Vec<String> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|taint| {
            format!(
                "{}:{}",
                taint["key"].as_str().unwrap_or(""),
                taint["effect"].as_str().unwrap_or("")
            )
        })
        .collect();
    taints.sort();
    taints
}

/// Waits (10 s at most) for the node lifecycle controller to take the
/// taints of a node that is Ready again.
fn wait_untainted(cluster: &Machines, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let taints = taints_of(&node_json(cluster, name));
        if taints.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} kept its taints: {taints:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Places `per_node` sleepers on each agent machine, waits for them all
/// Running.
fn place_sleepers(cluster: &Machines, per_node: usize) {
    let mut manifest = String::new();
    for machine in cluster.machines.iter().skip(1) {
        for index in 0..per_node {
            manifest.push_str("---\n");
            manifest.push_str(&sleeper(
                &format!("{}-{index}", machine.name),
                &machine.name,
            ));
        }
    }
    cluster.apply(&manifest);
    let expected = per_node * (cluster.machines.len() - 1);
    wait_pods(
        cluster,
        Duration::from_secs(60),
        "the sleepers Running",
        |pods| pods.values().filter(|pod| pod.phase == "Running").count() == expected,
    );
}

#[test]
fn a_killed_machine_s_pods_are_evicted_and_it_runs_none_of_them_when_it_returns() {
    let mut cluster = Machines::start(3);
    place_sleepers(&cluster, 2);
    let before = pods(&cluster);
    // Pods get the API server's default tolerations: 0 s (evict at once).
    let tolerations = cluster.kubectl_ok(&[
        "get",
        "pod",
        "agent-1-0",
        "-o",
        "jsonpath={.spec.tolerations[*].tolerationSeconds}",
    ]);
    assert_eq!(tolerations.trim(), "0 0");
    let victim_uids: Vec<String> = before
        .values()
        .filter(|pod| pod.node == "agent-1")
        .map(|pod| pod.uid.clone())
        .collect();
    assert_eq!(victim_uids.len(), 2);
    assert!(cluster.container_processes(1) >= 2);

    let killed_at = Instant::now();
    let killed = cluster.kill(1);
    assert!(killed >= 3, "only {killed} processes killed");
    assert_eq!(cluster.container_processes(1), 0);

    // Evicted: deleted (Terminating: no agent finishes it) within the
    // grace period and a little.
    wait_pods(
        &cluster,
        Duration::from_secs(15),
        "agent-1's pods evicted",
        |pods| {
            pods.values()
                .filter(|pod| pod.node == "agent-1")
                .all(|pod| pod.terminating)
        },
    );
    let evicted_after = killed_at.elapsed();
    eprintln!("agent-1's pods evicted {evicted_after:?} after the kill");
    let after = pods(&cluster);
    for (name, pod) in &after {
        if pod.node != "agent-1" {
            assert!(!pod.terminating, "{name} on {} was evicted", pod.node);
        }
    }
    let node = node_json(&cluster, "agent-1");
    assert_eq!(ready_of(&node), "Unknown");
    assert_eq!(
        taints_of(&node),
        vec![
            "node.kubernetes.io/unreachable:NoExecute".to_string(),
            "node.kubernetes.io/unreachable:NoSchedule".to_string(),
        ]
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    for index in 0..2 {
        assert!(
            events.contains(&format!("Marking for deletion Pod default/agent-1-{index}")),
            "{events}"
        );
    }
    let node_events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=NodeNotReady,involvedObject.name=agent-1",
        "-o",
        "name",
    ]);
    assert!(!node_events.trim().is_empty(), "no NodeNotReady event");

    // The machine returns: before its agent runs anything it removes the
    // evicted pods' sandboxes, then finishes their deletion.
    cluster.start_again(1);
    let left: Vec<String> = cluster
        .sandboxes(1)
        .into_iter()
        .filter(|uid| victim_uids.contains(uid))
        .collect();
    assert!(left.is_empty(), "sandboxes of evicted pods left: {left:?}");
    assert_eq!(cluster.container_processes(1), 0);
    wait_pods(
        &cluster,
        Duration::from_secs(30),
        "the evicted pods' deletion finished",
        |pods| pods.values().all(|pod| pod.node != "agent-1"),
    );
    cluster.wait_until(
        &["get", "node", "agent-1", "--no-headers"],
        Duration::from_secs(30),
        |text| text.split_whitespace().nth(1) == Some("Ready"),
    );
    wait_untainted(&cluster, "agent-1");
    assert_eq!(cluster.container_processes(1), 0);
    assert!(
        cluster.sandboxes(1).is_empty(),
        "{:?}",
        cluster.sandboxes(1)
    );
    // And it takes pods again.
    cluster.apply(&sleeper("back-0", "agent-1"));
    wait_pods(
        &cluster,
        Duration::from_secs(30),
        "a new pod on agent-1",
        |pods| pods.get("back-0").is_some_and(|pod| pod.phase == "Running"),
    );
    assert!(cluster.container_processes(1) >= 1);
}

#[test]
fn a_killed_machine_s_replicas_run_elsewhere_within_15_s_and_never_twice() {
    let mut cluster = Machines::start(3);
    let replicas = 8;
    cluster.apply(&sleeper_set("web", replicas));
    let placed = wait_pods(
        &cluster,
        Duration::from_secs(60),
        "the replicas Running",
        |pods| {
            pods.values()
                .filter(|pod| pod.phase == "Running" && !pod.terminating)
                .count()
                == replicas
        },
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in placed.values() {
        *per_node.entry(pod.node.clone()).or_default() += 1;
    }
    let (victim, victim_pods) = per_node
        .iter()
        .filter(|(node, _)| node.as_str() != "server")
        .max_by_key(|(_, count)| **count)
        .map(|(node, count)| (node.clone(), *count))
        .expect("replicas on an agent machine");
    let victim_index = cluster
        .machines
        .iter()
        .position(|machine| machine.name == victim)
        .unwrap();
    let moved: Vec<String> = placed
        .values()
        .filter(|pod| pod.node == victim)
        .map(|pod| pod.uid.clone())
        .collect();

    let killed_at = Instant::now();
    cluster.kill(victim_index);
    // The target: every replica Running on the other machines within 15 s.
    wait_pods(
        &cluster,
        Duration::from_secs(15),
        "every replica Running elsewhere",
        |pods| {
            pods.values()
                .filter(|pod| pod.node != victim && pod.phase == "Running" && !pod.terminating)
                .count()
                == replicas
        },
    );
    eprintln!(
        "{victim_pods} replicas of {victim} Running elsewhere {:?} after the kill",
        killed_at.elapsed()
    );
    // Nothing beyond the replicas: the set did not overshoot.
    let now = pods(&cluster);
    assert_eq!(
        now.values().filter(|pod| !pod.terminating).count(),
        replicas,
        "{now:#?}"
    );

    // The machine returns: none of the moved pods runs on it again.
    cluster.start_again(victim_index);
    let left: Vec<String> = cluster
        .sandboxes(victim_index)
        .into_iter()
        .filter(|uid| moved.contains(uid))
        .collect();
    assert!(
        left.is_empty(),
        "sandboxes of moved pods on {victim}: {left:?}"
    );
    wait_pods(
        &cluster,
        Duration::from_secs(30),
        "the moved pods' deletion finished",
        |pods| pods.values().all(|pod| !moved.contains(&pod.uid)),
    );
    assert_eq!(cluster.container_processes(victim_index), 0);
    let after = pods(&cluster);
    assert_eq!(after.len(), replicas, "{after:#?}");
    assert!(
        after
            .values()
            .all(|pod| pod.phase == "Running" && !pod.terminating)
    );
}

#[test]
fn a_deleted_node_s_pods_are_garbage_collected() {
    let mut cluster = Machines::start(1);
    cluster.apply(&sleeper("lost-0", "agent-1"));
    wait_pods(
        &cluster,
        Duration::from_secs(60),
        "the pod Running",
        |pods| pods.get("lost-0").is_some_and(|pod| pod.phase == "Running"),
    );
    cluster.kill(1);
    // The operator removes the dead machine's Node: its pod is bound to a
    // node that no longer exists, and after the pod GC's quarantine (5 s)
    // it is force-deleted; no agent is needed to finish it.
    cluster.kubectl_ok(&["delete", "node", "agent-1"]);
    let deleted_at = Instant::now();
    wait_pods(
        &cluster,
        Duration::from_secs(20),
        "the orphaned pod collected",
        |pods| !pods.contains_key("lost-0"),
    );
    assert!(
        deleted_at.elapsed() >= Duration::from_secs(4),
        "collected before the quarantine: {:?}",
        deleted_at.elapsed()
    );
}

#[test]
fn a_partition_of_most_agents_trips_the_brake_and_heals() {
    let cluster = Machines::start(3);
    place_sleepers(&cluster, 1);
    let before = pods(&cluster);
    // Three of the four nodes cut off from the server: more than two and
    // over 55% not Ready, a partial disruption of a small zone, so no
    // eviction at all (upstream's rule).
    for index in 1..=3 {
        cluster.partition(index);
    }
    cluster.wait_until(
        &["get", "nodes", "--no-headers"],
        Duration::from_secs(20),
        |text| {
            text.lines()
                .filter(|line| line.split_whitespace().nth(1) == Some("NotReady"))
                .count()
                == 3
        },
    );
    // Well past the grace period: still nothing evicted, nothing marked for it.
    std::thread::sleep(Duration::from_secs(8));
    let during = pods(&cluster);
    for (name, pod) in &during {
        assert!(!pod.terminating, "{name} was evicted during the partition");
        assert_eq!(pod.uid, before[name].uid);
    }
    for index in 1..=3 {
        let name = &cluster.machines[index].name;
        let node = node_json(&cluster, name);
        assert_eq!(ready_of(&node), "Unknown", "{name}");
        assert_eq!(
            taints_of(&node),
            vec!["node.kubernetes.io/unreachable:NoSchedule".to_string()],
            "{name}"
        );
    }
    let server_log = std::fs::read_to_string(&cluster.machines[0].log).unwrap_or_default();
    assert!(
        server_log.contains("PartialDisruption"),
        "the server did not log the zone's partial disruption"
    );
    // The agents kept their pods running all along.
    for index in 1..=3 {
        assert!(cluster.container_processes(index) >= 1);
    }

    for index in 1..=3 {
        cluster.heal(index);
    }
    cluster.wait_until(
        &["get", "nodes", "--no-headers"],
        Duration::from_secs(40),
        |text| {
            text.lines()
                .filter(|line| line.split_whitespace().nth(1) == Some("Ready"))
                .count()
                == 4
        },
    );
    for index in 1..=3 {
        wait_untainted(&cluster, &cluster.machines[index].name);
    }
    let after = pods(&cluster);
    assert_eq!(after.len(), before.len());
    for (name, pod) in &after {
        assert_eq!(pod.uid, before[name].uid, "{name} was replaced");
        assert!(
            !pod.terminating && pod.phase == "Running",
            "{name}: {pod:?}"
        );
    }
}

#[test]
fn a_flapping_node_neither_duplicates_nor_loses_replicas() {
    let cluster = Machines::start(3);
    let replicas = 6;
    cluster.apply(&sleeper_set("flap", replicas));
    wait_pods(
        &cluster,
        Duration::from_secs(60),
        "the replicas Running",
        |pods| {
            pods.values()
                .filter(|pod| pod.phase == "Running" && !pod.terminating)
                .count()
                == replicas
        },
    );
    let live =
        |pods: &BTreeMap<String, PodRow>| pods.values().filter(|pod| !pod.terminating).count();
    // Out for a little past the grace period, back for a few seconds,
    // three times; the set never has more live pods than its replicas.
    for round in 0..3 {
        cluster.partition(1);
        let back_at = Instant::now() + Duration::from_secs(11);
        while Instant::now() < back_at {
            let current = pods(&cluster);
            assert!(
                live(&current) <= replicas,
                "round {round}, cut off: {current:#?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        cluster.heal(1);
        let next_at = Instant::now() + Duration::from_secs(5);
        while Instant::now() < next_at {
            let current = pods(&cluster);
            assert!(
                live(&current) <= replicas,
                "round {round}, back: {current:#?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Settled: every replica Running, no pod left Terminating, and each
    // machine runs exactly the pods the API binds to it.
    let settled = wait_pods(
        &cluster,
        Duration::from_secs(40),
        "the set settled",
        |pods| {
            pods.len() == replicas
                && pods
                    .values()
                    .all(|pod| pod.phase == "Running" && !pod.terminating)
        },
    );
    for (index, machine) in cluster.machines.iter().enumerate() {
        let mut bound: Vec<String> = settled
            .values()
            .filter(|pod| pod.node == machine.name)
            .map(|pod| pod.uid.clone())
            .collect();
        bound.sort();
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.sandboxes(index) != bound {
            assert!(
                Instant::now() < deadline,
                "{} runs {:?}, the API binds {bound:?}",
                machine.name,
                cluster.sandboxes(index)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    cluster.wait_until(
        &["get", "node", "agent-1", "--no-headers"],
        Duration::from_secs(30),
        |text| text.split_whitespace().nth(1) == Some("Ready"),
    );
}

/// A ReplicaSet of `replicas` sleepers, placed by the scheduler.
fn sleeper_set(name: &str, replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{set: {name}}}
  template:
    metadata:
      labels: {{set: {name}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: sleep
        image: busybox:1
        imagePullPolicy: Never
        command: ["sleep", "100000"]
"#
    )
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The machine-failure benchmark (`bench/machine-failure` runs it; not a
/// test): a ReplicaSet of `SHOAL_BENCH_PODS` pods on a server and three
/// machines; the machine with the most of them is killed (SIGKILL of its
/// shoal and every container process); the time from the kill until its
/// pods are evicted and until every replica is Running elsewhere, polled
/// every 100 ms through the API. `SHOAL_BENCH_RUNS` kills, each followed by
/// the machine's return. Prints one `BENCH {json}` line per run.
#[test]
#[ignore = "a benchmark: bench/machine-failure runs it"]
fn machine_failure_bench() {
    let replicas = env_number("SHOAL_BENCH_PODS", 30);
    let runs = env_number("SHOAL_BENCH_RUNS", 3);
    let mut cluster = Machines::start(3);
    for run in 0..runs {
        let set = format!("bench-{run}");
        cluster.apply(&sleeper_set(&set, replicas));
        let ready = wait_pods(
            &cluster,
            Duration::from_secs(120),
            "the replicas Running",
            |pods| {
                pods.iter()
                    .filter(|(name, pod)| {
                        name.starts_with(&set) && pod.phase == "Running" && !pod.terminating
                    })
                    .count()
                    == replicas
            },
        );
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for (name, pod) in &ready {
            if name.starts_with(&set) {
                *per_node.entry(pod.node.clone()).or_default() += 1;
            }
        }
        let (victim, victim_pods) = per_node
            .iter()
            .filter(|(node, _)| node.as_str() != "server")
            .max_by_key(|(_, count)| **count)
            .map(|(node, count)| (node.clone(), *count))
            .expect("pods on an agent machine");
        let victim_index = cluster
            .machines
            .iter()
            .position(|machine| machine.name == victim)
            .expect("the victim is a machine");
        let killed_at = Instant::now();
        let killed = cluster.kill(victim_index);
        let mut evicted = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        let all_running = loop {
            let pods = pods(&cluster);
            let elapsed = killed_at.elapsed();
            let of_set: Vec<&PodRow> = pods
                .iter()
                .filter(|(name, _)| name.starts_with(&set))
                .map(|(_, pod)| pod)
                .collect();
            if evicted.is_none()
                && of_set
                    .iter()
                    .filter(|pod| pod.node == victim)
                    .all(|pod| pod.terminating)
            {
                evicted = Some(elapsed);
            }
            let running_elsewhere = of_set
                .iter()
                .filter(|pod| pod.node != victim && !pod.terminating && pod.phase == "Running")
                .count();
            if running_elsewhere == replicas {
                break elapsed;
            }
            assert!(
                Instant::now() < deadline,
                "run {run}: replicas never all Running elsewhere: {of_set:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        println!(
            "BENCH {}",
            serde_json::json!({
                "run": run,
                "pods": replicas,
                "victim_pods": victim_pods,
                "processes_killed": killed,
                "evicted_seconds": evicted.map(|at| at.as_secs_f64()),
                "all_running_seconds": all_running.as_secs_f64(),
            })
        );
        cluster.start_again(victim_index);
        wait_pods(
            &cluster,
            Duration::from_secs(60),
            "the evicted pods' deletion finished",
            |pods| pods.values().all(|pod| pod.node != victim),
        );
        assert_eq!(
            cluster.container_processes(victim_index),
            0,
            "run {run}: a moved pod runs twice"
        );
        cluster.wait_until(
            &["get", "node", &victim, "--no-headers"],
            Duration::from_secs(30),
            |text| text.split_whitespace().nth(1) == Some("Ready"),
        );
        wait_untainted(&cluster, &victim);
        cluster.kubectl_ok(&["delete", "replicaset", &set, "--wait=false"]);
        wait_pods(
            &cluster,
            Duration::from_secs(60),
            "the set's pods gone",
            |pods| pods.keys().all(|name| !name.starts_with(&set)),
        );
    }
}
