//! The EndpointSlice controller: for each Service with a selector,
//! `discovery.k8s.io/v1` EndpointSlices listing its pods (what the node
//! proxies and cluster DNS read). The decisions are `core`'s; this is the
//! driver: handlers that queue Services, the writes, and the record of
//! what was written, so that a sync never acts on a copy that does not
//! show its own last writes yet (upstream's `EndpointSliceTracker`; a
//! stale copy would otherwise create a second set of slices).

pub mod core;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};

use crate::cluster::{BY_NODE, BY_SERVICE, Cluster, SERVICE_NAME_LABEL};
use crate::endpoint::core as endpoints;
use crate::ownership::controller_reference;
use crate::runtime::{Change, Next, Stop, WorkQueue};

/// The controller's name in logs (upstream's).
pub const NAME: &str = "endpointslice-controller";

/// How soon a sync that found its copy behind its own writes looks again.
const STALE_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("cannot {action} an endpointslice of {key}: {source}")]
    Write {
        key: String,
        action: &'static str,
        source: kube::Error,
    },
}

/// The slices one owner's last sync wrote: name → the resource version
/// written, or `None` for a deletion.
#[derive(Default)]
pub struct Written {
    by_owner: parking_lot::Mutex<HashMap<String, HashMap<String, Option<u64>>>>,
}

fn version(slice: &EndpointSlice) -> Option<u64> {
    slice.metadata.resource_version.as_deref()?.parse().ok()
}

impl Written {
    /// Whether `slices` (the copy) does not yet show every write recorded
    /// for `owner`. Once it does, the record is dropped.
    pub fn stale(&self, owner: &str, slices: &[Arc<EndpointSlice>]) -> bool {
        let mut by_owner = self.by_owner.lock();
        let Some(writes) = by_owner.get(owner) else {
            return false;
        };
        let behind = writes.iter().any(|(name, written)| {
            let held = slices
                .iter()
                .find(|slice| slice.metadata.name.as_deref() == Some(name.as_str()));
            match (written, held) {
                (None, held) => held.is_some(),
                (Some(_), None) => true,
                (Some(written), Some(held)) => version(held).is_none_or(|held| held < *written),
            }
        });
        if !behind {
            by_owner.remove(owner);
        }
        behind
    }

    pub fn record(&self, owner: &str, name: String, written: Option<&EndpointSlice>) {
        self.by_owner
            .lock()
            .entry(owner.to_string())
            .or_default()
            .insert(name, written.and_then(version));
    }

    pub fn forget(&self, owner: &str) {
        self.by_owner.lock().remove(owner);
    }
}

/// The slices of `owner_key` (`namespace/service`) managed by `manager`.
pub fn managed_slices(
    cluster: &Cluster,
    owner_key: &str,
    manager: &str,
) -> Vec<Arc<EndpointSlice>> {
    cluster
        .endpoint_slices
        .by_index(BY_SERVICE, owner_key)
        .into_iter()
        .filter(|slice| {
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(core::MANAGED_BY))
                .map(String::as_str)
                == Some(manager)
        })
        .collect()
}

/// The `namespace/service` a slice belongs to, if it is `manager`'s.
pub fn owner_key_of(slice: &EndpointSlice, manager: &str) -> Option<String> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(core::MANAGED_BY).map(String::as_str) != Some(manager) {
        return None;
    }
    let service = labels.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{service}",
        slice.metadata.namespace.as_deref().unwrap_or_default()
    ))
}

/// Queues the owner of every slice `manager` manages that changes (a slice
/// changed or deleted by someone else is put right), before and after the
/// change.
pub fn queue_slice_owners(cluster: &Cluster, queue: Arc<WorkQueue<String>>, manager: &'static str) {
    cluster.endpoint_slices.on_change(move |change| {
        let slices: Vec<&EndpointSlice> = match change {
            Change::Added(slice) | Change::Deleted(slice) => vec![slice],
            Change::Updated { old, new } => vec![old, new],
        };
        for slice in slices {
            if let Some(key) = owner_key_of(slice, manager) {
                queue.add(key);
            }
        }
    });
}

/// Carries out `plan` for the owner `key`: creations first, then updates,
/// then deletions (so a moving endpoint is never missing), recording each
/// write in `written`.
pub async fn carry_out(
    client: &kube::Client,
    namespace: &str,
    key: &str,
    plan: core::Plan,
    written: &Written,
) -> Result<(), SliceError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let error = |action, source| SliceError::Write {
        key: key.to_string(),
        action,
        source,
    };
    for slice in plan.create {
        let created = api
            .create(&PostParams::default(), &slice)
            .await
            .map_err(|source| error("create", source))?;
        let name = created.metadata.name.clone().unwrap_or_default();
        written.record(key, name, Some(&created));
    }
    for slice in plan.update {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let updated = api
            .replace(&name, &PostParams::default(), &slice)
            .await
            .map_err(|source| error("update", source))?;
        written.record(key, name, Some(&updated));
    }
    for slice in plan.delete {
        let name = slice.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(error("delete", source)),
        }
        written.record(key, name, None);
    }
    Ok(())
}

