//! The EndpointSlice controller's decisions, sans IO: a Service's pods as
//! `discovery.k8s.io/v1` endpoints (upstream's `podToEndpoint`), grouped by
//! the ports they resolve to, and the slices to create, update and delete
//! so that the slices hold them (upstream's reconciler: keep what is in
//! place, fill slices being written anyway, then open new ones, at most
//! `MAX_ENDPOINTS_PER_SLICE` each). The mirroring controller plans with the
//! same `plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::cluster::SERVICE_NAME_LABEL;
use crate::endpoint::core::{
    self as endpoints, HEADLESS, TRIGGER_TIME, find_port, pod_ip, pod_reference,
    should_be_in_endpoints, should_set_hostname,
};
use crate::pods;

/// The label naming the controller that manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of `MANAGED_BY` (upstream's).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The node label with the node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Endpoints that share one list of ports (a slice holds one such list).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group {
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The pod as an endpoint of `service` (upstream's `podToEndpoint`):
/// `serving` is the pod's readiness, `terminating` its deletion, and
/// `ready` serving and not terminating (or always, with
/// `publishNotReadyAddresses`).
pub fn pod_endpoint(service: &Service, pod: &Pod, node: Option<&Node>) -> Option<Endpoint> {
    let ip = pod_ip(pod)?;
    let serving = pods::is_ready(pod);
    let terminating = pods::is_terminating(pod);
    let ready = endpoints::publishes_not_ready(service) || (serving && !terminating);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .filter(|name| !name.is_empty());
    Some(Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: should_set_hostname(pod, service)
            .then(|| pod.spec.as_ref().and_then(|spec| spec.hostname.clone()))
            .flatten(),
        node_name,
        target_ref: Some(pod_reference(pod)),
        zone: node
            .and_then(|node| node.metadata.labels.as_ref())
            .and_then(|labels| labels.get(ZONE_LABEL).cloned()),
        ..Endpoint::default()
    })
}

/// The pod's ports for `service` (those it resolves; upstream's
/// `getEndpointPorts`).
pub fn pod_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    endpoints::service_ports(service)
        .iter()
        .filter_map(|service_port| {
            let number = find_port(pod, service_port)?;
            Some(EndpointPort {
                name: Some(service_port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(
                    service_port
                        .protocol
                        .clone()
                        .unwrap_or_else(|| "TCP".into()),
                ),
                app_protocol: service_port.app_protocol.clone(),
            })
        })
        .collect()
}

/// A Service's desired endpoints, grouped by their ports. Terminating pods
/// are included (with their conditions), as upstream's slices do.
pub fn desired_groups(
    service: &Service,
    selector: &BTreeMap<String, String>,
    pods: &[Arc<Pod>],
    node: impl Fn(&str) -> Option<Arc<Node>>,
) -> Vec<Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        if !endpoints::selects(selector, pod) || !should_be_in_endpoints(pod, true) {
            continue;
        }
        let node_object = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            .and_then(&node);
        let Some(endpoint) = pod_endpoint(service, pod, node_object.as_deref()) else {
            continue;
        };
        let ports = sorted_ports(pod_ports(service, pod));
        groups
            .entry(ports_key(&ports))
            .or_insert_with(|| Group {
                ports,
                endpoints: Vec::new(),
            })
            .endpoints
            .push(endpoint);
    }
    groups.into_values().collect()
}

pub fn sorted_ports(mut ports: Vec<EndpointPort>) -> Vec<EndpointPort> {
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    ports
}

