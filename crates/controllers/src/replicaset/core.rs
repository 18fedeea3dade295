//! The ReplicaSet controller's decisions, sans IO: which pods a ReplicaSet
//! owns (claiming: adopt matching orphans, release pods that stopped
//! matching), how many to create or which to delete, and its status.
//! Everything is computed from the ReplicaSet and the pods as they are now,
//! so a restart between any two steps computes the remaining steps.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use scheduler::core::selectors::selector_matches;

use crate::ownership::controller_of;
use crate::pods::{self, BURST_REPLICAS};

/// The condition a ReplicaSet carries while it cannot create or delete.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Which pods are the ReplicaSet's (upstream's `ClaimPods` over the
/// active pods of its namespace).
#[derive(Debug, Default)]
pub struct Claim {
    /// Active pods it controls whose labels match its selector.
    pub owned: Vec<Arc<Pod>>,
    /// Active orphans that match: to adopt (then they are owned).
    pub adopt: Vec<Arc<Pod>>,
    /// Pods it controls that no longer match: to release.
    pub release: Vec<Arc<Pod>>,
}

/// Whether `owner` (kind and uid) is `pod`'s controller.
pub fn controlled_by(pod: &Pod, owner_uid: &str) -> bool {
    controller_of(&pod.metadata).is_some_and(|reference| reference.uid == owner_uid)
}

/// Claims `pods` for an owner with `owner_uid` and `selector` (shared by
/// the controllers that own pods by selector). An owner being deleted
/// adopts and releases nothing; an empty selector matches nothing here
/// (upstream refuses to adopt everything).
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: Option<&LabelSelector>,
    pods: &[Arc<Pod>],
) -> Claim {
    let mut claim = Claim::default();
    let empty = LabelSelector::default();
    let selector = selector.unwrap_or(&empty);
    let selects_nothing = selector
        .match_labels
        .as_ref()
        .is_none_or(|labels| labels.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|expressions| expressions.is_empty());
    for pod in pods {
        if !pods::is_active(pod) {
            continue;
        }
        let matches = !selects_nothing && selector_matches(selector, &pods::labels_of(pod));
        match controller_of(&pod.metadata) {
            Some(reference) if reference.uid == owner_uid => {
                if matches {
                    claim.owned.push(Arc::clone(pod));
                } else if !owner_deleting {
                    claim.release.push(Arc::clone(pod));
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting {
                    claim.adopt.push(Arc::clone(pod));
                }
            }
        }
    }
    claim
}

/// The owner references a pod gets when adopted by `owner`: its own, with
/// `owner`'s added (replacing a non-controller reference to the same uid).
pub fn adopted_references(pod: &Pod, owner: &OwnerReference) -> Vec<OwnerReference> {
    let mut references: Vec<OwnerReference> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|reference| reference.uid != owner.uid)
        .cloned()
        .collect();
    references.push(owner.clone());
    references
}

/// The owner references a pod keeps when released by the owner `owner_uid`.
pub fn released_references(pod: &Pod, owner_uid: &str) -> Vec<OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|reference| reference.uid != owner_uid)
        .cloned()
        .collect()
}

/// What to do about the number of pods.
#[derive(Debug, Default, PartialEq)]
pub struct Scale {
    pub create: usize,
    /// Pods to delete, best first.
    pub delete: Vec<Arc<Pod>>,
}

pub fn desired_replicas(replica_set: &ReplicaSet) -> usize {
    replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
        .max(0) as usize
}

/// How to bring `owned` (the claimed active pods) to the desired count, at
/// most `BURST_REPLICAS` at a time (upstream's `manageReplicas`).
pub fn scale(replica_set: &ReplicaSet, owned: &[Arc<Pod>]) -> Scale {
    let desired = desired_replicas(replica_set);
    if owned.len() < desired {
        return Scale {
            create: (desired - owned.len()).min(BURST_REPLICAS),
            delete: Vec::new(),
        };
    }
    let surplus = (owned.len() - desired).min(BURST_REPLICAS);
    let refs: Vec<&Pod> = owned.iter().map(|pod| pod.as_ref()).collect();
    Scale {
        create: 0,
        delete: pods::deletion_order(&refs)
            .into_iter()
            .take(surplus)
            .map(|index| Arc::clone(&owned[index]))
            .collect(),
    }
}

