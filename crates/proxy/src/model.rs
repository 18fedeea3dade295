//! The proxy's model, with no I/O: what a Service's ports and its
//! EndpointSlices say, reduced to what the kernel needs (addresses, ports,
//! the endpoints each kind of traffic may reach).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// kube-proxy's default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// The transport protocols the proxy forwards (SCTP is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Kubernetes' spelling (`TCP`, `UDP`); absent means TCP.
    pub fn parse(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// nft's spelling, also used in chain names.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A Service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of_service(service: &Service) -> Option<ServiceKey> {
        Some(ServiceKey::new(
            service.metadata.namespace.as_deref()?,
            service.metadata.name.as_deref()?,
        ))
    }

    /// The Service an EndpointSlice belongs to, by its label.
    pub fn of_slice(slice: &EndpointSlice) -> Option<ServiceKey> {
        let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        Some(ServiceKey::new(
            slice.metadata.namespace.as_deref()?,
            service,
        ))
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service, as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub service: ServiceKey,
    /// The port's name; empty for a single unnamed port.
    pub port_name: String,
    pub protocol: Protocol,
    /// `spec.port`, on each ClusterIP, external IP and load balancer IP.
    pub port: u16,
    /// The IPv4 ClusterIPs (none for a headless Service).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// `spec.externalIPs` and, for type LoadBalancer, the ingress IPs in
    /// `status.loadBalancer`: reached from outside, like a NodePort.
    pub external_ips: Vec<Ipv4Addr>,
    /// On every local address of the node (types NodePort, LoadBalancer).
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`, with its timeout.
    pub affinity_seconds: Option<u32>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic only to this node's
    /// endpoints.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: outside traffic only to this node's
    /// endpoints, its source kept.
    pub external_local: bool,
}

impl ServicePort {
    /// Names the port in chain names: its name, or its number when it has
    /// none (a port name always has a letter, so the two cannot clash).
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}/{}/{}",
            self.service.namespace,
            self.service.name,
            self.protocol.nft(),
            port
        )
    }

    pub fn has_external(&self) -> bool {
        !self.external_ips.is_empty() || self.node_port.is_some()
    }
}

/// The ports of a Service the proxy forwards. ExternalName Services and
/// ports of other protocols have none; a headless Service has no
/// ClusterIP but may still have external IPs.
pub fn service_ports(service: &Service) -> Vec<ServicePort> {
    let Some(key) = ServiceKey::of_service(service) else {
        return Vec::new();
    };
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return Vec::new();
    }
    let mut cluster_ips: Vec<Ipv4Addr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
    };
    cluster_ips.dedup();
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if service_type == "LoadBalancer" {
        let ingress = service
            .status
            .as_ref()
            .and_then(|status| status.load_balancer.as_ref())
            .and_then(|balancer| balancer.ingress.as_ref());
        external_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|ingress| ingress.ip.as_ref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    external_ips.sort();
    external_ips.dedup();
    let with_node_ports = matches!(service_type, "NodePort" | "LoadBalancer");
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|config| config.client_ip.as_ref())
            .and_then(|client_ip| client_ip.timeout_seconds)
            .and_then(|seconds| u32::try_from(seconds).ok())
            .filter(|seconds| *seconds > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(ServicePort {
                service: key.clone(),
                port_name: port.name.clone().unwrap_or_default(),
                protocol: Protocol::parse(port.protocol.as_deref())?,
                port: u16::try_from(port.port).ok()?,
                cluster_ips: cluster_ips.clone(),
                external_ips: external_ips.clone(),
                node_port: with_node_ports
                    .then(|| port.node_port.and_then(|port| u16::try_from(port).ok()))
                    .flatten()
                    .filter(|port| *port > 0),
                affinity_seconds,
                internal_local,
                external_local,
            })
        })
        .collect()
}

/// What the proxy keeps of an EndpointSlice: its ports and its endpoints'
/// first IPv4 address, node and conditions.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SliceInfo {
    /// (name, protocol, port) per port of the slice.
    pub ports: Vec<(String, Protocol, u16)>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub address: Ipv4Addr,
    pub node_name: Option<String>,
    /// `conditions.ready`: absent counts as ready, as the API says.
    pub ready: bool,
    /// `conditions.serving`: absent means the same as ready.
    pub serving: bool,
    pub terminating: bool,
}

impl SliceInfo {
    /// The slice's IPv4 endpoints (other address types carry none).
    pub fn of_slice(slice: &EndpointSlice) -> SliceInfo {
        if slice.address_type != "IPv4" {
            return SliceInfo::default();
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|port| {
                Some((
                    port.name.clone().unwrap_or_default(),
                    Protocol::parse(port.protocol.as_deref())?,
                    u16::try_from(port.port?).ok()?,
                ))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|endpoint| {
                let address = endpoint.addresses.first()?.parse().ok()?;
                let conditions = endpoint.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                Some(SliceEndpoint {
                    address,
                    node_name: endpoint.node_name.clone(),
                    ready,
                    serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                })
            })
            .collect();
        SliceInfo { ports, endpoints }
    }
}

/// One endpoint of one service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    pub port: u16,
}

/// A service port with the endpoints each kind of its traffic goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTargets {
    pub port: ServicePort,
    /// Traffic that may go anywhere in the cluster: the ready endpoints, or
    /// when none is ready the serving terminating ones (upstream's fallback,
    /// so connections drain rather than fail during a rolling update).
    pub cluster: Vec<Endpoint>,
    /// Endpoints on this node, chosen the same way, for the Local policies.
    pub local: Vec<Endpoint>,
}

impl ServiceTargets {
    /// Every endpoint some traffic goes to (each has a chain of its own).
    pub fn all_endpoints(&self) -> Vec<Endpoint> {
        let mut all: Vec<Endpoint> = self.cluster.iter().chain(&self.local).cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Joins a service port with its slices' endpoints; `node_name` is this
/// node, for the Local policies.
pub fn targets<'a>(
    port: &ServicePort,
    slices: impl IntoIterator<Item = &'a SliceInfo>,
    node_name: &str,
) -> ServiceTargets {
    let mut candidates: Vec<(Endpoint, &SliceEndpoint)> = Vec::new();
    for slice in slices {
        let Some(&(_, _, number)) = slice
            .ports
            .iter()
            .find(|(name, protocol, _)| *name == port.port_name && *protocol == port.protocol)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let target = Endpoint {
                address: endpoint.address,
                port: number,
            };
            // The same address may appear in two slices while it moves
            // between them; the first wins.
            if !candidates.iter().any(|(known, _)| *known == target) {
                candidates.push((target, endpoint));
            }
        }
    }
    let choose = |only_local: bool| {
        let eligible = || {
            candidates.iter().filter(move |(_, endpoint)| {
                !only_local || endpoint.node_name.as_deref() == Some(node_name)
            })
        };
        let mut chosen: Vec<Endpoint> = eligible()
            .filter(|(_, endpoint)| endpoint.ready)
            .map(|(target, _)| target.clone())
            .collect();
        if chosen.is_empty() {
            chosen = eligible()
                .filter(|(_, endpoint)| endpoint.serving && endpoint.terminating)
                .map(|(target, _)| target.clone())
                .collect();
        }
        chosen.sort();
        chosen
    };
    let needs_local = port.internal_local || (port.external_local && port.has_external());
    ServiceTargets {
        port: port.clone(),
        cluster: choose(false),
        local: if needs_local {
            choose(true)
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn slice(value: serde_json::Value) -> SliceInfo {
        SliceInfo::of_slice(&serde_json::from_value(value).unwrap())
    }

    #[test]
    fn a_cluster_ip_service_has_one_entry_per_port_and_protocol() {
        let ports = service_ports(&service(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "sctp", "port": 9, "protocol": "SCTP"}
            ]}
        })));
        assert_eq!(ports.len(), 2, "SCTP is not forwarded");
        assert_eq!(ports[0].id(), "default/web/tcp/http");
        assert_eq!(ports[0].cluster_ips, vec![Ipv4Addr::new(10, 43, 0, 5)]);
        assert_eq!(ports[1].protocol, Protocol::Udp);
        assert_eq!(ports[1].node_port, None);
        assert!(!ports[0].has_external());
    }

    #[test]
    fn node_ports_external_and_balancer_addresses_and_policies_are_read() {
        let ports = service_ports(&service(json!({
            "metadata": {"namespace": "shop", "name": "front"},
            "spec": {
                "type": "LoadBalancer", "clusterIP": "10.43.1.1",
                "externalIPs": ["192.0.2.7"],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                "ports": [{"port": 443, "nodePort": 30443}]
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.2"}, {"hostname": "x.example"}]}}
        })));
        let port = &ports[0];
        assert_eq!(port.id(), "shop/front/tcp/443");
        assert_eq!(port.node_port, Some(30443));
        assert_eq!(
            port.external_ips,
            vec![Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(198, 51, 100, 2)]
        );
        assert_eq!(port.affinity_seconds, Some(30));
        assert!(port.internal_local && port.external_local);
    }

    #[test]
    fn a_node_port_is_ignored_on_a_cluster_ip_service_and_affinity_defaults() {
        let ports = service_ports(&service(json!({
            "metadata": {"namespace": "a", "name": "b"},
            "spec": {"clusterIP": "None", "sessionAffinity": "ClientIP",
                     "ports": [{"port": 80, "nodePort": 30080}]}
        })));
        assert!(ports[0].cluster_ips.is_empty(), "headless");
        assert_eq!(ports[0].node_port, None);
        assert_eq!(ports[0].affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
        let external_name = service(json!({
            "metadata": {"namespace": "a", "name": "c"},
            "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}
        }));
        assert!(service_ports(&external_name).is_empty());
    }

    fn web_port() -> ServicePort {
        service_ports(&service(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.43.0.5", "type": "NodePort", "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        })))
        .remove(0)
    }

    #[test]
    fn only_ready_endpoints_are_targets_and_local_ones_are_this_nodes() {
        let slices = [slice(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "other", "port": 9}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.42.1.5"], "nodeName": "n2"},
                {"addresses": ["10.42.1.6"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["10.42.0.7"], "nodeName": "n1",
                 "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }))];
        let targets = targets(&web_port(), &slices, "n1");
        let endpoint = |address: [u8; 4]| Endpoint {
            address: address.into(),
            port: 8080,
        };
        assert_eq!(
            targets.cluster,
            vec![endpoint([10, 42, 0, 5]), endpoint([10, 42, 1, 5])]
        );
        assert_eq!(targets.local, vec![endpoint([10, 42, 0, 5])]);
    }

    #[test]
    fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
        let slices = [
            slice(json!({
                "metadata": {"namespace": "default", "name": "web-1"},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"addresses": ["10.42.0.7"], "nodeName": "n1",
                     "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["10.42.0.8"], "nodeName": "n1",
                     "conditions": {"ready": false, "serving": false, "terminating": true}}
                ]
            })),
            // IPv6 slices carry nothing for the IPv4 table.
            slice(json!({
                "metadata": {"namespace": "default", "name": "web-2"},
                "addressType": "IPv6",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["fd00::1"]}]
            })),
        ];
        let targets = targets(&web_port(), &slices, "n2");
        assert_eq!(
            targets.cluster,
            vec![Endpoint {
                address: [10, 42, 0, 7].into(),
                port: 8080
            }]
        );
        assert!(targets.local.is_empty());
    }

    #[test]
    fn a_slice_without_the_ports_name_gives_nothing() {
        let slices = [slice(json!({
            "metadata": {"namespace": "default", "name": "web-1"},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9100}],
            "endpoints": [{"addresses": ["10.42.0.7"]}]
        }))];
        assert!(targets(&web_port(), &slices, "n1").cluster.is_empty());
    }
}