struct Controller {
    cluster: Arc<Cluster>,
    written: Written,
}

impl Controller {
    async fn reconcile(&self, key: String) -> Result<Next, SliceError> {
        let namespace = key.split_once('/').map_or("", |(namespace, _)| namespace);
        let Some(service) = self.cluster.services.get(&key) else {
            // The garbage collector deletes the slices with their owner.
            self.written.forget(&key);
            return Ok(Next::Done);
        };
        if service.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let existing = managed_slices(&self.cluster, &key, core::CONTROLLER_NAME);
        if self.written.stale(&key, &existing) {
            return Ok(Next::After(STALE_RETRY));
        }
        let plan = match endpoints::selector_of(&service) {
            // A Service without a selector (its slices are mirrored from
            // its user's Endpoints) or an ExternalName one has none of
            // this controller's.
            Some(selector) if !endpoints::is_external_name(&service) => {
                let pods = self
                    .cluster
                    .pods
                    .by_index(crate::cluster::BY_NAMESPACE, namespace);
                let groups = core::desired_groups(&service, selector, &pods, |node| {
                    self.cluster.nodes.get(node)
                });
                let selected: Vec<&k8s_openapi::api::core::v1::Pod> = pods
                    .iter()
                    .map(Arc::as_ref)
                    .filter(|pod| endpoints::selects(selector, pod))
                    .collect();
                let meta = core::SliceMeta {
                    namespace: namespace.to_string(),
                    generate_name: generate_name(
                        service.metadata.name.as_deref().unwrap_or_default(),
                    ),
                    labels: core::service_slice_labels(&service),
                    annotations: Default::default(),
                    owner: controller_reference(service.as_ref()),
                    address_type: "IPv4".to_string(),
                    trigger_time: endpoints::trigger_time(&service, &selected),
                    max_endpoints: core::MAX_ENDPOINTS_PER_SLICE,
                };
                core::plan(&meta, groups, &existing)
            }
            _ => core::Plan {
                delete: existing,
                ..core::Plan::default()
            },
        };
        if !plan.is_empty() {
            carry_out(&self.cluster.client, namespace, &key, plan, &self.written).await?;
        }
        Ok(Next::Done)
    }
}

/// A slice's `generateName` for an owner: `<name>-`, cut to leave room for
/// the generated suffix within a name's 63 characters (as upstream).
pub fn generate_name(owner: &str) -> String {
    let mut prefix = format!("{owner}-");
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    prefix
}

/// Runs the EndpointSlice controller with `workers` workers until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let controller = Arc::new(Controller {
        cluster: Arc::clone(&cluster),
        written: Written::default(),
    });
    let queue: Arc<WorkQueue<String>> = WorkQueue::new();
    cluster.services.queue_keys(&queue);
    {
        let queue = Arc::clone(&queue);
        let cluster_for_handler = Arc::clone(&cluster);
        cluster.pods.on_change(move |change| {
            crate::endpoint::queue_services_of_pod(&cluster_for_handler, &queue, change);
        });
    }
    {
        // A node's zone is its endpoints' zone.
        let queue = Arc::clone(&queue);
        let cluster_for_handler = Arc::clone(&cluster);
        cluster.nodes.on_change(move |change| {
            let Change::Updated { old, new } = change else {
                return;
            };
            let zone = |node: &k8s_openapi::api::core::v1::Node| {
                node.metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(core::ZONE_LABEL).cloned())
            };
            if zone(old) == zone(new) {
                return;
            }
            let name = new.metadata.name.as_deref().unwrap_or_default();
            for pod in cluster_for_handler.pods.by_index(BY_NODE, name) {
                crate::endpoint::queue_services_of_pod(
                    &cluster_for_handler,
                    &queue,
                    &Change::Added(pod.as_ref()),
                );
            }
        });
    }
    queue_slice_owners(&cluster, Arc::clone(&queue), core::CONTROLLER_NAME);
    let reconcile = move |key| {
        let controller = Arc::clone(&controller);
        async move { controller.reconcile(key).await }
    };
    cluster
        .run_controller(NAME, &cluster.services, queue, workers, reconcile, stop)
        .await;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn slice(name: &str, version: &str) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..EndpointSlice::default()
        })
    }

    #[test]
    fn a_copy_behind_the_last_writes_is_stale_until_it_catches_up() {
        let written = Written::default();
        assert!(!written.stale("default/web", &[]));
        written.record("default/web", "web-a".into(), Some(&slice("web-a", "7")));
        written.record("default/web", "web-b".into(), None);
        assert!(written.stale("default/web", &[]));
        assert!(written.stale("default/web", &[slice("web-a", "6")]));
        assert!(written.stale("default/web", &[slice("web-a", "7"), slice("web-b", "3")]));
        assert!(!written.stale("default/web", &[slice("web-a", "9")]));
        // Caught up once: the record is gone.
        assert!(!written.stale("default/web", &[]));
    }

    #[test]
    fn long_names_leave_room_for_the_suffix() {
        assert_eq!(generate_name("web"), "web-");
        assert_eq!(generate_name(&"x".repeat(70)).len(), 58);
    }
}
