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

mod annotations;
mod rollout;
mod scale;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::hash::{POD_TEMPLATE_HASH, template_hash};
use super::progress::{self, PROGRESSING};
use super::rollback::{self, Failure};
use super::rolling::{self, desired_replicas, spec_replicas};
use crate::ownership::controller_reference;

pub use annotations::*;

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
}
