//! The DaemonSet controller: one pod per eligible node, following nodes as
//! they join, leave or change, replacing old pods on a template change
//! (RollingUpdate within `maxUnavailable`, or OnDelete), and the
//! DaemonSet's status. The decisions are `core`'s; this is the driver.
//!
//! Pods carry `controller-revision-hash` (a hash of the template), and
//! each template is kept as a ControllerRevision (`history`), so `kubectl
//! rollout history ds` lists them.

pub mod core;
pub mod history;

use std::sync::Arc;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use scheduler::core::selectors::selector_matches;

use crate::cluster::{BY_CONTROLLER, BY_NAMESPACE, Cluster};
use crate::ownership::controller_reference;
use crate::podcontrol::{PodControl, describe, observe_pod_change, queue_owner_changes};
use crate::pods;
use crate::replicaset::core::{claim, controlled_by};
use crate::runtime::{Change, Events, Next, Stop, WorkQueue, key_of};

/// The controller's name in events and logs (upstream's).
pub const NAME: &str = "daemonset-controller";

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("cannot adopt or release pods of daemonset {key}: {source}")]
    Claim { key: String, source: kube::Error },
    #[error("cannot {action} pods of daemonset {key}: {message}")]
    Pods {
        key: String,
        action: &'static str,
        message: String,
    },
    #[error("cannot write the history of daemonset {key}: {source}")]
    History { key: String, source: kube::Error },
    #[error("cannot update the status of daemonset {key}: {source}")]
    Status { key: String, source: kube::Error },
}

struct Controller {
    cluster: Arc<Cluster>,
    pods: PodControl,
}

impl Controller {
    fn queue_selecting(&self, queue: &WorkQueue<String>, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pods::labels_of(pod);
        for daemon_set in self.cluster.daemon_sets.by_index(BY_NAMESPACE, namespace) {
            if let Some(spec) = &daemon_set.spec
                && selector_matches(&spec.selector, &labels)
            {
                queue.add(key_of(daemon_set.as_ref()));
            }
        }
    }

