//! The DaemonSet controller's decisions, sans IO: which nodes should run
//! a DaemonSet's pod (its node selector and required node affinity, the
//! taints its pods tolerate), the pod each such node gets (pinned to it
//! by node affinity on `metadata.name`), which pods to create and delete
//! (missing, duplicate, failed, misplaced, and old ones a rolling update
//! replaces within `maxUnavailable`), and its status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use scheduler::core::selectors::{Labels, node_selector_terms_match, tolerated};

use crate::pods;

/// The label naming the template revision a pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// The label with the DaemonSet generation a pod was made at (deprecated
/// upstream, still set).
pub const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// Whether a node should run the DaemonSet's pod, and whether a pod
/// already there may stay (upstream's `NodeShouldRunDaemonPod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// The tolerations upstream adds to every daemon pod, so node conditions
/// do not evict or keep out what the node needs.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Toleration::default()
    };
    let mut tolerations = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        tolerations.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    tolerations
}

/// The template's tolerations with the daemon ones added (those with the
/// same key and effect are not repeated).
fn tolerations_of(template: &PodTemplateSpec) -> Vec<Toleration> {
    let spec = template.spec.clone().unwrap_or_default();
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    for extra in daemon_tolerations(spec.host_network.unwrap_or(false)) {
        if !tolerations
            .iter()
            .any(|present| present.key == extra.key && present.effect == extra.effect)
        {
            tolerations.push(extra);
        }
    }
    tolerations
}

fn template_of(daemon_set: &DaemonSet) -> PodTemplateSpec {
    daemon_set
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default()
}

pub fn fit(daemon_set: &DaemonSet, node: &Node) -> Fit {
    let never = Fit {
        should_run: false,
        should_continue_running: false,
    };
    let template = template_of(daemon_set);
    let spec = template.spec.clone().unwrap_or_default();
    let node_name = node.metadata.name.clone().unwrap_or_default();
    if let Some(wanted) = spec.node_name.as_deref()
        && !wanted.is_empty()
        && wanted != node_name
    {
        return never;
    }
    let labels: Labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(selector) = &spec.node_selector
        && !selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    {
        return never;
    }
    if let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !node_selector_terms_match(&required.node_selector_terms, &node_name, &labels)
    {
        return never;
    }
    let tolerations = tolerations_of(&template);
    let taints = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default();
    let mut fit = Fit {
        should_run: true,
        should_continue_running: true,
    };
    for taint in &taints {
        if !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            || tolerated(&tolerations, taint)
        {
            continue;
        }
        fit.should_run = false;
        if taint.effect == "NoExecute" {
            fit.should_continue_running = false;
        }
    }
    fit
}

/// A short, stable hash of the DaemonSet's template (FNV-1a, in the
/// alphabet upstream renders hashes in): the revision its pods carry.
pub fn template_hash(daemon_set: &DaemonSet) -> String {
    let bytes = serde_json::to_vec(&template_of(daemon_set)).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut text = String::new();
    let mut value = hash;
    loop {
        text.push(ALPHABET[(value % ALPHABET.len() as u32) as usize] as char);
        value /= ALPHABET.len() as u32;
        if value == 0 {
            break;
        }
    }
    text
}

/// The pod for `node`: the template, its revision labels, the daemon
/// tolerations, and a required node affinity naming the node (replacing
/// the template's: the node was already checked against it).
pub fn daemon_pod(daemon_set: &DaemonSet, node: &str, hash: &str, owner: OwnerReference) -> Pod {
    let mut template = template_of(daemon_set);
    let meta = template.metadata.get_or_insert_default();
    let labels = meta.labels.get_or_insert_default();
    labels.insert(REVISION_HASH.to_string(), hash.to_string());
    labels.insert(
        TEMPLATE_GENERATION.to_string(),
        daemon_set.metadata.generation.unwrap_or(0).to_string(),
    );
    let tolerations = tolerations_of(&template);
    let spec = template.spec.get_or_insert_default();
    spec.tolerations = Some(tolerations);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_string(),
                operator: "In".to_string(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    });
    let namespace = daemon_set.metadata.namespace.clone().unwrap_or_default();
    let name = daemon_set.metadata.name.clone().unwrap_or_default();
    pods::pod_from_template(&template, &namespace, &format!("{name}-"), owner)
}

