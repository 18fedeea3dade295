//! The same services as an `iptables-restore` rule set of kube-proxy's
//! classic iptables shape (KUBE-SERVICES → KUBE-SVC-* with `statistic`
//! probabilities → KUBE-SEP-* that DNAT). Not a backend: it exists so the
//! choice of nftables is measured against the alternative
//! (`shoal bench proxy-rules`; BENCHMARKS.md).

use std::fmt::Write as _;
use std::hash::Hasher as _;

use crate::model::{Endpoint, ServiceTargets};

/// iptables chain names are at most 28 characters: a prefix and 16 hex
/// digits of a hash, as kube-proxy names them.
fn chain(prefix: &str, parts: &impl std::hash::Hash) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    parts.hash(&mut hasher);
    format!("{prefix}-{:016X}", hasher.finish())
}

fn service_chain(targets: &ServiceTargets) -> String {
    chain("KUBE-SVC", &targets.port.id())
}

fn endpoint_chain(targets: &ServiceTargets, endpoint: &Endpoint) -> String {
    chain("KUBE-SEP", &(targets.port.id(), endpoint))
}

/// The KUBE-SERVICES rules: one per ClusterIP and port.
fn write_services(text: &mut String, services: &[ServiceTargets]) {
    for targets in services {
        if targets.cluster.is_empty() {
            continue;
        }
        let protocol = targets.port.protocol.nft();
        for ip in &targets.port.cluster_ips {
            let _ = writeln!(
                text,
                "-A KUBE-SERVICES -d {ip}/32 -p {protocol} -m {protocol} --dport {} -j {}",
                targets.port.port,
                service_chain(targets)
            );
        }
    }
}

/// Declares one service's KUBE-SVC chain and its KUBE-SEP chains
/// (iptables-restore wants every chain declared before any rule names it).
fn declare_service(text: &mut String, targets: &ServiceTargets) {
    if targets.cluster.is_empty() {
        return;
    }
    let _ = writeln!(text, ":{} - [0:0]", service_chain(targets));
    for endpoint in &targets.cluster {
        let _ = writeln!(text, ":{} - [0:0]", endpoint_chain(targets, endpoint));
    }
}

/// The rules of one service's KUBE-SVC chain and its KUBE-SEP chains.
fn write_service(text: &mut String, targets: &ServiceTargets, cluster_cidr: &str) {
    if targets.cluster.is_empty() {
        return;
    }
    let port = &targets.port;
    let protocol = port.protocol.nft();
    let service = service_chain(targets);
    for ip in &port.cluster_ips {
        let _ = writeln!(
            text,
            "-A {service} ! -s {cluster_cidr} -d {ip}/32 -p {protocol} -m {protocol} --dport {} -j KUBE-MARK-MASQ",
            port.port
        );
    }
    let n_endpoints = targets.cluster.len();
    for (index, endpoint) in targets.cluster.iter().enumerate() {
        let remaining = n_endpoints - index;
        let target = endpoint_chain(targets, endpoint);
        if remaining > 1 {
            let _ = writeln!(
                text,
                "-A {service} -m statistic --mode random --probability {:.10} -j {target}",
                1.0 / remaining as f64
            );
        } else {
            let _ = writeln!(text, "-A {service} -j {target}");
        }
    }
    for endpoint in &targets.cluster {
        let target = endpoint_chain(targets, endpoint);
        let _ = writeln!(
            text,
            "-A {target} -s {}/32 -j KUBE-MARK-MASQ",
            endpoint.address
        );
        let _ = writeln!(
            text,
            "-A {target} -p {protocol} -m {protocol} -j DNAT --to-destination {}:{}",
            endpoint.address, endpoint.port
        );
    }
}

/// The whole nat table, as kube-proxy restored it on every sync before
/// 1.26 (and still does on a full sync).
pub fn full(services: &[ServiceTargets], cluster_cidr: &str) -> String {
    let mut text = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-SERVICES - [0:0]\n",
    );
    for targets in services {
        declare_service(&mut text, targets);
    }
    write_services(&mut text, services);
    for targets in services {
        write_service(&mut text, targets, cluster_cidr);
    }
    text.push_str(
        "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\nCOMMIT\n",
    );
    text
}

/// A change of one service's endpoints as kube-proxy's partial syncs
/// (1.26 and later) write it for `iptables-restore --noflush`: the
/// top-level KUBE-SERVICES chain again in full, the changed service's
/// chains, and the endpoint chains it no longer uses deleted.
pub fn partial(
    services: &[ServiceTargets],
    before: &ServiceTargets,
    after: &ServiceTargets,
    cluster_cidr: &str,
) -> String {
    let mut text = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    declare_service(&mut text, after);
    // Declared to flush them: a chain must be empty to be deleted.
    let removed: Vec<&Endpoint> = before
        .cluster
        .iter()
        .filter(|endpoint| !after.cluster.contains(endpoint))
        .collect();
    for endpoint in &removed {
        let _ = writeln!(text, ":{} - [0:0]", endpoint_chain(before, endpoint));
    }
    write_services(&mut text, services);
    write_service(&mut text, after, cluster_cidr);
    for endpoint in removed {
        let _ = writeln!(text, "-X {}", endpoint_chain(before, endpoint));
    }
    text.push_str("COMMIT\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, ServiceKey, ServicePort};

    fn targets(last: &[u8]) -> ServiceTargets {
        ServiceTargets {
            port: ServicePort {
                service: ServiceKey::new("default", "web"),
                port_name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                cluster_ips: vec![[10, 43, 0, 5].into()],
                external_ips: vec![],
                node_port: None,
                affinity_seconds: None,
                internal_local: false,
                external_local: false,
            },
            cluster: last
                .iter()
                .map(|last| Endpoint {
                    address: [10, 42, 0, *last].into(),
                    port: 8080,
                })
                .collect(),
            local: vec![],
        }
    }

    #[test]
    fn endpoints_are_chosen_with_falling_probabilities() {
        let text = full(&[targets(&[5, 6, 7])], "10.42.0.0/16");
        assert!(text.contains("--probability 0.3333333333"));
        assert!(text.contains("--probability 0.5000000000"));
        assert_eq!(text.matches("-j DNAT --to-destination").count(), 3);
        assert!(text.ends_with("COMMIT\n"));
        for line in text.lines().filter(|line| line.starts_with(':')) {
            let name = line[1..].split(' ').next().unwrap();
            assert!(name.len() <= 28, "{name}");
        }
    }

    #[test]
    fn a_partial_sync_deletes_the_endpoint_chains_no_longer_used() {
        let before = targets(&[5, 6]);
        let after = targets(&[5, 7]);
        let text = partial(
            std::slice::from_ref(&after),
            &before,
            &after,
            "10.42.0.0/16",
        );
        assert_eq!(text.matches("\n-X KUBE-SEP-").count(), 1);
        assert!(text.contains("--to-destination 10.42.0.7:8080"));
    }
}
