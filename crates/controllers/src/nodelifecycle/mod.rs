//! The node lifecycle controller: watches the nodes' heartbeats (their
//! Leases in `kube-node-lease` and their Ready condition) and marks a node
//! its agent stopped reporting for: its conditions `Unknown`, and the
//! `node.kubernetes.io/unreachable` taints (`not-ready` for a node whose
//! agent reports it not ready). The `NoExecute` taint is what the taint
//! eviction controller evicts on; adding it goes through each zone's rate
//! limiter, the brake that keeps a partition from emptying the cluster.
//!
//! It looks at every node each `MONITOR_PERIOD` (upstream's
//! `--node-monitor-period`, 5 s there) rather than per change: a node's
//! silence is not an event.

pub mod core;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};

use crate::cluster::{Cluster, NODE_LEASE_NAMESPACE};
use crate::runtime::{Events, Stop};

use self::core::{Action, LifecycleConfig, Monitor};

/// The event source, as upstream's.
pub const CONTROLLER_NAME: &str = "node-controller";

/// How often every node is looked at.
pub const MONITOR_PERIOD: Duration = Duration::from_millis(500);

/// Runs the controller until `stop`.
pub async fn run(cluster: Arc<Cluster>, config: LifecycleConfig, stop: Stop) {
    cluster.synced().await;
    let events = Events::new(cluster.client.clone(), CONTROLLER_NAME, &cluster.identity);
    let nodes_api: Api<Node> = Api::all(cluster.client.clone());
    let mut monitor = Monitor::new(config);
    let mut ticks = tokio::time::interval(MONITOR_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.clone().wait() => return,
        }
        let nodes = cluster.nodes.list();
        let leases: Vec<_> = nodes
            .iter()
            .map(|node| {
                cluster
                    .node_leases
                    .get(&format!("{NODE_LEASE_NAMESPACE}/{}", core::name_of(node)))
            })
            .collect();
        let pairs: Vec<(&Node, Option<&_>)> = nodes
            .iter()
            .zip(&leases)
            .map(|(node, lease)| (node.as_ref(), lease.as_deref()))
            .collect();
        let wall = Time(k8s_openapi::jiff::Timestamp::now());
        let pass = monitor.pass(&pairs, Instant::now(), &wall);
        if let Some(all_disrupted) = pass.all_disrupted_changed {
            if all_disrupted {
                tracing::warn!(
                    "every node is not Ready: entering full disruption mode, no evictions"
                );
            } else {
                tracing::info!("some node is Ready again: leaving full disruption mode");
            }
        }
        for change in &pass.zone_changes {
            tracing::info!(zone = %change.zone, from = ?change.from, to = ?change.to, "a zone's state changed");
        }
        for action in pass.actions {
            apply(&nodes_api, &nodes, &events, action).await;
        }
    }
}

/// Writes one action, with the node's resourceVersion as a precondition:
/// a write based on a stale copy fails and the next pass, with a fresher
/// copy, decides again.
async fn apply(api: &Api<Node>, nodes: &[Arc<Node>], events: &Events, action: Action) {
    let name = match &action {
        Action::MarkUnknown { node, .. } | Action::SetTaints { node, .. } => node.clone(),
    };
    let Some(node) = nodes.iter().find(|node| core::name_of(node) == name) else {
        return;
    };
    let resource_version = node.metadata.resource_version.clone();
    let params = PatchParams::default();
    let outcome = match &action {
        Action::MarkUnknown { conditions, .. } => {
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": resource_version},
                "status": {"conditions": conditions},
            });
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
        }
        Action::SetTaints { taints, .. } => {
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": resource_version},
                "spec": {"taints": taints},
            });
            api.patch(&name, &params, &Patch::Merge(&patch)).await
        }
    };
    match outcome {
        Ok(updated) => match action {
            Action::MarkUnknown { .. } => {
                tracing::warn!(node = %name, "a node stopped reporting: its status is now Unknown");
                events
                    .record(
                        &updated,
                        false,
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
            }
            Action::SetTaints { taints, .. } => {
                let lifecycle: Vec<String> = taints
                    .iter()
                    .filter(|taint| taint.key == core::UNREACHABLE || taint.key == core::NOT_READY)
                    .map(|taint| format!("{}:{}", taint.key, taint.effect))
                    .collect();
                tracing::info!(node = %name, taints = ?lifecycle, "a node's lifecycle taints changed");
            }
        },
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
            tracing::debug!(node = %name, "a node changed under the lifecycle controller; looking again");
        }
        Err(error) => tracing::warn!(node = %name, %error, "cannot update a node"),
    }
}
