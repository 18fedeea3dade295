//! The Endpoints controller: for each Service with a selector, an
//! `Endpoints` object of the same name listing its pods' addresses, ready
//! and not ready, on the ports they resolve to. Services without a
//! selector keep the Endpoints their users write. The decisions are
//! `core`'s; this is the driver (handlers that queue Services, the writes).

pub mod core;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, DeleteParams, PostParams};

use crate::cluster::{BY_NAMESPACE, Cluster};
use crate::runtime::{Change, Next, Stop, WorkQueue, key_of};

/// The controller's name in logs (upstream's).
pub const NAME: &str = "endpoint-controller";

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("cannot {action} the endpoints of service {key}: {source}")]
    Write {
        key: String,
        action: &'static str,
        source: kube::Error,
    },
}

/// Queues the Services (of the pod's namespace) that select a changed pod,
/// before and after the change: the controllers over Services' pods share
/// it.
pub fn queue_services_of_pod(
    cluster: &Cluster,
    queue: &WorkQueue<String>,
    change: &Change<'_, Pod>,
) {
    let pods: Vec<&Pod> = match change {
        Change::Added(pod) | Change::Deleted(pod) => vec![pod],
        Change::Updated { old, new } => vec![old, new],
    };
    let namespace = change
        .object()
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    let services = cluster.services.by_index(BY_NAMESPACE, namespace);
    for pod in pods {
        for key in core::services_selecting(&services, pod) {
            queue.add(key);
        }
    }
}

struct Controller {
    cluster: Arc<Cluster>,
}

impl Controller {
    async fn reconcile(&self, key: String) -> Result<Next, EndpointsError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        let api: Api<Endpoints> = Api::namespaced(self.cluster.client.clone(), namespace);
        let error = |action, source| EndpointsError::Write {
            key: key.clone(),
            action,
            source,
        };
        let Some(service) = self.cluster.services.get(&key) else {
            // The Service is gone: so are its Endpoints (as upstream, user
            // made ones included).
            if self.cluster.endpoints.get(&key).is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(source) => return Err(error("delete", source)),
                }
            }
            return Ok(Next::Done);
        };
        let Some(selector) = core::selector_of(&service) else {
            return Ok(Next::Done);
        };
        if service.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let pods = self.cluster.pods.by_index(BY_NAMESPACE, namespace);
        let desired = core::desired(&service, selector, &pods);
        let current = self.cluster.endpoints.get(&key);
        match core::plan(&service, current.as_deref(), desired) {
            core::Action::Nothing => {}
            core::Action::Create(endpoints) => {
                api.create(&PostParams::default(), &endpoints)
                    .await
                    .map_err(|source| error("create", source))?;
            }
            core::Action::Update(endpoints) => {
                api.replace(name, &PostParams::default(), &endpoints)
                    .await
                    .map_err(|source| error("update", source))?;
            }
        }
        Ok(Next::Done)
    }
}

/// Runs the Endpoints controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    cluster.services.queue_keys(&queue);
    {
        let queue = Arc::clone(&queue);
        let cluster_for_handler = Arc::clone(&cluster);
        cluster.pods.on_change(move |change| {
            queue_services_of_pod(&cluster_for_handler, &queue, change);
        });
    }
    {
        // Endpoints deleted under a Service are written again; Endpoints
        // seen whose Service is gone (deleted while no controller ran) are
        // deleted.
        let queue = Arc::clone(&queue);
        cluster.endpoints.on_change(move |change| {
            if let Change::Added(endpoints) | Change::Deleted(endpoints) = change {
                queue.add(key_of(*endpoints));
            }
        });
    }
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.services, queue, workers, reconcile, stop)
        .await;
}