/// Why the last creations or deletions failed, for the `ReplicaFailure`
/// condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// `FailedCreate` or `FailedDelete`.
    pub reason: String,
    pub message: String,
}

/// The status for `owned`, and how long until a ready pod becomes
/// available (to look again then).
pub fn status(
    replica_set: &ReplicaSet,
    owned: &[Arc<Pod>],
    failure: Option<&Failure>,
    now: Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = replica_set.spec.as_ref();
    let min_ready_seconds = spec.and_then(|spec| spec.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|spec| spec.template.as_ref())
        .and_then(|template| template.metadata.as_ref())
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    let previous = replica_set.status.clone().unwrap_or_default();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut recheck: Option<Duration> = None;
    for pod in owned {
        let labels = pods::labels_of(pod);
        if template_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
        {
            fully_labeled += 1;
        }
        if pods::is_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready_seconds, now) {
                available += 1;
            } else if let Some(wait) = pods::until_available(pod, min_ready_seconds, now) {
                recheck = Some(recheck.map_or(wait, |earlier| earlier.min(wait)));
            }
        }
    }
    let mut conditions: Vec<ReplicaSetCondition> = previous.conditions.clone().unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|condition| condition.type_ == REPLICA_FAILURE);
    match failure {
        Some(failure) if !has_failure => conditions.push(ReplicaSetCondition {
            type_: REPLICA_FAILURE.to_string(),
            status: "True".to_string(),
            reason: Some(failure.reason.clone()),
            message: Some(failure.message.clone()),
            last_transition_time: Some(Time(now)),
        }),
        None if has_failure => conditions.retain(|condition| condition.type_ != REPLICA_FAILURE),
        _ => {}
    }
    let status = ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: replica_set.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: previous.terminating_replicas,
    };
    (status, recheck)
}

