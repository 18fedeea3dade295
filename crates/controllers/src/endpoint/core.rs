//! The Endpoints controller's decisions, sans IO: which of a Service's pods
//! are listed, on which ports, ready or not, and how the subsets are packed
//! (upstream's `syncService`, `podToEndpointAddressForService`, `FindPort`
//! and `RepackSubsets`). The rules about pods and ports are shared with the
//! EndpointSlice controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::pods;

/// The annotation with the time of the last change that caused a write.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The annotation that says addresses were left out (upstream's).
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The label on a headless Service's Endpoints and slices.
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// The most addresses one Endpoints object lists (upstream's
/// `maxCapacity`); past it the rest are left out and it says so.
pub const MAX_ADDRESSES: usize = 1000;

/// The Service's selector, when it has a non-empty one (a Service without
/// one has user-made Endpoints, which the controllers leave alone; an empty
/// map is stored as no selector upstream, so it counts as none here too).
pub fn selector_of(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|selector| !selector.is_empty())
}

pub fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        == Some("None")
}

pub fn is_external_name(service: &Service) -> bool {
    service.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("ExternalName")
}

pub fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.publish_not_ready_addresses)
        .unwrap_or(false)
}

pub fn service_ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default()
}

/// Whether the selector (a map, all of whose pairs must be on the pod)
/// selects `pod`.
pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value))
}

/// The pod's (IPv4) address, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .or_else(|| {
            status
                .pod_ips
                .iter()
                .flatten()
                .map(|ip| ip.ip.as_str())
                .find(|ip| !ip.is_empty())
        })
}

/// Whether a pod belongs in a Service's endpoints at all (upstream's
/// `ShouldPodBeInEndpoints`): not finished, with an address, and, unless
/// `include_terminating`, not being deleted.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if matches!(pods::phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    if pod_ip(pod).is_none() {
        return false;
    }
    include_terminating || !pods::is_terminating(pod)
}

/// Whether the pod's DNS hostname goes into the record: it names one and
/// its subdomain is the Service (the headless records of a StatefulSet).
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname
        .as_deref()
        .is_some_and(|name| !name.is_empty())
        && spec.subdomain.is_some()
        && spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace
}

/// The pod as a Service's endpoint's `targetRef`.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".to_string()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

fn protocol_of(protocol: Option<&str>) -> &str {
    protocol.unwrap_or("TCP")
}

/// The pod's port a Service port sends to (upstream's `FindPort`): the
/// number itself, or the container port (of a container or a sidecar init
/// container) with that name and the same protocol. `None` when the pod
/// defines no such name: the pod is left out of that port.
pub fn find_port(pod: &Pod, service_port: &ServicePort) -> Option<i32> {
    match &service_port.target_port {
        None => Some(service_port.port),
        Some(IntOrString::Int(number)) if *number == 0 => Some(service_port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => {
            let protocol = protocol_of(service_port.protocol.as_deref());
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|container| container.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|container| container.ports.iter().flatten())
                .find(|port| {
                    port.name.as_deref() == Some(name.as_str())
                        && protocol_of(port.protocol.as_deref()) == protocol
                })
                .map(|port| port.container_port)
        }
    }
}

/// The latest change among the Service and its pods, the time written in
/// `endpoints.kubernetes.io/last-change-trigger-time`: the Service's
/// creation, and each pod's creation, last Ready transition or deletion.
pub fn trigger_time(service: &Service, pods: &[&Pod]) -> Option<Timestamp> {
    let mut latest = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for pod in pods {
        let ready_transition = pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
            .and_then(|condition| condition.last_transition_time.as_ref());
        let times = [
            pod.metadata.creation_timestamp.as_ref(),
            ready_transition,
            pod.metadata.deletion_timestamp.as_ref(),
        ];
        for time in times.into_iter().flatten() {
            if latest.is_none_or(|latest| time.0 > latest) {
                latest = Some(time.0);
            }
        }
    }
    latest
}

