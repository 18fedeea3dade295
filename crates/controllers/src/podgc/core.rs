//! Which pods the pod garbage collector force-deletes, sans-IO (upstream's
//! PodGC): pods bound to a node that no longer exists (after a quarantine,
//! in case the node is only late in the informer), terminating pods that
//! were never scheduled, and terminating pods on a node that is not Ready
//! and carries the `node.kubernetes.io/out-of-service` taint (an operator's
//! word that the machine is down for good).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::nodelifecycle::core::{OUT_OF_SERVICE, ready_status};

/// Why a pod is force-deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Bound to a node that does not exist.
    Orphaned,
    /// Terminating and never scheduled.
    UnscheduledTerminating,
    /// Terminating on a node that is out of service.
    OutOfService,
}

/// Pods (by uid) seen orphaned, and since when: a pod is collected only
/// once it has been orphaned for the whole quarantine.
#[derive(Debug, Default)]
pub struct Quarantine {
    since: HashMap<String, Instant>,
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .filter(|name| !name.is_empty())
}

/// The reason to force-delete `pod` now, if any, given the nodes that
/// exist (`node_of` finds one by name).
pub fn collect<'a>(
    pod: &Pod,
    node_of: impl Fn(&str) -> Option<&'a Node>,
    quarantine: &mut Quarantine,
    quarantine_for: Duration,
    now: Instant,
) -> Option<Reason> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let Some(name) = node_name(pod) else {
        quarantine.since.remove(&uid);
        return terminating.then_some(Reason::UnscheduledTerminating);
    };
    match node_of(name) {
        None => {
            let since = *quarantine.since.entry(uid).or_insert(now);
            (now.saturating_duration_since(since) >= quarantine_for).then_some(Reason::Orphaned)
        }
        Some(node) => {
            quarantine.since.remove(&uid);
            let out_of_service = node
                .spec
                .as_ref()
                .and_then(|spec| spec.taints.as_ref())
                .is_some_and(|taints| {
                    taints
                        .iter()
                        .any(|taint| taint.key == OUT_OF_SERVICE && taint.effect == "NoExecute")
                });
            (terminating && out_of_service && ready_status(node) != Some("True"))
                .then_some(Reason::OutOfService)
        }
    }
}

impl Quarantine {
    /// Forgets the pods not in `present` (deleted meanwhile).
    pub fn retain(&mut self, present: &HashSet<&str>) {
        self.since.retain(|uid, _| present.contains(uid.as_str()));
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(uid: &str, node: Option<&str>, terminating: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                deletion_timestamp: terminating.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn node(ready: &str, out_of_service: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: out_of_service.then(|| {
                    vec![Taint {
                        key: OUT_OF_SERVICE.into(),
                        effect: "NoExecute".into(),
                        value: Some("nodeshutdown".into()),
                        time_added: None,
                    }]
                }),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    const QUARANTINE: Duration = Duration::from_secs(5);

    #[test]
    fn a_pod_of_a_missing_node_goes_after_the_quarantine() {
        let mut quarantine = Quarantine::default();
        let t0 = Instant::now();
        let orphan = pod("a", Some("gone"), false);
        let none = |_: &str| None;
        assert_eq!(
            collect(&orphan, none, &mut quarantine, QUARANTINE, t0),
            None
        );
        assert_eq!(
            collect(
                &orphan,
                none,
                &mut quarantine,
                QUARANTINE,
                t0 + Duration::from_secs(4)
            ),
            None
        );
        assert_eq!(
            collect(&orphan, none, &mut quarantine, QUARANTINE, t0 + QUARANTINE),
            Some(Reason::Orphaned)
        );
    }

    #[test]
    fn a_node_that_shows_up_ends_the_quarantine() {
        let mut quarantine = Quarantine::default();
        let t0 = Instant::now();
        let late = pod("a", Some("late"), false);
        let ready = node("True", false);
        assert_eq!(
            collect(&late, |_| None, &mut quarantine, QUARANTINE, t0),
            None
        );
        assert_eq!(
            collect(
                &late,
                |_| Some(&ready),
                &mut quarantine,
                QUARANTINE,
                t0 + Duration::from_secs(3)
            ),
            None
        );
        assert!(quarantine.is_empty());
        // Missing again: the quarantine starts over.
        assert_eq!(
            collect(
                &late,
                |_| None,
                &mut quarantine,
                QUARANTINE,
                t0 + Duration::from_secs(6)
            ),
            None
        );
    }

    #[test]
    fn terminating_pods_on_an_out_of_service_node_go_at_once() {
        let mut quarantine = Quarantine::default();
        let now = Instant::now();
        let down = node("Unknown", true);
        let terminating = pod("a", Some("down"), true);
        assert_eq!(
            collect(
                &terminating,
                |_| Some(&down),
                &mut quarantine,
                QUARANTINE,
                now
            ),
            Some(Reason::OutOfService)
        );
        // Not terminating: the taint eviction controller deletes it first.
        let running = pod("b", Some("down"), false);
        assert_eq!(
            collect(&running, |_| Some(&down), &mut quarantine, QUARANTINE, now),
            None
        );
        // Without the taint, or on a Ready node, the agent finishes it.
        let unknown = node("Unknown", false);
        assert_eq!(
            collect(
                &terminating,
                |_| Some(&unknown),
                &mut quarantine,
                QUARANTINE,
                now
            ),
            None
        );
        let ready = node("True", true);
        assert_eq!(
            collect(
                &terminating,
                |_| Some(&ready),
                &mut quarantine,
                QUARANTINE,
                now
            ),
            None
        );
    }

    #[test]
    fn terminating_pods_never_scheduled_go_at_once() {
        let mut quarantine = Quarantine::default();
        let now = Instant::now();
        assert_eq!(
            collect(
                &pod("a", None, true),
                |_| None,
                &mut quarantine,
                QUARANTINE,
                now
            ),
            Some(Reason::UnscheduledTerminating)
        );
        assert_eq!(
            collect(
                &pod("b", None, false),
                |_| None,
                &mut quarantine,
                QUARANTINE,
                now
            ),
            None
        );
    }

    #[test]
    fn forgotten_pods_leave_the_quarantine() {
        let mut quarantine = Quarantine::default();
        let now = Instant::now();
        collect(
            &pod("a", Some("gone"), false),
            |_| None,
            &mut quarantine,
            QUARANTINE,
            now,
        );
        collect(
            &pod("b", Some("gone"), false),
            |_| None,
            &mut quarantine,
            QUARANTINE,
            now,
        );
        assert_eq!(quarantine.len(), 2);
        quarantine.retain(&HashSet::from(["b"]));
        assert_eq!(quarantine.len(), 1);
    }
}
