//! The node's heartbeat: its Lease in `kube-node-lease`, renewed every
//! `lease_renew` (kubelet's node lease: cheap, frequent, and read by the
//! node lifecycle controller to tell a live machine from a lost one).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use crate::AgentConfig;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

fn lease_for(config: &AgentConfig, node: &Node, previous: Option<&Lease>) -> Lease {
    let mut lease = previous.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    // Owned by the Node, so deleting the Node deletes its Lease.
    if let Some(uid) = node.metadata.uid.clone() {
        lease.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: config.node_name.clone(),
            uid,
            ..OwnerReference::default()
        }]);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(config.node_name.clone());
    spec.lease_duration_seconds = Some(config.lease_duration.as_secs() as i32);
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    lease
}

/// Renews the Lease once: updates the one last seen, and on a conflict or
/// when there is none, reads it again (or creates it).
pub async fn renew(
    leases: &Api<Lease>,
    config: &AgentConfig,
    node: &Node,
    last: Option<Lease>,
) -> Result<Lease, kube::Error> {
    if let Some(last) = last {
        match leases
            .replace(
                &config.node_name,
                &PostParams::default(),
                &lease_for(config, node, Some(&last)),
            )
            .await
        {
            Ok(lease) => return Ok(lease),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    match leases.get_opt(&config.node_name).await? {
        Some(current) => {
            leases
                .replace(
                    &config.node_name,
                    &PostParams::default(),
                    &lease_for(config, node, Some(&current)),
                )
                .await
        }
        None => {
            leases
                .create(&PostParams::default(), &lease_for(config, node, None))
                .await
        }
    }
}

/// Renews the Lease every `lease_renew` until `shutdown`; a failed renewal
/// is retried sooner (kubelet's 200 ms doubling to 7 s).
///
/// The heartbeat is also the agent's check that it reaches the API: a
/// renewal that succeeds more than two intervals after the previous one
/// (failures, or requests hung on a cut-off network) bumps `reconnected`,
/// so the watches that may have silently died with the old connections
/// start afresh.
pub async fn heartbeat(
    leases: Api<Lease>,
    config: AgentConfig,
    node: Node,
    reconnected: tokio::sync::watch::Sender<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = None;
    let mut retry = std::time::Duration::from_millis(200);
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        let wait = match renew(&leases, &config, &node, last.take()).await {
            Ok(lease) => {
                if renewed_at.elapsed() > config.lease_renew * 2 {
                    tracing::info!(silent = ?renewed_at.elapsed(), "the API is reachable again");
                    reconnected.send_modify(|count| *count += 1);
                }
                renewed_at = tokio::time::Instant::now();
                last = Some(lease);
                retry = std::time::Duration::from_millis(200);
                config.lease_renew
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew the node's lease");
                let wait = retry;
                retry = (retry * 2).min(std::time::Duration::from_secs(7));
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}