/// The labels a Service's Endpoints (and slices) carry: the Service's own,
/// and `service.kubernetes.io/headless` when it is headless.
pub fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if is_headless(service) {
        labels.insert(HEADLESS.to_string(), String::new());
    } else {
        labels.remove(HEADLESS);
    }
    labels
}

/// What a Service's Endpoints should hold.
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub subsets: Vec<EndpointSubset>,
    pub labels: BTreeMap<String, String>,
    /// More than `MAX_ADDRESSES` addresses: some were left out.
    pub truncated: bool,
    pub trigger_time: Option<Timestamp>,
}

/// The Endpoints a Service with a selector should have, from the pods of
/// its namespace.
pub fn desired(
    service: &Service,
    selector: &BTreeMap<String, String>,
    pods: &[Arc<Pod>],
) -> Desired {
    let publish_not_ready = publishes_not_ready(service);
    let ports = service_ports(service);
    let mut selected: Vec<&Pod> = pods
        .iter()
        .map(Arc::as_ref)
        .filter(|pod| selects(selector, pod))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut subsets = Vec::new();
    let mut listed = Vec::new();
    for pod in selected {
        if !should_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        listed.push(pod);
        let Some(ip) = pod_ip(pod) else { continue };
        let address = EndpointAddress {
            ip: ip.to_string(),
            hostname: should_set_hostname(pod, service)
                .then(|| pod.spec.as_ref().and_then(|spec| spec.hostname.clone()))
                .flatten(),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .filter(|name| !name.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let ready = publish_not_ready || pods::is_ready(pod);
        let subset = |ports: Option<Vec<EndpointPort>>| {
            if ready {
                EndpointSubset {
                    addresses: Some(vec![address.clone()]),
                    ports,
                    ..EndpointSubset::default()
                }
            } else {
                EndpointSubset {
                    not_ready_addresses: Some(vec![address.clone()]),
                    ports,
                    ..EndpointSubset::default()
                }
            }
        };
        if ports.is_empty() {
            // A headless Service without ports still lists its pods (DNS
            // needs them); any other Service without ports lists nothing.
            if is_headless(service) {
                subsets.push(subset(None));
            }
            continue;
        }
        for service_port in ports {
            let Some(number) = find_port(pod, service_port) else {
                continue;
            };
            subsets.push(subset(Some(vec![EndpointPort {
                name: service_port.name.clone(),
                port: number,
                protocol: Some(protocol_of(service_port.protocol.as_deref()).to_string()),
                app_protocol: service_port.app_protocol.clone(),
            }])));
        }
    }
    let (subsets, truncated) = truncate(repack(subsets));
    Desired {
        subsets,
        labels: endpoints_labels(service),
        truncated,
        trigger_time: trigger_time(service, &listed),
    }
}

/// An address's identity when packing: its IP and the object it is.
type AddressKey = (String, Option<String>);

/// A subset's addresses, each with whether it is ready.
pub fn addresses_of(subset: &EndpointSubset) -> impl Iterator<Item = (&EndpointAddress, bool)> {
    let ready = subset
        .addresses
        .iter()
        .flatten()
        .map(|address| (address, true));
    let not_ready = subset
        .not_ready_addresses
        .iter()
        .flatten()
        .map(|address| (address, false));
    ready.chain(not_ready)
}

fn address_key(address: &EndpointAddress) -> AddressKey {
    (
        address.ip.clone(),
        address.target_ref.as_ref().and_then(|r| r.uid.clone()),
    )
}

/// A port as a sortable key (the absent port of a port-less headless
/// subset is `None`).
type PortKey = Option<(Option<String>, i32, Option<String>, Option<String>)>;

fn port_key(port: &EndpointPort) -> PortKey {
    Some((
        port.name.clone(),
        port.port,
        port.protocol.clone(),
        port.app_protocol.clone(),
    ))
}

/// Packs subsets as upstream's `RepackSubsets`: every port maps to the set
/// of addresses behind it (an address not ready on a port in any subset is
/// not ready there); ports with the same addresses share a subset.
/// Addresses are ordered by IP, ports by name and number, subsets by their
/// first address, so the same inputs give the same object.
pub fn repack(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    let mut ports: BTreeMap<PortKey, EndpointPort> = BTreeMap::new();
    // Port → address → ready.
    let mut readiness: BTreeMap<PortKey, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for subset in subsets {
        let port_keys: Vec<PortKey> = match subset.ports.as_deref() {
            None | Some([]) => vec![None],
            Some(list) => list
                .iter()
                .map(|port| {
                    let key = port_key(port);
                    ports.entry(key.clone()).or_insert_with(|| port.clone());
                    key
                })
                .collect(),
        };
        for (address, ready) in addresses_of(&subset) {
            let key = address_key(address);
            addresses
                .entry(key.clone())
                .or_insert_with(|| address.clone());
            for port in &port_keys {
                let entry = readiness
                    .entry(port.clone())
                    .or_default()
                    .entry(key.clone())
                    .or_insert(ready);
                // Not ready on a port anywhere trumps ready.
                *entry = *entry && ready;
            }
        }
    }
    // Address sets → the ports behind exactly that set.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, set) in readiness {
        groups
            .entry(set.into_iter().collect())
            .or_default()
            .push(port);
    }
    let mut packed: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, port_keys)| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for (key, is_ready) in set {
                let address = addresses[&key].clone();
                if is_ready {
                    ready.push(address);
                } else {
                    not_ready.push(address);
                }
            }
            let mut subset_ports: Vec<EndpointPort> = port_keys
                .iter()
                .filter_map(|key| ports.get(key).cloned())
                .collect();
            subset_ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!subset_ports.is_empty()).then_some(subset_ports),
            }
        })
        .collect();
    packed.sort_by_key(first_address);
    packed
}