/// The node a daemon pod is for: its `spec.nodeName`, or before it is
/// bound, the node its affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref()
        && !node.is_empty()
    {
        return Some(node.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_fields.iter().flatten().find_map(|field| {
            (field.key == "metadata.name" && field.operator == "In")
                .then(|| field.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH)
        .map(String::as_str)
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|time| time.0)
}

/// What to do now.
#[derive(Debug, Default)]
pub struct Plan {
    /// Nodes that get a pod.
    pub create: Vec<String>,
    pub delete: Vec<Arc<Pod>>,
}

/// The pods of `owned` (the claimed, non-terminating pods) per target
/// node, oldest first.
fn by_node(owned: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in owned {
        if pods::is_terminating(pod) {
            continue;
        }
        if let Some(node) = target_node(pod) {
            by_node.entry(node).or_default().push(Arc::clone(pod));
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|pod| created(pod));
    }
    by_node
}

fn max_unavailable(daemon_set: &DaemonSet, desired: usize) -> usize {
    let value = daemon_set
        .spec
        .as_ref()
        .and_then(|spec| spec.update_strategy.as_ref())
        .and_then(|strategy| strategy.rolling_update.as_ref())
        .and_then(|rolling| rolling.max_unavailable.clone());
    let number = match value {
        None => 1,
        Some(value) => crate::disruption::core::scaled(&value, desired as i32).unwrap_or(1),
    };
    // Upstream never lets a rolling update stall on a zero.
    number.max(1) as usize
}

fn rolling(daemon_set: &DaemonSet) -> bool {
    daemon_set
        .spec
        .as_ref()
        .and_then(|spec| spec.update_strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        .is_none_or(|kind| kind == "RollingUpdate")
}

/// What to create and delete (upstream's `manage` then `rollingUpdate`).
pub fn plan(
    daemon_set: &DaemonSet,
    hash: &str,
    nodes: &[Arc<Node>],
    owned: &[Arc<Pod>],
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    let by_node = by_node(owned);
    let mut node_names = BTreeSet::new();
    let min_ready_seconds = daemon_set
        .spec
        .as_ref()
        .and_then(|spec| spec.min_ready_seconds)
        .unwrap_or(0);
    let mut desired = 0;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        node_names.insert(name.clone());
        let fit = fit(daemon_set, node);
        if fit.should_run {
            desired += 1;
        }
        let pods = by_node.get(&name).cloned().unwrap_or_default();
        if fit.should_run && pods.is_empty() {
            plan.create.push(name);
        } else if fit.should_continue_running {
            // Failed pods go (and are replaced next time round); of the
            // rest, the oldest stays.
            let (failed, live): (Vec<_>, Vec<_>) = pods
                .into_iter()
                .partition(|pod| pods::phase(pod) == "Failed");
            plan.delete.extend(failed);
            plan.delete.extend(live.into_iter().skip(1));
        } else {
            plan.delete.extend(pods);
        }
    }
    // Pods for nodes that are gone.
    for (node, pods) in &by_node {
        if !node_names.contains(node) {
            plan.delete.extend(pods.iter().cloned());
        }
    }
    if !rolling(daemon_set) {
        return plan;
    }
    // A rolling update: old pods go while at most `maxUnavailable` nodes
    // lack an available pod.
    let limit = max_unavailable(daemon_set, desired);
    let mut unavailable = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let fit = fit(daemon_set, node);
        let Some(pods) = by_node.get(&name) else {
            // A pod is about to be created there: it is not available.
            if fit.should_run {
                unavailable += 1;
            }
            continue;
        };
        if !fit.should_continue_running {
            continue;
        }
        let live: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|pod| pods::phase(pod) != "Failed")
            .collect();
        let new: Vec<&&Arc<Pod>> = live
            .iter()
            .filter(|pod| hash_of(pod) == Some(hash))
            .collect();
        let old: Vec<&&Arc<Pod>> = live
            .iter()
            .filter(|pod| hash_of(pod) != Some(hash))
            .collect();
        match (new.first(), old.first()) {
            (None, None) => unavailable += 1,
            (Some(_), Some(_)) => unavailable += 1,
            (Some(new), None) => {
                if !pods::is_available(new, min_ready_seconds, now) {
                    unavailable += 1;
                }
            }
            (None, Some(old)) => {
                if live.len() > 1 {
                    // Duplicates: `manage` above deals with them first.
                    unavailable += 1;
                } else if !pods::is_available(old, min_ready_seconds, now) {
                    replace_now.push(Arc::clone(old));
                } else if unavailable < limit {
                    candidates.push(Arc::clone(old));
                }
            }
        }
    }
    let room = limit.saturating_sub(unavailable).min(candidates.len());
    for pod in replace_now
        .into_iter()
        .chain(candidates.into_iter().take(room))
    {
        if !plan
            .delete
            .iter()
            .any(|chosen| chosen.metadata.uid == pod.metadata.uid)
        {
            plan.delete.push(pod);
        }
    }
    plan
}

