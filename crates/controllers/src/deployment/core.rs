//! The Deployment controller's sans-IO core: from a Deployment, the
//! ReplicaSets it controls, their pods (when they matter) and the time, the
//! writes that bring it one step closer to what it asks for, in order.
//! No async, no API: the driver (`mod.rs`) feeds it the informers' copies
//! and performs the actions.
//!
//! It follows upstream's `syncDeployment` (pkg/controller/deployment): a
//! paused Deployment or one whose size changed is only scaled
//! (proportionally across its active ReplicaSets during a rollout);
//! otherwise it rolls out with its strategy. Every step is computed from
//! the state as it is, never from memory, so a sync that stopped halfway
//! (a failed write, a restart, a new leader) is finished by the next one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::hash::{POD_TEMPLATE_HASH, equal_ignore_hash, template_hash};
use super::progress::{self, PROGRESSING};
use super::rollback::{self, Failure};
use super::rolling::{self, desired_replicas, spec_replicas};
use crate::ownership::controller_reference;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Upstream's bound on `revision-history`.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The event reason of every scale, as upstream's.
pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// Deployment annotations never copied to its ReplicaSets.
fn skipped_annotation(key: &str) -> bool {
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

/// What one sync sees.
pub struct Input<'a> {
    pub deployment: &'a Deployment,
    /// The ReplicaSets the Deployment controls (adopted, not released).
    pub replica_sets: Vec<ReplicaSet>,
    /// Pods by the uid of the ReplicaSet that controls them. The driver
    /// fills it for Recreate (old pods must be gone before new ones start)
    /// and for auto-rollback (the new pods' health); others may leave it
    /// empty.
    pub pods: HashMap<String, Vec<Arc<Pod>>>,
    /// Whole seconds: what the API server would store.
    pub now: Time,
}

/// One write, in the order of the plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet; record `event` (a ScalingReplicaSet note)
    /// once it exists.
    Create {
        replica_set: ReplicaSet,
        event: Option<String>,
    },
    /// Write this ReplicaSet's `spec.replicas`, `spec.minReadySeconds` and
    /// annotations; record `event` once written.
    Update {
        replica_set: ReplicaSet,
        event: Option<String>,
    },
    /// Delete an old ReplicaSet (history cleanup).
    Delete { name: String, uid: Option<String> },
    /// Set (or, with None, remove) these Deployment annotations.
    Annotate(BTreeMap<String, Option<String>>),
    /// Replace the Deployment's template (automatic rollback) and set these
    /// annotations, as `kubectl rollout undo` would.
    RollBack {
        template: PodTemplateSpec,
        annotations: BTreeMap<String, Option<String>>,
    },
    /// Write the Deployment's status.
    Status(DeploymentStatus),
    Event {
        warning: bool,
        reason: &'static str,
        note: String,
    },
}

/// What one sync asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Look again after this long (the progress deadline).
    pub recheck_after: Option<Duration>,
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(REVISION))
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

fn creation_key(replica_set: &ReplicaSet) -> (i64, i64, String) {
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

fn template_of(replica_set: &ReplicaSet) -> PodTemplateSpec {
    replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.clone())
        .unwrap_or_default()
}

