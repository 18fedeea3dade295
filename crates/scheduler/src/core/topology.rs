//! What the topology-aware filters and scores (PodTopologySpread and
//! InterPodAffinity) prepare once per pod: matching pods counted per
//! topology domain, and the domains other pods' anti-affinity forbids.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::filter::{Demand, Reason};
use super::selectors::{self, Labels};
use super::{Cluster, NodeInfo};

/// One spread constraint, its matching pods counted per domain.
pub struct Spread {
    pub topology_key: String,
    pub max_skew: i64,
    selector: LabelSelector,
    /// Matching pods per domain, every eligible domain present (zero or more).
    pub counts: HashMap<String, i64>,
    /// The smallest count (0 when fewer domains than `minDomains`).
    min: i64,
    self_match: i64,
    honor_node_affinity: bool,
    honor_taints: bool,
}

/// An affinity term and its matching pods per domain.
struct TermCounts {
    topology_key: String,
    counts: HashMap<String, i64>,
}

/// Per-pod state for the topology filters and scores.
#[derive(Default)]
pub struct Prepared {
    hard_spread: Vec<Spread>,
    pub soft_spread: Vec<Spread>,
    affinity: Vec<TermCounts>,
    /// No pod anywhere matches the required affinity terms, and the pod
    /// matches them itself: the first pod of a group may go anywhere.
    affinity_first_of_group: bool,
    anti_affinity: Vec<TermCounts>,
    /// Domains (topology key, value) that placed pods' required
    /// anti-affinity closes to this pod.
    forbidden: Vec<(String, String)>,
    /// Preferred (anti-)affinity: weight per (topology key, value).
    pub preferred: HashMap<(String, String), i64>,
}

/// Whether an affinity term of a pod in `owner_namespace` selects a pod in
/// `namespace` with `labels`. A nil selector selects nothing; a non-empty
/// namespaceSelector needs namespace labels the model does not keep, so it
/// selects nothing (an empty one selects every namespace).
fn term_selects(
    term: &PodAffinityTerm,
    owner_namespace: &str,
    namespace: &str,
    labels: &Labels,
) -> bool {
    let in_namespace = match (&term.namespaces, &term.namespace_selector) {
        (Some(namespaces), _) if !namespaces.is_empty() => {
            namespaces.iter().any(|n| n == namespace)
        }
        (_, Some(selector)) => {
            selector
                .match_labels
                .as_ref()
                .is_none_or(|labels| labels.is_empty())
                && selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(|exprs| exprs.is_empty())
        }
        _ => owner_namespace == namespace,
    };
    in_namespace
        && term
            .label_selector
            .as_ref()
            .is_some_and(|selector| selectors::selector_matches(selector, labels))
}

fn with_match_label_keys(
    selector: &Option<LabelSelector>,
    keys: &Option<Vec<String>>,
    labels: &Labels,
) -> LabelSelector {
    let mut selector = selector.clone().unwrap_or_default();
    for key in keys.iter().flatten() {
        if let Some(value) = labels.get(key) {
            selector
                .match_labels
                .get_or_insert_with(Default::default)
                .insert(key.clone(), value.clone());
        }
    }
    selector
}

fn spread_of(constraint: &TopologySpreadConstraint, labels: &Labels) -> Spread {
    let selector = with_match_label_keys(
        &constraint.label_selector,
        &constraint.match_label_keys,
        labels,
    );
    let self_match = i64::from(selectors::selector_matches(&selector, labels));
    Spread {
        topology_key: constraint.topology_key.clone(),
        max_skew: i64::from(constraint.max_skew.max(1)),
        selector,
        counts: HashMap::new(),
        min: 0,
        self_match,
        honor_node_affinity: constraint.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: constraint.node_taints_policy.as_deref() == Some("Honor"),
    }
}

impl Spread {
    /// Whether a node's pods count toward this constraint's domains.
    fn eligible(&self, demand: &Demand<'_>, name: &str, info: &NodeInfo, keys: &[String]) -> bool {
        keys.iter().all(|key| info.labels.contains_key(key))
            && (!self.honor_node_affinity || demand.matches_node_affinity(name, &info.labels))
            && (!self.honor_taints || demand.untolerated_taint(&info.taints).is_none())
    }
}

