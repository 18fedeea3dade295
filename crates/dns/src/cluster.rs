//! The records of the Kubernetes DNS specification (schema 1.1.0), built
//! from Services, EndpointSlices and Namespaces: the forward zone under the
//! cluster domain and the PTR records of service and endpoint addresses.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::zone::{Zone, ZoneBuilder};

/// Every record's TTL, and the negative answers' (the specification's
/// suggested 5 s, CoreDNS's default).
pub const TTL_SECONDS: u32 = 5;

/// The specification version `dns-version.<zone>` answers with.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The label EndpointSlices name their Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A named port of an EndpointSlice: name, protocol, number.
type NamedPort = (String, String, u16);

/// What the cluster's records are built from.
#[derive(Default)]
pub struct ClusterState<'a> {
    pub services: Vec<&'a Service>,
    pub endpoint_slices: Vec<&'a EndpointSlice>,
    pub namespaces: Vec<&'a str>,
}

/// The built records: the forward zone and the PTR records (kept in a zone
/// at `in-addr.arpa.` / `ip6.arpa.`, one each).
pub struct ClusterZones {
    pub forward: Zone,
    pub reverse_v4: Zone,
    pub reverse_v6: Zone,
}

/// Builds the zones for `domain` (e.g. `cluster.local.`). `serial` is the
/// SOA's serial; it changes whenever the records do.
pub fn build(domain: &Name, state: &ClusterState<'_>, serial: u32) -> ClusterZones {
    let mut forward = ZoneBuilder::new(domain.clone(), serial, TTL_SECONDS);
    let mut reverse_v4 = ZoneBuilder::new(
        Name::from_ascii("in-addr.arpa.").expect("a valid name"),
        serial,
        TTL_SECONDS,
    );
    let mut reverse_v6 = ZoneBuilder::new(
        Name::from_ascii("ip6.arpa.").expect("a valid name"),
        serial,
        TTL_SECONDS,
    );
    let svc = child(domain, "svc").expect("svc is a valid label");
    forward.ensure_exists(&svc);
    if let Some(version) = child(domain, "dns-version") {
        forward.add(Record::from_rdata(
            version,
            TTL_SECONDS,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        ));
    }
    if let Some(server) = Name::from_ascii("ns.dns")
        .ok()
        .and_then(|name| name.append_domain(domain).ok())
    {
        forward.add(Record::from_rdata(
            domain.clone(),
            TTL_SECONDS,
            RData::NS(NS(server)),
        ));
    }
    for namespace in &state.namespaces {
        if let Some(name) = child(&svc, namespace) {
            forward.ensure_exists(&name);
        }
    }

    // A headless service's endpoints, by namespace and service name.
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in &state.endpoint_slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        slices_by_service
            .entry((namespace, service.as_str()))
            .or_default()
            .push(slice);
    }

    for service in &state.services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let Some(service_name) = service.metadata.name.as_deref() else {
            continue;
        };
        let Some(base) =
            child(&svc, namespace).and_then(|namespace_name| child(&namespace_name, service_name))
        else {
            // Not a valid DNS name (names are DNS labels in the API, so
            // only a broken object gets here): it has no records.
            continue;
        };
        let Some(spec) = &service.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec
                .external_name
                .as_deref()
                .and_then(|external| Name::from_ascii(external.trim_end_matches('.')).ok())
            {
                let mut target = target;
                target.set_fqdn(true);
                forward.add(Record::from_rdata(
                    base.clone(),
                    TTL_SECONDS,
                    RData::CNAME(CNAME(target)),
                ));
            } else {
                forward.ensure_exists(&base);
            }
            continue;
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            forward.ensure_exists(&base);
            let mut ips = cluster_ips;
            ips.dedup();
            for ip in &ips {
                forward.add(address_record(&base, *ip));
                add_ptr(&mut reverse_v4, &mut reverse_v6, *ip, &base);
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|name| !name.is_empty()) else {
                    continue;
                };
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let Some(srv_name) = srv_name(&base, port_name, protocol) else {
                    continue;
                };
                forward.add(Record::from_rdata(
                    srv_name.clone(),
                    TTL_SECONDS,
                    RData::SRV(SRV::new(0, 100, port.port as u16, base.clone())),
                ));
                for ip in &ips {
                    forward.add_additional(&srv_name, RecordType::SRV, address_record(&base, *ip));
                }
            }
            continue;
        }

        // Headless: the ready endpoints themselves.
        forward.ensure_exists(&base);
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        let slices = slices_by_service
            .get(&(namespace, service_name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut endpoints: Vec<(Name, IpAddr, Vec<NamedPort>)> = Vec::new();
        for slice in slices {
            let ports: Vec<NamedPort> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|port| {
                    let name = port.name.clone().filter(|name| !name.is_empty())?;
                    let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_string());
                    Some((name, protocol, u16::try_from(port.port?).ok()?))
                })
                .collect();
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    .unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                // One address per endpoint, as kube-proxy and CoreDNS use
                // it; the API allows more only in the same family.
                let Some(address) = endpoint
                    .addresses
                    .first()
                    .and_then(|address| address.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                let label = endpoint
                    .hostname
                    .clone()
                    .filter(|hostname| !hostname.is_empty())
                    .unwrap_or_else(|| dashed(address));
                let Some(endpoint_name) = child(&base, &label) else {
                    continue;
                };
                endpoints.push((endpoint_name, address, ports.clone()));
            }
        }
        // Weights split 100 between a port's endpoints, as CoreDNS does.
        let mut n_per_port: HashMap<(String, String), u16> = HashMap::new();
        for (_, _, ports) in &endpoints {
            for (name, protocol, _) in ports {
                *n_per_port
                    .entry((name.clone(), protocol.clone()))
                    .or_default() += 1;
            }
        }
        for (endpoint_name, address, ports) in &endpoints {
            forward.add(address_record(&base, *address));
            forward.add(address_record(endpoint_name, *address));
            add_ptr(&mut reverse_v4, &mut reverse_v6, *address, endpoint_name);
            for (port_name, protocol, port) in ports {
                let Some(srv_name) = srv_name(&base, port_name, protocol) else {
                    continue;
                };
                let n = n_per_port
                    .get(&(port_name.clone(), protocol.clone()))
                    .copied()
                    .unwrap_or(1)
                    .max(1);
                forward.add(Record::from_rdata(
                    srv_name.clone(),
                    TTL_SECONDS,
                    RData::SRV(SRV::new(0, (100 / n).max(1), *port, endpoint_name.clone())),
                ));
                forward.add_additional(
                    &srv_name,
                    RecordType::SRV,
                    address_record(endpoint_name, *address),
                );
            }
        }
    }
    ClusterZones {
        forward: forward.finish(),
        reverse_v4: reverse_v4.finish(),
        reverse_v6: reverse_v6.finish(),
    }
}