fn deployment_template(deployment: &Deployment) -> PodTemplateSpec {
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

fn annotations_mut(meta: &mut ObjectMeta) -> &mut BTreeMap<String, String> {
    meta.annotations.get_or_insert_with(BTreeMap::new)
}

/// Upstream's `SetReplicasAnnotations`; true when something changed.
fn set_replicas_annotations(replica_set: &mut ReplicaSet, desired: i32, max: i32) -> bool {
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

fn replicas_annotations_need_update(replica_set: &ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = replica_set.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|annotations| annotations.get(key));
    get(DESIRED_REPLICAS) != Some(&desired.to_string())
        || get(MAX_REPLICAS) != Some(&max.to_string())
}

/// Upstream's `SetNewReplicaSetAnnotations`: the Deployment's annotations
/// copied, the revision raised (keeping the ones it had in
/// `revision-history` when a rollback brings an old ReplicaSet back), and
/// for a ReplicaSet about to be created the replica annotations.
fn set_new_replica_set_annotations(
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

/// The whole plan for one Deployment.
pub fn plan(input: Input<'_>) -> Plan {
    let mut sync = Sync::new(input);
    sync.run();
    sync.finish()
}

struct Sync<'a> {
    deployment: &'a Deployment,
    pods: HashMap<String, Vec<Arc<Pod>>>,
    now: Time,
    /// The status as read, and as this sync would leave it.
    read_status: DeploymentStatus,
    status: DeploymentStatus,
    read_annotations: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// The ReplicaSets as this sync leaves them (created ones appended).
    world: Vec<ReplicaSet>,
    actions: Vec<Action>,
    /// When to look again (the progress deadline).
    recheck_after: Option<Duration>,
}

impl<'a> Sync<'a> {
    fn new(input: Input<'a>) -> Sync<'a> {
        let status = input.deployment.status.clone().unwrap_or_default();
        let annotations = input
            .deployment
            .metadata
            .annotations
            .clone()
            .unwrap_or_default();
        Sync {
            deployment: input.deployment,
            pods: input.pods,
            now: input.now,
            read_status: status.clone(),
            status,
            read_annotations: annotations.clone(),
            annotations,
            world: input.replica_sets,
            actions: Vec::new(),
            recheck_after: None,
        }
    }

    fn desired(&self) -> i32 {
        desired_replicas(self.deployment)
    }

    fn name(&self) -> &str {
        progress::deployment_name(self.deployment)
    }

    fn paused(&self) -> bool {
        self.deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.paused)
            .unwrap_or(false)
    }

    fn run(&mut self) {
        let selector = self.deployment.spec.as_ref().map(|spec| &spec.selector);
        let selects_all = selector.is_none_or(|selector| {
            selector
                .match_labels
                .as_ref()
                .is_none_or(|labels| labels.is_empty())
                && selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(|expressions| expressions.is_empty())
        });
        if selects_all {
            self.actions.push(Action::Event {
                warning: true,
                reason: "SelectingAll",
                note: "This deployment is selecting all pods. A non-empty selector is required."
                    .into(),
            });
            self.status.observed_generation = self.deployment.metadata.generation;
            return;
        }
        if self.deployment.metadata.deletion_timestamp.is_some() {
            let new = self.new_replica_set(false);
            self.sync_status(new);
            return;
        }
        self.check_paused_conditions();
        if self.paused() {
            self.scale_only();
            return;
        }
        if self.blocked() {
            self.scale_only();
            return;
        }
        if self.is_scaling_event() {
            self.scale_only();
            return;
        }
        if rolling::is_recreate(self.deployment) {
            self.rollout_recreate();
        } else {
            self.rollout_rolling();
        }
    }

    fn finish(mut self) -> Plan {
        let mut changes = BTreeMap::new();
        for (key, value) in &self.annotations {
            if self.read_annotations.get(key) != Some(value) {
                changes.insert(key.clone(), Some(value.clone()));
            }
        }
        for key in self.read_annotations.keys() {
            if !self.annotations.contains_key(key) {
                changes.insert(key.clone(), None);
            }
        }
        if !changes.is_empty() {
            self.actions.push(Action::Annotate(changes));
        }
        if self.status != self.read_status {
            self.actions.push(Action::Status(self.status));
        }
        Plan {
            actions: self.actions,
            recheck_after: self.recheck_after,
        }
    }

    fn old_indices(&self, new: Option<usize>) -> Vec<usize> {
        let mut old: Vec<usize> = (0..self.world.len())
            .filter(|index| Some(*index) != new)
            .collect();
        old.sort_by_key(|index| creation_key(&self.world[*index]));
        old
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .copied()
            .filter(|index| spec_replicas(&self.world[*index]) > 0)
            .collect()
    }

    fn spec_sum(&self, indices: &[usize]) -> i32 {
        indices
            .iter()
            .map(|index| spec_replicas(&self.world[*index]))
            .sum()
    }

    fn update(&mut self, index: usize, event: Option<String>) {
        self.actions.push(Action::Update {
            replica_set: self.world[index].clone(),
            event,
        });
    }

    /// Upstream's `getNewReplicaSet` (with `getAllReplicaSetsAndSyncRevision`):
    /// the new ReplicaSet, its revision brought up to date, created when
    /// `create` and missing.
    fn new_replica_set(&mut self, create: bool) -> Option<usize> {
        let existing = find_new_replica_set(self.deployment, &self.world);
        let max_old_revision = (0..self.world.len())
            .filter(|index| Some(*index) != existing)
            .map(|index| revision(&self.world[index].metadata))
            .max()
            .unwrap_or(0);
        let new_revision = max_old_revision + 1;
        let has_deadline = progress::progress_deadline(self.deployment).is_some();
        if let Some(index) = existing {
            let min_ready = self
                .deployment
                .spec
                .as_ref()
                .and_then(|spec| spec.min_ready_seconds);
            let replica_set = &mut self.world[index];
            let mut changed =
                set_new_replica_set_annotations(self.deployment, replica_set, new_revision, true);
            let spec = replica_set.spec.get_or_insert_with(ReplicaSetSpec::default);
            if spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                self.update(index, None);
            }
            let revision = self.world[index]
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(REVISION))
                .cloned();
            if let Some(revision) = revision {
                self.annotations.insert(REVISION.to_string(), revision);
            }
            if has_deadline && progress::condition(&self.status, PROGRESSING).is_none() {
                let message = format!(
                    "Found new replica set \"{}\"",
                    self.world[index]
                        .metadata
                        .name
                        .as_deref()
                        .unwrap_or_default()
                );
                progress::set_condition(
                    &mut self.status,
                    progress::new_condition(
                        PROGRESSING,
                        "True",
                        progress::FOUND_NEW_RS,
                        message,
                        &self.now,
                    ),
                );
            }
            return Some(index);
        }
        if !create {
            return None;
        }
        let deployment = self.deployment;
        let spec = deployment.spec.clone().unwrap_or_default();
        let hash = template_hash(&spec.template, self.status.collision_count);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.to_string(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.to_string(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let old = self.old_indices(None);
        let replicas = rolling::new_replica_set_target(deployment, self.spec_sum(&old), 0);
        let mut replica_set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: deployment.metadata.namespace.clone(),
                labels: template
                    .metadata
                    .as_ref()
                    .and_then(|meta| meta.labels.clone()),
                owner_references: Some(vec![controller_reference(deployment)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        set_new_replica_set_annotations(deployment, &mut replica_set, new_revision, false);
        let event =
            (replicas > 0).then(|| format!("Scaled up replica set {name} from 0 to {replicas}"));
        self.actions.push(Action::Create {
            replica_set: replica_set.clone(),
            event,
        });
        self.world.push(replica_set);
        self.annotations
            .insert(REVISION.to_string(), new_revision.to_string());
        // A new rollout: what the last one came to no longer stands.
        progress::remove_condition(&mut self.status, rollback::ROLLED_BACK);
        if has_deadline {
            let message = format!("Created new replica set \"{name}\"");
            progress::set_condition(
                &mut self.status,
                progress::new_condition(
                    PROGRESSING,
                    "True",
                    progress::NEW_RS_CREATED,
                    message,
                    &self.now,
                ),
            );
        }
        Some(self.world.len() - 1)
    }

    /// Upstream's `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if progress::progress_deadline(self.deployment).is_none() {
            return;
        }
        let reason = progress::condition(&self.status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(progress::TIMED_OUT) {
            return;
        }
        let paused_before = reason.as_deref() == Some(progress::PAUSED);
        if self.paused() && !paused_before {
            progress::set_condition(
                &mut self.status,
                progress::new_condition(
                    PROGRESSING,
                    "Unknown",
                    progress::PAUSED,
                    "Deployment is paused".into(),
                    &self.now,
                ),
            );
        } else if !self.paused() && paused_before {
            progress::set_condition(
                &mut self.status,
                progress::new_condition(
                    PROGRESSING,
                    "Unknown",
                    progress::RESUMED,
                    "Deployment is resumed".into(),
                    &self.now,
                ),
            );
        }
    }

    /// Auto-rollback is on and the template is one that failed before.
    fn blocked(&mut self) -> bool {
        if !rollback::enabled(self.deployment) {
            return false;
        }
        let Some(failed) = rollback::failed_hash(self.deployment) else {
            return false;
        };
        let hash = match find_new_replica_set(self.deployment, &self.world) {
            Some(index) => rollback::template_hash_of(&self.world[index]).map(str::to_string),
            None => Some(template_hash(
                &deployment_template(self.deployment),
                self.status.collision_count,
            )),
        };
        if hash.as_deref() != Some(failed) {
            return false;
        }
        if progress::progress_deadline(self.deployment).is_some() {
            let message = format!(
                "pod template {failed} was rolled back automatically before; change the template or remove the {} annotation to roll it out",
                rollback::FAILED_REVISION_HASH
            );
            progress::set_condition(
                &mut self.status,
                progress::new_condition(PROGRESSING, "False", "RolloutBlocked", message, &self.now),
            );
        }
        true
    }

    /// Upstream's `isScalingEvent`: an active ReplicaSet was sized for a
    /// different replica count.
    fn is_scaling_event(&mut self) -> bool {
        // As upstream, finding the new ReplicaSet also brings its revision
        // up to date.
        self.new_replica_set(false);
        let desired = self.desired();
        let all: Vec<usize> = (0..self.world.len()).collect();
        self.active(&all).into_iter().any(|index| {
            self.world[index]
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(DESIRED_REPLICAS))
                .and_then(|text| text.parse::<i32>().ok())
                .is_some_and(|annotated| annotated != desired)
        })
    }

    /// Upstream's `sync`: scale (proportionally in a rollout), clean up a
    /// paused Deployment's history, update the counts.
    fn scale_only(&mut self) {
        let new = self.new_replica_set(false);
        let old = self.old_indices(new);
        self.scale(new, &old);
        if self.paused() {
            self.cleanup(&old);
        }
        self.sync_status(new);
    }

    fn scale_replica_set(&mut self, index: usize, new_scale: i32, operation: &str) {
        let desired = self.desired();
        let max = desired + rolling::max_surge(self.deployment);
        let replica_set = &mut self.world[index];
        let old_scale = spec_replicas(replica_set);
        let size_changed = old_scale != new_scale;
        if !size_changed && !replicas_annotations_need_update(replica_set, desired, max) {
            return;
        }
        replica_set
            .spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(new_scale);
        set_replicas_annotations(replica_set, desired, max);
        let name = replica_set.metadata.name.clone().unwrap_or_default();
        let event = size_changed.then(|| {
            format!("Scaled {operation} replica set {name} from {old_scale} to {new_scale}")
        });
        self.update(index, event);
    }

    fn scale_and_record(&mut self, index: usize, new_scale: i32) {
        let operation = if spec_replicas(&self.world[index]) > new_scale {
            "down"
        } else {
            "up"
        };
        self.scale_replica_set(index, new_scale, operation);
    }

    /// Upstream's `scale`.
    fn scale(&mut self, new: Option<usize>, old: &[usize]) {
        let desired = self.desired();
        if let Some(index) = self.active_or_latest(new, old) {
            if spec_replicas(&self.world[index]) != desired {
                self.scale_and_record(index, desired);
            }
            return;
        }
        if let Some(index) = new
            && self.is_saturated(index)
        {
            for old_index in self.active(old) {
                self.scale_and_record(old_index, 0);
            }
            return;
        }
        if rolling::is_recreate(self.deployment) {
            return;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.extend(new);
        let mut all = self.active(&all);
        let current = self.spec_sum(&all);
        let allowed = if desired > 0 {
            desired + rolling::max_surge(self.deployment)
        } else {
            0
        };
        let to_add = allowed - current;
        let operation = if to_add > 0 {
            // Largest first; the newer of two the same size.
            all.sort_by(|a, b| {
                let (a, b) = (&self.world[*a], &self.world[*b]);
                spec_replicas(b)
                    .cmp(&spec_replicas(a))
                    .then_with(|| creation_key(b).cmp(&creation_key(a)))
            });
            "up"
        } else if to_add < 0 {
            // Largest first; the older of two the same size.
            all.sort_by(|a, b| {
                let (a, b) = (&self.world[*a], &self.world[*b]);
                spec_replicas(b)
                    .cmp(&spec_replicas(a))
                    .then_with(|| creation_key(a).cmp(&creation_key(b)))
            });
            "down"
        } else {
            ""
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
        for index in &all {
            let current = spec_replicas(&self.world[*index]);
            if to_add != 0 {
                let proportion = self.proportion(*index, to_add, added);
                sizes.push(current + proportion);
                added += proportion;
            } else {
                sizes.push(current);
            }
        }
        if to_add != 0 && !sizes.is_empty() {
            // What rounding left goes to the largest.
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        for (index, size) in all.into_iter().zip(sizes) {
            self.scale_replica_set(index, size, operation);
        }
    }

    /// Upstream's `GetReplicaSetProportion`.
    fn proportion(&self, index: usize, to_add: i32, added: i32) -> i32 {
        let replica_set = &self.world[index];
        let size = spec_replicas(replica_set);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(replica_set);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream's `getReplicaSetFraction`: the ReplicaSet's share of the new
    /// size, by the size it had when the Deployment last sized it.
    fn fraction(&self, replica_set: &ReplicaSet) -> i32 {
        let size = spec_replicas(replica_set);
        let desired = self.desired();
        if desired == 0 {
            return -size;
        }
        let deployment_replicas = desired + rolling::max_surge(self.deployment);
        let annotated = replica_set
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(MAX_REPLICAS))
            .and_then(|text| text.parse::<i32>().ok())
            .unwrap_or_else(|| self.read_status.replicas.unwrap_or(0));
        if annotated == 0 {
            return 0;
        }
        let scaled = f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated);
        scaled.round() as i32 - size
    }

    /// Upstream's `FindActiveOrLatest`: the only active ReplicaSet, or the
    /// latest when none is.
    fn active_or_latest(&self, new: Option<usize>, old: &[usize]) -> Option<usize> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.extend(new);
        let active = self.active(&all);
        match active.len() {
            0 => new.or_else(|| {
                old.iter()
                    .copied()
                    .max_by_key(|index| creation_key(&self.world[*index]))
            }),
            1 => Some(active[0]),
            _ => None,
        }
    }

    fn is_saturated(&self, index: usize) -> bool {
        let replica_set = &self.world[index];
        let desired = self.desired();
        let annotated = replica_set
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(DESIRED_REPLICAS))
            .and_then(|text| text.parse::<i32>().ok());
        annotated == Some(desired)
            && spec_replicas(replica_set) == desired
            && rolling::available_replicas(replica_set) == desired
    }

    /// Upstream's `cleanupDeployment`: old ReplicaSets beyond
    /// `revisionHistoryLimit`, the lowest revisions first, once they have
    /// no pods.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = self
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.revision_history_limit)
        else {
            return;
        };
        let mut cleanable: Vec<usize> = old
            .iter()
            .copied()
            .filter(|index| self.world[*index].metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return;
        }
        cleanable.sort_by_key(|index| {
            let replica_set = &self.world[*index];
            (revision(&replica_set.metadata), creation_key(replica_set))
        });
        for index in cleanable.into_iter().take(excess as usize) {
            let replica_set = &self.world[index];
            let observed = replica_set
                .status
                .as_ref()
                .and_then(|status| status.observed_generation)
                .unwrap_or(0);
            if rolling::status_replicas(replica_set) != 0
                || spec_replicas(replica_set) != 0
                || replica_set.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            self.actions.push(Action::Delete {
                name: replica_set.metadata.name.clone().unwrap_or_default(),
                uid: replica_set.metadata.uid.clone(),
            });
        }
    }

    fn world_refs(&self) -> Vec<&ReplicaSet> {
        self.world.iter().collect()
    }

    /// Upstream's `syncDeploymentStatus`: the counts, no progress verdict.
    fn sync_status(&mut self, new: Option<usize>) {
        let status = progress::calculate_status(
            self.deployment,
            &self.status,
            &self.world_refs(),
            new.map(|index| &self.world[index]),
            &self.now,
        );
        self.status = status;
    }

    /// Upstream's `syncRolloutStatus`, and the auto-rollback verdict.
    fn sync_rollout_status(&mut self, new: Option<usize>) {
        let all = self.world_refs();
        let new_replica_set = new.map(|index| &self.world[index]);
        let mut status = progress::calculate_status(
            self.deployment,
            &self.status,
            &all,
            new_replica_set,
            &self.now,
        );
        progress::update_progressing(
            self.deployment,
            &self.status,
            &mut status,
            new_replica_set,
            &self.now,
        );
        let old: Vec<&ReplicaSet> = (0..self.world.len())
            .filter(|index| Some(*index) != new)
            .map(|index| &self.world[index])
            .collect();
        match progress::replica_failure(new_replica_set, &old) {
            Some(failure) => progress::set_condition(&mut status, failure),
            None => progress::remove_condition(&mut status, progress::REPLICA_FAILURE),
        }
        self.recheck_after = progress::recheck_after(self.deployment, &status, &self.now);
        self.status = status;
        if let Some(index) = new
            && rollback::enabled(self.deployment)
        {
            self.auto_rollback(index);
        }
    }

    /// Marks a completed rollout's ReplicaSet, or rolls a failing one back.
    fn auto_rollback(&mut self, new: usize) {
        if progress::deployment_complete(self.deployment, &self.status) {
            if !rollback::is_fully_available(&self.world[new]) {
                annotations_mut(&mut self.world[new].metadata)
                    .insert(rollback::FULLY_AVAILABLE.to_string(), "true".to_string());
                self.update(new, None);
            }
            return;
        }
        if rollback::is_fully_available(&self.world[new]) {
            // A template that rolled out once is not rolled back from.
            return;
        }
        let uid = self.world[new].metadata.uid.clone().unwrap_or_default();
        let pods = self.pods.get(&uid).cloned().unwrap_or_default();
        let Some(failure) = rollback::failure(
            self.deployment,
            &self.status,
            &self.world[new],
            &pods,
            &self.now,
        ) else {
            return;
        };
        let Some(target) = (0..self.world.len())
            .filter(|index| *index != new && rollback::is_fully_available(&self.world[*index]))
            .max_by_key(|index| revision(&self.world[*index].metadata))
        else {
            return;
        };
        self.roll_back(new, target, failure);
    }

    fn roll_back(&mut self, new: usize, target: usize, failure: Failure) {
        let from = &self.world[new];
        let to = &self.world[target];
        let from_name = from.metadata.name.clone().unwrap_or_default();
        let to_name = to.metadata.name.clone().unwrap_or_default();
        let note = format!(
            "Rolled back from revision {} (replica set {from_name}) to revision {} (replica set {to_name}): {}",
            revision(&from.metadata),
            revision(&to.metadata),
            failure.detail
        );
        let mut template = template_of(to);
        if let Some(labels) = template
            .metadata
            .as_mut()
            .and_then(|meta| meta.labels.as_mut())
        {
            labels.remove(POD_TEMPLATE_HASH);
        }
        // As `kubectl rollout undo`: the Deployment takes the old
        // ReplicaSet's annotations (but its own bookkeeping ones).
        let mut annotations: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (key, value) in to.metadata.annotations.iter().flatten() {
            if !skipped_annotation(key) && self.annotations.get(key) != Some(value) {
                annotations.insert(key.clone(), Some(value.clone()));
            }
        }
        if let Some(hash) = rollback::template_hash_of(from) {
            annotations.insert(
                rollback::FAILED_REVISION_HASH.to_string(),
                Some(hash.to_string()),
            );
        }
        self.actions.push(Action::RollBack {
            template,
            annotations,
        });
        self.actions.push(Action::Event {
            warning: true,
            reason: rollback::EVENT_REASON,
            note: note.clone(),
        });
        progress::set_condition(
            &mut self.status,
            progress::new_condition(
                rollback::ROLLED_BACK,
                "True",
                failure.reason,
                note.clone(),
                &self.now,
            ),
        );
        // A fresh Progressing condition: the way back has its own deadline.
        progress::remove_condition(&mut self.status, PROGRESSING);
        progress::set_condition(
            &mut self.status,
            progress::new_condition(
                PROGRESSING,
                "True",
                rollback::PROGRESSING_REASON,
                note,
                &self.now,
            ),
        );
        self.recheck_after = None;
    }

    /// Upstream's `rolloutRolling`.
    fn rollout_rolling(&mut self) {
        let new = self.new_replica_set(true);
        let Some(new) = new else {
            return;
        };
        let old = self.old_indices(Some(new));
        if self.reconcile_new(new, &old) {
            self.sync_rollout_status(Some(new));
            return;
        }
        let active_old = self.active(&old);
        if self.reconcile_old(new, &active_old, &old) {
            self.sync_rollout_status(Some(new));
            return;
        }
        if progress::deployment_complete(self.deployment, &self.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new));
    }

    /// Upstream's `reconcileNewReplicaSet`; true when it scaled.
    fn reconcile_new(&mut self, new: usize, old: &[usize]) -> bool {
        let desired = self.desired();
        let size = spec_replicas(&self.world[new]);
        if size == desired {
            return false;
        }
        if size > desired {
            self.scale_and_record(new, desired);
            return true;
        }
        let all_size = self.spec_sum(old) + size;
        let target = rolling::new_replica_set_target(self.deployment, all_size, size);
        self.scale_and_record(new, target);
        target != size
    }

    /// Upstream's `reconcileOldReplicaSets`; true when it scaled down.
    fn reconcile_old(&mut self, new: usize, active_old: &[usize], old: &[usize]) -> bool {
        if self.spec_sum(active_old) == 0 {
            return false;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.push(new);
        let all_pods = self.spec_sum(&all);
        let min_available = self.desired() - rolling::max_unavailable(self.deployment);
        let new_unavailable =
            spec_replicas(&self.world[new]) - rolling::available_replicas(&self.world[new]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(old, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling(&all, old);
        cleaned + scaled > 0
    }

    /// Upstream's `cleanupUnhealthyReplicas`: first the old pods that are
    /// not available anyway, oldest ReplicaSet first.
    fn cleanup_unhealthy(&mut self, old: &[usize], max_cleanup: i32) -> i32 {
        let mut total = 0;
        for &index in old {
            if total >= max_cleanup {
                break;
            }
            let size = spec_replicas(&self.world[index]);
            let available = rolling::available_replicas(&self.world[index]);
            if size == 0 || size <= available {
                continue;
            }
            let count = (max_cleanup - total).min(size - available);
            self.scale_and_record(index, size - count);
            total += count;
        }
        total
    }

    /// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`: as many old
    /// pods as availability above the minimum allows, oldest first.
    fn scale_down_old_for_rolling(&mut self, all: &[usize], old: &[usize]) -> i32 {
        let min_available = self.desired() - rolling::max_unavailable(self.deployment);
        let available: i32 = all
            .iter()
            .map(|index| rolling::available_replicas(&self.world[*index]))
            .sum();
        if available <= min_available {
            return 0;
        }
        let wanted = available - min_available;
        let mut total = 0;
        for &index in old {
            if total >= wanted {
                break;
            }
            let size = spec_replicas(&self.world[index]);
            if size == 0 {
                continue;
            }
            let count = size.min(wanted - total);
            self.scale_and_record(index, size - count);
            total += count;
        }
        total
    }

    /// Upstream's `rolloutRecreate`: every old pod gone before the new
    /// ReplicaSet grows.
    fn rollout_recreate(&mut self) {
        let mut new = self.new_replica_set(false);
        let old = self.old_indices(new);
        let mut scaled_down = false;
        for index in self.active(&old) {
            self.scale_and_record(index, 0);
            scaled_down = true;
        }
        if scaled_down || self.old_pods_running(&old) {
            self.sync_rollout_status(new);
            return;
        }
        if new.is_none() {
            new = self.new_replica_set(true);
        }
        if let Some(index) = new {
            let desired = self.desired();
            self.scale_and_record(index, desired);
        }
        if progress::deployment_complete(self.deployment, &self.status) {
            let old = self.old_indices(new);
            self.cleanup(&old);
        }
        self.sync_rollout_status(new);
    }

    fn old_pods_running(&self, old: &[usize]) -> bool {
        if old
            .iter()
            .map(|index| rolling::status_replicas(&self.world[*index]))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        old.iter().any(|index| {
            let uid = self.world[*index]
                .metadata
                .uid
                .as_deref()
                .unwrap_or_default();
            self.pods.get(uid).into_iter().flatten().any(|pod| {
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|status| status.phase.as_deref());
                !matches!(phase, Some("Failed" | "Succeeded"))
            })
        })
    }
}