impl Prepared {
    pub fn new(cluster: &Cluster, pod: &Pod, demand: &Demand<'_>) -> Prepared {
        let mut prepared = Prepared::default();
        let spec = pod.spec.as_ref();
        for constraint in spec
            .and_then(|spec| spec.topology_spread_constraints.as_ref())
            .into_iter()
            .flatten()
        {
            let spread = spread_of(constraint, &demand.labels);
            if constraint.when_unsatisfiable == "ScheduleAnyway" {
                prepared.soft_spread.push(spread);
            } else {
                prepared.hard_spread.push(spread);
            }
        }
        let affinity = spec.and_then(|spec| spec.affinity.as_ref());
        let pod_affinity = affinity.and_then(|affinity| affinity.pod_affinity.as_ref());
        let pod_anti_affinity = affinity.and_then(|affinity| affinity.pod_anti_affinity.as_ref());
        let required_affinity: &[PodAffinityTerm] = pod_affinity
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        let required_anti_affinity: &[PodAffinityTerm] = pod_anti_affinity
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        let mut preferred_terms: Vec<(i64, &PodAffinityTerm)> = Vec::new();
        for weighted in pod_affinity
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
        {
            preferred_terms.push((i64::from(weighted.weight), &weighted.pod_affinity_term));
        }
        for weighted in pod_anti_affinity
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
        {
            preferred_terms.push((-i64::from(weighted.weight), &weighted.pod_affinity_term));
        }
        prepared.affinity = required_affinity
            .iter()
            .map(|term| TermCounts {
                topology_key: term.topology_key.clone(),
                counts: HashMap::new(),
            })
            .collect();
        prepared.anti_affinity = required_anti_affinity
            .iter()
            .map(|term| TermCounts {
                topology_key: term.topology_key.clone(),
                counts: HashMap::new(),
            })
            .collect();

        // Every eligible domain exists in a spread's counts, even with no pods.
        let hard_keys: Vec<String> = prepared
            .hard_spread
            .iter()
            .map(|s| s.topology_key.clone())
            .collect();
        let soft_keys: Vec<String> = prepared
            .soft_spread
            .iter()
            .map(|s| s.topology_key.clone())
            .collect();
        let mut hard_eligible: HashMap<u32, bool> = HashMap::new();
        let mut soft_eligible: HashMap<u32, bool> = HashMap::new();
        if !prepared.hard_spread.is_empty() || !prepared.soft_spread.is_empty() {
            for (slot, entry) in cluster.slots.iter().enumerate() {
                let Some(info) = &entry.info else { continue };
                if let Some(first) = prepared.hard_spread.first() {
                    let eligible = first.eligible(demand, &entry.name, info, &hard_keys);
                    hard_eligible.insert(slot as u32, eligible);
                    if eligible {
                        for spread in &mut prepared.hard_spread {
                            spread
                                .counts
                                .entry(info.labels[&spread.topology_key].clone())
                                .or_default();
                        }
                    }
                }
                if let Some(first) = prepared.soft_spread.first() {
                    let eligible = first.eligible(demand, &entry.name, info, &soft_keys);
                    soft_eligible.insert(slot as u32, eligible);
                    if eligible {
                        for spread in &mut prepared.soft_spread {
                            spread
                                .counts
                                .entry(info.labels[&spread.topology_key].clone())
                                .or_default();
                        }
                    }
                }
            }
        }

        let needs_pods = !prepared.hard_spread.is_empty()
            || !prepared.soft_spread.is_empty()
            || !required_affinity.is_empty()
            || !required_anti_affinity.is_empty()
            || !preferred_terms.is_empty();
        if needs_pods {
            for placed in cluster.pods.values() {
                let Some(info) = &cluster.slots[placed.node_slot as usize].info else {
                    continue;
                };
                let same_namespace = *placed.namespace == *demand.namespace;
                for (spreads, eligible) in [
                    (&mut prepared.hard_spread, &hard_eligible),
                    (&mut prepared.soft_spread, &soft_eligible),
                ] {
                    if spreads.is_empty()
                        || !same_namespace
                        || eligible.get(&placed.node_slot) != Some(&true)
                    {
                        continue;
                    }
                    for spread in spreads.iter_mut() {
                        if selectors::selector_matches(&spread.selector, &placed.labels) {
                            *spread
                                .counts
                                .entry(info.labels[&spread.topology_key].clone())
                                .or_default() += 1;
                        }
                    }
                }
                for (terms, counts) in [
                    (required_affinity, &mut prepared.affinity),
                    (required_anti_affinity, &mut prepared.anti_affinity),
                ] {
                    for (term, counted) in terms.iter().zip(counts.iter_mut()) {
                        if let Some(value) = info.labels.get(&term.topology_key)
                            && term_selects(
                                term,
                                demand.namespace,
                                &placed.namespace,
                                &placed.labels,
                            )
                        {
                            *counted.counts.entry(value.clone()).or_default() += 1;
                        }
                    }
                }
                for (weight, term) in &preferred_terms {
                    if let Some(value) = info.labels.get(&term.topology_key)
                        && term_selects(term, demand.namespace, &placed.namespace, &placed.labels)
                    {
                        *prepared
                            .preferred
                            .entry((term.topology_key.clone(), value.clone()))
                            .or_default() += weight;
                    }
                }
            }
        }
        for (spread, constraint) in prepared.hard_spread.iter_mut().zip(
            spec.and_then(|spec| spec.topology_spread_constraints.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.when_unsatisfiable != "ScheduleAnyway"),
        ) {
            let min_domains = constraint.min_domains.unwrap_or(1).max(1) as usize;
            spread.min = if spread.counts.len() < min_domains {
                0
            } else {
                spread.counts.values().copied().min().unwrap_or(0)
            };
        }
        prepared.affinity_first_of_group = !required_affinity.is_empty()
            && prepared.affinity.iter().all(|term| term.counts.is_empty())
            && required_affinity
                .iter()
                .all(|term| term_selects(term, demand.namespace, demand.namespace, &demand.labels));

        for key in &cluster.anti_affinity_pods {
            let placed = &cluster.pods[key];
            let Some(info) = &cluster.slots[placed.node_slot as usize].info else {
                continue;
            };
            for term in placed.anti_affinity.iter().flatten() {
                if let Some(value) = info.labels.get(&term.topology_key)
                    && term_selects(term, &placed.namespace, demand.namespace, &demand.labels)
                {
                    prepared
                        .forbidden
                        .push((term.topology_key.clone(), value.clone()));
                }
            }
        }
        prepared
    }

