//! The scheduler's sans-IO core: a compact model of the cluster (nodes and
//! what the pods bound or assumed on them take) and the placement of one pod
//! at a time, through kube-scheduler's filters and scores. No async, no I/O:
//! the driver feeds it `Node` and `Pod` values and asks it where a pod goes.
//!
//! The model keeps no `Pod` objects: a placed pod is its requests, host
//! ports, labels (shared between pods that have the same ones), namespace,
//! workload and required anti-affinity terms, so 300,000 pods cost tens of
//! MiB.

mod filter;
mod resources;
mod score;
pub mod selectors;
mod topology;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint};

pub use resources::{Resources, parse_milli, parse_units};
pub use selectors::Labels;

/// The label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The label that names a node.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Below this many nodes every node is evaluated (`minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this (`minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Where the core placed a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// Feasible nodes found before the search stopped.
    pub n_feasible: usize,
    /// Nodes the filters looked at.
    pub n_evaluated: usize,
}

/// A pod that fits no node, and why: how many nodes failed for each reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    pub n_nodes: usize,
    /// Reasons and their node counts, in the order kube-scheduler prints them.
    pub reasons: Vec<(String, usize)>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n_nodes == 0 {
            return formatter.write_str("no nodes available to schedule pods");
        }
        write!(formatter, "0/{} nodes are available:", self.n_nodes)?;
        for (idx, (reason, count)) in self.reasons.iter().enumerate() {
            let separator = if idx == 0 { " " } else { ", " };
            write!(formatter, "{separator}{count} {reason}")?;
        }
        formatter.write_str(".")
    }
}

impl std::error::Error for Unschedulable {}

/// One host port a pod takes: protocol, host IP (`0.0.0.0` for all) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HostPort {
    protocol: String,
    host_ip: String,
    port: i32,
}

impl HostPort {
    /// Two ports conflict when protocol and port match and either side takes
    /// every address or both take the same one.
    fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.host_ip == other.host_ip
                || self.host_ip == "0.0.0.0"
                || other.host_ip == "0.0.0.0")
    }
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            let host_port = port.host_port.filter(|port| *port > 0)?;
            let host_ip = port.host_ip.as_deref().unwrap_or("");
            Some(HostPort {
                protocol: port.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                host_ip: if host_ip.is_empty() || host_ip == "::" {
                    "0.0.0.0".to_string()
                } else {
                    host_ip.to_string()
                },
                port: host_port,
            })
        })
        .collect()
}

/// What the filters need of a node, read from its `Node` object.
pub(crate) struct NodeInfo {
    labels: Labels,
    zone: Option<Arc<str>>,
    allocatable: Resources,
    pod_limit: i64,
    /// Its taints, with a not-ready or unreachable NoSchedule taint added
    /// when its Ready condition says so (as the node lifecycle controller
    /// taints such nodes upstream).
    taints: Vec<Taint>,
    unschedulable: bool,
    /// Normalized image names and their sizes in bytes.
    images: Vec<(String, i64)>,
}

/// A node's slot: its information while the node exists, and what the pods
/// placed on it take (kept across a delete, so a node that comes back under
/// the same name finds its pods' accounting).
pub(crate) struct NodeSlot {
    name: String,
    info: Option<NodeInfo>,
    requested: Resources,
    /// CPU and memory requested, zero requests counted as the defaults.
    non_zero_requested: (i64, i64),
    n_pods: i64,
    used_ports: Vec<HostPort>,
}

/// A pod bound or assumed on a node.
pub(crate) struct PlacedPod {
    namespace: Arc<str>,
    labels: Arc<Labels>,
    requests: Resources,
    non_zero: (i64, i64),
    host_ports: Vec<HostPort>,
    node_slot: u32,
    workload: Option<Arc<str>>,
    /// Required anti-affinity terms (other pods must keep away from it).
    anti_affinity: Option<Box<[PodAffinityTerm]>>,
    /// Placed by this scheduler, its binding not yet seen in a watch.
    assumed: bool,
}

/// The pods of one workload (same controller) per node and per zone: the
/// counts the default spreading scores read.
#[derive(Default)]
struct WorkloadCounts {
    per_node: HashMap<u32, u32>,
    per_zone: HashMap<Arc<str>, u32>,
}

