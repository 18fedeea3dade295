//! The seeds' demo, as a transcript on three machines (a server and two
//! joined agents on network-namespace hosts, real containers):
//!
//! 1. `kubectl create deployment dex --image=busybox:1 --replicas=3`: three
//!    pods Running, spread over the machines;
//! 2. one machine killed (SIGKILL of its shoal and every container process):
//!    three pods Running again on the others within 15 s; the machine comes
//!    back and runs none of the moved pods;
//! 3. `kubectl set image`: the rollout goes one step at a time (one pod
//!    surged, one old pod removed, and again), as `kubectl rollout status`
//!    and the Deployment's events show;
//! 4. a bad image with `shoal.io/auto-rollback: "true"`: the Deployment
//!    goes back to the last good template by itself, with an event and a
//!    condition saying why.

mod common;
#[path = "common/machines.rs"]
mod machines;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use machines::Machines;

/// The issue's bound on a dead machine's pods being back elsewhere.
const FAILOVER_LIMIT: Duration = Duration::from_secs(15);

/// The Deployment's live pods (not being deleted) as (name, node, phase).
fn live_pods(cluster: &Machines) -> Vec<(String, String, String)> {
    let out = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=dex",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 3).then(|| {
                (
                    fields[0].to_string(),
                    fields[1].to_string(),
                    fields[2].to_string(),
                )
            })
        })
        .collect()
}

fn running_on(pods: &[(String, String, String)]) -> Vec<String> {
    pods.iter()
        .filter(|(_, _, phase)| phase == "Running")
        .map(|(_, node, _)| node.clone())
        .collect()
}