/// `label.parent`, or `None` when `label` is not one valid DNS label.
pub(crate) fn child(parent: &Name, label: &str) -> Option<Name> {
    if label.is_empty() || label.contains('.') {
        return None;
    }
    parent.prepend_label(label).ok()
}

/// `_port._protocol.base`: the SRV name of a named port.
fn srv_name(base: &Name, port: &str, protocol: &str) -> Option<Name> {
    let protocol = child(base, &format!("_{}", protocol.to_ascii_lowercase()))?;
    child(&protocol, &format!("_{}", port.to_ascii_lowercase()))
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    };
    Record::from_rdata(name.clone(), TTL_SECONDS, data)
}

fn add_ptr(reverse_v4: &mut ZoneBuilder, reverse_v6: &mut ZoneBuilder, ip: IpAddr, target: &Name) {
    let reverse = Name::from(ip);
    let record = Record::from_rdata(reverse, TTL_SECONDS, RData::PTR(PTR(target.clone())));
    match ip {
        IpAddr::V4(_) => reverse_v4.add(record),
        IpAddr::V6(_) => reverse_v6.add(record),
    }
}

/// An endpoint without a hostname is named by its address, dots (or
/// colons) as dashes: `10-42-0-5`.
fn dashed(address: IpAddr) -> String {
    address.to_string().replace(['.', ':'], "-")
}
