//! The scores: each plugin rates every feasible node 0–100, and the total
//! is their weighted sum with kube-scheduler's default weights.

use super::filter::Demand;
use super::topology::{Prepared, Spread};
use super::{Cluster, HOSTNAME_LABEL, NodeInfo, NodeSlot, normalized_image, selectors};

const MAX_SCORE: i64 = 100;

/// kube-scheduler's default score weights.
const WEIGHT_TAINT_TOLERATION: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;
const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED_ALLOCATION: i64 = 1;
const WEIGHT_IMAGE_LOCALITY: i64 = 1;

/// ImageLocality's bounds: below 23 MB an image is not worth moving for; the
/// score saturates at 1000 MB per container.
const IMAGE_MIN_THRESHOLD: i64 = 23 * 1024 * 1024;
const IMAGE_MAX_THRESHOLD_PER_CONTAINER: i64 = 1000 * 1024 * 1024;

/// The default spreading of a workload (kube-scheduler's system default
/// constraints, ScheduleAnyway): at most 3 apart across nodes, 5 across zones.
const DEFAULT_NODE_MAX_SKEW: i64 = 3;
const DEFAULT_ZONE_MAX_SKEW: i64 = 5;

/// The total score of each node in `feasible`, in that order.
pub fn total_scores(
    cluster: &Cluster,
    demand: &Demand<'_>,
    prepared: &Prepared,
    feasible: &[u32],
) -> Vec<i64> {
    let nodes: Vec<(&NodeSlot, &NodeInfo)> = feasible
        .iter()
        .map(|slot| {
            let entry = &cluster.slots[*slot as usize];
            (entry, entry.info.as_ref().expect("existing node"))
        })
        .collect();
    let mut totals = vec![0i64; nodes.len()];
    let mut add = |weight: i64, scores: Vec<i64>| {
        for (total, score) in totals.iter_mut().zip(scores) {
            *total += weight * score;
        }
    };
    add(
        WEIGHT_LEAST_ALLOCATED,
        nodes
            .iter()
            .map(|(entry, info)| least_allocated(entry, info, demand))
            .collect(),
    );
    add(
        WEIGHT_BALANCED_ALLOCATION,
        nodes
            .iter()
            .map(|(entry, info)| balanced_allocation(entry, info, demand))
            .collect(),
    );
    add(
        WEIGHT_IMAGE_LOCALITY,
        image_locality(cluster, demand, &nodes),
    );
    add(WEIGHT_NODE_AFFINITY, node_affinity(demand, &nodes));
    add(WEIGHT_TAINT_TOLERATION, taint_toleration(demand, &nodes));
    add(
        WEIGHT_TOPOLOGY_SPREAD,
        topology_spread(cluster, demand, prepared, feasible, &nodes),
    );
    add(
        WEIGHT_INTER_POD_AFFINITY,
        inter_pod_affinity(prepared, &nodes),
    );
    totals
}

fn fractions(entry: &NodeSlot, info: &NodeInfo, demand: &Demand<'_>) -> [(i64, i64); 2] {
    [
        (
            entry.non_zero_requested.0 + demand.non_zero.0,
            info.allocatable.milli_cpu,
        ),
        (
            entry.non_zero_requested.1 + demand.non_zero.1,
            info.allocatable.memory,
        ),
    ]
}

/// LeastAllocated: the mean free share of CPU and memory after the pod.
pub fn least_allocated(entry: &NodeSlot, info: &NodeInfo, demand: &Demand<'_>) -> i64 {
    let shares = fractions(entry, info, demand).map(|(requested, allocatable)| {
        if allocatable == 0 || requested > allocatable {
            0
        } else {
            (allocatable - requested) * MAX_SCORE / allocatable
        }
    });
    shares.iter().sum::<i64>() / shares.len() as i64
}

/// BalancedAllocation: how close CPU and memory use are after the pod
/// (one minus their standard deviation).
pub fn balanced_allocation(entry: &NodeSlot, info: &NodeInfo, demand: &Demand<'_>) -> i64 {
    let [cpu, memory] = fractions(entry, info, demand).map(|(requested, allocatable)| {
        if allocatable == 0 {
            1.0
        } else {
            (requested as f64 / allocatable as f64).min(1.0)
        }
    });
    let deviation = (cpu - memory).abs() / 2.0;
    ((1.0 - deviation) * MAX_SCORE as f64) as i64
}

/// ImageLocality: the sizes of the pod's images already on the node, each
/// scaled by the share of nodes that have it (an image everywhere is no
/// reason to pick one node).
fn image_locality(
    cluster: &Cluster,
    demand: &Demand<'_>,
    nodes: &[(&NodeSlot, &NodeInfo)],
) -> Vec<i64> {
    let Some(spec) = demand.pod.spec.as_ref() else {
        return vec![0; nodes.len()];
    };
    let images: Vec<String> = spec
        .containers
        .iter()
        .filter_map(|container| container.image.as_deref())
        .map(normalized_image)
        .collect();
    if images.is_empty() || cluster.image_nodes.is_empty() {
        return vec![0; nodes.len()];
    }
    let max = IMAGE_MAX_THRESHOLD_PER_CONTAINER * images.len() as i64;
    nodes
        .iter()
        .map(|(_, info)| {
            let mut sum = 0i64;
            for image in &images {
                if let Some((_, size)) = info.images.iter().find(|(name, _)| name == image) {
                    let holders = cluster.image_nodes.get(image).copied().unwrap_or(1) as f64;
                    sum += (*size as f64 * holders / cluster.n_nodes.max(1) as f64) as i64;
                }
            }
            let sum = sum.clamp(IMAGE_MIN_THRESHOLD, max);
            MAX_SCORE * (sum - IMAGE_MIN_THRESHOLD) / (max - IMAGE_MIN_THRESHOLD)
        })
        .collect()
}