/// The cluster as the scheduler sees it.
pub struct Cluster {
    slots: Vec<NodeSlot>,
    slot_by_name: HashMap<String, u32>,
    /// Slots of existing nodes, zones interleaved; rebuilt when nodes come
    /// or go.
    order: Vec<u32>,
    order_stale: bool,
    next_start: usize,
    n_nodes: usize,
    /// Distinct zones among the nodes, counted with the order.
    n_zones: usize,
    pods: HashMap<String, PlacedPod>,
    /// Keys of placed pods with required anti-affinity terms.
    anti_affinity_pods: HashSet<String>,
    workloads: HashMap<Arc<str>, WorkloadCounts>,
    /// Nodes that hold each image.
    image_nodes: HashMap<String, u32>,
    namespaces: HashSet<Arc<str>>,
    label_sets: HashSet<Arc<Labels>>,
    /// `percentageOfNodesToScore`; 0 is the adaptive rule.
    percentage_of_nodes_to_score: usize,
    random_state: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

/// `namespace/name`, the key of a pod in the model.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The UID of a pod's controller, which names its workload.
fn workload_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.as_str())
}

/// Whether a pod has finished and no longer takes what it requested.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn required_anti_affinity(pod: &Pod) -> Option<Box<[PodAffinityTerm]>> {
    let terms = pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .pod_anti_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    (!terms.is_empty()).then(|| terms.clone().into_boxed_slice())
}