/// The DaemonSet's status (upstream's `updateDaemonSetStatus`).
pub fn status(
    daemon_set: &DaemonSet,
    hash: &str,
    nodes: &[Arc<Node>],
    owned: &[Arc<Pod>],
    now: Timestamp,
) -> DaemonSetStatus {
    let by_node = by_node(owned);
    let min_ready_seconds = daemon_set
        .spec
        .as_ref()
        .and_then(|spec| spec.min_ready_seconds)
        .unwrap_or(0);
    let previous = daemon_set.status.clone().unwrap_or_default();
    let mut status = DaemonSetStatus {
        collision_count: previous.collision_count,
        conditions: previous.conditions,
        observed_generation: daemon_set.metadata.generation,
        ..DaemonSetStatus::default()
    };
    let mut updated = 0;
    let mut ready = 0;
    let mut available = 0;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let fit = fit(daemon_set, node);
        let pods = by_node.get(&name);
        let scheduled = pods.is_some_and(|pods| !pods.is_empty());
        if fit.should_run {
            status.desired_number_scheduled += 1;
            if let Some(pod) = pods.and_then(|pods| pods.first()) {
                status.current_number_scheduled += 1;
                if pods::is_ready(pod) {
                    ready += 1;
                    if pods::is_available(pod, min_ready_seconds, now) {
                        available += 1;
                    }
                }
                if hash_of(pod) == Some(hash) {
                    updated += 1;
                }
            }
        } else if scheduled {
            status.number_misscheduled += 1;
        }
    }
    status.number_ready = ready;
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(updated);
    let unavailable = status.desired_number_scheduled - available;
    status.number_unavailable = (unavailable > 0).then_some(unavailable);
    status
}