/// NodeAffinity's score: the weights of the preferred terms a node matches,
/// scaled so the best node has 100.
fn node_affinity(demand: &Demand<'_>, nodes: &[(&NodeSlot, &NodeInfo)]) -> Vec<i64> {
    let preferred = demand
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.affinity.as_ref())
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let raw: Vec<i64> = nodes
        .iter()
        .map(|(entry, info)| {
            preferred
                .iter()
                .filter(|term| {
                    selectors::node_selector_term_matches(
                        &term.preference,
                        &entry.name,
                        &info.labels,
                    )
                })
                .map(|term| i64::from(term.weight))
                .sum()
        })
        .collect();
    normalize(raw, false)
}

/// TaintToleration's score: fewer untolerated PreferNoSchedule taints is better.
fn taint_toleration(demand: &Demand<'_>, nodes: &[(&NodeSlot, &NodeInfo)]) -> Vec<i64> {
    let tolerations: Vec<_> = demand
        .tolerations
        .iter()
        .filter(|toleration| {
            toleration
                .effect
                .as_deref()
                .is_none_or(|effect| effect.is_empty() || effect == "PreferNoSchedule")
        })
        .cloned()
        .collect();
    let raw: Vec<i64> = nodes
        .iter()
        .map(|(_, info)| {
            info.taints
                .iter()
                .filter(|taint| {
                    taint.effect == "PreferNoSchedule" && !selectors::tolerated(&tolerations, taint)
                })
                .count() as i64
        })
        .collect();
    normalize(raw, true)
}

/// Upstream's DefaultNormalizeScore: scale to the maximum (reversed: the
/// maximum scores 0).
fn normalize(raw: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return vec![if reverse { MAX_SCORE } else { 0 }; raw.len()];
    }
    raw.into_iter()
        .map(|score| {
            let scaled = score * MAX_SCORE / max;
            if reverse { MAX_SCORE - scaled } else { scaled }
        })
        .collect()
}

/// PodTopologySpread's score: the pod's ScheduleAnyway constraints, or, when
/// it has no constraints at all, the default spreading of its workload (the
/// pods of the same controller) across nodes and zones. Fewer matching pods
/// in a node's domains is better; each constraint weighs the log of its
/// number of domains, as upstream.
fn topology_spread(
    cluster: &Cluster,
    demand: &Demand<'_>,
    prepared: &Prepared,
    feasible: &[u32],
    nodes: &[(&NodeSlot, &NodeInfo)],
) -> Vec<i64> {
    let has_constraints = demand
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.topology_spread_constraints.as_ref())
        .is_some_and(|constraints| !constraints.is_empty());
    let raw: Vec<Option<f64>> = if has_constraints {
        if prepared.soft_spread.is_empty() {
            return vec![MAX_SCORE; nodes.len()];
        }
        nodes
            .iter()
            .map(|(_, info)| soft_spread_score(&prepared.soft_spread, info))
            .collect()
    } else {
        let Some(counts) =
            super::workload_of(demand.pod).and_then(|uid| cluster.workloads.get(uid))
        else {
            return vec![MAX_SCORE; nodes.len()];
        };
        let node_weight = ((cluster.n_nodes + 2) as f64).ln();
        let zone_weight = ((cluster.n_zones + 2) as f64).ln();
        feasible
            .iter()
            .zip(nodes)
            .map(|(slot, (_, info))| {
                let on_node = counts.per_node.get(slot).copied().unwrap_or(0) as f64;
                let mut score = on_node * node_weight + (DEFAULT_NODE_MAX_SKEW - 1) as f64;
                if let Some(zone) = &info.zone {
                    let in_zone = counts.per_zone.get(zone).copied().unwrap_or(0) as f64;
                    score += in_zone * zone_weight + (DEFAULT_ZONE_MAX_SKEW - 1) as f64;
                }
                Some(score)
            })
            .collect()
    };
    let scored = raw.iter().flatten();
    let max = scored.clone().copied().fold(f64::MIN, f64::max);
    let min = scored.copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|score| match score {
            // A node without the constraints' labels is not preferred.
            None => 0,
            Some(_) if max <= 0.0 => MAX_SCORE,
            Some(score) => (MAX_SCORE as f64 * (max + min - score) / max) as i64,
        })
        .collect()
}

fn soft_spread_score(spreads: &[Spread], info: &NodeInfo) -> Option<f64> {
    let mut score = 0.0;
    for spread in spreads {
        let value = if spread.topology_key == HOSTNAME_LABEL {
            info.labels.get(HOSTNAME_LABEL)?
        } else {
            info.labels.get(&spread.topology_key)?
        };
        let count = spread.counts.get(value).copied().unwrap_or(0) as f64;
        let weight = ((spread.counts.len() + 2) as f64).ln();
        score += count * weight + (spread.max_skew - 1) as f64;
    }
    Some(score)
}

/// InterPodAffinity's score: the preferred (anti-)affinity weights of the
/// node's domains, scaled between the lowest (0) and the highest (100).
fn inter_pod_affinity(prepared: &Prepared, nodes: &[(&NodeSlot, &NodeInfo)]) -> Vec<i64> {
    if prepared.preferred.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|(_, info)| {
            prepared
                .preferred
                .iter()
                .filter(|((key, value), _)| info.labels.get(key) == Some(value))
                .map(|(_, weight)| *weight)
                .sum()
        })
        .collect();
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    if max == min {
        return vec![0; raw.len()];
    }
    raw.into_iter()
        .map(|score| MAX_SCORE * (score - min) / (max - min))
        .collect()
}
