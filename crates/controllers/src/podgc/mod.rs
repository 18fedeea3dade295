//! The pod garbage collector (upstream's PodGC): force-deletes (grace 0)
//! the pods no agent will ever finish: those bound to a node that no
//! longer exists, terminating ones never scheduled, and terminating ones
//! on an out-of-service node. It looks at every pod each `CHECK_PERIOD`.

pub mod core;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Preconditions};

use crate::cluster::Cluster;
use crate::runtime::Stop;

use self::core::{Quarantine, collect};

/// How often the pods are looked at (upstream's `gcCheckPeriod` is 20 s).
pub const CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Runs the collector until `stop`; pods of a missing node go after
/// `quarantine` (upstream: 40 s).
pub async fn run(cluster: Arc<Cluster>, quarantine_for: Duration, stop: Stop) {
    cluster.synced().await;
    let mut quarantine = Quarantine::default();
    let mut ticks = tokio::time::interval(CHECK_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.clone().wait() => return,
        }
        let pods = cluster.pods.list();
        let nodes: Vec<Arc<Node>> = cluster.nodes.list();
        let by_name: std::collections::HashMap<&str, &Node> = nodes
            .iter()
            .map(|node| {
                (
                    node.metadata.name.as_deref().unwrap_or_default(),
                    node.as_ref(),
                )
            })
            .collect();
        let now = Instant::now();
        let mut doomed = Vec::new();
        for pod in &pods {
            let node_of = |name: &str| by_name.get(name).copied();
            if let Some(reason) = collect(pod, node_of, &mut quarantine, quarantine_for, now) {
                doomed.push((Arc::clone(pod), reason));
            }
        }
        let present: HashSet<&str> = pods
            .iter()
            .filter_map(|pod| pod.metadata.uid.as_deref())
            .collect();
        quarantine.retain(&present);
        for (pod, reason) in doomed {
            if reason == core::Reason::Orphaned {
                // The informer may be behind: ask the API whether the node
                // is really gone, as upstream does.
                let node_name = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.node_name.clone())
                    .unwrap_or_default();
                let nodes: Api<Node> = Api::all(cluster.client.clone());
                match nodes.get_opt(&node_name).await {
                    Ok(None) => {}
                    Ok(Some(_)) => continue,
                    Err(error) => {
                        tracing::debug!(node = %node_name, %error, "cannot check a pod's node");
                        continue;
                    }
                }
            }
            force_delete(&cluster.client, &pod, reason).await;
        }
    }
}

async fn force_delete(client: &kube::Client, pod: &Pod, reason: core::Reason) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{namespace}/{name}"), ?reason, "garbage-collected a pod")
        }
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "cannot garbage-collect a pod")
        }
    }
}
