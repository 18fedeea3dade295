//! The filters and scores, each on a small cluster built from JSON objects.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::*;

fn node_with(name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
    let mut node = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    });
    merge(&mut node, extra);
    serde_json::from_value(node).expect("a valid Node")
}

fn node(name: &str) -> Node {
    node_with(name, "4", "8Gi", json!({}))
}

fn zoned(name: &str, zone: &str) -> Node {
    node_with(
        name,
        "4",
        "8Gi",
        json!({"metadata": {"labels": {ZONE_LABEL: zone}}}),
    )
}

fn pod_with(name: &str, extra: Value) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "nginx"}]}
    });
    merge(&mut pod, extra);
    serde_json::from_value(pod).expect("a valid Pod")
}

fn pod(name: &str) -> Pod {
    pod_with(name, json!({}))
}

fn requesting(name: &str, cpu: &str, memory: &str) -> Pod {
    pod_with(
        name,
        json!({"spec": {"containers": [{"name": "main", "image": "nginx",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}),
    )
}

/// Merges `extra` into `base`, objects key by key, anything else replaced.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

fn cluster(nodes: &[Node]) -> Cluster {
    let mut cluster = Cluster::new();
    cluster.set_seed(7);
    for node in nodes {
        cluster.apply_node(node);
    }
    cluster
}

/// Schedules and assumes a pod; returns its node.
fn place(cluster: &mut Cluster, pod: &Pod) -> String {
    let placement = cluster
        .schedule(pod)
        .unwrap_or_else(|unschedulable| panic!("{}: {unschedulable}", pod_key(pod)));
    cluster.assume(pod, &placement.node);
    placement.node
}

fn message(cluster: &mut Cluster, pod: &Pod) -> String {
    match cluster.schedule(pod) {
        Ok(placement) => panic!("{} placed on {}", pod_key(pod), placement.node),
        Err(unschedulable) => unschedulable.to_string(),
    }
}

#[test]
fn message_counts_reasons_per_node_sorted_as_upstream() {
    let mut cluster = cluster(&[
        node_with(
            "small",
            "4",
            "1Gi",
            json!({"metadata": {"labels": {"disk": "ssd"}}}),
        ),
        node("a"),
        node("b"),
    ]);
    let big = pod_with(
        "big",
        json!({"spec": {"nodeSelector": {"disk": "ssd"},
            "containers": [{"name": "main", "image": "nginx", "resources": {"requests": {"memory": "2Gi"}}}]}}),
    );
    assert_eq!(
        message(&mut cluster, &big),
        "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn resources_fit_counts_every_shortfall_and_the_pod_limit() {
    let mut cluster = cluster(&[node_with(
        "n1",
        "1",
        "1Gi",
        json!({"status": {"allocatable": {"pods": "1"}}}),
    )]);
    place(&mut cluster, &requesting("first", "500m", "512Mi"));
    assert_eq!(
        message(&mut cluster, &requesting("second", "600m", "600Mi")),
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods."
    );
    let mut cluster = cluster_of_two_small();
    place(&mut cluster, &requesting("a", "800m", "100Mi"));
    place(&mut cluster, &requesting("b", "800m", "100Mi"));
    assert_eq!(
        message(&mut cluster, &requesting("c", "800m", "100Mi")),
        "0/2 nodes are available: 2 Insufficient cpu."
    );
    let gpu = pod_with(
        "gpu",
        json!({"spec": {"containers": [{"name": "main", "image": "cuda",
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}),
    );
    assert_eq!(
        message(&mut cluster, &gpu),
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    );
}

fn cluster_of_two_small() -> Cluster {
    cluster(&[
        node_with("s1", "1", "1Gi", json!({})),
        node_with("s2", "1", "1Gi", json!({})),
    ])
}

#[test]
fn taints_keep_out_pods_that_do_not_tolerate_them() {
    let tainted = node_with(
        "gpu-1",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    );
    let mut cluster = cluster(&[tainted]);
    assert_eq!(
        message(&mut cluster, &pod("plain")),
        "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
    );
    let tolerating = pod_with(
        "tolerating",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(place(&mut cluster, &tolerating), "gpu-1");
    let wrong_value = pod_with(
        "wrong-value",
        json!({"spec": {"tolerations": [{"key": "dedicated", "value": "db"}]}}),
    );
    assert!(cluster.schedule(&wrong_value).is_err());
    let exists_all = pod_with(
        "exists-all",
        json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
    );
    assert_eq!(place(&mut cluster, &exists_all), "gpu-1");
}

#[test]
fn prefer_no_schedule_taints_only_lower_the_score() {
    let soft = node_with(
        "soft",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}}),
    );
    let mut cluster = cluster(&[soft, node("clean")]);
    for idx in 0..3 {
        assert_eq!(place(&mut cluster, &pod(&format!("p{idx}"))), "clean");
    }
    let mut cluster = cluster_with_only_soft();
    assert_eq!(place(&mut cluster, &pod("p")), "soft");
}

fn cluster_with_only_soft() -> Cluster {
    cluster(&[node_with(
        "soft",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}}),
    )])
}

#[test]
fn a_cordoned_node_takes_no_pods_unless_tolerated() {
    let cordoned = node_with(
        "cordoned",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    );
    let mut cluster = cluster(std::slice::from_ref(&cordoned));
    assert_eq!(
        message(&mut cluster, &pod("p")),
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    let tolerating = pod_with(
        "daemon",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(place(&mut cluster, &tolerating), "cordoned");
    let mut cluster = self::cluster(&[cordoned, node("open")]);
    for idx in 0..5 {
        assert_eq!(place(&mut cluster, &pod(&format!("p{idx}"))), "open");
    }
}

#[test]
fn a_node_that_is_not_ready_is_tainted_so() {
    let not_ready = node_with(
        "down",
        "4",
        "8Gi",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    let unknown = node_with(
        "lost",
        "4",
        "8Gi",
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    );
    let mut cluster = cluster(&[not_ready, unknown]);
    assert_eq!(
        message(&mut cluster, &pod("p")),
        "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
    );
    let mut ready = node("down");
    cluster.apply_node(&ready);
    assert_eq!(place(&mut cluster, &pod("p")), "down");
    ready.status.as_mut().expect("status").conditions = None;
    cluster.apply_node(&ready);
    assert!(
        cluster.schedule(&pod("q")).is_err(),
        "no Ready condition is not ready"
    );
}

#[test]
fn host_ports_conflict_on_protocol_port_and_address() {
    let with_port = |name: &str, port: i32, protocol: &str, host_ip: &str| {
        pod_with(
            name,
            json!({"spec": {"containers": [{"name": "main", "image": "nginx",
                "ports": [{"containerPort": 80, "hostPort": port, "protocol": protocol, "hostIP": host_ip}]}]}}),
        )
    };
    let mut cluster = cluster(&[node("n1")]);
    place(&mut cluster, &with_port("a", 8080, "TCP", ""));
    assert_eq!(
        message(&mut cluster, &with_port("b", 8080, "TCP", "10.0.0.1")),
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    );
    place(&mut cluster, &with_port("udp", 8080, "UDP", ""));
    place(&mut cluster, &with_port("other", 8081, "TCP", "10.0.0.1"));
    place(
        &mut cluster,
        &with_port("other-ip", 8082, "TCP", "10.0.0.1"),
    );
    place(
        &mut cluster,
        &with_port("same-port-other-ip", 8082, "TCP", "10.0.0.2"),
    );
    // A deleted pod frees its port.
    cluster.delete_pod(&with_port("a", 8080, "TCP", ""));
    place(&mut cluster, &with_port("b", 8080, "TCP", "10.0.0.1"));
}

#[test]
fn node_selector_and_required_node_affinity_filter() {
    let labelled = |name: &str, labels: Value| {
        node_with(name, "4", "8Gi", json!({"metadata": {"labels": labels}}))
    };
    let mut cluster = cluster(&[
        labelled("ssd-1", json!({"disk": "ssd", "cores": "8"})),
        labelled("hdd-1", json!({"disk": "hdd", "cores": "32"})),
        labelled("bare", json!({})),
    ]);
    let selecting = pod_with("sel", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
    assert_eq!(place(&mut cluster, &selecting), "ssd-1");
    let affinity = |name: &str, expressions: Value| {
        pod_with(
            name,
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": expressions}]}}}}}),
        )
    };
    let not_in = affinity(
        "not-in",
        json!([{"key": "disk", "operator": "NotIn", "values": ["ssd", "hdd"]}]),
    );
    assert_eq!(place(&mut cluster, &not_in), "bare");
    let greater = affinity(
        "gt",
        json!([{"key": "cores", "operator": "Gt", "values": ["16"]}]),
    );
    assert_eq!(place(&mut cluster, &greater), "hdd-1");
    let exists = affinity(
        "exists",
        json!([{"key": "disk", "operator": "DoesNotExist"}]),
    );
    assert_eq!(place(&mut cluster, &exists), "bare");
    let by_name = pod_with(
        "by-name",
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["hdd-1"]}]}]}}}}}),
    );
    assert_eq!(place(&mut cluster, &by_name), "hdd-1");
    let nowhere = affinity(
        "nowhere",
        json!([{"key": "disk", "operator": "In", "values": ["nvme"]}]),
    );
    assert_eq!(
        message(&mut cluster, &nowhere),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn preferred_node_affinity_wins_the_score() {
    let mut cluster = cluster(&[
        node("plain-1"),
        node_with(
            "fast",
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"speed": "fast"}}}),
        ),
        node("plain-2"),
    ]);
    let preferring = |name: &str| {
        pod_with(
            name,
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [{"weight": 50, "preference": {"matchExpressions": [{"key": "speed", "operator": "In", "values": ["fast"]}]}}]}}}}),
        )
    };
    for idx in 0..3 {
        assert_eq!(place(&mut cluster, &preferring(&format!("p{idx}"))), "fast");
    }
}

