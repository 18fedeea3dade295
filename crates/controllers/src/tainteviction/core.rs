//! When a pod must leave its node, sans-IO: upstream's taint manager
//! rules. A pod on a node with a `NoExecute` taint it does not tolerate is
//! evicted at once; one it tolerates for `tolerationSeconds` is evicted
//! that long after the taint was added (the shortest of its tolerations of
//! the node's taints); one it tolerates without seconds stays.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use scheduler::core::selectors::tolerates;

/// What the taints of a pod's node mean for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// No `NoExecute` taint it does not tolerate forever.
    Stay,
    /// Delete it now.
    Now,
    /// Delete it after this much more time.
    After(Duration),
}

/// The pod's fate on a node with `taints`, at `now`. A taint without a
/// `timeAdded` counts from `first_seen` (when the controller first saw it).
pub fn eviction(pod: &Pod, taints: &[Taint], now: Timestamp, first_seen: Timestamp) -> Eviction {
    let no_execute: Vec<&Taint> = taints
        .iter()
        .filter(|taint| taint.effect == "NoExecute")
        .collect();
    if no_execute.is_empty() {
        return Eviction::Stay;
    }
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.tolerations.as_deref())
        .unwrap_or_default();
    // The earliest deadline over the taints: each taint is tolerated by
    // the longest-lived of the tolerations that match it (none matching:
    // evict now), as upstream's `getMinTolerationTime` over the used
    // tolerations.
    let mut deadline: Option<Timestamp> = None;
    for taint in no_execute {
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|toleration| tolerates(toleration, taint))
            .collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        if matching
            .iter()
            .any(|toleration| toleration.toleration_seconds.is_none())
        {
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|toleration| toleration.toleration_seconds)
            .max()
            .unwrap_or(0)
            .max(0);
        let added = taint
            .time_added
            .as_ref()
            .map(|time| time.0)
            .unwrap_or(first_seen);
        let at = added
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(Timestamp::MAX);
        deadline = Some(deadline.map_or(at, |earlier| earlier.min(at)));
    }
    match deadline {
        None => Eviction::Stay,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::After(
            now.duration_until(at)
                .unsigned_abs()
                .max(Duration::from_millis(1)),
        ),
    }
}

/// Upstream's event note for an eviction.
pub fn eviction_note(namespace: &str, name: &str) -> String {
    format!("Marking for deletion Pod {namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: added.map(|seconds| Time(at(seconds))),
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

    #[test]
    fn no_no_execute_taint_keeps_every_pod() {
        let taints = [taint(UNREACHABLE, "NoSchedule", Some(0))];
        assert_eq!(
            eviction(&pod(vec![]), &taints, at(5), at(0)),
            Eviction::Stay
        );
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_at_once() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(0))];
        assert_eq!(eviction(&pod(vec![]), &taints, at(0), at(0)), Eviction::Now);
        // Tolerating another taint does not help.
        let other = pod(vec![toleration("node.kubernetes.io/not-ready", None)]);
        assert_eq!(eviction(&other, &taints, at(0), at(0)), Eviction::Now);
    }

    #[test]
    fn toleration_seconds_count_from_when_the_taint_was_added() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(10))];
        let tolerant = pod(vec![toleration(UNREACHABLE, Some(30))]);
        assert_eq!(
            eviction(&tolerant, &taints, at(15), at(15)),
            Eviction::After(Duration::from_secs(25))
        );
        assert_eq!(eviction(&tolerant, &taints, at(40), at(15)), Eviction::Now);
        assert_eq!(eviction(&tolerant, &taints, at(99), at(15)), Eviction::Now);
    }

    #[test]
    fn zero_or_negative_seconds_evict_at_once() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(10))];
        for seconds in [0, -5] {
            let pod = pod(vec![toleration(UNREACHABLE, Some(seconds))]);
            assert_eq!(eviction(&pod, &taints, at(10), at(10)), Eviction::Now);
        }
    }

    #[test]
    fn a_taint_without_time_added_counts_from_when_it_was_first_seen() {
        let taints = [taint(UNREACHABLE, "NoExecute", None)];
        let tolerant = pod(vec![toleration(UNREACHABLE, Some(30))]);
        assert_eq!(
            eviction(&tolerant, &taints, at(20), at(10)),
            Eviction::After(Duration::from_secs(20))
        );
    }

    #[test]
    fn a_toleration_without_seconds_keeps_the_pod_forever() {
        // A DaemonSet's pods tolerate unreachable without seconds.
        let taints = [taint(UNREACHABLE, "NoExecute", Some(0))];
        let daemon = pod(vec![Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: None,
            value: None,
        }]);
        assert_eq!(eviction(&daemon, &taints, at(9999), at(0)), Eviction::Stay);
        // An Exists toleration of everything too.
        let everything = pod(vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]);
        assert_eq!(
            eviction(&everything, &taints, at(9999), at(0)),
            Eviction::Stay
        );
        // Both the forever one and one with seconds match: the longer wins.
        let both = pod(vec![
            toleration(UNREACHABLE, Some(5)),
            toleration(UNREACHABLE, None),
        ]);
        assert_eq!(eviction(&both, &taints, at(9999), at(0)), Eviction::Stay);
    }

    #[test]
    fn the_earliest_deadline_over_several_taints_wins() {
        let taints = [
            taint(UNREACHABLE, "NoExecute", Some(0)),
            taint("maintenance", "NoExecute", Some(0)),
        ];
        let pod = pod(vec![
            toleration(UNREACHABLE, Some(100)),
            toleration("maintenance", Some(20)),
        ]);
        assert_eq!(
            eviction(&pod, &taints, at(5), at(5)),
            Eviction::After(Duration::from_secs(15))
        );
    }

    #[test]
    fn the_event_note_is_upstreams() {
        assert_eq!(
            eviction_note("default", "web-1"),
            "Marking for deletion Pod default/web-1"
        );
    }
}
