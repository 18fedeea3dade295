//! The proxy's rules in a real kernel, in network namespaces this test
//! makes and removes: a node (a bridge for its pods, as the runtime's pod
//! network has, and a link to a client outside the cluster), two pods
//! serving TCP and UDP, and a client. Services go through the `Proxier`
//! and `nft` as the agent's sync loop sends them. Needs root and `nft`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::{Nft, NodeContext, Proxier};
use serde_json::json;

const POD_A: &str = "10.42.0.5";
const POD_B: &str = "10.42.0.6";
const NODE_OUTSIDE: &str = "192.168.77.1";
const CLIENT: &str = "192.168.77.2";

fn run(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|error| panic!("cannot run {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The test's namespaces and servers, removed on drop (also when an
/// assertion fails).
struct Hosts {
    node: String,
    pod_a: String,
    pod_b: String,
    client: String,
    servers: Vec<Child>,
    helper: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for name in [&self.node, &self.pod_a, &self.pod_b, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Hosts {
    fn exec(&self, netns: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", netns];
        all.extend_from_slice(args);
        run(&all)
    }

    fn start() -> Hosts {
        let id = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("endpoints.py");
        std::fs::write(&helper, include_str!("endpoints.py")).unwrap();
        let mut hosts = Hosts {
            node: format!("pxnode{id}"),
            pod_a: format!("pxpoda{id}"),
            pod_b: format!("pxpodb{id}"),
            client: format!("pxclient{id}"),
            servers: Vec::new(),
            helper,
            _dir: dir,
        };
        for name in [&hosts.node, &hosts.pod_a, &hosts.pod_b, &hosts.client] {
            run(&["ip", "netns", "add", name]);
            hosts.exec(name, &["ip", "link", "set", "lo", "up"]);
        }
        let node = hosts.node.clone();
        hosts.exec(&node, &["ip", "link", "add", "pods", "type", "bridge"]);
        hosts.exec(&node, &["ip", "addr", "add", "10.42.0.1/24", "dev", "pods"]);
        hosts.exec(&node, &["ip", "link", "set", "pods", "up"]);
        hosts.exec(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The runtime's pod network rule (crates/runtime/src/pod/network.rs):
        // pods' DNATed traffic leaving through the bridge is masqueraded, so
        // a pod reaching a pod of the same node through a service is
        // answered through the node.
        hosts.exec(
            &node,
            &[
                "iptables",
                "-w",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "10.42.0.0/24",
                "-o",
                "pods",
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "MASQUERADE",
            ],
        );
        for (pod, address, link) in [
            (hosts.pod_a.clone(), POD_A, "veth-a"),
            (hosts.pod_b.clone(), POD_B, "veth-b"),
        ] {
            run(&[
                "ip", "link", "add", link, "netns", &node, "type", "veth", "peer", "name", "eth0",
                "netns", &pod,
            ]);
            hosts.exec(&node, &["ip", "link", "set", link, "master", "pods", "up"]);
            // As the runtime attaches pods' veths: with br_netfilter loaded
            // (Docker and most distributions load it) a packet DNATed back
            // to the pod it came from is bridged, and a bridge sends a
            // frame back out of the port it came in on only in hairpin mode.
            hosts.exec(
                &node,
                &[
                    "ip",
                    "link",
                    "set",
                    link,
                    "type",
                    "bridge_slave",
                    "hairpin",
                    "on",
                ],
            );
            hosts.exec(
                &pod,
                &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
            );
            hosts.exec(&pod, &["ip", "link", "set", "eth0", "up"]);
            hosts.exec(&pod, &["ip", "route", "add", "default", "via", "10.42.0.1"]);
        }
        let client = hosts.client.clone();
        run(&[
            "ip", "link", "add", "outside", "netns", &node, "type", "veth", "peer", "name", "eth0",
            "netns", &client,
        ]);
        hosts.exec(
            &node,
            &[
                "ip",
                "addr",
                "add",
                &format!("{NODE_OUTSIDE}/24"),
                "dev",
                "outside",
            ],
        );
        hosts.exec(&node, &["ip", "link", "set", "outside", "up"]);
        // The node's own connections to a ClusterIP need a route to leave
        // by before the output hook rewrites them (a node has a default
        // route; so does this one).
        hosts.exec(&node, &["ip", "route", "add", "default", "via", CLIENT]);
        hosts.exec(
            &client,
            &["ip", "addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"],
        );
        hosts.exec(&client, &["ip", "link", "set", "eth0", "up"]);
        hosts.exec(
            &client,
            &["ip", "route", "add", "10.43.0.0/16", "via", NODE_OUTSIDE],
        );

        for (pod, address) in [(hosts.pod_a.clone(), POD_A), (hosts.pod_b.clone(), POD_B)] {
            for port in ["8080", "5353"] {
                let child = Command::new("ip")
                    .args(["netns", "exec", &pod, "python3"])
                    .arg(&hosts.helper)
                    .args(["serve", address, port])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                hosts.servers.push(child);
            }
        }
        // Bounded wait for the servers, straight to the pods' addresses.
        for address in [POD_A, POD_B] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let answers = hosts.connect(&node, address, 8080, 1, "tcp");
                if answers[0].0.starts_with(address) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server on {address} did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        hosts
    }

    /// `count` connections from `netns`: each answer ("ENDPOINT PEER",
    /// "refused", "timeout") and the seconds it took.
    fn connect(
        &self,
        netns: &str,
        host: &str,
        port: u16,
        count: u32,
        protocol: &str,
    ) -> Vec<(String, f64)> {
        let helper = self.helper.to_string_lossy().into_owned();
        let output = self.exec(
            netns,
            &[
                "python3",
                &helper,
                "connect",
                host,
                &port.to_string(),
                &count.to_string(),
                protocol,
            ],
        );
        output
            .lines()
            .map(|line| {
                let (answer, seconds) = line.rsplit_once(' ').unwrap();
                (answer.to_string(), seconds.parse().unwrap())
            })
            .collect()
    }
}

fn service(name: &str, value: serde_json::Value) -> Service {
    let mut service: Service = serde_json::from_value(value).unwrap();
    service.metadata.namespace = Some("default".into());
    service.metadata.name = Some(name.into());
    service
}

fn slice(service: &str, addresses: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|address| json!({"addresses": [address], "nodeName": "node", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{service}-1"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn sync(proxier: &mut Proxier, nft: &Nft) {
    let names = proxier
        .needs_listing()
        .then(|| nft.existing_names().unwrap());
    let plan = proxier.plan(names);
    nft.apply(&plan.transaction)
        .unwrap_or_else(|error| panic!("{error}\n{}", plan.transaction.text()));
    proxier.committed(plan);
}

fn endpoints_reached(answers: &[(String, f64)]) -> std::collections::BTreeSet<String> {
    answers
        .iter()
        .map(|(answer, _)| answer.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn services_reach_their_endpoints_through_the_kernel() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status.lines().any(|line| line.starts_with("Uid:\t0\t")),
        "the proxy's netns test needs root (network namespaces, nftables): run the test suite as root"
    );
    let hosts = Hosts::start();
    let nft = Nft::in_netns(&hosts.node);
    // Stateless listings: counters move, and iptables-save's comments carry
    // the time.
    let rulesets = || {
        let nft = hosts.exec(&hosts.node, &["nft", "-s", "list", "ruleset"]);
        let iptables: Vec<String> = hosts
            .exec(&hosts.node, &["iptables-save"])
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(String::from)
            .collect();
        (nft, iptables)
    };
    let rulesets_before = rulesets();
    assert!(
        rulesets_before.0.contains("masquerade"),
        "{rulesets_before:?}"
    );

    let mut proxier = Proxier::new(NodeContext {
        node_name: "node".into(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    });
    let ports = json!([
        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
        {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}
    ]);
    proxier.update_service(&service(
        "web",
        json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "ports": ports}}),
    ));
    proxier.update_service(&service(
        "empty",
        json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.11",
                        "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}}),
    ));
    proxier.update_service(&service(
        "sticky",
        json!({"spec": {"clusterIP": "10.43.0.12", "sessionAffinity": "ClientIP",
                        "ports": [{"name": "http", "port": 80}]}}),
    ));
    proxier.update_slice(&slice("web", &[POD_A, POD_B]));
    proxier.update_slice(&slice("sticky", &[POD_A, POD_B]));
    sync(&mut proxier, &nft);

    // Through the ClusterIP from outside the cluster: both endpoints, the
    // client masqueraded to the node's bridge address.
    let answers = hosts.connect(&hosts.client, "10.43.0.10", 80, 24, "tcp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.ends_with(" 10.42.0.1")),
        "{answers:?}"
    );
    assert_eq!(
        endpoints_reached(&answers),
        [POD_A, POD_B].map(String::from).into(),
        "{answers:?}"
    );
    // UDP on the same service.
    let answers = hosts.connect(&hosts.client, "10.43.0.10", 53, 4, "udp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.starts_with("10.42.0.")),
        "{answers:?}"
    );
    // The NodePort on the node's address.
    let answers = hosts.connect(&hosts.client, NODE_OUTSIDE, 30080, 6, "tcp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.starts_with("10.42.0.")),
        "{answers:?}"
    );
    // The node itself (the output hook).
    let answers = hosts.connect(&hosts.node, "10.43.0.10", 80, 4, "tcp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.starts_with("10.42.0.")),
        "{answers:?}"
    );
    // Hairpin: a pod through its own service, landing on itself sometimes;
    // it is then answered from the bridge's address, so the reply comes
    // back through the node's connection tracking.
    let answers = hosts.connect(&hosts.pod_a, "10.43.0.10", 80, 16, "tcp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.starts_with("10.42.0.")),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|(answer, _)| answer == &format!("{POD_A} 10.42.0.1")),
        "no connection of 16 landed on the pod itself: {answers:?}"
    );
    assert!(
        answers.iter().any(|(answer, _)| answer.starts_with(POD_B)),
        "no connection of 16 landed on the other pod: {answers:?}"
    );

    // No endpoints: refused at once, on the ClusterIP and the NodePort.
    for (host, port) in [("10.43.0.11", 80), (NODE_OUTSIDE, 30081)] {
        let answers = hosts.connect(&hosts.client, host, port, 2, "tcp");
        assert!(
            answers
                .iter()
                .all(|(answer, seconds)| answer == "refused" && *seconds < 0.5),
            "{host}:{port} {answers:?}"
        );
    }

    // Session affinity: one client, one endpoint.
    let answers = hosts.connect(&hosts.client, "10.43.0.12", 80, 12, "tcp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.starts_with("10.42.0.")),
        "{answers:?}"
    );
    assert_eq!(endpoints_reached(&answers).len(), 1, "{answers:?}");

    // An endpoint leaves: an incremental sync, and only the other is used.
    proxier.update_slice(&slice("web", &[POD_B]));
    let plan = proxier.plan(None);
    assert!(!plan.full);
    nft.apply(&plan.transaction).unwrap();
    proxier.committed(plan);
    let answers = hosts.connect(&hosts.client, "10.43.0.10", 80, 8, "tcp");
    assert_eq!(
        endpoints_reached(&answers),
        [POD_B].map(String::from).into(),
        "{answers:?}"
    );
    // And the last one: refused.
    proxier.update_slice(&slice("web", &[]));
    sync(&mut proxier, &nft);
    let answers = hosts.connect(&hosts.client, "10.43.0.10", 80, 1, "tcp");
    assert_eq!(answers[0].0, "refused");

    // A periodic full sync over the live table keeps what works.
    proxier.request_full_sync();
    sync(&mut proxier, &nft);
    let answers = hosts.connect(&hosts.client, "10.43.0.12", 80, 2, "tcp");
    assert!(
        answers
            .iter()
            .all(|(answer, _)| answer.starts_with("10.42.0.")),
        "{answers:?}"
    );
    assert!(
        nft.list(&["table", "ip", "shoal"])
            .unwrap()
            .contains("chain svc-default/sticky/tcp/http")
    );

    // Cleanup leaves the node's ruleset as it was.
    assert!(nft.delete_table().unwrap());
    assert!(
        !nft.delete_table().unwrap(),
        "a second cleanup finds nothing"
    );
    assert_eq!(rulesets(), rulesets_before);
}
