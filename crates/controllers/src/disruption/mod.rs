//! The disruption controller: keeps each PodDisruptionBudget's status
//! (expected, desired and current healthy pods, disruptions allowed, the
//! `DisruptionAllowed` condition) current as its pods and their
//! controllers change. The arithmetic is `core`'s.

pub mod core;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, PostParams};
use scheduler::core::selectors::selector_matches;

use crate::cluster::{BY_NAMESPACE, Cluster};
use crate::ownership::controller_of;
use crate::pods;
use crate::runtime::{Events, Next, Stop, WorkQueue, key_of};

/// The controller's name in events and logs (upstream's).
pub const NAME: &str = "disruption-controller";

#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    #[error("cannot update the status of poddisruptionbudget {key}: {source}")]
    Status { key: String, source: kube::Error },
}

struct Controller {
    cluster: Arc<Cluster>,
    events: Events,
}

impl Controller {
    /// The replicas of `pod`'s controller, as upstream's scale finders: a
    /// ReplicaSet's (or its Deployment's), a Deployment's.
    fn scale_of(&self, pod: &Pod) -> Option<(String, i32)> {
        let reference = controller_of(&pod.metadata)?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let key = format!("{namespace}/{}", reference.name);
        match reference.kind.as_str() {
            "ReplicaSet" => {
                let replica_set = self.cluster.replica_sets.get(&key)?;
                if replica_set.metadata.uid.as_deref() != Some(reference.uid.as_str()) {
                    return None;
                }
                if let Some(owner) = controller_of(&replica_set.metadata)
                    && owner.kind == "Deployment"
                {
                    let deployment = self
                        .cluster
                        .deployments
                        .get(&format!("{namespace}/{}", owner.name))?;
                    let replicas = deployment.spec.as_ref()?.replicas.unwrap_or(1);
                    return Some((owner.uid.clone(), replicas));
                }
                let replicas = replica_set.spec.as_ref()?.replicas.unwrap_or(1);
                Some((reference.uid.clone(), replicas))
            }
            "Deployment" => {
                let deployment = self.cluster.deployments.get(&key)?;
                let replicas = deployment.spec.as_ref()?.replicas.unwrap_or(1);
                Some((reference.uid.clone(), replicas))
            }
            _ => None,
        }
    }

    async fn reconcile(&self, key: String) -> Result<Next, DisruptionError> {
        let Some(budget) = self.cluster.disruption_budgets.get(&key) else {
            return Ok(Next::Done);
        };
        let namespace = budget.metadata.namespace.clone().unwrap_or_default();
        let all_pods = self.cluster.pods.by_index(BY_NAMESPACE, &namespace);
        let selected: Vec<&Pod> = match budget.spec.as_ref().and_then(|spec| spec.selector.as_ref())
        {
            Some(selector) => all_pods
                .iter()
                .map(|pod| pod.as_ref())
                .filter(|pod| selector_matches(selector, &pods::labels_of(pod)))
                .collect(),
            None => Vec::new(),
        };
        let counts = core::counts(&budget, &selected, |pod| self.scale_of(pod));
        if let Err(error) = &counts {
            self.events.record_later(
                &budget.object_ref(&()),
                true,
                error.reason(),
                error.to_string(),
            );
        }
        let status = core::status(&budget, counts.as_ref(), Timestamp::now());
        if core::status_changed(budget.status.as_ref(), &status) {
            let mut updated = (*budget).clone();
            updated.status = Some(status);
            let api: Api<PodDisruptionBudget> =
                Api::namespaced(self.cluster.client.clone(), &namespace);
            api.replace_status(
                updated.metadata.name.as_deref().unwrap_or_default(),
                &PostParams::default(),
                &updated,
            )
            .await
            .map_err(|source| DisruptionError::Status { key, source })?;
        }
        Ok(Next::Done)
    }
}

/// Queues every budget of `namespace` (a pod or a controller there
/// changed; the budgets are few).
fn queue_namespace(cluster: &Cluster, queue: &WorkQueue<String>, namespace: Option<&str>) {
    for budget in cluster
        .disruption_budgets
        .by_index(BY_NAMESPACE, namespace.unwrap_or_default())
    {
        queue.add(key_of(budget.as_ref()));
    }
}

/// Runs the disruption controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        events: Events::new(cluster.client.clone(), NAME, &cluster.identity),
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    cluster.disruption_budgets.queue_keys(&queue);
    {
        let queue = Arc::clone(&queue);
        let handler_cluster = Arc::clone(&cluster);
        cluster.pods.on_change(move |change| {
            let namespace = change.object().metadata.namespace.as_deref();
            queue_namespace(&handler_cluster, &queue, namespace);
        });
    }
    {
        let queue = Arc::clone(&queue);
        let handler_cluster = Arc::clone(&cluster);
        cluster.replica_sets.on_change(move |change| {
            let namespace = change.object().metadata.namespace.as_deref();
            queue_namespace(&handler_cluster, &queue, namespace);
        });
    }
    {
        let queue = Arc::clone(&queue);
        let handler_cluster = Arc::clone(&cluster);
        cluster.deployments.on_change(move |change| {
            let namespace = change.object().metadata.namespace.as_deref();
            queue_namespace(&handler_cluster, &queue, namespace);
        });
    }
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(
            NAME,
            &cluster.disruption_budgets,
            queue,
            workers,
            reconcile,
            stop,
        )
        .await;
}