#[test]
fn pod_anti_affinity_keeps_replicas_apart() {
    let mut cluster = cluster(&[node("n1"), node("n2")]);
    let replica = |name: &str| {
        pod_with(
            name,
            json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
        )
    };
    let first = place(&mut cluster, &replica("r1"));
    let second = place(&mut cluster, &replica("r2"));
    assert_ne!(first, second);
    assert_eq!(
        message(&mut cluster, &replica("r3")),
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
    // Another namespace is out of the term's reach.
    let elsewhere = pod_with(
        "other-ns",
        json!({"metadata": {"namespace": "other"},
            "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
    );
    place(&mut cluster, &elsewhere);
}

#[test]
fn existing_pods_anti_affinity_keeps_newcomers_out() {
    let mut cluster = cluster(&[node("n1")]);
    let loner = pod_with(
        "loner",
        json!({"metadata": {"labels": {"app": "db"}},
            "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
    );
    place(&mut cluster, &loner);
    assert_eq!(
        message(&mut cluster, &pod("web")),
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    let batch = pod_with("batch", json!({"metadata": {"labels": {"app": "batch"}}}));
    assert_eq!(place(&mut cluster, &batch), "n1");
}

#[test]
fn pod_affinity_follows_the_matching_pods_zone() {
    let mut cluster = cluster(&[zoned("a1", "a"), zoned("b1", "b"), zoned("b2", "b")]);
    let cache = pod_with("cache", json!({"metadata": {"labels": {"app": "cache"}}}));
    cluster.apply_pod(&bound(&cache, "b2"));
    let follower = |name: &str, app: &str| {
        pod_with(
            name,
            json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": ZONE_LABEL}]}}}}),
        )
    };
    for idx in 0..4 {
        let node = place(&mut cluster, &follower(&format!("f{idx}"), "cache"));
        assert!(node.starts_with('b'), "went to {node}");
    }
    assert_eq!(
        message(&mut cluster, &follower("lost", "queue")),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
    );
    // The first pod of a group that matches its own term may go anywhere.
    let first_of_group = pod_with(
        "self",
        json!({"metadata": {"labels": {"app": "queue"}},
            "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                [{"labelSelector": {"matchLabels": {"app": "queue"}}, "topologyKey": ZONE_LABEL}]}}}}),
    );
    place(&mut cluster, &first_of_group);
}

fn bound(pod: &Pod, node: &str) -> Pod {
    let mut pod = pod.clone();
    pod.spec.as_mut().expect("spec").node_name = Some(node.to_string());
    pod
}

#[test]
fn topology_spread_keeps_zones_within_max_skew() {
    let mut cluster = cluster(&[
        zoned("a1", "a"),
        zoned("a2", "a"),
        zoned("b1", "b"),
        node("no-zone"),
    ]);
    let spread = |name: &str| {
        pod_with(
            name,
            json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE_LABEL,
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        )
    };
    let mut per_zone = HashMap::<char, i32>::new();
    for idx in 0..6 {
        let node = place(&mut cluster, &spread(&format!("s{idx}")));
        assert_ne!(node, "no-zone");
        *per_zone
            .entry(node.chars().next().expect("name"))
            .or_default() += 1;
        let counts: Vec<i32> = per_zone.values().copied().collect();
        let skew = counts.iter().max().unwrap()
            - if per_zone.len() < 2 {
                0
            } else {
                *counts.iter().min().unwrap()
            };
        assert!(skew <= 1, "skew {skew} after {idx}: {per_zone:?}");
    }
    assert_eq!(per_zone[&'a'], 3);
    assert_eq!(per_zone[&'b'], 3);
    // Zone b full: the next pod would make the skew 2.
    let mut full = cluster_with_zone_b_cordoned();
    place(&mut full, &spread("x1"));
    assert_eq!(
        message(&mut full, &spread("x2")),
        "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) didn't match pod topology spread constraints (missing required label), 1 node(s) were unschedulable."
    );
}

fn cluster_with_zone_b_cordoned() -> Cluster {
    let cordoned = node_with(
        "b1",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {ZONE_LABEL: "b"}}, "spec": {"unschedulable": true}}),
    );
    cluster(&[zoned("a1", "a"), cordoned, node("no-zone")])
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let mut cluster = cluster(&[node("busy"), node("idle")]);
    cluster.apply_pod(&bound(&requesting("hog", "3", "6Gi"), "busy"));
    assert_eq!(
        place(&mut cluster, &requesting("p", "100m", "100Mi")),
        "idle"
    );
}

#[test]
fn balanced_allocation_prefers_even_use() {
    // Both nodes have the same free share on average; only the balance differs.
    let mut cluster = cluster(&[node("cpu-heavy"), node("even")]);
    cluster.apply_pod(&bound(&requesting("cpu-hog", "2", "200Mi"), "cpu-heavy"));
    cluster.apply_pod(&bound(&requesting("mix", "1100m", "4250Mi"), "even"));
    let entry = |name: &str| &cluster.slots[cluster.slot_by_name[name] as usize];
    let demand_pod = requesting("p", "100m", "100Mi");
    let demand = filter::Demand::of(&demand_pod);
    let heavy = score::balanced_allocation(
        entry("cpu-heavy"),
        entry("cpu-heavy").info.as_ref().unwrap(),
        &demand,
    );
    let even =
        score::balanced_allocation(entry("even"), entry("even").info.as_ref().unwrap(), &demand);
    assert!(even > heavy, "even {even} vs cpu-heavy {heavy}");
}

#[test]
fn a_workloads_pods_spread_across_nodes() {
    let mut cluster = cluster(&[node("n1"), node("n2"), node("n3")]);
    let replica = |name: &str| {
        pod_with(
            name,
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-1", "uid": "rs-uid", "controller": true}]}}),
        )
    };
    let mut nodes: Vec<String> = (0..3)
        .map(|idx| place(&mut cluster, &replica(&format!("r{idx}"))))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
}

#[test]
fn image_locality_prefers_a_node_with_the_image() {
    let with_image = node_with(
        "cached",
        "4",
        "8Gi",
        json!({"status": {"images": [{"names": ["docker.io/library/big:1", "big:1"], "sizeBytes": 800_000_000}]}}),
    );
    let mut cluster = cluster(&[node("cold-1"), with_image, node("cold-2")]);
    let wants = pod_with(
        "p",
        json!({"spec": {"containers": [{"name": "main", "image": "big:1"}]}}),
    );
    assert_eq!(place(&mut cluster, &wants), "cached");
}

#[test]
fn large_clusters_score_a_sample_and_rotate_its_start() {
    let cluster = Cluster::new();
    assert_eq!(cluster.n_feasible_nodes_to_find(50), 50);
    assert_eq!(cluster.n_feasible_nodes_to_find(200), 100);
    assert_eq!(cluster.n_feasible_nodes_to_find(1000), 420);
    assert_eq!(cluster.n_feasible_nodes_to_find(5000), 500);
    assert_eq!(cluster.n_feasible_nodes_to_find(10_000), 500);
    let nodes: Vec<Node> = (0..1000).map(|idx| node(&format!("n{idx}"))).collect();
    let mut cluster = self::cluster(&nodes);
    let first = cluster.schedule(&pod("p1")).expect("fits");
    assert_eq!((first.n_feasible, first.n_evaluated), (420, 420));
    let before = cluster.next_start;
    cluster.schedule(&pod("p2")).expect("fits");
    assert_eq!(cluster.next_start, (before + 420) % 1000);
    cluster.set_percentage_of_nodes_to_score(100);
    assert_eq!(cluster.schedule(&pod("p3")).expect("fits").n_feasible, 1000);
}

#[test]
fn assumed_pods_count_until_forgotten_and_bindings_are_not_counted_twice() {
    let mut cluster = cluster(&[node_with("n1", "1", "1Gi", json!({}))]);
    let first = requesting("first", "600m", "100Mi");
    place(&mut cluster, &first);
    assert!(
        cluster
            .schedule(&requesting("second", "600m", "100Mi"))
            .is_err()
    );
    // The watch confirms the binding: still one pod's worth.
    cluster.apply_pod(&bound(&first, "n1"));
    assert_eq!(cluster.n_placed_pods(), 1);
    assert!(
        cluster
            .schedule(&requesting("second", "600m", "100Mi"))
            .is_err()
    );
    // A confirmed pod is not forgotten by a failed binding elsewhere.
    cluster.forget(&first);
    assert!(cluster.is_placed("default/first"));
    cluster.delete_pod(&first);
    assert_eq!(
        place(&mut cluster, &requesting("second", "600m", "100Mi")),
        "n1"
    );
    cluster.forget(&requesting("second", "600m", "100Mi"));
    assert_eq!(cluster.n_placed_pods(), 0);
    let finished = {
        let mut pod = bound(&requesting("done", "1", "100Mi"), "n1");
        pod.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        pod
    };
    cluster.apply_pod(&finished);
    assert_eq!(cluster.n_placed_pods(), 0, "a finished pod takes nothing");
}

#[test]
fn a_deleted_node_keeps_its_pods_accounting_for_its_return() {
    let small = node_with("n1", "1", "1Gi", json!({}));
    let mut cluster = cluster(std::slice::from_ref(&small));
    cluster.apply_pod(&bound(&requesting("a", "800m", "100Mi"), "n1"));
    cluster.delete_node("n1");
    assert_eq!(
        message(&mut cluster, &pod("p")),
        "no nodes available to schedule pods"
    );
    cluster.apply_node(&small);
    assert_eq!(
        message(&mut cluster, &requesting("b", "800m", "100Mi")),
        "0/1 nodes are available: 1 Insufficient cpu."
    );
}

#[test]
fn reasons_sort_as_strings_with_their_counts() {
    let unschedulable = Unschedulable {
        n_nodes: 12,
        reasons: vec![("b".to_string(), 10), ("a".to_string(), 2)],
    };
    assert_eq!(
        unschedulable.to_string(),
        "0/12 nodes are available: 10 b, 2 a."
    );
    let mut nodes: Vec<Node> = (0..10)
        .map(|idx| node_with(&format!("small-{idx}"), "100m", "8Gi", json!({})))
        .collect();
    nodes.push(node_with(
        "cordoned-1",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    ));
    nodes.push(node_with(
        "cordoned-2",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    ));
    let mut cluster = cluster(&nodes);
    assert_eq!(
        message(&mut cluster, &requesting("p", "1", "1Mi")),
        "0/12 nodes are available: 10 Insufficient cpu, 2 node(s) were unschedulable."
    );
}