    /// Brings the DaemonSet's ControllerRevisions in line with its
    /// template (`history::plan`).
    async fn write_history(
        &self,
        key: &str,
        daemon_set: &DaemonSet,
        hash: &str,
        owned: &[Arc<Pod>],
    ) -> Result<(), DaemonSetError> {
        let uid = daemon_set.metadata.uid.clone().unwrap_or_default();
        let namespace = daemon_set.metadata.namespace.clone().unwrap_or_default();
        let revisions = self
            .cluster
            .controller_revisions
            .by_index(BY_CONTROLLER, &uid);
        let in_use: BTreeSet<String> = owned
            .iter()
            .filter_map(|pod| {
                pod.metadata
                    .labels
                    .as_ref()?
                    .get(core::REVISION_HASH)
                    .cloned()
            })
            .collect();
        let plan = history::plan(
            daemon_set,
            hash,
            &revisions,
            &in_use,
            controller_reference(daemon_set),
        );
        let api: Api<ControllerRevision> = Api::namespaced(self.cluster.client.clone(), &namespace);
        let failed = |source| DaemonSetError::History {
            key: key.to_string(),
            source,
        };
        if let Some(revision) = &plan.create {
            match api.create(&PostParams::default(), revision).await {
                Ok(_) => {}
                // Written already (the copy is behind).
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => return Err(failed(source)),
            }
        }
        if let Some((name, number)) = &plan.renumber {
            let patch = serde_json::json!({"revision": number});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(failed)?;
        }
        for name in &plan.delete {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(failed(source)),
            }
        }
        Ok(())
    }

    async fn reconcile(&self, key: String) -> Result<Next, DaemonSetError> {
        let Some(daemon_set) = self.cluster.daemon_sets.get(&key) else {
            self.pods.expectations.forget(&key);
            return Ok(Next::Done);
        };
        let namespace = daemon_set.metadata.namespace.clone().unwrap_or_default();
        let uid = daemon_set.metadata.uid.clone().unwrap_or_default();
        let deleting = daemon_set.metadata.deletion_timestamp.is_some();
        let may_act = self.pods.expectations.satisfied(&key) && !deleting;
        let all_pods = self.cluster.pods.by_index(BY_NAMESPACE, &namespace);
        // Failed pods are claimed too: the controller replaces them.
        let mut owned: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|pod| {
                controlled_by(pod, &uid)
                    && pods::phase(pod) == "Failed"
                    && !pods::is_terminating(pod)
            })
            .cloned()
            .collect();
        let selector = daemon_set.spec.as_ref().map(|spec| &spec.selector);
        let claimed = claim(&uid, deleting, selector, &all_pods);
        let reference = controller_reference(daemon_set.as_ref());
        owned.extend(
            self.pods
                .carry_out(claimed, &reference)
                .await
                .map_err(|source| DaemonSetError::Claim {
                    key: key.clone(),
                    source,
                })?,
        );
        let nodes = self.cluster.nodes.list();
        let hash = core::template_hash(&daemon_set);
        let now = Timestamp::now();
        let object = daemon_set.object_ref(&());
        let mut failure = None;
        if may_act {
            self.write_history(&key, &daemon_set, &hash, &owned).await?;
            let plan = core::plan(&daemon_set, &hash, &nodes, &owned, now);
            if !plan.delete.is_empty() {
                failure = self
                    .pods
                    .delete(&key, &object, &plan.delete)
                    .await
                    .map(|error| ("delete", describe(&error)));
            }
            if failure.is_none() && !plan.create.is_empty() {
                let new_pods = plan
                    .create
                    .iter()
                    .map(|node| core::daemon_pod(&daemon_set, node, &hash, reference.clone()))
                    .collect();
                let (_, error) = self.pods.create(&key, &object, new_pods).await;
                failure = error.map(|error| ("create", describe(&error)));
            }
        }
        let status = core::status(&daemon_set, &hash, &nodes, &owned, now);
        let mut recheck = None;
        let min_ready_seconds = daemon_set
            .spec
            .as_ref()
            .and_then(|spec| spec.min_ready_seconds)
            .unwrap_or(0);
        for pod in &owned {
            if let Some(wait) = pods::until_available(pod, min_ready_seconds, now) {
                recheck =
                    Some(recheck.map_or(wait, |earlier: std::time::Duration| earlier.min(wait)));
            }
        }
        if core::status_changed(daemon_set.status.as_ref(), &status) {
            let mut updated = (*daemon_set).clone();
            updated.status = Some(status);
            let api: Api<DaemonSet> = Api::namespaced(self.cluster.client.clone(), &namespace);
            api.replace_status(
                updated.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
            .map_err(|source| DaemonSetError::Status {
                key: key.clone(),
                source,
            })?;
        }
        if let Some((action, message)) = failure {
            return Err(DaemonSetError::Pods {
                key,
                action,
                message,
            });
        }
        Ok(recheck.map_or(Next::Done, Next::After))
    }
}

/// Runs the DaemonSet controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let events = Events::new(cluster.client.clone(), NAME, &cluster.identity);
    let controller = Arc::new(Controller {
        pods: PodControl::new(cluster.client.clone(), events),
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    queue_owner_changes(&cluster.daemon_sets, &queue, &controller.pods.expectations);
    {
        let queue = Arc::clone(&queue);
        let controller_for_handler = Arc::clone(&controller);
        cluster.pods.on_change(move |change| {
            observe_pod_change(
                "DaemonSet",
                &controller_for_handler.pods.expectations,
                change,
                |key| queue.add(key),
                |pod| controller_for_handler.queue_selecting(&queue, pod),
            )
        });
    }
    {
        // A node joining, leaving or changing labels or taints concerns
        // every DaemonSet (they are few).
        let queue = Arc::clone(&queue);
        let handler_cluster = Arc::clone(&cluster);
        cluster.nodes.on_change(move |change| {
            let relevant = match change {
                Change::Updated { old, new } => {
                    old.metadata.labels != new.metadata.labels
                        || old.spec.as_ref().and_then(|spec| spec.taints.as_ref())
                            != new.spec.as_ref().and_then(|spec| spec.taints.as_ref())
                }
                _ => true,
            };
            if relevant {
                for key in handler_cluster.daemon_sets.keys() {
                    queue.add(key);
                }
            }
        });
    }
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.daemon_sets, queue, workers, reconcile, stop)
        .await;
}
