//! The LoadBalancer controller (k3s' servicelb, without its pods): every
//! LoadBalancer Service's `status.loadBalancer.ingress` lists the Ready
//! nodes' addresses. The decisions are `core`'s; this is the driver.

pub mod core;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service, ServiceStatus};
use kube::api::{Api, PostParams};

use crate::cluster::Cluster;
use crate::runtime::{Change, Next, Stop, WorkQueue, key_of};

/// The controller's name in logs (k3s').
pub const NAME: &str = "servicelb";

#[derive(Debug, thiserror::Error)]
pub enum LoadBalancerError {
    #[error("cannot update the status of service {key}: {source}")]
    Status { key: String, source: kube::Error },
}

struct Controller {
    cluster: Arc<Cluster>,
}

impl Controller {
    async fn reconcile(&self, key: String) -> Result<Next, LoadBalancerError> {
        let Some(service) = self.cluster.services.get(&key) else {
            return Ok(Next::Done);
        };
        if !core::is_ours(&service) {
            return Ok(Next::Done);
        }
        let wanted = core::ingress(&service, &self.cluster.nodes.list());
        if wanted == core::current(&service) {
            return Ok(Next::Done);
        }
        let mut updated = (*service).clone();
        updated.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: (!wanted.is_empty()).then_some(wanted),
            }),
            ..updated.status.unwrap_or_default()
        });
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.cluster.client.clone(), namespace);
        api.replace_status(
            service.metadata.name.as_deref().unwrap_or_default(),
            &PostParams::default(),
            &updated,
        )
        .await
        .map_err(|source| LoadBalancerError::Status {
            key: key.clone(),
            source,
        })?;
        Ok(Next::Done)
    }
}

/// Runs the LoadBalancer controller until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        cluster: Arc::clone(&cluster),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    cluster.services.queue_keys(&queue);
    {
        // A node coming, going or changing readiness or address changes
        // every LoadBalancer's ingress.
        let queue = Arc::clone(&queue);
        let services = Arc::clone(&cluster.services);
        cluster.nodes.on_change(move |change| {
            if let Change::Updated { old, new } = change
                && core::node_part(old) == core::node_part(new)
            {
                return;
            }
            for service in services.list() {
                if core::is_load_balancer(&service) {
                    queue.add(key_of(service.as_ref()));
                }
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
