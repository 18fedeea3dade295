//! The workload controllers against real pods on a three-machine cluster
//! (a server and two joined machines in network-namespace test hosts):
//! ReplicaSets scaling, adopting and releasing pods; DaemonSets following
//! the nodes; Jobs running to completion or failing; a CronJob's first
//! run; PodDisruptionBudget status. Every check goes through kubectl 1.32, as a user would.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::collections::BTreeSet;
use std::time::Duration;

use machines::Machines;

const WAIT: Duration = Duration::from_secs(60);

fn replica_set(name: &str, replicas: u32, selector: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {selector}
  template:
    metadata:
      labels: {labels}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1
        imagePullPolicy: Never
        command: [sleep, "3600"]
"#
    )
}

/// The live (not terminating) pods matching `selector`.
fn live_pods(cluster: &Machines, selector: &str) -> Vec<serde_json::Value> {
    let text = cluster.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&text).expect("a pod list");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// (pod, controller name) of every live pod matching `selector`, with ""
/// for a pod without a controller.
fn owners(cluster: &Machines, selector: &str) -> Vec<(String, String)> {
    live_pods(cluster, selector)
        .iter()
        .map(|pod| {
            let controller = pod["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|owner| owner["controller"] == true)
                .and_then(|owner| owner["name"].as_str())
                .unwrap_or("");
            (
                pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
                controller.to_string(),
            )
        })
        .collect()
}

/// Waits until `kubectl get rs NAME` shows DESIRED CURRENT READY.
fn wait_replica_set(cluster: &Machines, name: &str, desired: u32, current: u32, ready: u32) {
    let wanted = [desired.to_string(), current.to_string(), ready.to_string()];
    cluster.wait_until(&["get", "rs", name, "--no-headers"], WAIT, |text| {
        let columns: Vec<&str> = text.split_whitespace().collect();
        columns.len() >= 4 && columns[1..4] == wanted
    });
}

/// Waits until exactly `count` live pods match `selector`, all controlled
/// by `owner`.
fn wait_owned(cluster: &Machines, selector: &str, owner: &str, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let pods = owners(cluster, selector);
        if pods.len() == count && pods.iter().all(|(_, controller)| controller == owner) {
            return pods.into_iter().map(|(pod, _)| pod).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {count} pods of {selector} all owned by {owner}: {pods:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn replica_sets_scale_adopt_and_release_pods() {
    let cluster = Machines::start(2);

    // Bad input: a selector its own template does not match.
    let path = cluster.dir.path().join("mismatched.yaml");
    std::fs::write(
        &path,
        replica_set("mismatched", 1, "{app: web}", "{app: db}"),
    )
    .unwrap();
    let refused = cluster.kubectl(&["apply", "-f", &path.display().to_string()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a mismatched selector was accepted"
    );
    assert!(
        stderr.contains("`selector` does not match template `labels`"),
        "{stderr}"
    );

    // A pod with the labels exists before its ReplicaSet: it is adopted,
    // and two more are made.
    cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels: {app: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: busybox:1, imagePullPolicy: Never, command: [sleep, '3600']}\n",
    );
    cluster.apply(&replica_set("web", 3, "{app: web}", "{app: web}"));
    wait_replica_set(&cluster, "web", 3, 3, 3);
    let pods = wait_owned(&cluster, "app=web", "web", 3);
    assert!(pods.contains(&"stray".to_string()), "{pods:?}");
    assert!(
        pods.iter().filter(|pod| pod.starts_with("web-")).count() == 2,
        "{pods:?}"
    );

    // Scaling up spreads the pods over the machines.
    cluster.kubectl_ok(&["scale", "rs", "web", "--replicas=6"]);
    wait_replica_set(&cluster, "web", 6, 6, 6);
    let nodes: BTreeSet<String> = cluster
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(nodes.len() >= 2, "six pods on {nodes:?}");

    // Scaling down deletes the cheapest pods first (the deletion cost
    // annotation), and only as many as it must.
    let pods = wait_owned(&cluster, "app=web", "web", 6);
    let cheap = &pods[3];
    cluster.kubectl_ok(&[
        "annotate",
        "pod",
        cheap,
        "controller.kubernetes.io/pod-deletion-cost=-100",
    ]);
    cluster.kubectl_ok(&["scale", "rs", "web", "--replicas=5"]);
    wait_replica_set(&cluster, "web", 5, 5, 5);
    let remaining = wait_owned(&cluster, "app=web", "web", 5);
    assert!(!remaining.contains(cheap), "{cheap} outlived {remaining:?}");

    // A pod relabelled out of the selector is released and replaced.
    let relabelled = &remaining[0];
    cluster.kubectl_ok(&["label", "pod", relabelled, "app=debug", "--overwrite"]);
    wait_owned(&cluster, "app=debug", "", 1);
    let after = wait_owned(&cluster, "app=web", "web", 5);
    assert!(!after.contains(relabelled));
    wait_replica_set(&cluster, "web", 5, 5, 5);

    // Two ReplicaSets with overlapping selectors: each pod has one owner,
    // and each set counts only its own.
    cluster.apply(&replica_set(
        "web-canary",
        2,
        "{app: web, track: canary}",
        "{app: web, track: canary}",
    ));
    wait_replica_set(&cluster, "web-canary", 2, 2, 2);
    wait_replica_set(&cluster, "web", 5, 5, 5);
    let all = owners(&cluster, "app=web");
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(
        all.iter()
            .filter(|(_, owner)| owner == "web-canary")
            .count(),
        2,
        "{all:?}"
    );

    // Scaling to zero removes every pod it owns, and only those.
    cluster.kubectl_ok(&["scale", "rs", "web", "--replicas=0"]);
    wait_owned(&cluster, "app=web,track=canary", "web-canary", 2);
    cluster.wait_until(&["get", "rs", "web", "--no-headers"], WAIT, |text| {
        text.split_whitespace().nth(2) == Some("0")
    });
    let events: String = cluster
        .kubectl_ok(&[
            "get",
            "events",
            "-o",
            r#"jsonpath={range .items[*]}{.involvedObject.name} {.reason}{"\n"}{end}"#,
        ])
        .lines()
        .filter(|line| line.starts_with("web "))
        .collect();
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("SuccessfulDelete"), "{events}");
}

/// The nodes the live pods of `selector` run on, sorted (repeats kept).
fn nodes_of(cluster: &Machines, selector: &str) -> Vec<String> {
    let mut nodes: Vec<String> = live_pods(cluster, selector)
        .iter()
        .map(|pod| pod["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect();
    nodes.sort();
    nodes
}

fn wait_nodes_of(cluster: &Machines, selector: &str, wanted: &[&str]) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let nodes = nodes_of(cluster, selector);
        if nodes == wanted {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pods of {selector} ran on {nodes:?}, not {wanted:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `kubectl get pdb NAME`'s ALLOWED DISRUPTIONS once it is `allowed`.
fn wait_budget(cluster: &Machines, name: &str, allowed: &str) {
    cluster.wait_until(&["get", "pdb", name, "--no-headers"], WAIT, |text| {
        text.split_whitespace().nth(3) == Some(allowed)
    });
}

#[test]
fn daemon_sets_follow_the_nodes_and_budgets_count_their_pods() {
    let mut cluster = Machines::start(2);
    cluster.apply(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1
        imagePullPolicy: Never
        command: [sleep, "3600"]
"#,
    );
    wait_nodes_of(&cluster, "app=agent", &["agent-1", "agent-2", "server"]);
    cluster.wait_until(&["get", "ds", "agent", "--no-headers"], WAIT, |text| {
        // NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE
        text.split_whitespace().skip(1).take(5).collect::<Vec<_>>() == ["3"; 5]
    });

    // A budget over the daemon's pods: two must stay, three are healthy.
    cluster.apply(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: agent\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels: {app: agent}\n",
    );
    wait_budget(&cluster, "agent", "1");
    let counts = cluster.kubectl_ok(&[
        "get",
        "pdb",
        "agent",
        "-o",
        "jsonpath={.status.expectedPods} {.status.desiredHealthy} {.status.currentHealthy} {.status.conditions[0].type}={.status.conditions[0].status}",
    ]);
    assert_eq!(counts, "3 2 3 DisruptionAllowed=True");

    // A machine joins: it gets the daemon too, and the budget one more.
    let joined = cluster.add_machine();
    assert_eq!(joined, 3);
    wait_nodes_of(
        &cluster,
        "app=agent",
        &["agent-1", "agent-2", "agent-3", "server"],
    );
    wait_budget(&cluster, "agent", "2");

    // A machine leaves (stopped, its Node deleted): its pod goes.
    cluster.stop_machine(joined);
    cluster.kubectl_ok(&["delete", "node", "agent-3"]);
    wait_nodes_of(&cluster, "app=agent", &["agent-1", "agent-2", "server"]);
    cluster.wait_until(&["get", "ds", "agent", "--no-headers"], WAIT, |text| {
        text.split_whitespace().nth(1) == Some("3")
    });

    // A node labelled out of the daemon's node selector loses its pod.
    cluster.kubectl_ok(&["label", "node", "agent-1", "shoal.test/edge=true"]);
    cluster.kubectl_ok(&[
        "patch",
        "ds",
        "agent",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"shoal.test/edge":"true"}}}}}"#,
    ]);
    wait_nodes_of(&cluster, "app=agent", &["agent-1"]);
    cluster.wait_until(&["get", "ds", "agent", "--no-headers"], WAIT, |text| {
        // DESIRED CURRENT READY UP-TO-DATE AVAILABLE
        text.split_whitespace().skip(1).take(5).collect::<Vec<_>>() == ["1"; 5]
    });
    // Below its minimum, the budget allows nothing.
    wait_budget(&cluster, "agent", "0");
    // Both templates are in the history.
    let history = cluster.kubectl_ok(&["rollout", "history", "ds", "agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
}

#[test]
fn jobs_run_to_completion_or_fail_after_their_backoff_limit() {
    let cluster = Machines::start(2);
    cluster.apply(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: work
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1
        imagePullPolicy: Never
        command: [sh, -c, "echo piece done; sleep 1"]
"#,
    );
    cluster.apply(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: broken
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1
        imagePullPolicy: Never
        command: [sh, -c, "echo failing; exit 3"]
"#,
    );
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=90s",
    ]);
    let status = cluster.kubectl_ok(&[
        "get",
        "job",
        "work",
        "-o",
        "jsonpath={.status.succeeded} {.status.failed} {.status.active}",
    ]);
    assert_eq!(status.split_whitespace().next(), Some("3"), "{status}");
    let pods = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=work",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ]);
    assert_eq!(
        pods.split_whitespace().collect::<Vec<_>>(),
        ["Succeeded"; 3]
    );
    let logs = cluster.kubectl_ok(&["logs", "job/work"]);
    assert!(logs.contains("piece done"), "{logs}");
    let conditions = cluster.kubectl_ok(&[
        "get",
        "job",
        "work",
        "-o",
        "jsonpath={.status.conditions[*].type}",
    ]);
    assert_eq!(conditions, "SuccessCriteriaMet Complete");

    // A CronJob every minute: its first run is a Job named for its
    // minute, which completes.
    cluster.apply(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: busybox:1
            imagePullPolicy: Never
            command: [sh, -c, "echo tick"]
"#,
    );
    let listed = cluster.kubectl_ok(&["get", "cj", "tick", "--no-headers"]);
    assert_eq!(
        listed.split_whitespace().take(6).collect::<Vec<_>>(),
        ["tick", "*", "*", "*", "*", "*"],
        "{listed}"
    );
    let scheduled = cluster.wait_until(
        &[
            "get",
            "cj",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ],
        Duration::from_secs(75),
        |text| !text.is_empty(),
    );
    let jobs = cluster.kubectl_ok(&[
        "get",
        "jobs",
        "-o",
        r#"jsonpath={range .items[?(@.metadata.ownerReferences[0].name=="tick")]}{.metadata.name}{"\n"}{end}"#,
    ]);
    let first = jobs.lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with("tick-"), "{jobs} (scheduled {scheduled})");
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{first}"),
        "--timeout=60s",
    ]);
    cluster.wait_until(
        &[
            "get",
            "cj",
            "tick",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ],
        WAIT,
        |text| !text.is_empty(),
    );

    // One try and one retry (after the 10 s back-off), then Failed.
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=failed",
        "job/broken",
        "--timeout=90s",
    ]);
    let failed = cluster.kubectl_ok(&[
        "get",
        "job",
        "broken",
        "-o",
        r#"jsonpath={.status.failed} {.status.conditions[?(@.type=="Failed")].reason}"#,
    ]);
    assert_eq!(failed, "2 BackoffLimitExceeded");
    let pods = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "job-name=broken",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ]);
    assert_eq!(pods.split_whitespace().collect::<Vec<_>>(), ["Failed"; 2]);
}
