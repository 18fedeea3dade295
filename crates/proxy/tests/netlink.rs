//! The netlink encoder against the `nft` program, in a real kernel: the
//! same plans are applied through `nft -f` in one network namespace and as
//! netlink batches in another, and `nft list table ip shoal` must print
//! the same table after every step. Also a refused batch (typed error
//! naming the command, nothing applied) and the ruleset generation. Needs
//! root and `nft`.

use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::nft::{self, Transaction};
use proxy::{Nft, NftError, NodeContext, Proxier};
use serde_json::json;

/// Network namespaces made for the test, removed on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn make(names: &[&str]) -> Namespaces {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status.lines().any(|line| line.starts_with("Uid:\t0\t")),
            "the proxy's netlink test needs root (network namespaces, nftables): run the test suite as root"
        );
        let names: Vec<String> = names
            .iter()
            .map(|name| format!("shoal-nl-{name}-{}", std::process::id()))
            .collect();
        for name in &names {
            let status = Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .unwrap();
            assert!(status.success(), "ip netns add {name}");
        }
        Namespaces(names)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn service(name: &str, value: serde_json::Value) -> Service {
    let mut service: Service = serde_json::from_value(value).unwrap();
    service.metadata.namespace = Some("default".into());
    service.metadata.name = Some(name.into());
    service
}

fn slice(service: &str, endpoints: &[(&str, &str)]) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(address, node)| json!({"addresses": [address], "nodeName": node, "conditions": {"ready": true}}))
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

fn listing(nft: &Nft) -> String {
    nft.list(&["table", "ip", nft::TABLE]).unwrap()
}

#[test]
fn netlink_batches_build_the_table_the_nft_program_builds() {
    let namespaces = Namespaces::make(&["program", "netlink"]);
    let by_program = Nft::in_netns(&namespaces.0[0]);
    let by_netlink = Nft::in_netns(&namespaces.0[1]);
    // A cluster range that is not on a byte boundary, so prefixes are
    // masked.
    let mut proxier = Proxier::new(NodeContext {
        node_name: "node".into(),
        cluster_cidr: "10.40.0.0/13".parse().unwrap(),
    });
    let both_ports = json!([
        {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
        {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}
    ]);
    proxier.update_service(&service(
        "web",
        json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "ports": both_ports,
                        "externalIPs": ["192.0.2.7"]}}),
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
    proxier.update_service(&service(
        "local",
        json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.13",
                        "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                        "ports": [{"name": "http", "port": 80, "nodePort": 30083}]}}),
    ));
    proxier.update_slice(&slice(
        "web",
        &[("10.42.0.5", "node"), ("10.42.0.6", "other")],
    ));
    proxier.update_slice(&slice(
        "sticky",
        &[("10.42.0.5", "node"), ("10.42.0.6", "node")],
    ));
    proxier.update_slice(&slice("local", &[("10.42.0.7", "other")]));

    let step = |proxier: &mut Proxier, what: &str| {
        let names = proxier
            .needs_listing()
            .then(|| by_netlink.existing_names().unwrap());
        if let Some(names) = &names {
            assert_eq!(&by_program.existing_names().unwrap(), names, "{what}");
        }
        let plan = proxier.plan(names);
        by_program
            .apply_with_program(&plan.transaction)
            .unwrap_or_else(|error| panic!("{what}: nft: {error}"));
        by_netlink
            .apply(&plan.transaction)
            .unwrap_or_else(|error| panic!("{what}: netlink: {error}"));
        proxier.committed(plan);
        let expected = listing(&by_program);
        assert_eq!(listing(&by_netlink), expected, "{what}");
        expected
    };

    let full = step(&mut proxier, "the first full sync");
    for expected in [
        "numgen random mod 2 0 goto",
        "update @aff-10800-",
        "ip saddr != 10.40.0.0/13 jump mark-for-masquerade",
        "fib saddr type local goto",
        "masquerade fully-random",
        "dnat to 10.42.0.6:5353",
    ] {
        assert!(full.contains(expected), "{expected} in {full}");
    }

    proxier.update_slice(&slice(
        "web",
        &[("10.42.0.6", "other"), ("10.42.0.8", "node")],
    ));
    step(&mut proxier, "an endpoint replaced");
    proxier.update_slice(&slice("web", &[]));
    step(&mut proxier, "the last endpoint gone");
    proxier.update_slice(&slice("empty", &[("10.42.0.9", "node")]));
    proxier.update_slice(&slice("local", &[("10.42.0.7", "node")]));
    step(&mut proxier, "endpoints for two services");
    proxier.delete_service(&proxy::ServiceKey::new("default", "sticky"));
    step(&mut proxier, "a service removed");
    proxier.request_full_sync();
    step(&mut proxier, "a full sync over the live table");

    // Cleanup over netlink.
    assert!(by_netlink.delete_table().unwrap());
    assert!(!by_netlink.delete_table().unwrap());
    assert_eq!(
        by_netlink.existing_names().unwrap(),
        Default::default(),
        "no table, no names"
    );
}

#[test]
fn a_refused_batch_names_its_command_and_changes_nothing() {
    let namespaces = Namespaces::make(&["refused"]);
    let nft = Nft::in_netns(&namespaces.0[0]);
    let mut proxier = Proxier::new(NodeContext {
        node_name: "node".into(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
    });
    proxier.update_service(&service(
        "web",
        json!({"spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "http", "port": 80}]}}),
    ));
    let plan = proxier.plan(None);
    nft.apply(&plan.transaction).unwrap();
    proxier.committed(plan);
    let before = listing(&nft);
    let generation = nft.generation().unwrap();

    let mut transaction = Transaction::default();
    transaction.push_command(nft::Command::AddChain {
        name: "fine".into(),
        hook: None,
    });
    transaction.push_command(nft::Command::AddRule {
        chain: "missing".into(),
        rule: "drop".into(),
    });
    let error = nft.apply(&transaction).unwrap_err();
    let NftError::Netlink(error) = &error else {
        panic!("{error}");
    };
    assert_eq!(error.errno(), Some(2), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("nf_tables refused add rule missing drop: "),
        "{error}"
    );
    assert_eq!(listing(&nft), before, "the batch is all or nothing");
    assert_eq!(nft.generation().unwrap(), generation, "nothing committed");

    // A rule the encoder does not know is refused before anything is sent.
    let mut transaction = Transaction::default();
    transaction.push_command(nft::Command::AddRule {
        chain: "services".into(),
        rule: "log prefix \"x\"".into(),
    });
    assert!(
        nft.apply(&transaction)
            .unwrap_err()
            .to_string()
            .starts_with("cannot encode 'log prefix \"x\"'")
    );

    // A commit moves the generation on.
    proxier.update_slice(&slice("web", &[("10.42.0.5", "node")]));
    let plan = proxier.plan(None);
    nft.apply(&plan.transaction).unwrap();
    assert_ne!(nft.generation().unwrap(), generation);
    assert!(nft.delete_table().unwrap());
}