fn first_address(subset: &EndpointSubset) -> Option<(String, String)> {
    let address = subset
        .addresses
        .iter()
        .flatten()
        .chain(subset.not_ready_addresses.iter().flatten())
        .next()?;
    let port = subset
        .ports
        .iter()
        .flatten()
        .next()
        .map(|port| format!("{:?}/{}", port.name, port.port))
        .unwrap_or_default();
    Some((address.ip.clone(), port))
}

/// Keeps at most `MAX_ADDRESSES` addresses, ready ones first, spread over
/// the subsets in proportion as upstream's `truncateEndpoints` does (here:
/// each subset keeps its share, in order). Returns whether any were cut.
fn truncate(mut subsets: Vec<EndpointSubset>) -> (Vec<EndpointSubset>, bool) {
    let count = |subset: &EndpointSubset| {
        subset.addresses.as_ref().map_or(0, Vec::len)
            + subset.not_ready_addresses.as_ref().map_or(0, Vec::len)
    };
    let total: usize = subsets.iter().map(count).sum();
    if total <= MAX_ADDRESSES {
        return (subsets, false);
    }
    for subset in &mut subsets {
        let keep = count(subset) * MAX_ADDRESSES / total;
        let ready = subset.addresses.get_or_insert_default();
        if ready.len() >= keep {
            ready.truncate(keep);
            subset.not_ready_addresses = None;
        } else {
            let room = keep - ready.len();
            if let Some(not_ready) = subset.not_ready_addresses.as_mut() {
                not_ready.truncate(room);
            }
        }
        if subset.addresses.as_ref().is_some_and(Vec::is_empty) {
            subset.addresses = None;
        }
    }
    (subsets, true)
}

/// What to write for a Service's Endpoints.
#[derive(Debug, PartialEq)]
pub enum Action {
    Nothing,
    Create(Endpoints),
    /// Replace the Endpoints read (same name and resource version).
    Update(Endpoints),
}

