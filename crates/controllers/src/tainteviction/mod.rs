//! Taint-based eviction (upstream's taint eviction controller): deletes
//! the pods of nodes with `NoExecute` taints they do not tolerate, at once
//! or after their `tolerationSeconds`. The node lifecycle controller puts
//! such taints on lost nodes; an operator may too (`kubectl taint`).
//!
//! The deletion is an ordinary one (the pod's grace period): a pod whose
//! node is gone stays Terminating until its agent returns or the pod
//! garbage collector removes it, and its controller replaces it at once
//! (terminating pods do not count as replicas).

pub mod core;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};

use crate::cluster::{BY_NODE, Cluster};
use crate::runtime::{Change, Events, Key, Next, Stop, WorkQueue, key_of, run_workers};

use self::core::{Eviction, eviction, eviction_note};

/// The event source, as upstream's.
pub const CONTROLLER_NAME: &str = "taint-eviction-controller";

/// How long a deletion this controller made is trusted to be on its way
/// into the informer (upstream's expectations time out after 5 minutes;
/// a pod is deleted once, so a shorter memory only bounds the map).
const DELETION_EXPECTED_FOR: Duration = Duration::from_secs(60);

struct Evictor {
    cluster: Arc<Cluster>,
    events: Events,
    /// Pods (by uid) deleted and not yet seen terminating: the
    /// expectations that keep a stale copy from deleting them twice.
    deleted: parking_lot::Mutex<HashMap<String, Instant>>,
    /// When a taint without `timeAdded` was first seen, per node and taint.
    first_seen: parking_lot::Mutex<HashMap<(String, String), Timestamp>>,
}

fn has_no_execute(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|taint| taint.effect == "NoExecute"))
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .filter(|name| !name.is_empty())
}

/// Runs the controller until `stop`.
pub async fn run(cluster: Arc<Cluster>, workers: usize, stop: Stop) {
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    {
        // A node's NoExecute taints changed: every pod on it is looked at.
        let queue = Arc::clone(&queue);
        let pods = Arc::clone(&cluster.pods);
        cluster.nodes.on_change(move |change: &Change<'_, _>| {
            let taints_of = |node: &k8s_openapi::api::core::v1::Node| {
                node.spec
                    .as_ref()
                    .and_then(|spec| spec.taints.clone())
                    .unwrap_or_default()
            };
            let changed = match change {
                Change::Added(node) => has_no_execute(node),
                Change::Updated { old, new } => taints_of(old) != taints_of(new),
                Change::Deleted(_) => false,
            };
            if changed {
                let name = change.object().metadata.name.as_deref().unwrap_or_default();
                for pod in pods.by_index(BY_NODE, name) {
                    queue.add(key_of(pod.as_ref()));
                }
            }
        });
    }
    {
        // A pod placed (or changed) on a node with NoExecute taints.
        let queue = Arc::clone(&queue);
        let nodes = Arc::clone(&cluster.nodes);
        cluster.pods.on_change(move |change: &Change<'_, Pod>| {
            if let Change::Added(pod) | Change::Updated { new: pod, .. } = change
                && let Some(node) = node_of(pod)
                && nodes.get(node).is_some_and(|node| has_no_execute(&node))
            {
                queue.add(key_of(*pod));
            }
        });
    }
    cluster.synced().await;
    for node in cluster.nodes.list() {
        if has_no_execute(&node) {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            for pod in cluster.pods.by_index(BY_NODE, name) {
                queue.add(key_of(pod.as_ref()));
            }
        }
    }
    let evictor = Arc::new(Evictor {
        events: Events::new(cluster.client.clone(), CONTROLLER_NAME, &cluster.identity),
        cluster,
        deleted: parking_lot::Mutex::default(),
        first_seen: parking_lot::Mutex::default(),
    });
    run_workers(
        CONTROLLER_NAME,
        queue,
        workers,
        move |key: Key| {
            let evictor = Arc::clone(&evictor);
            async move { evictor.reconcile(&key).await }
        },
        stop,
    )
    .await;
}

impl Evictor {
    async fn reconcile(&self, key: &str) -> Result<Next, kube::Error> {
        let Some(pod) = self.cluster.pods.get(key) else {
            return Ok(Next::Done);
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            self.deleted.lock().remove(&uid);
            return Ok(Next::Done);
        }
        let Some(node_name) = node_of(&pod) else {
            return Ok(Next::Done);
        };
        let Some(node) = self.cluster.nodes.get(node_name) else {
            return Ok(Next::Done);
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|spec| spec.taints.clone())
            .unwrap_or_default();
        let now = Timestamp::now();
        let first_seen = {
            let mut first_seen = self.first_seen.lock();
            first_seen.retain(|(node, key), _| {
                self.cluster.nodes.get(node).is_some_and(|node| {
                    node.spec
                        .as_ref()
                        .and_then(|spec| spec.taints.as_ref())
                        .is_some_and(|taints| taints.iter().any(|taint| &taint.key == key))
                })
            });
            taints
                .iter()
                .filter(|taint| taint.effect == "NoExecute" && taint.time_added.is_none())
                .map(|taint| {
                    *first_seen
                        .entry((node_name.to_string(), taint.key.clone()))
                        .or_insert(now)
                })
                .min()
                .unwrap_or(now)
        };
        match eviction(&pod, &taints, now, first_seen) {
            Eviction::Stay => Ok(Next::Done),
            Eviction::After(delay) => Ok(Next::After(delay)),
            Eviction::Now => {
                {
                    let mut deleted = self.deleted.lock();
                    deleted.retain(|_, at| at.elapsed() < DELETION_EXPECTED_FOR);
                    if deleted.contains_key(&uid) {
                        return Ok(Next::Done);
                    }
                }
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                self.events
                    .record(
                        pod.as_ref(),
                        false,
                        "TaintManagerEviction",
                        eviction_note(&namespace, &name),
                    )
                    .await;
                let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &namespace);
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(&name, &params).await {
                    Ok(_) => {
                        tracing::info!(pod = %key, node = %node_name, "evicted a pod from a tainted node");
                        self.deleted.lock().insert(uid, Instant::now());
                        Ok(Next::Done)
                    }
                    // Gone already, or a new pod of the same name.
                    Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                        Ok(Next::Done)
                    }
                    Err(error) => Err(error),
                }
            }
        }
    }
}
