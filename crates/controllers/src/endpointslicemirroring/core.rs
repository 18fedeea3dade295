//! The EndpointSlice mirroring controller's decisions, sans IO: whether a
//! user's Endpoints are mirrored (its Service exists and has no selector,
//! and it is not marked `skip-mirror`), and the endpoints and slice
//! metadata that mirror it. The slices themselves are planned by the
//! EndpointSlice controller's `plan`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use crate::cluster::SERVICE_NAME_LABEL;
use crate::endpoint::core::{TRIGGER_TIME, selector_of};
use crate::endpointslice::core::{Group, MANAGED_BY, SliceMeta, ports_key, sorted_ports};
use crate::endpointslice::generate_name;
use crate::ownership::controller_reference;

/// This controller's value of `endpointslice.kubernetes.io/managed-by`.
pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// The label that keeps an Endpoints object from being mirrored.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The annotation `kubectl apply` keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The most addresses mirrored from one Endpoints object (upstream's
/// `maxEndpointsPerSubset`... applied to the whole object here).
pub const MAX_MIRRORED: usize = 1000;

/// Whether `endpoints` is mirrored into slices.
pub fn should_mirror(endpoints: &Endpoints, service: Option<&Service>) -> bool {
    let skip = endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SKIP_MIRROR))
        .is_some_and(|value| value == "true");
    let selectorless = service.is_some_and(|service| selector_of(service).is_none());
    selectorless && !skip && endpoints.metadata.deletion_timestamp.is_none()
}

fn address_endpoint(address: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        hostname: address.hostname.clone().filter(|name| !name.is_empty()),
        node_name: address.node_name.clone().filter(|name| !name.is_empty()),
        target_ref: address.target_ref.clone(),
        ..Endpoint::default()
    }
}

/// The Endpoints' addresses as slice endpoints, grouped by their subsets'
/// ports (subsets with the same ports share slices). Only IPv4 addresses
/// are mirrored (the cluster is IPv4), at most `MAX_MIRRORED` of them.
pub fn groups(endpoints: &Endpoints) -> Vec<Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut mirrored = 0;
    for subset in endpoints.subsets.iter().flatten() {
        let ports = sorted_ports(
            subset
                .ports
                .iter()
                .flatten()
                .map(|port| EndpointPort {
                    name: Some(port.name.clone().unwrap_or_default()),
                    port: Some(port.port),
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                })
                .collect(),
        );
        let group = groups.entry(ports_key(&ports)).or_insert_with(|| Group {
            ports,
            endpoints: Vec::new(),
        });
        for (address, ready) in crate::endpoint::core::addresses_of(subset) {
            if address.ip.parse::<std::net::Ipv4Addr>().is_err() || mirrored >= MAX_MIRRORED {
                continue;
            }
            mirrored += 1;
            group.endpoints.push(address_endpoint(address, ready));
        }
    }
    groups
        .into_values()
        .filter(|group| !group.endpoints.is_empty())
        .collect()
}

/// What the mirrored slices carry: the Endpoints' labels and annotations
/// (less `kubectl apply`'s and the trigger time), the Service's name, this
/// manager, and an owner reference to the Endpoints.
pub fn slice_meta(endpoints: &Endpoints, max_endpoints: usize) -> SliceMeta {
    let name = endpoints.metadata.name.clone().unwrap_or_default();
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_string(), name.clone());
    labels.insert(MANAGED_BY.to_string(), CONTROLLER_NAME.to_string());
    let annotations = endpoints
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key != TRIGGER_TIME && key != LAST_APPLIED)
        .collect();
    SliceMeta {
        namespace: endpoints.metadata.namespace.clone().unwrap_or_default(),
        generate_name: generate_name(&name),
        labels,
        annotations,
        owner: controller_reference(endpoints),
        address_type: "IPv4".to_string(),
        trigger_time: None,
        max_endpoints,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EndpointPort as CorePort, EndpointSubset, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn user_endpoints(labels: &[(&str, &str)]) -> Endpoints {
        let address = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..EndpointAddress::default()
        };
        let port = |number| CorePort {
            name: Some("db".into()),
            port: number,
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        Endpoints {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                uid: Some("uid-ep".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect(),
                ),
                annotations: Some([(LAST_APPLIED.to_string(), "{}".to_string())].into()),
                ..ObjectMeta::default()
            },
            subsets: Some(vec![
                EndpointSubset {
                    addresses: Some(vec![address("192.0.2.1"), address("fd00::1")]),
                    not_ready_addresses: Some(vec![address("192.0.2.2")]),
                    ports: Some(vec![port(5432)]),
                },
                EndpointSubset {
                    addresses: Some(vec![address("192.0.2.3")]),
                    ports: Some(vec![port(5432)]),
                    ..EndpointSubset::default()
                },
                EndpointSubset {
                    addresses: Some(vec![address("192.0.2.9")]),
                    ports: Some(vec![port(6432)]),
                    ..EndpointSubset::default()
                },
            ]),
        }
    }

    fn service(selector: Option<&[(&str, &str)]>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                selector: selector.map(|pairs| {
                    pairs
                        .iter()
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect()
                }),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn only_selectorless_services_unskipped_endpoints_are_mirrored() {
        let endpoints = user_endpoints(&[]);
        assert!(should_mirror(&endpoints, Some(&service(None))));
        assert!(!should_mirror(&endpoints, None));
        assert!(!should_mirror(
            &endpoints,
            Some(&service(Some(&[("app", "db")])))
        ));
        let skipped = user_endpoints(&[(SKIP_MIRROR, "true")]);
        assert!(!should_mirror(&skipped, Some(&service(None))));
    }

    #[test]
    fn subsets_with_the_same_ports_share_a_group_with_readiness_kept() {
        let groups = groups(&user_endpoints(&[]));
        assert_eq!(groups.len(), 2);
        let first = &groups[0];
        assert_eq!(first.ports[0].port, Some(5432));
        let seen: Vec<(&str, bool)> = first
            .endpoints
            .iter()
            .map(|endpoint| {
                (
                    endpoint.addresses[0].as_str(),
                    endpoint.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect();
        // The IPv6 address is not mirrored.
        assert_eq!(
            seen,
            [
                ("192.0.2.1", true),
                ("192.0.2.2", false),
                ("192.0.2.3", true)
            ]
        );
        assert_eq!(groups[1].endpoints[0].addresses, ["192.0.2.9"]);
    }

    #[test]
    fn mirrored_slices_name_the_service_and_the_mirroring_controller() {
        let meta = slice_meta(&user_endpoints(&[("team", "data")]), 100);
        assert_eq!(
            meta.labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("db")
        );
        assert_eq!(
            meta.labels.get(MANAGED_BY).map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        assert_eq!(meta.labels.get("team").map(String::as_str), Some("data"));
        assert!(meta.annotations.is_empty());
        assert_eq!(meta.owner.kind, "Endpoints");
        assert_eq!(meta.generate_name, "db-");
    }
}