/// The write that makes `current` (the Endpoints read, if any) hold
/// `desired` for `service`. Only the subsets, labels and capacity mark are
/// compared: a new trigger time alone is no reason to write.
pub fn plan(service: &Service, current: Option<&Endpoints>, desired: Desired) -> Action {
    let subsets_now = current
        .and_then(|endpoints| endpoints.subsets.clone())
        .unwrap_or_default();
    let labels_now = current
        .and_then(|endpoints| endpoints.metadata.labels.clone())
        .unwrap_or_default();
    let truncated_now = current
        .and_then(|endpoints| endpoints.metadata.annotations.as_ref())
        .is_some_and(|annotations| annotations.contains_key(OVER_CAPACITY));
    if current.is_some()
        && subsets_now == desired.subsets
        && labels_now == desired.labels
        && truncated_now == desired.truncated
    {
        return Action::Nothing;
    }
    let mut endpoints = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            ..Default::default()
        },
        ..Endpoints::default()
    });
    let annotations = endpoints.metadata.annotations.get_or_insert_default();
    match desired.trigger_time {
        Some(time) => {
            annotations.insert(TRIGGER_TIME.to_string(), rfc3339(time));
        }
        None => {
            annotations.remove(TRIGGER_TIME);
        }
    }
    if desired.truncated {
        annotations.insert(OVER_CAPACITY.to_string(), "truncated".to_string());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    if annotations.is_empty() {
        endpoints.metadata.annotations = None;
    }
    endpoints.metadata.labels = (!desired.labels.is_empty()).then_some(desired.labels);
    endpoints.subsets = (!desired.subsets.is_empty()).then_some(desired.subsets);
    if current.is_some() {
        Action::Update(endpoints)
    } else {
        Action::Create(endpoints)
    }
}

/// A time as upstream writes the trigger time (RFC 3339, UTC, with the
/// fraction of a second when there is one).
pub fn rfc3339(time: Timestamp) -> String {
    time.to_string()
}

