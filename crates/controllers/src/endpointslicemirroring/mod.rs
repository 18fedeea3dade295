//! The EndpointSlice mirroring controller: the Endpoints users write for
//! Services without a selector, mirrored into EndpointSlices, so that
//! readers of slices alone (the node proxies, cluster DNS) see them too.
//! The decisions are `core`'s; the slices are written as the EndpointSlice
//! controller writes its own (`endpointslice::carry_out`).

pub mod core;

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::endpointslice::core::{MAX_ENDPOINTS_PER_SLICE, Plan, plan};
use crate::endpointslice::{SliceError, Written, carry_out, managed_slices, queue_slice_owners};
use crate::runtime::{Next, Stop, WorkQueue};

/// The controller's name in logs (upstream's).
pub const NAME: &str = "endpointslice-mirroring-controller";

const STALE_RETRY: Duration = Duration::from_millis(100);

struct Controller {
    cluster: Arc<Cluster>,
    written: Written,
}

impl Controller {
    async fn reconcile(&self, key: String) -> Result<Next, SliceError> {
        let namespace = key.split_once('/').map_or("", |(namespace, _)| namespace);
        let existing = managed_slices(&self.cluster, &key, core::CONTROLLER_NAME);
        if self.written.stale(&key, &existing) {
            return Ok(Next::After(STALE_RETRY));
        }
        let endpoints = self.cluster.endpoints.get(&key);
        let service = self.cluster.services.get(&key);
        let plan = match endpoints {
            Some(endpoints) if core::should_mirror(&endpoints, service.as_deref()) => {
                let groups = core::groups(&endpoints);
                if groups.is_empty() {
                    Plan {
                        delete: existing,
                        ..Plan::default()
                    }
                } else {
                    let meta = core::slice_meta(&endpoints, MAX_ENDPOINTS_PER_SLICE);
                    plan(&meta, groups, &existing)
                }
            }
            _ => Plan {
                delete: existing,
                ..Plan::default()
            },
        };
        if !plan.is_empty() {
            carry_out(&self.cluster.client, namespace, &key, plan, &self.written).await?;
        }
        Ok(Next::Done)
    }
}

/// Runs the mirroring controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        cluster: Arc::clone(&cluster),
        written: Written::default(),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    cluster.endpoints.queue_keys(&queue);
    // A Service that gains or loses its selector, or comes or goes,
    // changes whether its Endpoints are mirrored.
    cluster.services.queue_keys(&queue);
    queue_slice_owners(&cluster, Arc::clone(&queue), core::CONTROLLER_NAME);
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.endpoints, queue, workers, reconcile, stop)
        .await;
}