/// Whether two statuses differ in what the controller writes.
pub fn status_changed(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let Some(old) = old else { return true };
    let count = |value: Option<i32>| value.unwrap_or(0);
    old.replicas != new.replicas
        || count(old.fully_labeled_replicas) != count(new.fully_labeled_replicas)
        || count(old.ready_replicas) != count(new.ready_replicas)
        || count(old.available_replicas) != count(new.available_replicas)
        || old.observed_generation != new.observed_generation
        || old.conditions != new.conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::testing::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const UID: &str = "rs-uid";

    fn replica_set(replicas: i32) -> ReplicaSet {
        let labels: pods::Labels = [("app".to_string(), "web".to_string())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(UID.into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [
                                ("app".to_string(), "web".to_string()),
                                ("tier".to_string(), "front".to_string()),
                            ]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: None,
            }),
            status: None,
        }
    }

    fn ours(name: &str, created: i64) -> Pod {
        pod(
            name,
            &[("app", "web"), ("tier", "front")],
            Some(UID),
            created,
        )
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|pod| pod.metadata.name.as_deref().unwrap())
            .collect()
    }

    fn claim_of(replica_set: &ReplicaSet, pods: &[Arc<Pod>]) -> Claim {
        claim(
            UID,
            replica_set.metadata.deletion_timestamp.is_some(),
            replica_set.spec.as_ref().map(|spec| &spec.selector),
            pods,
        )
    }

    /// Plays the controller against a cluster that does what it asks,
    /// one step at a time, and checks it converges without ever
    /// overshooting (every intermediate state is a restart point).
    fn converge(replica_set: &ReplicaSet, mut pods: Vec<Pod>) -> Vec<Pod> {
        let desired = desired_replicas(replica_set);
        let mut created = 0;
        for _ in 0..20 {
            let all = arcs(pods.clone());
            let claim = claim_of(replica_set, &all);
            if !claim.adopt.is_empty() || !claim.release.is_empty() {
                // Claim one pod at a time: a restart may come after any.
                let uid_reference = OwnerReference {
                    uid: UID.into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                };
                if let Some(orphan) = claim.adopt.first() {
                    let pod = pods
                        .iter_mut()
                        .find(|pod| pod.metadata.name == orphan.metadata.name)
                        .unwrap();
                    pod.metadata.owner_references = Some(adopted_references(pod, &uid_reference));
                } else {
                    let released = &claim.release[0];
                    let pod = pods
                        .iter_mut()
                        .find(|pod| pod.metadata.name == released.metadata.name)
                        .unwrap();
                    pod.metadata.owner_references = Some(released_references(pod, UID));
                }
                continue;
            }
            let step = scale(replica_set, &claim.owned);
            if step.create == 0 && step.delete.is_empty() {
                let owned = claim.owned.len();
                assert_eq!(owned, desired);
                return pods;
            }
            // Half a step: only the first creation or deletion lands.
            if step.create > 0 {
                created += 1;
                pods.push(ours(&format!("new-{created}"), 100 + created));
            } else {
                let victim = step.delete[0].metadata.name.clone();
                pods.retain(|pod| pod.metadata.name != victim);
            }
            let owned = claim_of(replica_set, &arcs(pods.clone())).owned.len();
            assert!(
                owned.abs_diff(desired) < claim.owned.len().abs_diff(desired),
                "a step moved away from the desired count"
            );
        }
        panic!("the controller never converged");
    }

    #[test]
    fn it_creates_the_missing_pods_and_no_more_after_any_partial_step() {
        let pods = converge(&replica_set(5), vec![ours("a", 0), ours("b", 1)]);
        assert_eq!(pods.len(), 5);
        let all = arcs(pods);
        assert_eq!(
            scale(&replica_set(5), &claim_of(&replica_set(5), &all).owned),
            Scale::default()
        );
    }

    #[test]
    fn it_deletes_the_surplus_best_candidates_first() {
        let replica_set = replica_set(2);
        let pods = arcs(vec![
            ready(on_node(ours("old-ready", 0), "n1"), 1),
            ready(on_node(ours("new-ready", 5), "n2"), 6),
            on_node(ours("pending", 1), "n1"),
            ours("unscheduled", 2),
        ]);
        let claim = claim_of(&replica_set, &pods);
        let step = scale(&replica_set, &claim.owned);
        assert_eq!(step.create, 0);
        assert_eq!(names(&step.delete), ["unscheduled", "pending"]);
        let remaining = converge(
            &replica_set,
            pods.iter().map(|pod| (**pod).clone()).collect(),
        );
        let remaining: Vec<&str> = remaining
            .iter()
            .map(|pod| pod.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(remaining, ["old-ready", "new-ready"]);
    }

    #[test]
    fn finished_and_terminating_pods_do_not_count_and_are_replaced() {
        let replica_set = replica_set(2);
        let pods = arcs(vec![
            with_phase(ours("done", 0), "Succeeded"),
            with_phase(ours("failed", 0), "Failed"),
            terminating(ours("going", 0)),
            ours("live", 0),
        ]);
        let claim = claim_of(&replica_set, &pods);
        assert_eq!(names(&claim.owned), ["live"]);
        assert_eq!(scale(&replica_set, &claim.owned).create, 1);
    }

    #[test]
    fn it_adopts_matching_orphans_and_releases_what_stopped_matching_but_leaves_others_pods() {
        let replica_set = replica_set(3);
        let pods = arcs(vec![
            ours("ours", 0),
            pod("orphan", &[("app", "web")], None, 0),
            pod("orphan-elsewhere", &[("app", "db")], None, 0),
            pod("others", &[("app", "web")], Some("other-uid"), 0),
            pod("relabelled", &[("app", "debug")], Some(UID), 0),
        ]);
        let claim = claim_of(&replica_set, &pods);
        assert_eq!(names(&claim.owned), ["ours"]);
        assert_eq!(names(&claim.adopt), ["orphan"]);
        assert_eq!(names(&claim.release), ["relabelled"]);
        let converged = converge(
            &replica_set,
            pods.iter().map(|pod| (**pod).clone()).collect(),
        );
        let owners = |name: &str| {
            converged
                .iter()
                .find(|pod| pod.metadata.name.as_deref() == Some(name))
                .and_then(|pod| controller_of(&pod.metadata).map(|owner| owner.uid.clone()))
        };
        assert_eq!(owners("orphan").as_deref(), Some(UID));
        assert_eq!(owners("relabelled"), None);
        assert_eq!(owners("others").as_deref(), Some("other-uid"));
        assert_eq!(owners("orphan-elsewhere"), None);
    }

    #[test]
    fn an_owner_being_deleted_claims_nothing_new() {
        let mut replica_set = replica_set(3);
        replica_set.metadata.deletion_timestamp = Some(Time(at(5)));
        let pods = arcs(vec![
            pod("orphan", &[("app", "web")], None, 0),
            pod("relabelled", &[("app", "debug")], Some(UID), 0),
        ]);
        let claim = claim_of(&replica_set, &pods);
        assert!(claim.adopt.is_empty() && claim.release.is_empty() && claim.owned.is_empty());
    }

    #[test]
    fn an_empty_selector_adopts_nothing() {
        let pods = arcs(vec![pod("orphan", &[("app", "web")], None, 0)]);
        let claim = claim(UID, false, Some(&LabelSelector::default()), &pods);
        assert!(claim.adopt.is_empty());
    }

    #[test]
    fn creations_and_deletions_go_at_most_a_burst_at_a_time() {
        let step = scale(&replica_set(1200), &[]);
        assert_eq!(step.create, BURST_REPLICAS);
        let many = arcs(
            (0..700)
                .map(|index| ours(&format!("p{index}"), index))
                .collect(),
        );
        assert_eq!(scale(&replica_set(0), &many).delete.len(), BURST_REPLICAS);
    }

    #[test]
    fn adoption_keeps_other_references_and_release_drops_only_ours() {
        let mut orphan = pod("orphan", &[("app", "web")], None, 0);
        orphan.metadata.owner_references = Some(vec![OwnerReference {
            uid: "someone".into(),
            controller: Some(false),
            ..OwnerReference::default()
        }]);
        let ours_reference = OwnerReference {
            uid: UID.into(),
            controller: Some(true),
            ..OwnerReference::default()
        };
        let adopted = adopted_references(&orphan, &ours_reference);
        assert_eq!(adopted.len(), 2);
        orphan.metadata.owner_references = Some(adopted);
        let released = released_references(&orphan, UID);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].uid, "someone");
    }

    #[test]
    fn status_counts_labelled_ready_and_available_pods_and_asks_to_look_again() {
        let mut replica_set = replica_set(3);
        replica_set.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let pods = arcs(vec![
            ready(ours("long-ready", 0), 0),
            ready(ours("just-ready", 0), 95),
            running(pod("partly-labelled", &[("app", "web")], Some(UID), 0)),
        ]);
        let (status, recheck) = status(&replica_set, &pods, None, at(100));
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(recheck, Some(Duration::from_secs(5)));
        assert!(status.conditions.is_none());
    }

    #[test]
    fn a_failure_sets_replica_failure_until_a_sync_succeeds() {
        let mut replica_set = replica_set(1);
        let failure = Failure {
            reason: "FailedCreate".into(),
            message: "pods \"web-\" is forbidden: exceeded quota".into(),
        };
        let (failed, _) = status(&replica_set, &[], Some(&failure), at(0));
        let condition = &failed.conditions.as_ref().unwrap()[0];
        assert_eq!(condition.type_, REPLICA_FAILURE);
        assert_eq!(condition.reason.as_deref(), Some("FailedCreate"));
        assert!(status_changed(None, &failed));
        replica_set.status = Some(failed.clone());
        // A second failure keeps the first condition (and its time).
        let (again, _) = status(&replica_set, &[], Some(&failure), at(50));
        assert!(!status_changed(Some(&failed), &again));
        let (recovered, _) = status(&replica_set, &[], None, at(60));
        assert!(recovered.conditions.is_none());
        assert!(status_changed(Some(&failed), &recovered));
    }
}
