//! The annotations a Deployment keeps on its ReplicaSets (revision,
//! revision history, desired and max replicas, change cause) and how the
//! new ReplicaSet is found among them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::deployment::hash::equal_ignore_hash;
use crate::deployment::rollback::{self};
use crate::deployment::rolling::{self, desired_replicas};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub(super) const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Upstream's bound on `revision-history`.
pub(super) const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The event reason of every scale, as upstream's.
pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// Deployment annotations never copied to its ReplicaSets.
pub(super) fn skipped_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | DEPRECATED_ROLLBACK_TO
            | rollback::FAILED_REVISION_HASH
            | rollback::FULLY_AVAILABLE
    )
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(REVISION))
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

pub(super) fn creation_key(replica_set: &ReplicaSet) -> (i64, i64, String) {
    // Not yet created (planned this sync) sorts last.
    let created = replica_set
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|time| time.0.as_second())
        .unwrap_or(i64::MAX);
    let nanos = replica_set
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|time| i64::from(time.0.subsec_nanosecond()))
        .unwrap_or(0);
    (
        created,
        nanos,
        replica_set.metadata.name.clone().unwrap_or_default(),
    )
}

pub(super) fn template_of(replica_set: &ReplicaSet) -> PodTemplateSpec {
    replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.clone())
        .unwrap_or_default()
}

pub(super) fn deployment_template(deployment: &Deployment) -> PodTemplateSpec {
    deployment
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default()
}

/// Upstream's `FindNewReplicaSet`: the oldest ReplicaSet whose template is
/// the Deployment's (ignoring the hash label).
pub fn find_new_replica_set(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Option<usize> {
    let template = deployment_template(deployment);
    let mut indices: Vec<usize> = (0..replica_sets.len()).collect();
    indices.sort_by_key(|index| creation_key(&replica_sets[*index]));
    indices
        .into_iter()
        .find(|index| equal_ignore_hash(&template_of(&replica_sets[*index]), &template))
}

pub(super) fn annotations_mut(meta: &mut ObjectMeta) -> &mut BTreeMap<String, String> {
    meta.annotations.get_or_insert_with(BTreeMap::new)
}

/// Upstream's `SetReplicasAnnotations`; true when something changed.
pub(super) fn set_replicas_annotations(
    replica_set: &mut ReplicaSet,
    desired: i32,
    max: i32,
) -> bool {
    let annotations = annotations_mut(&mut replica_set.metadata);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

pub(super) fn replicas_annotations_need_update(
    replica_set: &ReplicaSet,
    desired: i32,
    max: i32,
) -> bool {
    let annotations = replica_set.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|annotations| annotations.get(key));
    get(DESIRED_REPLICAS) != Some(&desired.to_string())
        || get(MAX_REPLICAS) != Some(&max.to_string())
}

/// Upstream's `SetNewReplicaSetAnnotations`: the Deployment's annotations
/// copied, the revision raised (keeping the ones it had in
/// `revision-history` when a rollback brings an old ReplicaSet back), and
/// for a ReplicaSet about to be created the replica annotations.
pub(super) fn set_new_replica_set_annotations(
    deployment: &Deployment,
    replica_set: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = annotations_mut(&mut replica_set.metadata);
    for (key, value) in deployment.metadata.annotations.iter().flatten() {
        if skipped_annotation(key) || annotations.get(key) == Some(value) {
            continue;
        }
        annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    let old_revision = annotations.get(REVISION).cloned().unwrap_or_default();
    let old_revision_number = if old_revision.is_empty() {
        0
    } else {
        match old_revision.parse::<i64>() {
            Ok(number) => number,
            Err(_) => return changed,
        }
    };
    if old_revision_number < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if !old_revision.is_empty() {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.to_string(), old_revision);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut length = history.len() + old_revision.len() + 1;
                let mut start = 0;
                while length > MAX_REVISION_HISTORY_CHARS && start < revisions.len() {
                    length -= revisions[start].len() + 1;
                    start += 1;
                }
                if length <= MAX_REVISION_HISTORY_CHARS {
                    revisions = revisions.split_off(start);
                    revisions.push(&old_revision);
                    let joined = revisions.join(",");
                    annotations.insert(REVISION_HISTORY.to_string(), joined);
                }
            }
        }
    }
    if !exists {
        let desired = desired_replicas(deployment);
        if set_replicas_annotations(
            replica_set,
            desired,
            desired + rolling::max_surge(deployment),
        ) {
            changed = true;
        }
    }
    changed
}
