//! A Deployment's status: the counts summed over its ReplicaSets and the
//! conditions (`Available`, `Progressing`, `ReplicaFailure`) with upstream's
//! reasons, messages and transition rules, and the progress deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::rolling;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// `Progressing` reasons, as upstream's (kubectl matches on
/// `ProgressDeadlineExceeded`).
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
/// `Available` reasons.
pub const MINIMUM_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// `progressDeadlineSeconds` when the Deployment has one (upstream's
/// "no deadline" is MaxInt32).
pub fn progress_deadline(deployment: &Deployment) -> Option<i32> {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.progress_deadline_seconds)
        .filter(|seconds| *seconds != i32::MAX)
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// Upstream's `SetDeploymentCondition`: nothing changes when the status and
/// reason are the same; the transition time is kept while the status is.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = self::condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_.clone());
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|condition| condition.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

fn reason_of<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a str> {
    condition(status, type_).and_then(|condition| condition.reason.as_deref())
}

/// Upstream's `calculateStatus`: the counts over `all`, the conditions of
/// `current` with `Available` brought up to date.
pub fn calculate_status(
    deployment: &Deployment,
    current: &DeploymentStatus,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: &Time,
) -> DeploymentStatus {
    let available = rolling::total_available(all.iter().copied());
    let total = rolling::total_spec(all.iter().copied());
    let mut status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(rolling::total_actual(all.iter().copied())),
        updated_replicas: Some(new.map(rolling::status_replicas).unwrap_or(0)),
        ready_replicas: Some(rolling::total_ready(all.iter().copied())),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    let minimum = rolling::desired_replicas(deployment) - rolling::max_unavailable(deployment);
    let availability = if available >= minimum {
        new_condition(
            AVAILABLE,
            "True",
            MINIMUM_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            MINIMUM_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, availability);
    status
}

fn count(value: Option<i32>) -> i32 {
    value.unwrap_or(0)
}

/// Upstream's `DeploymentComplete`: every desired replica updated and
/// available, no old one left, the spec observed.
pub fn deployment_complete(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = rolling::desired_replicas(deployment);
    count(status.updated_replicas) == desired
        && count(status.replicas) == desired
        && count(status.available_replicas) == desired
        && status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0)
}

/// Upstream's `DeploymentProgressing`: more updated, ready or available
/// pods than before, or fewer old ones.
pub fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

fn seconds_since(time: Option<&Time>, now: &Time) -> i64 {
    time.map(|time| now.0.as_second() - time.0.as_second())
        .unwrap_or(0)
}

/// Upstream's `DeploymentTimedOut`: no progress for the deadline since the
/// `Progressing` condition last changed (a completed rollout never times out).
pub fn timed_out(deployment: &Deployment, status: &DeploymentStatus, now: &Time) -> bool {
    let Some(deadline) = progress_deadline(deployment) else {
        return false;
    };
    let Some(progressing) = condition(status, PROGRESSING) else {
        return false;
    };
    match progressing.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => seconds_since(progressing.last_update_time.as_ref(), now) > i64::from(deadline),
    }
}

/// Upstream's `syncRolloutStatus` conditions: `Progressing` from what
/// changed between `old` and `new` (which `calculate_status` made).
pub fn update_progressing(
    deployment: &Deployment,
    old: &DeploymentStatus,
    new: &mut DeploymentStatus,
    new_replica_set: Option<&ReplicaSet>,
    now: &Time,
) {
    if progress_deadline(deployment).is_none() {
        remove_condition(new, PROGRESSING);
        return;
    }
    let complete_already = count(new.replicas) == count(new.updated_replicas)
        && reason_of(old, PROGRESSING) == Some(NEW_RS_AVAILABLE);
    if complete_already {
        return;
    }
    let name = new_replica_set.and_then(|rs| rs.metadata.name.as_deref());
    if deployment_complete(deployment, new) {
        let message = format!(
            "ReplicaSet \"{}\" has successfully progressed.",
            name.unwrap_or_default()
        );
        set_condition(
            new,
            new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now),
        );
    } else if deployment_progressing(old, new) {
        let message = match name {
            Some(name) => format!("ReplicaSet \"{name}\" is progressing."),
            None => format!(
                "Deployment \"{}\" is progressing.",
                deployment_name(deployment)
            ),
        };
        let mut progressing = new_condition(PROGRESSING, "True", RS_UPDATED, message, now);
        // Progress moves lastUpdateTime even when the reason stays: the
        // deadline counts from the last progress.
        if let Some(current) = condition(old, PROGRESSING)
            && current.status == "True"
        {
            progressing.last_transition_time = current.last_transition_time.clone();
        }
        remove_condition(new, PROGRESSING);
        set_condition(new, progressing);
    } else if timed_out(deployment, new, now) {
        let message = match name {
            Some(name) => format!("ReplicaSet \"{name}\" has timed out progressing."),
            None => format!(
                "Deployment \"{}\" has timed out progressing.",
                deployment_name(deployment)
            ),
        };
        set_condition(
            new,
            new_condition(PROGRESSING, "False", TIMED_OUT, message, now),
        );
    }
}

/// The first `ReplicaFailure` condition of the ReplicaSets (the new one
/// first), as the Deployment's own.
pub fn replica_failure(
    new_replica_set: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
) -> Option<DeploymentCondition> {
    new_replica_set
        .into_iter()
        .chain(old.iter().copied())
        .flat_map(|rs| {
            rs.status
                .iter()
                .flat_map(|status| status.conditions.iter().flatten())
        })
        .find(|condition| condition.type_ == REPLICA_FAILURE && condition.status == "True")
        .map(|condition| DeploymentCondition {
            type_: REPLICA_FAILURE.to_string(),
            status: condition.status.clone(),
            reason: condition.reason.clone(),
            message: condition.message.clone(),
            last_update_time: condition.last_transition_time.clone(),
            last_transition_time: condition.last_transition_time.clone(),
        })
}

/// Upstream's `requeueStuckDeployment`: when to look again so a stalled
/// rollout is seen to pass its deadline.
pub fn recheck_after(
    deployment: &Deployment,
    status: &DeploymentStatus,
    now: &Time,
) -> Option<Duration> {
    let deadline = progress_deadline(deployment)?;
    let progressing = condition(status, PROGRESSING)?;
    if deployment_complete(deployment, status) || progressing.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    if progressing.reason.as_deref() == Some(NEW_RS_AVAILABLE) {
        return None;
    }
    let elapsed = seconds_since(progressing.last_update_time.as_ref(), now);
    let left = (i64::from(deadline) + 1 - elapsed).max(1);
    Some(Duration::from_secs(left as u64))
}

pub fn deployment_name(deployment: &Deployment) -> &str {
    deployment.metadata.name.as_deref().unwrap_or_default()
}