fn wait_for(cluster: &Machines, what: &str, limit: Duration, done: impl Fn(&Machines) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(cluster) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}:\n{}\n{}\n{}",
            cluster.kubectl_ok(&["get", "pods", "-o", "wide"]),
            cluster.kubectl_ok(&["describe", "deployment", "dex"]),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_seeds_demo() {
    let mut cluster = Machines::start_with_images(2, &["busybox:2"]);

    // 1. Three replicas, spread.
    let created = cluster.kubectl_ok(&[
        "create",
        "deployment",
        "dex",
        "--image=busybox:1",
        "--replicas=3",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(created.trim(), "deployment.apps/dex created");
    wait_for(
        &cluster,
        "three dex pods Running",
        Duration::from_secs(60),
        |c| running_on(&live_pods(c)).len() == 3,
    );
    let nodes: BTreeSet<String> = running_on(&live_pods(&cluster)).into_iter().collect();
    assert!(
        nodes.len() >= 2,
        "three replicas of one workload on {nodes:?}: not spread"
    );

    // 2. Kill a machine (not the server) that runs a replica.
    let victim = (1..=2)
        .find(|index| nodes.contains(&format!("agent-{index}")))
        .expect("an agent runs a replica");
    let victim_node = format!("agent-{victim}");
    let moved: BTreeSet<String> = live_pods(&cluster)
        .into_iter()
        .filter(|(_, node, _)| *node == victim_node)
        .map(|(name, _, _)| name)
        .collect();
    let uids: BTreeSet<String> = moved
        .iter()
        .map(|name| cluster.pod_field(name, ".metadata.uid"))
        .collect();
    let killed_at = Instant::now();
    cluster.kill(victim);
    wait_for(
        &cluster,
        "three replicas Running on the other machines",
        Duration::from_secs(60),
        |c| {
            let pods = live_pods(c);
            let running = running_on(&pods);
            running.len() == 3 && running.iter().all(|node| *node != victim_node)
        },
    );
    let failover = killed_at.elapsed();
    eprintln!("{victim_node} killed: three replicas Running elsewhere after {failover:?}");
    assert!(
        failover < FAILOVER_LIMIT,
        "the replicas took {failover:?} to be Running elsewhere (limit {FAILOVER_LIMIT:?})"
    );
    // The machine comes back and runs none of the moved pods.
    cluster.start_again(victim);
    cluster.wait_ready(3, Duration::from_secs(60));
    wait_for(
        &cluster,
        "the returned machine without the moved pods",
        Duration::from_secs(30),
        |c| {
            let left = c.sandboxes(victim);
            moved
                .iter()
                .all(|name| c.kubectl(&["get", "pod", name]).status.code() != Some(0))
                && !left.iter().any(|uid| uids.contains(uid))
        },
    );
    assert_eq!(live_pods(&cluster).len(), 3, "no replica beyond three");

    // 3. A new image, one step at a time.
    let set = cluster.kubectl_ok(&["set", "image", "deployment/dex", "busybox=busybox:2"]);
    assert_eq!(set.trim(), "deployment.apps/dex image updated");
    let status = cluster.kubectl_ok(&["rollout", "status", "deployment/dex", "--timeout=90s"]);
    assert!(
        status
            .trim_end()
            .ends_with("deployment \"dex\" successfully rolled out"),
        "{status}"
    );
    wait_for(
        &cluster,
        "three busybox:2 pods Running",
        Duration::from_secs(30),
        |c| {
            let pods = live_pods(c);
            let images = c.kubectl_ok(&[
                "get",
                "pods",
                "-l",
                "app=dex",
                "-o",
                r#"jsonpath={range .items[*]}{.spec.containers[0].image}{"\n"}{end}"#,
            ]);
            pods.len() == 3
                && running_on(&pods).len() == 3
                && images.lines().all(|image| image == "busybox:2")
        },
    );
    // One step at a time: the new ReplicaSet grew 0→1→2→3 and the old one
    // shrank 3→2→1→0 (maxSurge 25% of 3 rounds up to 1, maxUnavailable
    // rounds down to 0).
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment,involvedObject.name=dex,reason=ScalingReplicaSet",
        "-o",
        r#"jsonpath={range .items[*]}{.message}{"\n"}{end}"#,
    ]);
    for step in [
        "from 0 to 1",
        "from 1 to 2",
        "from 2 to 3",
        "from 3 to 2",
        "from 2 to 1",
        "from 1 to 0",
    ] {
        assert!(
            events.lines().any(|line| line.contains(step)),
            "no scaling step {step:?} in the Deployment's events:\n{events}"
        );
    }

    // 4. A bad image rolls back by itself.
    cluster.kubectl_ok(&[
        "annotate",
        "deployment",
        "dex",
        "shoal.io/auto-rollback=true",
    ]);
    cluster.kubectl_ok(&[
        "set",
        "image",
        "deployment/dex",
        "busybox=busybox:does-not-exist",
    ]);
    wait_for(
        &cluster,
        "the automatic rollback",
        Duration::from_secs(120),
        |c| {
            c.kubectl_ok(&[
                "get",
                "deployment",
                "dex",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ])
            .trim()
                == "busybox:2"
        },
    );
    let condition = cluster.kubectl_ok(&[
        "get",
        "deployment",
        "dex",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="RolledBack")].status} {.status.conditions[?(@.type=="RolledBack")].reason}"#,
    ]);
    assert!(
        condition.starts_with("True "),
        "the RolledBack condition: {condition:?}"
    );
    let rolled_back = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment,involvedObject.name=dex,reason=RolledBack",
        "-o",
        r#"jsonpath={range .items[*]}{.type} {.message}{"\n"}{end}"#,
    ]);
    assert!(
        rolled_back.starts_with("Warning "),
        "the RolledBack event: {rolled_back:?}"
    );
    let status = cluster.kubectl_ok(&["rollout", "status", "deployment/dex", "--timeout=90s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_for(
        &cluster,
        "three busybox:2 replicas Running",
        Duration::from_secs(60),
        |c| {
            let pods = live_pods(c);
            pods.len() == 3 && running_on(&pods).len() == 3
        },
    );
}