/// Whether two statuses differ in what the controller writes.
pub fn status_changed(old: Option<&DaemonSetStatus>, new: &DaemonSetStatus) -> bool {
    old != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::testing::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const UID: &str = "ds-uid";

    fn daemon_set(node_selector: Option<(&str, &str)>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some(UID.into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "agent".to_string())].into()),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "agent".to_string())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        node_selector: node_selector
                            .map(|(key, value)| [(key.to_string(), value.to_string())].into()),
                        ..PodSpec::default()
                    }),
                },
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::Int(1)),
                        max_surge: None,
                    }),
                }),
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            effect: effect.to_string(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: None,
        })
    }

    /// The pod the controller would make for `node`, as the cluster would
    /// show it: named, created at `created`, bound, ready.
    fn placed(daemon_set: &DaemonSet, node: &str, hash: &str, created: i64) -> Arc<Pod> {
        let owner = OwnerReference {
            uid: UID.into(),
            controller: Some(true),
            kind: "DaemonSet".into(),
            ..OwnerReference::default()
        };
        let mut pod = daemon_pod(daemon_set, node, hash, owner);
        pod.metadata.name = Some(format!("agent-{node}-{created}"));
        pod.metadata.uid = Some(format!("uid-{node}-{created}"));
        pod.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(created)),
        );
        pod.spec.get_or_insert_default().node_name = Some(node.into());
        Arc::new(ready(pod, created))
    }

    #[test]
    fn nodes_are_chosen_by_selector_and_taints_with_the_daemon_tolerations() {
        let daemon_set = daemon_set(Some(("role", "edge")));
        assert!(fit(&daemon_set, &node("a", &[("role", "edge")], &[])).should_run);
        assert!(!fit(&daemon_set, &node("b", &[("role", "core")], &[])).should_run);
        // Conditions' taints are tolerated; an unschedulable node still
        // gets its daemon.
        let tolerated = node(
            "c",
            &[("role", "edge")],
            &[
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ],
        );
        assert!(fit(&daemon_set, &tolerated).should_run);
        // Other taints: NoSchedule keeps a pod there, NoExecute does not.
        let no_schedule = node("d", &[("role", "edge")], &[("dedicated", "NoSchedule")]);
        assert_eq!(
            fit(&daemon_set, &no_schedule),
            Fit {
                should_run: false,
                should_continue_running: true
            }
        );
        let no_execute = node("e", &[("role", "edge")], &[("dedicated", "NoExecute")]);
        assert!(!fit(&daemon_set, &no_execute).should_continue_running);
    }

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_and_found_there_before_binding() {
        let daemon_set = daemon_set(None);
        let hash = template_hash(&daemon_set);
        let pod = daemon_pod(&daemon_set, "n1", &hash, OwnerReference::default());
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(REVISION_HASH), Some(&hash));
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        let terms = &pod
            .spec
            .as_ref()
            .unwrap()
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert!(node_selector_terms_match(terms, "n1", &Labels::new()));
        assert!(!node_selector_terms_match(terms, "n2", &Labels::new()));
        assert_eq!(
            pod.spec
                .as_ref()
                .unwrap()
                .tolerations
                .as_ref()
                .unwrap()
                .len(),
            6
        );
    }

    /// Plays the controller one action at a time (each state a restart
    /// point) until it has nothing to do.
    fn converge(
        daemon_set: &DaemonSet,
        nodes: &[Arc<Node>],
        mut pods: Vec<Arc<Pod>>,
    ) -> Vec<Arc<Pod>> {
        let hash = template_hash(daemon_set);
        for step in 0..50 {
            let plan = plan(daemon_set, &hash, nodes, &pods, at(1000 + step));
            if let Some(node) = plan.create.first() {
                pods.push(placed(daemon_set, node, &hash, 1000 + step));
            } else if let Some(victim) = plan.delete.first() {
                pods.retain(|pod| pod.metadata.uid != victim.metadata.uid);
            } else {
                return pods;
            }
        }
        panic!("the daemon set never converged");
    }

    fn per_node(pods: &[Arc<Pod>]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for pod in pods {
            *counts.entry(target_node(pod).unwrap()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn one_pod_per_eligible_node_from_any_partial_state() {
        let daemon_set = daemon_set(None);
        let hash = template_hash(&daemon_set);
        let nodes = vec![
            node("a", &[], &[]),
            node("b", &[], &[]),
            node("c", &[], &[]),
        ];
        // A duplicate on a, none on b or c, and one for a node that left.
        let start = vec![
            placed(&daemon_set, "a", &hash, 1),
            placed(&daemon_set, "a", &hash, 2),
            placed(&daemon_set, "gone", &hash, 3),
        ];
        let pods = converge(&daemon_set, &nodes, start);
        assert_eq!(
            per_node(&pods),
            [
                ("a".to_string(), 1),
                ("b".to_string(), 1),
                ("c".to_string(), 1)
            ]
            .into()
        );
        // The oldest of the duplicates stayed.
        assert!(
            pods.iter()
                .any(|pod| pod.metadata.name.as_deref() == Some("agent-a-1"))
        );
        let status = status(&daemon_set, &hash, &nodes, &pods, at(5000));
        assert_eq!(status.desired_number_scheduled, 3);
        assert_eq!(status.current_number_scheduled, 3);
        assert_eq!(status.number_ready, 3);
        assert_eq!(status.updated_number_scheduled, Some(3));
        assert_eq!(status.number_misscheduled, 0);
        // A node that stops matching loses its pod; a new node gets one.
        let mut relabelled = daemon_set.clone();
        relabelled
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some([("role".to_string(), "edge".to_string())].into());
        let edge_nodes = vec![
            node("a", &[("role", "edge")], &[]),
            node("b", &[], &[]),
            node("d", &[("role", "edge")], &[]),
        ];
        let edge_hash = template_hash(&relabelled);
        let misplaced = super::status(&relabelled, &edge_hash, &edge_nodes, &pods, at(5000));
        assert_eq!(misplaced.number_misscheduled, 1);
        let pods = converge(&relabelled, &edge_nodes, pods);
        assert_eq!(
            per_node(&pods),
            [("a".to_string(), 1), ("d".to_string(), 1)].into()
        );
    }

    #[test]
    fn a_rolling_update_replaces_at_most_max_unavailable_at_a_time() {
        let old = daemon_set(None);
        let old_hash = template_hash(&old);
        let nodes = vec![
            node("a", &[], &[]),
            node("b", &[], &[]),
            node("c", &[], &[]),
        ];
        let mut pods: Vec<Arc<Pod>> = ["a", "b", "c"]
            .iter()
            .map(|node| placed(&old, node, &old_hash, 1))
            .collect();
        let mut new = old.clone();
        new.metadata.generation = Some(2);
        new.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .hostname = Some("v2".into());
        let new_hash = template_hash(&new);
        assert_ne!(old_hash, new_hash);
        let first = plan(&new, &new_hash, &nodes, &pods, at(10));
        assert_eq!(first.delete.len(), 1, "one old pod at a time");
        assert!(first.create.is_empty());
        pods.retain(|pod| pod.metadata.uid != first.delete[0].metadata.uid);
        // The node without a pod gets a new one; no other old pod goes
        // while it is missing.
        let second = plan(&new, &new_hash, &nodes, &pods, at(11));
        assert_eq!(second.create.len(), 1);
        assert!(second.delete.is_empty());
        let pods = converge(&new, &nodes, pods);
        assert!(
            pods.iter()
                .all(|pod| hash_of(pod) == Some(new_hash.as_str()))
        );
        assert_eq!(pods.len(), 3);
        // OnDelete: old pods stay.
        let mut on_delete = new.clone();
        on_delete
            .spec
            .as_mut()
            .unwrap()
            .update_strategy
            .as_mut()
            .unwrap()
            .type_ = Some("OnDelete".into());
        on_delete
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .hostname = Some("v3".into());
        let v3 = template_hash(&on_delete);
        assert!(
            plan(&on_delete, &v3, &nodes, &pods, at(2000))
                .delete
                .is_empty()
        );
    }

    #[test]
    fn failed_daemon_pods_are_replaced() {
        let daemon_set = daemon_set(None);
        let hash = template_hash(&daemon_set);
        let nodes = vec![node("a", &[], &[])];
        let failed = Arc::new(with_phase(
            (*placed(&daemon_set, "a", &hash, 1)).clone(),
            "Failed",
        ));
        let first = plan(&daemon_set, &hash, &nodes, &[Arc::clone(&failed)], at(10));
        assert_eq!(first.delete.len(), 1);
        let second = plan(&daemon_set, &hash, &nodes, &[], at(11));
        assert_eq!(second.create, ["a"]);
    }
}