/// A port list's identity (sorted first), to match slices to groups.
pub fn ports_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .map(|port| {
            format!(
                "{}/{}/{}/{}",
                port.name.as_deref().unwrap_or(""),
                port.port.unwrap_or(0),
                port.protocol.as_deref().unwrap_or("TCP"),
                port.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.sort();
    parts.join(",")
}

/// An endpoint's identity across syncs: the object it is, else its address.
fn endpoint_key(endpoint: &Endpoint) -> String {
    match endpoint.target_ref.as_ref().and_then(|r| r.uid.as_deref()) {
        Some(uid) => format!("uid:{uid}"),
        None => format!("ip:{}", endpoint.addresses.join(",")),
    }
}

/// What every slice of one owner carries.
#[derive(Clone, Debug)]
pub struct SliceMeta {
    pub namespace: String,
    /// New slices' `generateName` (`<service>-`).
    pub generate_name: String,
    pub labels: BTreeMap<String, String>,
    /// Annotations other than the trigger time.
    pub annotations: BTreeMap<String, String>,
    pub owner: OwnerReference,
    pub address_type: String,
    pub trigger_time: Option<Timestamp>,
    pub max_endpoints: usize,
}

/// The labels of a Service's slices: its own labels but the reserved
/// ones, the Service's name, the manager, and the headless mark.
pub fn service_slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoints::endpoints_labels(service);
    labels.insert(
        SERVICE_NAME_LABEL.to_string(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY.to_string(), CONTROLLER_NAME.to_string());
    if !endpoints::is_headless(service) {
        labels.remove(HEADLESS);
    }
    labels
}

/// The writes that make a Service's (or mirrored Endpoints') slices hold
/// the desired groups.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    /// Slices to replace (each keeps its name and resource version).
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<Arc<EndpointSlice>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

fn meta_matches(slice: &EndpointSlice, meta: &SliceMeta) -> bool {
    let annotations: BTreeMap<String, String> = slice
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key != TRIGGER_TIME)
        .collect();
    slice.metadata.labels.clone().unwrap_or_default() == meta.labels
        && annotations == meta.annotations
        && slice.address_type == meta.address_type
}

fn stamp(slice: &mut EndpointSlice, meta: &SliceMeta) {
    slice.metadata.labels = Some(meta.labels.clone());
    let mut annotations = meta.annotations.clone();
    if let Some(time) = meta.trigger_time {
        annotations.insert(TRIGGER_TIME.to_string(), endpoints::rfc3339(time));
    }
    slice.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
}

fn new_slice(meta: &SliceMeta, ports: &[EndpointPort], endpoints: Vec<Endpoint>) -> EndpointSlice {
    let mut slice = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(meta.generate_name.clone()),
            namespace: Some(meta.namespace.clone()),
            owner_references: Some(vec![meta.owner.clone()]),
            ..ObjectMeta::default()
        },
        address_type: meta.address_type.clone(),
        endpoints,
        ports: (!ports.is_empty()).then(|| ports.to_vec()),
    };
    stamp(&mut slice, meta);
    slice
}

fn slice_ports(slice: &EndpointSlice) -> &[EndpointPort] {
    slice.ports.as_deref().unwrap_or_default()
}

/// Plans the writes that make `existing` (the owner's slices as read) hold
/// `groups`. Endpoints stay in the slice they are in; a slice is written
/// only when its endpoints or metadata change; new endpoints go first into
/// slices written anyway, then into the fullest slice that fits them all,
/// then into new slices. An owner with no endpoints keeps one empty slice
/// (upstream's placeholder), so that "no endpoints" is said, not implied.
pub fn plan(meta: &SliceMeta, groups: Vec<Group>, existing: &[Arc<EndpointSlice>]) -> Plan {
    let max = meta.max_endpoints.max(1);
    let mut plan = Plan::default();
    let total: usize = groups.iter().map(|group| group.endpoints.len()).sum();
    if total == 0 {
        return plan_placeholder(meta, existing);
    }
    let mut by_ports: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        by_ports
            .entry(ports_key(slice_ports(slice)))
            .or_default()
            .push(Arc::clone(slice));
    }
    let mut matched_keys = BTreeSet::new();
    for group in groups {
        let key = ports_key(&group.ports);
        matched_keys.insert(key.clone());
        let mut slices = by_ports.remove(&key).unwrap_or_default();
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        plan_group(meta, group, &slices, max, &mut plan);
    }
    // Slices whose ports no group has any more.
    for (_, slices) in by_ports {
        plan.delete.extend(slices);
    }
    plan
}

