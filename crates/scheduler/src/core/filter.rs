//! The filters: whether a pod may go on a node, and if not, why, in
//! kube-scheduler's words. They run in upstream's order (NodeUnschedulable,
//! NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
//! PodTopologySpread, InterPodAffinity) and a node fails at the first filter
//! that rejects it.

use std::fmt;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Pod, Taint, Toleration};

use super::resources::{self, Resources};
use super::selectors::{self, Labels};
use super::topology::Prepared;
use super::{Cluster, HostPort, NodeInfo, host_ports};

/// Why a node cannot take a pod; `Display` is kube-scheduler's text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Unschedulable,
    NodeName,
    UntoleratedTaint { key: String, value: String },
    NodeAffinity,
    HostPorts,
    TooManyPods,
    Insufficient(String),
    SpreadConstraints,
    SpreadMissingLabel,
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => formatter.write_str("node(s) were unschedulable"),
            Reason::NodeName => formatter.write_str("node(s) didn't match the requested node name"),
            Reason::UntoleratedTaint { key, value } => {
                write!(
                    formatter,
                    "node(s) had untolerated taint {{{key}: {value}}}"
                )
            }
            Reason::NodeAffinity => {
                formatter.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::HostPorts => {
                formatter.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::TooManyPods => formatter.write_str("Too many pods"),
            Reason::Insufficient(resource) => write!(formatter, "Insufficient {resource}"),
            Reason::SpreadConstraints => {
                formatter.write_str("node(s) didn't match pod topology spread constraints")
            }
            Reason::SpreadMissingLabel => formatter.write_str(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ),
            Reason::PodAffinity => formatter.write_str("node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => {
                formatter.write_str("node(s) didn't match pod anti-affinity rules")
            }
            Reason::ExistingAntiAffinity => {
                formatter.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
        }
    }
}

/// What an incoming pod asks of a node, read once per scheduling attempt.
pub struct Demand<'a> {
    pub pod: &'a Pod,
    pub namespace: &'a str,
    pub labels: Labels,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    pub node_name: Option<&'a str>,
    pub node_selector: Option<&'a std::collections::BTreeMap<String, String>>,
    pub required_terms: Option<&'a [NodeSelectorTerm]>,
    pub tolerations: &'a [Toleration],
}

impl<'a> Demand<'a> {
    pub fn of(pod: &'a Pod) -> Demand<'a> {
        let spec = pod.spec.as_ref();
        let (requests, non_zero) = resources::pod_requests(pod);
        let node_affinity = spec
            .and_then(|spec| spec.affinity.as_ref())
            .and_then(|affinity| affinity.node_affinity.as_ref());
        Demand {
            pod,
            namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            requests,
            non_zero,
            host_ports: host_ports(pod),
            node_name: spec
                .and_then(|spec| spec.node_name.as_deref())
                .filter(|name| !name.is_empty()),
            node_selector: spec
                .and_then(|spec| spec.node_selector.as_ref())
                .filter(|selector| !selector.is_empty()),
            required_terms: node_affinity
                .and_then(|affinity| {
                    affinity
                        .required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|selector| selector.node_selector_terms.as_slice()),
            tolerations: spec
                .and_then(|spec| spec.tolerations.as_deref())
                .unwrap_or_default(),
        }
    }

    /// The pod's nodeSelector and required node affinity (NodeAffinity's filter).
    pub fn matches_node_affinity(&self, node_name: &str, labels: &Labels) -> bool {
        if let Some(selector) = self.node_selector
            && !selector
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        {
            return false;
        }
        match self.required_terms {
            Some(terms) => selectors::node_selector_terms_match(terms, node_name, labels),
            None => true,
        }
    }

    /// The first NoSchedule or NoExecute taint the pod does not tolerate.
    pub fn untolerated_taint<'t>(&self, taints: &'t [Taint]) -> Option<&'t Taint> {
        taints.iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !selectors::tolerated(self.tolerations, taint)
        })
    }
}

/// Runs the filters on one node.
pub fn check(
    cluster: &Cluster,
    demand: &Demand<'_>,
    prepared: &Prepared,
    slot: u32,
) -> Result<(), Vec<Reason>> {
    let entry = &cluster.slots[slot as usize];
    let info: &NodeInfo = entry
        .info
        .as_ref()
        .expect("only existing nodes are evaluated");
    if info.unschedulable {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".to_string(),
            effect: "NoSchedule".to_string(),
            value: None,
            time_added: None,
        };
        if !selectors::tolerated(demand.tolerations, &cordon) {
            return Err(vec![Reason::Unschedulable]);
        }
    }
    if let Some(wanted) = demand.node_name
        && wanted != entry.name
    {
        return Err(vec![Reason::NodeName]);
    }
    if let Some(taint) = demand.untolerated_taint(&info.taints) {
        return Err(vec![Reason::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        }]);
    }
    if !demand.matches_node_affinity(&entry.name, &info.labels) {
        return Err(vec![Reason::NodeAffinity]);
    }
    if demand
        .host_ports
        .iter()
        .any(|wanted| entry.used_ports.iter().any(|used| used.conflicts(wanted)))
    {
        return Err(vec![Reason::HostPorts]);
    }
    let insufficient = fit(info, entry.n_pods, &entry.requested, demand);
    if !insufficient.is_empty() {
        return Err(insufficient);
    }
    prepared.check(cluster, demand, slot)?;
    Ok(())
}

/// NodeResourcesFit: the pod's requests against allocatable minus what the
/// node's pods request; every shortfall is a reason.
fn fit(info: &NodeInfo, n_pods: i64, requested: &Resources, demand: &Demand<'_>) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if n_pods + 1 > info.pod_limit {
        reasons.push(Reason::TooManyPods);
    }
    let wanted = &demand.requests;
    let allocatable = &info.allocatable;
    if wanted.milli_cpu > 0 && wanted.milli_cpu > allocatable.milli_cpu - requested.milli_cpu {
        reasons.push(Reason::Insufficient("cpu".to_string()));
    }
    if wanted.memory > 0 && wanted.memory > allocatable.memory - requested.memory {
        reasons.push(Reason::Insufficient("memory".to_string()));
    }
    if wanted.ephemeral_storage > 0
        && wanted.ephemeral_storage > allocatable.ephemeral_storage - requested.ephemeral_storage
    {
        reasons.push(Reason::Insufficient("ephemeral-storage".to_string()));
    }
    for (name, amount) in &wanted.scalar {
        if *amount > 0 && *amount > allocatable.scalar(name) - requested.scalar(name) {
            reasons.push(Reason::Insufficient(name.clone()));
        }
    }
    reasons
}