/// Normalized image name: a name without a tag or digest is `:latest`.
fn normalized_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn node_info(node: &Node) -> NodeInfo {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let zone = labels.get(ZONE_LABEL).map(|zone| Arc::from(zone.as_str()));
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let allocatable = status
        .and_then(|status| status.allocatable.as_ref().or(status.capacity.as_ref()))
        .cloned()
        .unwrap_or_default();
    let mut taints = spec
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|taint| {
            taint.effect == "NoSchedule"
                || taint.effect == "NoExecute"
                || taint.effect == "PreferNoSchedule"
        })
        .collect::<Vec<_>>();
    let ready = status
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.type_ == "Ready")
        })
        .map(|condition| condition.status.as_str());
    let readiness_taint = match ready {
        Some("True") => None,
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => Some("node.kubernetes.io/not-ready"),
    };
    if let Some(key) = readiness_taint
        && !taints.iter().any(|taint| taint.key == key)
    {
        taints.push(Taint {
            key: key.to_string(),
            effect: "NoSchedule".to_string(),
            value: None,
            time_added: None,
        });
    }
    let images = status
        .and_then(|status| status.images.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|image| {
            let size = image.size_bytes.unwrap_or(0);
            image
                .names
                .iter()
                .flatten()
                .map(move |name| (normalized_image(name), size))
        })
        .collect();
    NodeInfo {
        zone,
        allocatable: Resources::from_map(&allocatable),
        pod_limit: resources::pod_limit(&allocatable),
        taints,
        unschedulable: spec.and_then(|spec| spec.unschedulable).unwrap_or(false),
        images,
        labels,
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            slots: Vec::new(),
            slot_by_name: HashMap::new(),
            order: Vec::new(),
            order_stale: false,
            next_start: 0,
            n_nodes: 0,
            n_zones: 0,
            pods: HashMap::new(),
            anti_affinity_pods: HashSet::new(),
            workloads: HashMap::new(),
            image_nodes: HashMap::new(),
            namespaces: HashSet::new(),
            label_sets: HashSet::new(),
            percentage_of_nodes_to_score: 0,
            random_state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Sets `percentageOfNodesToScore` (0 is kube-scheduler's adaptive rule,
    /// 100 evaluates every node).
    pub fn set_percentage_of_nodes_to_score(&mut self, percentage: usize) {
        self.percentage_of_nodes_to_score = percentage.min(100);
    }

    /// Seeds the tie-breaking between equally scored nodes.
    pub fn set_seed(&mut self, seed: u64) {
        self.random_state = seed | 1;
    }

    pub fn n_nodes(&self) -> usize {
        self.n_nodes
    }

    pub fn n_placed_pods(&self) -> usize {
        self.pods.len()
    }

    /// Whether a pod is placed (bound or assumed) in the model.
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// The node a pod is placed on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        let placed = self.pods.get(key)?;
        Some(&self.slots[placed.node_slot as usize].name)
    }

    /// The names of the nodes in the model.
    pub fn node_names(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|entry| entry.info.is_some())
            .map(|entry| entry.name.clone())
            .collect()
    }

    /// The keys of the pods whose binding has been seen (not assumed ones).
    pub fn confirmed_pod_keys(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, placed)| !placed.assumed)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Removes a pod by its `namespace/name`.
    pub fn remove_pod_key(&mut self, key: &str) {
        self.remove_pod(key);
    }

    /// Adds or updates a node.
    pub fn apply_node(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.as_deref() else {
            return;
        };
        let info = node_info(node);
        let slot = self.slot_for(name);
        let entry = &mut self.slots[slot as usize];
        let old = entry.info.replace(info);
        if old.is_none() {
            self.n_nodes += 1;
            self.order_stale = true;
        }
        let entry_info = entry.info.as_ref().expect("just set");
        let new_images: Vec<String> = entry_info
            .images
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        if old.as_ref().map(|old| &old.zone) != Some(&entry_info.zone) {
            self.order_stale = true;
            self.rezone_workloads(slot, old.as_ref().and_then(|old| old.zone.clone()));
        }
        let old_images: Vec<String> = old
            .map(|old| old.images.into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default();
        for image in &old_images {
            if !new_images.contains(image)
                && let Some(count) = self.image_nodes.get_mut(image)
            {
                *count = count.saturating_sub(1);
            }
        }
        for image in new_images {
            if !old_images.contains(&image) {
                *self.image_nodes.entry(image).or_default() += 1;
            }
        }
    }

    /// Removes a node. Its pods' accounting stays with its name.
    pub fn delete_node(&mut self, name: &str) {
        let Some(&slot) = self.slot_by_name.get(name) else {
            return;
        };
        let Some(info) = self.slots[slot as usize].info.take() else {
            return;
        };
        self.n_nodes -= 1;
        self.order_stale = true;
        for (image, _) in info.images {
            if let Some(count) = self.image_nodes.get_mut(&image) {
                *count = count.saturating_sub(1);
            }
        }
        if let Some(zone) = info.zone {
            self.remove_zone_counts(slot, &zone);
        }
    }

    /// Adds, moves or confirms a bound pod; a pod not bound, or finished,
    /// leaves the model (an assumed pod stays until its binding is seen or
    /// it is forgotten).
    pub fn apply_pod(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            .unwrap_or("");
        if is_terminal(pod) || pod.metadata.deletion_timestamp.is_some() && node_name.is_empty() {
            self.remove_pod(&key);
            return;
        }
        if node_name.is_empty() {
            if self.pods.get(&key).is_some_and(|placed| !placed.assumed) {
                self.remove_pod(&key);
            }
            return;
        }
        if let Some(placed) = self.pods.get_mut(&key) {
            let slot = self.slots[placed.node_slot as usize].name == node_name;
            if slot {
                // Its resources cannot change once bound; only confirm it.
                placed.assumed = false;
                return;
            }
            self.remove_pod(&key);
        }
        self.place(pod, key, node_name, false);
    }

    /// Removes a pod (deleted, or unbound again).
    pub fn delete_pod(&mut self, pod: &Pod) {
        self.remove_pod(&pod_key(pod));
    }

    /// Places a pod on a node before its binding is written, so the next
    /// pods see what it takes.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let key = pod_key(pod);
        self.remove_pod(&key);
        self.place(pod, key, node, true);
    }

    /// Drops an assumed pod whose binding failed.
    pub fn forget(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        if self.pods.get(&key).is_some_and(|placed| placed.assumed) {
            self.remove_pod(&key);
        }
    }

    fn slot_for(&mut self, name: &str) -> u32 {
        if let Some(&slot) = self.slot_by_name.get(name) {
            return slot;
        }
        let slot = self.slots.len() as u32;
        self.slots.push(NodeSlot {
            name: name.to_string(),
            info: None,
            requested: Resources::default(),
            non_zero_requested: (0, 0),
            n_pods: 0,
            used_ports: Vec::new(),
        });
        self.slot_by_name.insert(name.to_string(), slot);
        slot
    }

    fn intern_namespace(&mut self, namespace: &str) -> Arc<str> {
        if let Some(interned) = self.namespaces.get(namespace) {
            return Arc::clone(interned);
        }
        let interned: Arc<str> = Arc::from(namespace);
        self.namespaces.insert(Arc::clone(&interned));
        interned
    }

    fn intern_labels(&mut self, labels: Labels) -> Arc<Labels> {
        if let Some(interned) = self.label_sets.get(&labels) {
            return Arc::clone(interned);
        }
        let interned = Arc::new(labels);
        self.label_sets.insert(Arc::clone(&interned));
        interned
    }

    fn place(&mut self, pod: &Pod, key: String, node_name: &str, assumed: bool) {
        let slot = self.slot_for(node_name);
        let (requests, non_zero) = resources::pod_requests(pod);
        let namespace =
            self.intern_namespace(pod.metadata.namespace.as_deref().unwrap_or("default"));
        let labels = self.intern_labels(pod.metadata.labels.clone().unwrap_or_default());
        let workload = workload_of(pod).map(Arc::from);
        let placed = PlacedPod {
            namespace,
            labels,
            requests,
            non_zero,
            host_ports: host_ports(pod),
            node_slot: slot,
            workload,
            anti_affinity: required_anti_affinity(pod),
            assumed,
        };
        let entry = &mut self.slots[slot as usize];
        entry.requested.add(&placed.requests);
        entry.non_zero_requested.0 += placed.non_zero.0;
        entry.non_zero_requested.1 += placed.non_zero.1;
        entry.n_pods += 1;
        entry.used_ports.extend(placed.host_ports.iter().cloned());
        let zone = entry.info.as_ref().and_then(|info| info.zone.clone());
        if let Some(workload) = &placed.workload {
            let counts = self.workloads.entry(Arc::clone(workload)).or_default();
            *counts.per_node.entry(slot).or_default() += 1;
            if let Some(zone) = zone {
                *counts.per_zone.entry(zone).or_default() += 1;
            }
        }
        if placed.anti_affinity.is_some() {
            self.anti_affinity_pods.insert(key.clone());
        }
        self.pods.insert(key, placed);
    }

    fn remove_pod(&mut self, key: &str) {
        let Some(placed) = self.pods.remove(key) else {
            return;
        };
        self.anti_affinity_pods.remove(key);
        let entry = &mut self.slots[placed.node_slot as usize];
        entry.requested.subtract(&placed.requests);
        entry.non_zero_requested.0 -= placed.non_zero.0;
        entry.non_zero_requested.1 -= placed.non_zero.1;
        entry.n_pods -= 1;
        for port in &placed.host_ports {
            if let Some(idx) = entry.used_ports.iter().position(|used| used == port) {
                entry.used_ports.swap_remove(idx);
            }
        }
        let zone = entry.info.as_ref().and_then(|info| info.zone.clone());
        if let Some(workload) = &placed.workload
            && let Some(counts) = self.workloads.get_mut(workload)
        {
            decrement(&mut counts.per_node, &placed.node_slot);
            if let Some(zone) = zone {
                decrement(&mut counts.per_zone, &zone);
            }
            if counts.per_node.is_empty() {
                self.workloads.remove(workload);
            }
        }
    }

    /// A node changed zone (or appeared with one): move its workload counts.
    fn rezone_workloads(&mut self, slot: u32, old_zone: Option<Arc<str>>) {
        let new_zone = self.slots[slot as usize]
            .info
            .as_ref()
            .and_then(|info| info.zone.clone());
        for counts in self.workloads.values_mut() {
            let Some(&on_node) = counts.per_node.get(&slot) else {
                continue;
            };
            if let Some(old_zone) = &old_zone {
                for _ in 0..on_node {
                    decrement(&mut counts.per_zone, old_zone);
                }
            }
            if let Some(new_zone) = &new_zone {
                *counts.per_zone.entry(Arc::clone(new_zone)).or_default() += on_node;
            }
        }
    }

    fn remove_zone_counts(&mut self, slot: u32, zone: &Arc<str>) {
        for counts in self.workloads.values_mut() {
            if let Some(&on_node) = counts.per_node.get(&slot) {
                for _ in 0..on_node {
                    decrement(&mut counts.per_zone, zone);
                }
            }
        }
    }

    /// Rebuilds the evaluation order: zones taken in turn (as upstream's
    /// node tree), so a sample of nodes covers every zone.
    fn refresh_order(&mut self) {
        if !self.order_stale {
            return;
        }
        let mut by_zone: Vec<(Option<Arc<str>>, Vec<u32>)> = Vec::new();
        for (slot, entry) in self.slots.iter().enumerate() {
            let Some(info) = &entry.info else { continue };
            match by_zone.iter_mut().find(|(zone, _)| *zone == info.zone) {
                Some((_, slots)) => slots.push(slot as u32),
                None => by_zone.push((info.zone.clone(), vec![slot as u32])),
            }
        }
        self.order.clear();
        self.n_zones = by_zone.iter().filter(|(zone, _)| zone.is_some()).count();
        let longest = by_zone
            .iter()
            .map(|(_, slots)| slots.len())
            .max()
            .unwrap_or(0);
        for idx in 0..longest {
            for (_, slots) in &by_zone {
                if let Some(&slot) = slots.get(idx) {
                    self.order.push(slot);
                }
            }
        }
        self.order_stale = false;
        self.next_start %= self.order.len().max(1);
    }

    /// How many feasible nodes to find before scoring (kube-scheduler's
    /// `numFeasibleNodesToFind`).
    pub fn n_feasible_nodes_to_find(&self, n_all_nodes: usize) -> usize {
        if n_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
            return n_all_nodes;
        }
        let percentage = if self.percentage_of_nodes_to_score == 0 {
            (50 - (n_all_nodes / 125) as i64).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND as i64)
                as usize
        } else {
            self.percentage_of_nodes_to_score
        };
        (n_all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: tie-breaking only; one seed makes runs repeatable.
        let mut x = self.random_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random_state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Chooses a node for `pod`: the filters, on a sample of nodes at scale,
    /// then the scores; or why no node fits. The pod is not placed: call
    /// `assume` with the answer.
    pub fn schedule(&mut self, pod: &Pod) -> Result<Placement, Unschedulable> {
        self.refresh_order();
        let n_nodes = self.order.len();
        if n_nodes == 0 {
            return Err(Unschedulable {
                n_nodes: 0,
                reasons: Vec::new(),
            });
        }
        let demand = filter::Demand::of(pod);
        let prepared = topology::Prepared::new(self, pod, &demand);
        let to_find = self.n_feasible_nodes_to_find(n_nodes);
        let mut feasible: Vec<u32> = Vec::with_capacity(to_find.min(n_nodes));
        let mut failures: HashMap<filter::Reason, usize> = HashMap::new();
        let mut n_evaluated = 0;
        for offset in 0..n_nodes {
            let slot = self.order[(self.next_start + offset) % n_nodes];
            n_evaluated += 1;
            match filter::check(self, &demand, &prepared, slot) {
                Ok(()) => {
                    feasible.push(slot);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Err(reasons) => {
                    for reason in reasons {
                        *failures.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        self.next_start = (self.next_start + n_evaluated) % n_nodes;
        if feasible.is_empty() {
            let mut reasons: Vec<(String, usize)> = failures
                .into_iter()
                .map(|(reason, count)| (reason.to_string(), count))
                .collect();
            // kube-scheduler sorts the "count reason" strings themselves.
            reasons.sort_by(|a, b| format!("{} {}", a.1, a.0).cmp(&format!("{} {}", b.1, b.0)));
            return Err(Unschedulable { n_nodes, reasons });
        }
        let chosen = if feasible.len() == 1 {
            feasible[0]
        } else {
            let scores = score::total_scores(self, &demand, &prepared, &feasible);
            let best = scores.iter().copied().max().unwrap_or(0);
            // Reservoir sampling among the best, as upstream's selectHost.
            let mut chosen = feasible[0];
            let mut n_best = 0u64;
            for (slot, score) in feasible.iter().zip(&scores) {
                if *score == best {
                    n_best += 1;
                    if self.next_random().is_multiple_of(n_best) {
                        chosen = *slot;
                    }
                }
            }
            chosen
        };
        Ok(Placement {
            node: self.slots[chosen as usize].name.clone(),
            n_feasible: feasible.len(),
            n_evaluated,
        })
    }
}

fn decrement<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}