fn plan_group(
    meta: &SliceMeta,
    group: Group,
    slices: &[Arc<EndpointSlice>],
    max: usize,
    plan: &mut Plan,
) {
    let mut wanted: BTreeMap<String, Endpoint> = group
        .endpoints
        .into_iter()
        .map(|endpoint| (endpoint_key(&endpoint), endpoint))
        .collect();
    // Slices being written, and slices left as they are.
    let mut writing: Vec<EndpointSlice> = Vec::new();
    let mut unchanged: Vec<Arc<EndpointSlice>> = Vec::new();
    for slice in slices {
        let mut kept = Vec::new();
        for endpoint in &slice.endpoints {
            if let Some(desired) = wanted.remove(&endpoint_key(endpoint)) {
                kept.push(desired);
            }
        }
        if kept.is_empty() {
            plan.delete.push(Arc::clone(slice));
        } else if kept != slice.endpoints || !meta_matches(slice, meta) {
            let mut updated = (**slice).clone();
            updated.endpoints = kept;
            stamp(&mut updated, meta);
            writing.push(updated);
        } else {
            unchanged.push(Arc::clone(slice));
        }
    }
    let mut remaining: Vec<Endpoint> = wanted.into_values().collect();
    // Into slices written anyway.
    for slice in &mut writing {
        let room = max.saturating_sub(slice.endpoints.len());
        let take = room.min(remaining.len());
        slice.endpoints.extend(remaining.drain(..take));
    }
    // Into the fullest unchanged slice that takes all that is left (one
    // update instead of a create).
    if !remaining.is_empty() && remaining.len() < max {
        let fullest = unchanged
            .iter()
            .enumerate()
            .filter(|(_, slice)| max - slice.endpoints.len().min(max) >= remaining.len())
            .max_by_key(|(_, slice)| slice.endpoints.len())
            .map(|(index, _)| index);
        if let Some(index) = fullest {
            let mut updated = (*unchanged.remove(index)).clone();
            updated.endpoints.append(&mut remaining);
            stamp(&mut updated, meta);
            writing.push(updated);
        }
    }
    for chunk in remaining.chunks(max) {
        plan.create
            .push(new_slice(meta, &group.ports, chunk.to_vec()));
    }
    plan.update.extend(writing);
}