    /// PodTopologySpread's and InterPodAffinity's filters.
    pub fn check(
        &self,
        cluster: &Cluster,
        _demand: &Demand<'_>,
        slot: u32,
    ) -> Result<(), Vec<Reason>> {
        let labels = &cluster.slots[slot as usize]
            .info
            .as_ref()
            .expect("existing node")
            .labels;
        for spread in &self.hard_spread {
            let Some(value) = labels.get(&spread.topology_key) else {
                return Err(vec![Reason::SpreadMissingLabel]);
            };
            let count = spread.counts.get(value).copied().unwrap_or(0);
            if count + spread.self_match - spread.min > spread.max_skew {
                return Err(vec![Reason::SpreadConstraints]);
            }
        }
        if !self.affinity_first_of_group {
            for term in &self.affinity {
                let matched = labels
                    .get(&term.topology_key)
                    .is_some_and(|value| term.counts.get(value).copied().unwrap_or(0) > 0);
                if !matched {
                    return Err(vec![Reason::PodAffinity]);
                }
            }
        }
        for term in &self.anti_affinity {
            if labels
                .get(&term.topology_key)
                .is_some_and(|value| term.counts.get(value).copied().unwrap_or(0) > 0)
            {
                return Err(vec![Reason::PodAntiAffinity]);
            }
        }
        if self
            .forbidden
            .iter()
            .any(|(key, value)| labels.get(key) == Some(value))
        {
            return Err(vec![Reason::ExistingAntiAffinity]);
        }
        Ok(())
    }
}
