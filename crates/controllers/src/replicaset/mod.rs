//! The ReplicaSet controller: keeps `spec.replicas` pods from each
//! ReplicaSet's template running, claiming pods by its selector, and
//! reports them in its status. The decisions are `core`'s; this is the
//! driver (handlers that queue ReplicaSets, and the writes).

pub mod core;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, PostParams};
use scheduler::core::selectors::selector_matches;

use crate::cluster::{BY_NAMESPACE, Cluster};
use crate::ownership::controller_reference;
use crate::podcontrol::{PodControl, describe, observe_pod_change, queue_owner_changes};
use crate::pods;
use crate::runtime::{Change, Events, Next, Stop, WorkQueue, key_of};

/// The controller's name in events and logs (upstream's).
pub const NAME: &str = "replicaset-controller";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("cannot adopt or release pods of replicaset {key}: {source}")]
    Claim { key: String, source: kube::Error },
    #[error("cannot {action} pods of replicaset {key}: {message}")]
    Pods {
        key: String,
        action: &'static str,
        message: String,
    },
    #[error("cannot update the status of replicaset {key}: {source}")]
    Status { key: String, source: kube::Error },
}

struct Controller {
    cluster: Arc<Cluster>,
    pods: PodControl,
}

impl Controller {
    /// Queues the ReplicaSets a pod change concerns: its controller, or,
    /// for an orphan, every ReplicaSet of its namespace that selects it.
    fn pod_changed(&self, queue: &WorkQueue<String>, change: &Change<'_, Pod>) {
        observe_pod_change(
            "ReplicaSet",
            &self.pods.expectations,
            change,
            |key| queue.add(key),
            |pod| self.queue_selecting(queue, pod),
        );
    }

    fn queue_selecting(&self, queue: &WorkQueue<String>, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = pods::labels_of(pod);
        for replica_set in self.cluster.replica_sets.by_index(BY_NAMESPACE, namespace) {
            if let Some(spec) = &replica_set.spec
                && selector_matches(&spec.selector, &labels)
            {
                queue.add(key_of(replica_set.as_ref()));
            }
        }
    }

    async fn reconcile(&self, key: String) -> Result<Next, ReplicaSetError> {
        let Some(replica_set) = self.cluster.replica_sets.get(&key) else {
            self.pods.expectations.forget(&key);
            return Ok(Next::Done);
        };
        let namespace = replica_set.metadata.namespace.clone().unwrap_or_default();
        let uid = replica_set.metadata.uid.clone().unwrap_or_default();
        let deleting = replica_set.metadata.deletion_timestamp.is_some();
        // Read the expectations before the pods: pods seen after this
        // point cannot make a stale copy look complete.
        let may_scale = self.pods.expectations.satisfied(&key) && !deleting;
        let all_pods = self.cluster.pods.by_index(BY_NAMESPACE, &namespace);
        let claim = core::claim(
            &uid,
            deleting,
            replica_set.spec.as_ref().map(|spec| &spec.selector),
            &all_pods,
        );
        let reference = controller_reference(replica_set.as_ref());
        let owned = self
            .pods
            .carry_out(claim, &reference)
            .await
            .map_err(|source| ReplicaSetError::Claim {
                key: key.clone(),
                source,
            })?;
        let object = replica_set.object_ref(&());
        let mut failure = None;
        if may_scale {
            let scale = core::scale(&replica_set, &owned);
            if scale.create > 0 {
                let template = replica_set
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.template.clone())
                    .unwrap_or_default();
                let name = replica_set.metadata.name.clone().unwrap_or_default();
                let pod = pods::pod_from_template(
                    &template,
                    &namespace,
                    &format!("{name}-"),
                    reference.clone(),
                );
                let (_, error) = self
                    .pods
                    .create(&key, &object, vec![pod; scale.create])
                    .await;
                failure = error.map(|error| core::Failure {
                    reason: "FailedCreate".to_string(),
                    message: describe(&error),
                });
            } else if !scale.delete.is_empty() {
                failure = self
                    .pods
                    .delete(&key, &object, &scale.delete)
                    .await
                    .map(|error| core::Failure {
                        reason: "FailedDelete".to_string(),
                        message: describe(&error),
                    });
            }
        }
        let (status, recheck) =
            core::status(&replica_set, &owned, failure.as_ref(), Timestamp::now());
        if core::status_changed(replica_set.status.as_ref(), &status) {
            let mut updated = (*replica_set).clone();
            updated.status = Some(status);
            let api: Api<ReplicaSet> = Api::namespaced(self.cluster.client.clone(), &namespace);
            api.replace_status(
                updated.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
            .map_err(|source| ReplicaSetError::Status {
                key: key.clone(),
                source,
            })?;
        }
        if let Some(failure) = failure {
            return Err(ReplicaSetError::Pods {
                key,
                action: if failure.reason == "FailedCreate" {
                    "create"
                } else {
                    "delete"
                },
                message: failure.message,
            });
        }
        Ok(recheck.map_or(Next::Done, Next::After))
    }
}

/// Runs the ReplicaSet controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let events = Events::new(cluster.client.clone(), NAME, &cluster.identity);
    let controller = Arc::new(Controller {
        pods: PodControl::new(cluster.client.clone(), events),
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    queue_owner_changes(&cluster.replica_sets, &queue, &controller.pods.expectations);
    {
        let queue = Arc::clone(&queue);
        let controller_for_handler = Arc::clone(&controller);
        cluster
            .pods
            .on_change(move |change| controller_for_handler.pod_changed(&queue, change));
    }
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.replica_sets, queue, workers, reconcile, stop)
        .await;
}