fn plan_placeholder(meta: &SliceMeta, existing: &[Arc<EndpointSlice>]) -> Plan {
    let mut plan = Plan::default();
    let mut sorted: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let keep = sorted
        .iter()
        .position(|slice| slice.endpoints.is_empty() && slice_ports(slice).is_empty());
    for (index, slice) in sorted.iter().enumerate() {
        if Some(index) != keep {
            plan.delete.push(Arc::clone(slice));
        }
    }
    match keep {
        Some(index) if !meta_matches(sorted[index], meta) => {
            let mut updated = (**sorted[index]).clone();
            stamp(&mut updated, meta);
            plan.update.push(updated);
        }
        Some(_) => {}
        None => plan.create.push(new_slice(meta, &[], Vec::new())),
    }
    plan
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::endpoint::core::tests::{port, service, web_pod};
    use crate::pods::testing::{ready, running, terminating};

    fn meta(max: usize) -> SliceMeta {
        SliceMeta {
            namespace: "default".into(),
            generate_name: "web-".into(),
            labels: [
                (SERVICE_NAME_LABEL.to_string(), "web".to_string()),
                (MANAGED_BY.to_string(), CONTROLLER_NAME.to_string()),
            ]
            .into(),
            annotations: BTreeMap::new(),
            owner: OwnerReference {
                kind: "Service".into(),
                name: "web".into(),
                uid: "uid-web".into(),
                ..OwnerReference::default()
            },
            address_type: "IPv4".into(),
            trigger_time: None,
            max_endpoints: max,
        }
    }

    fn endpoint(index: usize) -> Endpoint {
        Endpoint {
            addresses: vec![format!("10.42.0.{index}")],
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                uid: Some(format!("u{index}")),
                ..Default::default()
            }),
            ..Endpoint::default()
        }
    }

    fn group(range: std::ops::Range<usize>) -> Group {
        Group {
            ports: vec![EndpointPort {
                name: Some("http".into()),
                port: Some(80),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }],
            endpoints: range.map(endpoint).collect(),
        }
    }

    /// The plan's creations as stored slices (named), as the informer
    /// would hold them after the writes.
    fn applied(plan: Plan, existing: &[Arc<EndpointSlice>]) -> Vec<Arc<EndpointSlice>> {
        let deleted: BTreeSet<_> = plan
            .delete
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect();
        let updated: BTreeMap<_, _> = plan
            .update
            .into_iter()
            .map(|slice| (slice.metadata.name.clone(), slice))
            .collect();
        let mut result: Vec<Arc<EndpointSlice>> = existing
            .iter()
            .filter(|slice| !deleted.contains(&slice.metadata.name))
            .map(|slice| match updated.get(&slice.metadata.name) {
                Some(new) => Arc::new(new.clone()),
                None => Arc::clone(slice),
            })
            .collect();
        for (index, mut slice) in plan.create.into_iter().enumerate() {
            slice.metadata.name = Some(format!("web-new{}-{index}", result.len()));
            result.push(Arc::new(slice));
        }
        result
    }

    #[test]
    fn pods_become_endpoints_with_conditions_and_named_ports() {
        let service = service(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::String("http".into()))],
        );
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(ready(web_pod("a", "10.42.0.2", Some(8080)), 1)),
            Arc::new(running(web_pod("b", "10.42.0.3", Some(8080)))),
            Arc::new(terminating(ready(web_pod("c", "10.42.0.4", Some(8080)), 1))),
            Arc::new(ready(web_pod("d", "10.42.0.5", None), 1)),
        ];
        let selector = endpoints::selector_of(&service).unwrap();
        let groups = desired_groups(&service, selector, &pods, |_| None);
        assert_eq!(groups.len(), 2, "{groups:?}");
        let named = groups.iter().find(|g| !g.ports.is_empty()).unwrap();
        assert_eq!(named.ports[0].port, Some(8080));
        assert_eq!(named.ports[0].name.as_deref(), Some("http"));
        let conditions: Vec<(bool, bool, bool)> = named
            .endpoints
            .iter()
            .map(|endpoint| {
                let c = endpoint.conditions.as_ref().unwrap();
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
            })
            .collect();
        assert_eq!(
            conditions,
            [
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(named.endpoints[0].node_name.as_deref(), Some("n1"));
        // The pod without the named port is in a port-less group.
        let bare = groups.iter().find(|g| g.ports.is_empty()).unwrap();
        assert_eq!(bare.endpoints[0].addresses, ["10.42.0.5"]);
    }

    #[test]
    fn new_endpoints_are_cut_into_slices_of_at_most_the_maximum() {
        let plan = plan(&meta(100), vec![group(0..250)], &[]);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let slice = &plan.create[0];
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(
            slice
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get(MANAGED_BY)
                .map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        assert_eq!(
            slice.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Service"
        );
    }

    #[test]
    fn a_change_updates_the_slice_in_place_and_nothing_else() {
        let first = plan(&meta(100), vec![group(0..150)], &[]);
        let stored = applied(first, &[]);
        assert_eq!(stored.len(), 2);
        // The same endpoints again: nothing to do.
        assert!(plan(&meta(100), vec![group(0..150)], &stored).is_empty());
        // One endpoint goes, one comes: both land in updates, no create.
        let mut changed = group(1..150);
        changed.endpoints.push(endpoint(500));
        let second = plan(&meta(100), vec![changed], &stored);
        assert!(second.create.is_empty(), "{second:?}");
        assert!(second.delete.is_empty());
        assert_eq!(second.update.len(), 1);
        let stored = applied(second, &stored);
        let total: usize = stored.iter().map(|s| s.endpoints.len()).sum();
        assert_eq!(total, 150);
        assert!(stored.iter().all(|s| s.endpoints.len() <= 100));
    }

    #[test]
    fn slices_that_empty_or_whose_ports_went_are_deleted_and_a_placeholder_stays() {
        let stored = applied(plan(&meta(100), vec![group(0..150)], &[]), &[]);
        // Only the first slice's endpoints remain: the second goes.
        let kept = Group {
            endpoints: stored[0].endpoints.clone(),
            ..group(0..0)
        };
        let shrunk = plan(&meta(100), vec![kept], &stored);
        assert_eq!(shrunk.delete.len(), 1, "{shrunk:?}");
        assert_eq!(shrunk.delete[0].metadata.name, stored[1].metadata.name);
        assert!(shrunk.create.is_empty() && shrunk.update.is_empty());
        let mut other_ports = group(0..10);
        other_ports.ports[0].port = Some(81);
        let moved = plan(&meta(100), vec![other_ports], &stored);
        assert_eq!(moved.delete.len(), 2);
        assert_eq!(moved.create.len(), 1);
        let emptied = plan(&meta(100), vec![], &stored);
        assert_eq!(emptied.delete.len(), 2);
        assert_eq!(emptied.create.len(), 1);
        assert!(emptied.create[0].endpoints.is_empty());
        assert_eq!(emptied.create[0].ports, None);
        let with_placeholder = applied(emptied, &stored);
        assert!(plan(&meta(100), vec![], &with_placeholder).is_empty());
        // Endpoints again: the placeholder goes.
        let back = plan(&meta(100), vec![group(0..3)], &with_placeholder);
        assert_eq!((back.create.len(), back.delete.len()), (1, 1));
    }

    #[test]
    fn new_labels_update_every_slice() {
        let stored = applied(plan(&meta(100), vec![group(0..150)], &[]), &[]);
        let mut relabelled = meta(100);
        relabelled.labels.insert("tier".into(), "front".into());
        let plan = plan(&relabelled, vec![group(0..150)], &stored);
        assert_eq!(plan.update.len(), 2);
        assert!(plan.update.iter().all(|slice| {
            slice
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get("tier")
                .map(String::as_str)
                == Some("front")
        }));
    }
}
