//! What the controllers that own pods share (upstream's `controller_utils`):
//! which pods count, when a pod is ready and when available, a pod made
//! from a template, and the slow-start batches creations go out in.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

pub use scheduler::core::selectors::Labels;

/// The most pods one sync creates or deletes (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The annotation that orders deletions: lower costs go first.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

pub fn labels_of(pod: &Pod) -> Labels {
    pod.metadata.labels.clone().unwrap_or_default()
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Counted toward a controller's replicas: not being deleted, not finished.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminating(pod) && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// The pod's `Ready` condition, when it is True: since when.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|condition| condition.type_ == "Ready" && condition.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|time| time.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's
/// `IsPodAvailable`; a Ready condition with no transition time counts as
/// ready long enough).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => since + Duration::from_secs(min_ready_seconds as u64) <= now,
    }
}

/// How long until a ready pod becomes available, if it is not yet.
pub fn until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    let since = ready_since(pod)??;
    let available_at = since + Duration::from_secs(min_ready_seconds as u64);
    if available_at <= now {
        return None;
    }
    let wait = available_at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or_default())
}

/// A new pod from `template` (upstream's `GetPodFromTemplate`): the
/// template's labels, annotations, finalizers and spec, named by the
/// server from `generate_name`, controlled by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let template_meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The batch sizes `total` operations go out in (upstream's
/// `slowStartBatch` from 1): 1, 2, 4, … so a create that always fails
/// fails once, not `total` times. The caller stops at the first batch
/// with a failure.
pub fn slow_start_batches(total: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = total;
    let mut size = 1;
    while remaining > 0 {
        let batch = size.min(remaining);
        batches.push(batch);
        remaining -= batch;
        size *= 2;
    }
    batches
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(DELETION_COST))
        .and_then(|cost| cost.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|status| status.restart_count).sum())
        .unwrap_or(0)
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// Orders pods best-to-delete first (upstream's `ActivePodsWithRanks`):
/// unscheduled, then pending (then unknown) before running, not ready
/// before ready, lower deletion cost, more of the owner's pods on the same
/// node, ready for less time, more restarts, newer. Returns indexes into
/// `pods`.
pub fn deletion_order(pods: &[&Pod]) -> Vec<usize> {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_deref())
            .map(|node| per_node.get(node).copied().unwrap_or(0))
            .unwrap_or(0)
    };
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by(|&left, &right| {
        let (a, b) = (pods[left], pods[right]);
        let scheduled = |pod: &Pod| {
            pod.spec
                .as_ref()
                .and_then(|spec| spec.node_name.as_deref())
                .is_some_and(|node| !node.is_empty())
        };
        scheduled(a)
            .cmp(&scheduled(b))
            .then(phase_rank(a).cmp(&phase_rank(b)))
            .then(is_ready(a).cmp(&is_ready(b)))
            .then(deletion_cost(a).cmp(&deletion_cost(b)))
            .then(rank(b).cmp(&rank(a)))
            .then_with(
                || match (ready_since(a).flatten(), ready_since(b).flatten()) {
                    // Ready more recently goes first.
                    (Some(since_a), Some(since_b)) => since_b.cmp(&since_a),
                    _ => std::cmp::Ordering::Equal,
                },
            )
            .then(restarts(b).cmp(&restarts(a)))
            .then_with(|| {
                let created =
                    |pod: &Pod| pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
                // No creation time sorts as newest.
                match (created(a), created(b)) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(time_a), Some(time_b)) => time_b.cmp(&time_a),
                }
            })
    });
    order
}

#[cfg(test)]
pub mod testing {
    //! Pods in the states the cores see, for their tests.

    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    /// A pod named `name` with `labels`, controlled by `owner` (a uid) if
    /// given, created at `at(created)`.
    pub fn pod(name: &str, labels: &[(&str, &str)], owner: Option<&str>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some("1".to_string()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(key, value)| (key.to_string(), value.to_string()))
                        .collect(),
                ),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: "owner".into(),
                        uid: uid.to_string(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                creation_timestamp: Some(Time(at(created))),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                ..PodStatus::default()
            }),
        }
    }

    pub fn on_node(mut pod: Pod, node: &str) -> Pod {
        pod.spec.get_or_insert_default().node_name = Some(node.to_string());
        pod
    }

    pub fn running(mut pod: Pod) -> Pod {
        pod.status.get_or_insert_default().phase = Some("Running".into());
        pod
    }

    /// Running and Ready since `at(since)`.
    pub fn ready(pod: Pod, since: i64) -> Pod {
        let mut pod = running(pod);
        pod.status.get_or_insert_default().conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(at(since))),
            ..PodCondition::default()
        }]);
        pod
    }

    pub fn with_phase(mut pod: Pod, phase: &str) -> Pod {
        pod.status.get_or_insert_default().phase = Some(phase.to_string());
        pod
    }

    pub fn terminating(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(at(1000)));
        pod
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn slow_start_doubles_and_ends_on_the_total() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), vec![1]);
        assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
        assert_eq!(slow_start_batches(500).iter().sum::<usize>(), 500);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod = ready(pod("a", &[], None, 0), 10);
        assert!(is_available(&pod, 0, at(10)));
        assert!(!is_available(&pod, 5, at(12)));
        assert!(is_available(&pod, 5, at(15)));
        assert_eq!(
            until_available(&pod, 5, at(12)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(until_available(&pod, 5, at(16)), None);
        assert!(!is_available(&running(pod_named("b")), 0, at(20)));
    }

    fn pod_named(name: &str) -> Pod {
        pod(name, &[], None, 0)
    }

    #[test]
    fn deletion_prefers_unscheduled_then_pending_then_unready_then_doubled_up_then_newest() {
        let unscheduled = pod("unscheduled", &[], None, 0);
        let pending = on_node(pod("pending", &[], None, 0), "n1");
        let unready = running(on_node(pod("unready", &[], None, 0), "n1"));
        let doubled_up = ready(on_node(pod("doubled-up", &[], None, 0), "n2"), 0);
        let doubled_up_too = ready(on_node(pod("doubled-up-too", &[], None, 1), "n2"), 0);
        let alone_new = ready(on_node(pod("alone-new", &[], None, 5), "n3"), 0);
        let alone_old = ready(on_node(pod("alone-old", &[], None, 1), "n4"), 0);
        let pods = [
            &alone_old,
            &doubled_up,
            &alone_new,
            &unready,
            &doubled_up_too,
            &pending,
            &unscheduled,
        ];
        let order: Vec<&str> = deletion_order(&pods)
            .into_iter()
            .map(|index| pods[index].metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "unready",
                "doubled-up-too",
                "doubled-up",
                "alone-new",
                "alone-old"
            ]
        );
    }

    #[test]
    fn finished_and_terminating_pods_are_not_active() {
        assert!(is_active(&pod_named("a")));
        assert!(!is_active(&with_phase(pod_named("a"), "Succeeded")));
        assert!(!is_active(&with_phase(pod_named("a"), "Failed")));
        assert!(!is_active(&terminating(pod_named("a"))));
    }
}
