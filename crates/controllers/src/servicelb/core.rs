//! The LoadBalancer controller's decisions, sans IO, as k3s' servicelb
//! makes them cheaply: a LoadBalancer Service's ingress is the Ready
//! nodes' InternalIPs (the node proxies answer on node addresses for the
//! Service's ports). A Service with a `loadBalancerClass` belongs to
//! another implementation and is left alone; a Service that is no longer
//! a LoadBalancer loses the ingress.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};

/// Whether this controller writes the Service's ingress.
pub fn is_ours(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .is_some_and(|spec| spec.load_balancer_class.is_none())
}

pub fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")
}

/// What of a node its ingress depends on: readiness and address.
pub fn node_part(node: &Node) -> (bool, Option<&str>) {
    (is_ready(node), internal_ip(node))
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

fn internal_ip(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|address| address.type_ == "InternalIP")
        .map(|address| address.address.as_str())
}

/// The ingress the Service should report: the Ready nodes' InternalIPs in
/// order, for a LoadBalancer Service; none for any other type.
pub fn ingress(service: &Service, nodes: &[Arc<Node>]) -> Vec<LoadBalancerIngress> {
    if !is_load_balancer(service) {
        return Vec::new();
    }
    let addresses: BTreeSet<std::net::Ipv4Addr> = nodes
        .iter()
        .filter(|node| is_ready(node))
        .filter_map(|node| internal_ip(node)?.parse().ok())
        .collect();
    addresses
        .into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some("VIP".to_string()),
            ..LoadBalancerIngress::default()
        })
        .collect()
}

/// The ingress the Service reports now.
pub fn current(service: &Service) -> Vec<LoadBalancerIngress> {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus, ServiceSpec};

    use super::*;

    fn node(ip: &str, ready: bool) -> Arc<Node> {
        Arc::new(Node {
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        })
    }

    fn service(type_: &str) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn a_load_balancer_gets_the_ready_nodes_addresses() {
        let nodes = [
            node("192.168.1.12", true),
            node("192.168.1.3", true),
            node("192.168.1.4", false),
        ];
        let ips: Vec<Option<String>> = ingress(&service("LoadBalancer"), &nodes)
            .into_iter()
            .map(|ingress| ingress.ip)
            .collect();
        assert_eq!(
            ips,
            [
                Some("192.168.1.3".to_string()),
                Some("192.168.1.12".to_string())
            ]
        );
        assert!(ingress(&service("NodePort"), &nodes).is_empty());
        let mut classed = service("LoadBalancer");
        classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert!(!is_ours(&classed));
    }
}
