//! The Deployment controller (upstream's pkg/controller/deployment): each
//! Deployment's ReplicaSets, one per pod template it has had, sized for a
//! rolling or recreating rollout, with the status, conditions, revision
//! annotations and events `kubectl rollout` reads; and shoal's automatic
//! rollback (`rollback.rs`).
//!
//! The driver: handlers queue the Deployments a change concerns, and a
//! worker adopts and releases ReplicaSets by selector, asks the core
//! (`core.rs`) for a plan from the informers' copies and performs it.

pub mod core;
pub mod expectations;
pub mod hash;
pub mod progress;
pub mod rollback;
pub mod rolling;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use self::core::{Action, Input};
use self::expectations::{Expectations, Expected};
use crate::cluster::{BY_CONTROLLER, BY_NAMESPACE, Cluster};
use crate::ownership::{controller_of, controller_reference};
use crate::runtime::{Change, Events, Next, Stop, WorkQueue, key_of, run_workers};
use scheduler::core::selectors::selector_matches;

/// The controller's name in events and logs, as upstream's.
pub const CONTROLLER_NAME: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("replica set {0} exists with another template (hash collision); collisionCount raised")]
    Collision(String),
}

fn api_error(
    action: &'static str,
    kind: &'static str,
    name: &str,
) -> impl FnOnce(kube::Error) -> DeploymentError {
    let name = name.to_string();
    move |source| DeploymentError::Api {
        action,
        kind,
        name,
        source,
    }
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

struct Controller {
    cluster: Arc<Cluster>,
    queue: Arc<WorkQueue<String>>,
    events: Events,
    expectations: Expectations,
}

/// The Deployment of a ReplicaSet's controller reference, if it is one.
fn owning_deployment(replica_set: &ReplicaSet) -> Option<String> {
    let owner = controller_of(&replica_set.metadata)?;
    if owner.kind != "Deployment" {
        return None;
    }
    let namespace = replica_set
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    Some(format!("{namespace}/{}", owner.name))
}

fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

fn selects(deployment: &Deployment, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = deployment.spec.as_ref() else {
        return false;
    };
    let selector = &spec.selector;
    let empty = selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    !empty && selector_matches(selector, labels)
}

impl Controller {
    /// Queues the Deployments a ReplicaSet concerns: its controller's, or
    /// for an orphan every Deployment in its namespace that selects it.
    fn queue_for_replica_set(&self, replica_set: &ReplicaSet) {
        if let Some(key) = owning_deployment(replica_set) {
            self.queue.add(key);
            return;
        }
        if controller_of(&replica_set.metadata).is_some() {
            return;
        }
        let labels = labels_of(&replica_set.metadata);
        let namespace = replica_set.metadata.namespace.clone().unwrap_or_default();
        for deployment in self.cluster.deployments.by_index(BY_NAMESPACE, &namespace) {
            if selects(&deployment, &labels) {
                self.queue.add(key_of(deployment.as_ref()));
            }
        }
    }

    /// Queues the Deployment of a pod's ReplicaSet when pods matter to it:
    /// Recreate waits for old pods to go, auto-rollback watches new ones.
    fn queue_for_pod(&self, pod: &Pod, deleted: bool) {
        let Some(owner) = controller_of(&pod.metadata) else {
            return;
        };
        if owner.kind != "ReplicaSet" {
            return;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let Some(replica_set) = self
            .cluster
            .replica_sets
            .get(&format!("{namespace}/{}", owner.name))
        else {
            return;
        };
        let Some(key) = owning_deployment(&replica_set) else {
            return;
        };
        let Some(deployment) = self.cluster.deployments.get(&key) else {
            return;
        };
        let watched = if rolling::is_recreate(&deployment) {
            deleted
        } else {
            rollback::enabled(&deployment) && !deleted
        };
        if watched {
            self.queue.add(key);
        }
    }

    fn register(self: &Arc<Self>) {
        let this = Arc::clone(self);
        self.cluster.deployments.on_change(move |change| {
            this.queue.add(key_of(change.object()));
        });
        let this = Arc::clone(self);
        self.cluster
            .replica_sets
            .on_change(move |change| match change {
                Change::Added(rs) | Change::Deleted(rs) => this.queue_for_replica_set(rs),
                Change::Updated { old, new } => {
                    let old_owner = owning_deployment(old);
                    if old_owner != owning_deployment(new)
                        && let Some(key) = old_owner
                    {
                        this.queue.add(key);
                    }
                    this.queue_for_replica_set(new);
                }
            });
        let this = Arc::clone(self);
        self.cluster.pods.on_change(move |change| match change {
            Change::Deleted(pod) => this.queue_for_pod(pod, true),
            Change::Added(pod) | Change::Updated { new: pod, .. } => this.queue_for_pod(pod, false),
        });
    }

    /// Upstream's `getReplicaSetsForDeployment`: the ReplicaSets it controls,
    /// adopting orphans it selects and releasing the ones it no longer does.
    async fn claim_replica_sets(
        &self,
        deployment: &Deployment,
    ) -> Result<Vec<ReplicaSet>, DeploymentError> {
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.cluster.client.clone(), &namespace);
        let mut claimed = Vec::new();
        for replica_set in self.cluster.replica_sets.by_index(BY_CONTROLLER, &uid) {
            if selects(deployment, &labels_of(&replica_set.metadata))
                || replica_set.metadata.deletion_timestamp.is_some()
            {
                claimed.push(replica_set.as_ref().clone());
                continue;
            }
            // Release: it no longer matches.
            let name = replica_set.metadata.name.clone().unwrap_or_default();
            let owners: Vec<_> = replica_set
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|owner| owner.uid != uid)
                .cloned()
                .collect();
            let patch =
                json!({"metadata": {"ownerReferences": owners, "uid": replica_set.metadata.uid}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(error) if status_code(&error) == Some(404) => {}
                Err(error) => return Err(api_error("release", "replica set", &name)(error)),
            }
        }
        if deployment.metadata.deletion_timestamp.is_some() {
            return Ok(claimed);
        }
        for replica_set in self.cluster.replica_sets.by_index(BY_NAMESPACE, &namespace) {
            if controller_of(&replica_set.metadata).is_some()
                || replica_set.metadata.deletion_timestamp.is_some()
                || !selects(deployment, &labels_of(&replica_set.metadata))
            {
                continue;
            }
            // Adopt: an orphan it selects.
            let name = replica_set.metadata.name.clone().unwrap_or_default();
            let mut owners = replica_set
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            owners.push(controller_reference(deployment));
            let patch =
                json!({"metadata": {"ownerReferences": owners, "uid": replica_set.metadata.uid}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(adopted) => claimed.push(adopted),
                Err(error) if matches!(status_code(&error), Some(404 | 409 | 422)) => {}
                Err(error) => return Err(api_error("adopt", "replica set", &name)(error)),
            }
        }
        Ok(claimed)
    }

    async fn reconcile(self: Arc<Self>, key: String) -> Result<Next, DeploymentError> {
        let Some(deployment) = self.cluster.deployments.get(&key) else {
            self.expectations.forget(&key);
            return Ok(Next::Done);
        };
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        if !self
            .expectations
            .satisfied(&key, |rs_key| self.cluster.replica_sets.get(rs_key))
        {
            // The informer will bring what was written, and queue the key.
            return Ok(Next::After(Duration::from_secs(1)));
        }
        let replica_sets = self.claim_replica_sets(&deployment).await?;
        let mut pods: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        if rolling::is_recreate(&deployment) || rollback::enabled(&deployment) {
            for replica_set in &replica_sets {
                let uid = replica_set.metadata.uid.clone().unwrap_or_default();
                let owned = self.cluster.pods.by_index(BY_CONTROLLER, &uid);
                pods.insert(uid, owned);
            }
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
        let plan = core::plan(Input {
            deployment: &deployment,
            replica_sets,
            pods,
            now,
        });
        let replica_set_api: Api<ReplicaSet> =
            Api::namespaced(self.cluster.client.clone(), &namespace);
        let deployment_api: Api<Deployment> =
            Api::namespaced(self.cluster.client.clone(), &namespace);
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let mut resource_version = deployment.metadata.resource_version.clone();
        let mut current = deployment.as_ref().clone();
        for action in plan.actions {
            match action {
                Action::Create { replica_set, event } => {
                    let rs_name = replica_set.metadata.name.clone().unwrap_or_default();
                    match replica_set_api
                        .create(&PostParams::default(), &replica_set)
                        .await
                    {
                        Ok(created) => {
                            self.expectations.expect(
                                &key,
                                format!("{namespace}/{rs_name}"),
                                Expected::Created {
                                    generation: created.metadata.generation.unwrap_or(0),
                                },
                            );
                            if let Some(note) = event {
                                self.events
                                    .record(&current, false, core::SCALING_REPLICA_SET, note)
                                    .await;
                            }
                        }
                        Err(error) if status_code(&error) == Some(409) => {
                            return self
                                .after_create_conflict(
                                    &current,
                                    &replica_set_api,
                                    &deployment_api,
                                    &rs_name,
                                )
                                .await;
                        }
                        Err(error) => {
                            let note =
                                format!("Failed to create new replica set \"{rs_name}\": {error}");
                            self.events
                                .record(&current, true, progress::FAILED_RS_CREATE, note)
                                .await;
                            return Err(api_error("create", "replica set", &rs_name)(error));
                        }
                    }
                }
                Action::Update { replica_set, event } => {
                    let rs_name = replica_set.metadata.name.clone().unwrap_or_default();
                    let spec = replica_set.spec.clone().unwrap_or_default();
                    let patch = json!({
                        "metadata": {
                            "uid": replica_set.metadata.uid,
                            "annotations": replica_set.metadata.annotations,
                        },
                        "spec": {
                            "replicas": spec.replicas,
                            "minReadySeconds": spec.min_ready_seconds,
                        },
                    });
                    let updated = replica_set_api
                        .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(api_error("update", "replica set", &rs_name))?;
                    self.expectations.expect(
                        &key,
                        format!("{namespace}/{rs_name}"),
                        Expected::Updated {
                            generation: updated.metadata.generation.unwrap_or(0),
                        },
                    );
                    if let Some(note) = event {
                        self.events
                            .record(&current, false, core::SCALING_REPLICA_SET, note)
                            .await;
                    }
                }
                Action::Delete { name: rs_name, uid } => {
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::background()
                    };
                    match replica_set_api.delete(&rs_name, &params).await {
                        Ok(_) => {}
                        Err(error) if matches!(status_code(&error), Some(404 | 409)) => {}
                        Err(error) => {
                            return Err(api_error("delete", "replica set", &rs_name)(error));
                        }
                    }
                    self.expectations.expect(
                        &key,
                        format!("{namespace}/{rs_name}"),
                        Expected::Deleted { uid },
                    );
                }
                Action::Annotate(changes) => {
                    let patch = json!({"metadata": {
                        "resourceVersion": resource_version,
                        "annotations": changes,
                    }});
                    current = deployment_api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(api_error("annotate", "deployment", &name))?;
                    resource_version = current.metadata.resource_version.clone();
                }
                Action::RollBack {
                    template,
                    annotations,
                } => {
                    let mut rolled = current.clone();
                    rolled.metadata.resource_version = resource_version.clone();
                    let own = rolled
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new);
                    for (annotation, value) in annotations {
                        match value {
                            Some(value) => own.insert(annotation, value),
                            None => own.remove(&annotation),
                        };
                    }
                    if let Some(spec) = rolled.spec.as_mut() {
                        spec.template = template;
                    }
                    current = deployment_api
                        .replace(&name, &PostParams::default(), &rolled)
                        .await
                        .map_err(api_error("roll back", "deployment", &name))?;
                    resource_version = current.metadata.resource_version.clone();
                    tracing::info!(deployment = %key, "rolled back automatically");
                }
                Action::Status(status) => {
                    let mut updated = current.clone();
                    updated.metadata.resource_version = resource_version.clone();
                    updated.status = Some(status);
                    current = deployment_api
                        .replace_status(&name, &PostParams::default(), &updated)
                        .await
                        .map_err(api_error("update status of", "deployment", &name))?;
                    resource_version = current.metadata.resource_version.clone();
                }
                Action::Event {
                    warning,
                    reason,
                    note,
                } => {
                    self.events.record(&current, warning, reason, note).await;
                }
            }
        }
        Ok(match plan.recheck_after {
            Some(delay) => Next::After(delay),
            None => Next::Done,
        })
    }

    /// A create found the name taken: the informer had not shown our own
    /// ReplicaSet yet (wait for it), or another template hashed the same
    /// (raise `collisionCount`, so the next name differs).
    async fn after_create_conflict(
        &self,
        deployment: &Deployment,
        replica_set_api: &Api<ReplicaSet>,
        deployment_api: &Api<Deployment>,
        rs_name: &str,
    ) -> Result<Next, DeploymentError> {
        let existing =
            replica_set_api
                .get(rs_name)
                .await
                .map_err(api_error("get", "replica set", rs_name))?;
        let ours = controller_of(&existing.metadata).map(|owner| owner.uid.as_str())
            == deployment.metadata.uid.as_deref();
        let template = deployment
            .spec
            .as_ref()
            .map(|spec| spec.template.clone())
            .unwrap_or_default();
        let existing_template = existing
            .spec
            .as_ref()
            .and_then(|spec| spec.template.clone())
            .unwrap_or_default();
        if ours && hash::equal_ignore_hash(&template, &existing_template) {
            return Ok(Next::After(Duration::from_millis(200)));
        }
        let count = deployment
            .status
            .as_ref()
            .and_then(|status| status.collision_count)
            .unwrap_or(0);
        let patch = json!({
            "metadata": {"resourceVersion": deployment.metadata.resource_version},
            "status": {"collisionCount": count + 1},
        });
        let name = deployment.metadata.name.clone().unwrap_or_default();
        deployment_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("update status of", "deployment", &name))?;
        Err(DeploymentError::Collision(rs_name.to_string()))
    }
}

/// Runs the Deployment controller until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        events: Events::new(cluster.client.clone(), CONTROLLER_NAME, &cluster.identity),
        cluster,
        queue: WorkQueue::new(),
        expectations: Expectations::default(),
    });
    controller.register();
    tokio::select! {
        _ = controller.cluster.synced() => {}
        _ = stop.clone().wait() => return,
    }
    for key in controller.cluster.deployments.keys() {
        controller.queue.add(key);
    }
    let queue = Arc::clone(&controller.queue);
    run_workers(
        CONTROLLER_NAME,
        queue,
        workers,
        move |key| Arc::clone(&controller).reconcile(key),
        stop,
    )
    .await;
}
