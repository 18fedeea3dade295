//! The numbers a rollout is bounded by (upstream's `deployment/util`):
//! maxSurge and maxUnavailable resolved against the replica count, and the
//! sums over a Deployment's ReplicaSets.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The strategy's default bounds, as the API server defaults them.
const DEFAULT_BOUND: &str = "25%";

pub fn desired_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

pub fn is_recreate(deployment: &Deployment) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        == Some("Recreate")
}

/// An int-or-percent against `total`: a percentage rounds up (maxSurge)
/// or down (maxUnavailable). A value the API would refuse counts as 0.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(number) => *number,
        IntOrString::String(text) => {
            let Some(percent) = text
                .strip_suffix('%')
                .and_then(|digits| digits.parse::<i64>().ok())
            else {
                return 0;
            };
            let scaled = percent * i64::from(total);
            let value = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(value).unwrap_or(i32::MAX)
        }
    }
}

/// Upstream's `ResolveFenceposts`: (surge, unavailable) for `desired`
/// replicas; when both come to zero, one pod may be unavailable, or the
/// rollout could never start.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let default = IntOrString::String(DEFAULT_BOUND.to_string());
    let surge = scaled_value(max_surge.unwrap_or(&default), desired, true);
    let unavailable = scaled_value(max_unavailable.unwrap_or(&default), desired, false);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

fn fenceposts(deployment: &Deployment) -> (i32, i32) {
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.rolling_update.as_ref());
    resolve_fenceposts(
        rolling.and_then(|rolling| rolling.max_surge.as_ref()),
        rolling.and_then(|rolling| rolling.max_unavailable.as_ref()),
        desired_replicas(deployment),
    )
}

/// How many pods above the desired count a rolling update may run.
pub fn max_surge(deployment: &Deployment) -> i32 {
    if is_recreate(deployment) {
        return 0;
    }
    fenceposts(deployment).0
}

/// How many of the desired pods may be unavailable during a rolling update
/// (never more than the desired count).
pub fn max_unavailable(deployment: &Deployment) -> i32 {
    let desired = desired_replicas(deployment);
    if is_recreate(deployment) || desired == 0 {
        return 0;
    }
    fenceposts(deployment).1.min(desired)
}

pub fn spec_replicas(replica_set: &ReplicaSet) -> i32 {
    replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(0)
}

fn status_field(
    replica_set: &ReplicaSet,
    field: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i32 {
    replica_set.status.as_ref().and_then(field).unwrap_or(0)
}

pub fn status_replicas(replica_set: &ReplicaSet) -> i32 {
    status_field(replica_set, |status| Some(status.replicas))
}

pub fn available_replicas(replica_set: &ReplicaSet) -> i32 {
    status_field(replica_set, |status| status.available_replicas)
}

pub fn ready_replicas(replica_set: &ReplicaSet) -> i32 {
    status_field(replica_set, |status| status.ready_replicas)
}

/// Sum of `spec.replicas`.
pub fn total_spec<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    replica_sets.into_iter().map(spec_replicas).sum()
}

/// Sum of `status.replicas` (the pods that exist).
pub fn total_actual<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    replica_sets.into_iter().map(status_replicas).sum()
}

pub fn total_available<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    replica_sets.into_iter().map(available_replicas).sum()
}

pub fn total_ready<'a>(replica_sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    replica_sets.into_iter().map(ready_replicas).sum()
}

/// Upstream's `NewRSNewReplicas`: what the new ReplicaSet may grow to now.
pub fn new_replica_set_target(
    deployment: &Deployment,
    all_spec_replicas: i32,
    new_spec_replicas: i32,
) -> i32 {
    let desired = desired_replicas(deployment);
    if is_recreate(deployment) {
        return desired;
    }
    let max_total = desired + max_surge(deployment);
    if all_spec_replicas >= max_total {
        return new_spec_replicas;
    }
    let room = (max_total - all_spec_replicas).min(desired - new_spec_replicas);
    new_spec_replicas + room.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percent(text: &str) -> IntOrString {
        IntOrString::String(text.to_string())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        assert_eq!(scaled_value(&percent("25%"), 10, true), 3);
        assert_eq!(scaled_value(&percent("25%"), 10, false), 2);
        assert_eq!(scaled_value(&percent("25%"), 1000, true), 250);
        assert_eq!(scaled_value(&percent("100%"), 7, false), 7);
        assert_eq!(scaled_value(&percent("0%"), 7, true), 0);
        assert_eq!(scaled_value(&IntOrString::Int(4), 7, true), 4);
        assert_eq!(scaled_value(&percent("a lot"), 7, true), 0);
    }

    #[test]
    fn both_bounds_zero_allows_one_unavailable() {
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 5),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(Some(&percent("10%")), Some(&percent("10%")), 3),
            (1, 0)
        );
        assert_eq!(
            resolve_fenceposts(Some(&percent("1%")), Some(&percent("1%")), 0),
            (0, 1)
        );
        assert_eq!(resolve_fenceposts(None, None, 4), (1, 1));
    }
}