/// The keys of Services (in the pod's namespace) whose selectors pick the
/// pod, among `services`.
pub fn services_selecting<'a>(
    services: impl IntoIterator<Item = &'a Arc<Service>>,
    pod: &Pod,
) -> BTreeSet<String> {
    services
        .into_iter()
        .filter(|service| selector_of(service).is_some_and(|selector| selects(selector, pod)))
        .map(|service| crate::runtime::key_of(service.as_ref()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::pods::testing::{self, on_node, ready, running, terminating};

    pub(crate) fn service(
        name: &str,
        selector: &[(&str, &str)],
        ports: Vec<ServicePort>,
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    testing::at(0),
                )),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect(),
                ),
                ports: Some(ports),
                cluster_ip: Some("10.43.0.20".into()),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    pub(crate) fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.to_string()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..ServicePort::default()
        }
    }

    /// A pod labelled `app=web` with `ip`, on node n1, and optionally a
    /// container port named `http` at `named_port`.
    pub(crate) fn web_pod(name: &str, ip: &str, named_port: Option<i32>) -> Pod {
        let mut pod = on_node(testing::pod(name, &[("app", "web")], None, 1), "n1");
        pod.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "main".into(),
                ports: named_port.map(|number| {
                    vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: number,
                        ..ContainerPort::default()
                    }]
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            pod_ip: Some(ip.to_string()),
            ..PodStatus::default()
        });
        pod
    }

    fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addresses
            .iter()
            .flatten()
            .map(|address| address.ip.as_str())
            .collect()
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_are_listed_apart_and_others_left_out() {
        let service = service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::Int(8080))],
        );
        let mut no_ip = web_pod("no-ip", "", None);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let other_app = {
            let mut pod = ready(web_pod("other", "10.42.0.9", None), 1);
            pod.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
            pod
        };
        let pods = arcs(vec![
            ready(web_pod("a", "10.42.0.2", None), 5),
            running(web_pod("b", "10.42.0.3", None)),
            terminating(ready(web_pod("c", "10.42.0.4", None), 1)),
            testing::with_phase(ready(web_pod("d", "10.42.0.5", None), 1), "Succeeded"),
            no_ip,
            other_app,
        ]);
        let desired = desired(&service, selector_of(&service).unwrap(), &pods);
        assert_eq!(desired.subsets.len(), 1, "{:?}", desired.subsets);
        let subset = &desired.subsets[0];
        assert_eq!(ips(&subset.addresses), ["10.42.0.2"]);
        assert_eq!(ips(&subset.not_ready_addresses), ["10.42.0.3"]);
        assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);
        let address = &subset.addresses.as_ref().unwrap()[0];
        assert_eq!(address.node_name.as_deref(), Some("n1"));
        let target = address.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                target.kind.as_deref(),
                target.name.as_deref(),
                target.uid.as_deref()
            ),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
        assert_eq!(desired.trigger_time, Some(testing::at(5)));
        assert!(!desired.truncated);
    }

    #[test]
    fn publish_not_ready_lists_every_pod_as_ready_terminating_ones_too() {
        let mut service = service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::Int(80))],
        );
        service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let pods = arcs(vec![
            running(web_pod("a", "10.42.0.2", None)),
            terminating(running(web_pod("b", "10.42.0.3", None))),
        ]);
        let desired = desired(&service, selector_of(&service).unwrap(), &pods);
        assert_eq!(
            ips(&desired.subsets[0].addresses),
            ["10.42.0.2", "10.42.0.3"]
        );
        assert_eq!(desired.subsets[0].not_ready_addresses, None);
    }

    #[test]
    fn a_named_target_port_resolves_per_pod_and_leaves_out_pods_without_it() {
        let service = service(
            "web",
            &[("app", "web")],
            vec![
                port("http", 80, IntOrString::String("http".into())),
                port("metrics", 9100, IntOrString::Int(9100)),
            ],
        );
        let pods = arcs(vec![
            ready(web_pod("a", "10.42.0.2", Some(8080)), 1),
            ready(web_pod("b", "10.42.0.3", Some(8081)), 1),
            ready(web_pod("c", "10.42.0.4", None), 1),
        ]);
        let desired = desired(&service, selector_of(&service).unwrap(), &pods);
        type Row<'a> = (Vec<&'a str>, Vec<(String, i32)>);
        let mut seen: Vec<Row<'_>> = desired
            .subsets
            .iter()
            .map(|subset| {
                (
                    ips(&subset.addresses),
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .map(|port| (port.name.clone().unwrap_or_default(), port.port))
                        .collect(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (vec!["10.42.0.2"], vec![("http".to_string(), 8080)]),
                (
                    vec!["10.42.0.2", "10.42.0.3", "10.42.0.4"],
                    vec![("metrics".to_string(), 9100)]
                ),
                (vec!["10.42.0.3"], vec![("http".to_string(), 8081)]),
            ]
        );
    }

    #[test]
    fn a_named_port_must_match_the_protocol() {
        let mut udp = port("dns", 53, IntOrString::String("http".into()));
        udp.protocol = Some("UDP".into());
        let pod = web_pod("a", "10.42.0.2", Some(8080));
        assert_eq!(find_port(&pod, &udp), None);
        assert_eq!(
            find_port(&pod, &port("x", 80, IntOrString::String("http".into()))),
            Some(8080)
        );
    }

    #[test]
    fn repacking_groups_ports_with_the_same_addresses_and_not_ready_wins() {
        let address = |ip: &str| EndpointAddress {
            ip: ip.to_string(),
            ..EndpointAddress::default()
        };
        let endpoint_port = |name: &str, number: i32| EndpointPort {
            name: Some(name.to_string()),
            port: number,
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        let packed = repack(vec![
            EndpointSubset {
                addresses: Some(vec![address("10.0.0.2")]),
                ports: Some(vec![endpoint_port("a", 1)]),
                ..EndpointSubset::default()
            },
            EndpointSubset {
                addresses: Some(vec![address("10.0.0.2")]),
                ports: Some(vec![endpoint_port("b", 2)]),
                ..EndpointSubset::default()
            },
            EndpointSubset {
                addresses: Some(vec![address("10.0.0.3")]),
                not_ready_addresses: Some(vec![address("10.0.0.2")]),
                ports: Some(vec![endpoint_port("c", 3)]),
            },
            EndpointSubset {
                addresses: Some(vec![address("10.0.0.3")]),
                ports: Some(vec![endpoint_port("c", 3)]),
                ..EndpointSubset::default()
            },
        ]);
        assert_eq!(packed.len(), 2, "{packed:?}");
        assert_eq!(ips(&packed[0].addresses), ["10.0.0.2"]);
        assert_eq!(packed[0].ports.as_ref().unwrap().len(), 2);
        assert_eq!(ips(&packed[1].addresses), ["10.0.0.3"]);
        assert_eq!(ips(&packed[1].not_ready_addresses), ["10.0.0.2"]);
    }

    #[test]
    fn headless_services_get_hostnames_and_port_less_subsets() {
        let mut service = service("db", &[("app", "web")], vec![]);
        service.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut named = ready(web_pod("db-0", "10.42.0.2", None), 1);
        let spec = named.spec.as_mut().unwrap();
        spec.hostname = Some("db-0".into());
        spec.subdomain = Some("db".into());
        let mut elsewhere = ready(web_pod("x", "10.42.0.3", None), 1);
        let spec = elsewhere.spec.as_mut().unwrap();
        spec.hostname = Some("x".into());
        spec.subdomain = Some("other".into());
        let desired = desired(
            &service,
            selector_of(&service).unwrap(),
            &arcs(vec![named, elsewhere]),
        );
        assert_eq!(desired.labels.get(HEADLESS).map(String::as_str), Some(""));
        assert_eq!(desired.subsets.len(), 1);
        assert_eq!(desired.subsets[0].ports, None);
        let addresses = desired.subsets[0].addresses.as_ref().unwrap();
        assert_eq!(addresses[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(addresses[1].hostname, None);
    }

    #[test]
    fn a_write_happens_only_when_subsets_or_labels_change() {
        let service = service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::Int(80))],
        );
        let pods = arcs(vec![ready(web_pod("a", "10.42.0.2", None), 1)]);
        let first = plan(
            &service,
            None,
            desired(&service, selector_of(&service).unwrap(), &pods),
        );
        let Action::Create(created) = first else {
            panic!("expected a create, got {first:?}");
        };
        assert_eq!(created.metadata.name.as_deref(), Some("web"));
        assert!(
            created
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(TRIGGER_TIME)
        );
        let again = plan(
            &service,
            Some(&created),
            desired(&service, selector_of(&service).unwrap(), &pods),
        );
        assert_eq!(again, Action::Nothing);
        let fewer = plan(
            &service,
            Some(&created),
            desired(&service, selector_of(&service).unwrap(), &[]),
        );
        let Action::Update(updated) = fewer else {
            panic!("expected an update, got {fewer:?}");
        };
        assert_eq!(updated.subsets, None);
    }

    #[test]
    fn more_than_a_thousand_addresses_are_cut_and_marked() {
        let service = service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::Int(80))],
        );
        let pods: Vec<Arc<Pod>> = (0..1200)
            .map(|index| {
                Arc::new(ready(
                    web_pod(
                        &format!("p{index}"),
                        &format!("10.42.{}.{}", index / 250, index % 250 + 1),
                        None,
                    ),
                    1,
                ))
            })
            .collect();
        let desired = desired(&service, selector_of(&service).unwrap(), &pods);
        assert!(desired.truncated);
        let total: usize = desired
            .subsets
            .iter()
            .map(|subset| subset.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(total, MAX_ADDRESSES);
        let Action::Create(created) = plan(&service, None, desired) else {
            panic!("expected a create");
        };
        assert_eq!(
            created
                .metadata
                .annotations
                .unwrap()
                .get(OVER_CAPACITY)
                .map(String::as_str),
            Some("truncated")
        );
    }
}
