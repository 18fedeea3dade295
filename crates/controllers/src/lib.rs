//! shoal's controllers (kube-controller-manager's role): control loops that
//! watch the cluster through the Kubernetes API and write what should be.
//! Each reaches the cluster only through a `kube::Client`.
//!
//! Every server runs `run`; one of them, the holder of the
//! `kube-system/kube-controller-manager` Lease, runs the controllers. They
//! share one set of informers (`cluster::Cluster`): a watched, indexed copy
//! of each kind they read. Each controller is level-triggered: its handlers
//! queue the keys a change concerns, and its workers compute what to do
//! from the copy as it is now (a sans-IO core: state in, actions out), so a
//! missed event, a restart or a new leader changes nothing.

pub mod cluster;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoint;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod expectations;
pub mod job;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod ownership;
pub mod podcontrol;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod runtime;
pub mod servicelb;
pub mod tainteviction;

use std::future::Future;
use std::sync::Arc;

pub use leaderelection::LeaseTiming;

use crate::cluster::Cluster;
use crate::runtime::Stop;

/// The Lease the servers' controller managers compete for, as upstream's.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "kube-controller-manager";

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// This server's name in the Lease and in events.
    pub identity: String,
    pub lease: LeaseTiming,
    /// The cluster's pod range, split into the Nodes' ranges (node IPAM).
    pub cluster_cidr: ipnet::Ipv4Net,
    /// Workers per controller.
    pub workers: usize,
    /// How long a node may go without a heartbeat before it is marked
    /// `Unknown` and tainted (`--node-monitor-grace-period`; shoal: 8 s,
    /// upstream: 40 s).
    pub node_monitor_grace_period: std::time::Duration,
    /// Nodes per second tainted for eviction in a healthy zone
    /// (`--node-eviction-rate`); `None`: no limit (shoal's default;
    /// upstream's is 0.1).
    pub node_eviction_rate: Option<f64>,
    /// How long a pod bound to a missing node waits before the pod
    /// garbage collector deletes it (shoal: 5 s; upstream: 40 s).
    pub pod_gc_quarantine: std::time::Duration,
}

impl ControllersConfig {
    pub fn new(identity: &str, cluster_cidr: ipnet::Ipv4Net) -> ControllersConfig {
        ControllersConfig {
            identity: identity.to_string(),
            lease: LeaseTiming::default(),
            cluster_cidr,
            workers: 4,
            node_monitor_grace_period: std::time::Duration::from_secs(8),
            node_eviction_rate: None,
            pod_gc_quarantine: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllersError {
    #[error(transparent)]
    Election(#[from] leaderelection::ElectionError),
}

/// Runs this server's controller manager until `shutdown`: it competes for
/// the Lease and, while it leads, runs every controller. Losing the Lease
/// stops them all (and drops their copies); leading again starts afresh.
pub async fn run(
    client: kube::Client,
    config: ControllersConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllersError> {
    let candidate = leaderelection::Candidate {
        namespace: LEASE_NAMESPACE.to_string(),
        name: LEASE_NAME.to_string(),
        identity: config.identity.clone(),
        timing: config.lease.clone(),
    };
    leaderelection::lead(client.clone(), candidate, shutdown, move |deposed| {
        let client = client.clone();
        let config = config.clone();
        async move {
            let (stop_sender, stop) = Stop::new();
            let mut tasks = tokio::task::JoinSet::new();
            start(client, &config, &mut tasks, &stop);
            deposed.await;
            let _ = stop_sender.send(true);
            while tasks.join_next().await.is_some() {}
        }
    })
    .await?;
    Ok(())
}

/// Starts the informers and every controller on `tasks`, until `stop`.
pub fn start(
    client: kube::Client,
    config: &ControllersConfig,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: &Stop,
) {
    let cluster: Arc<Cluster> = Cluster::new(client.clone(), &config.identity);
    cluster.start(tasks, stop);
    tasks.spawn(nodeipam::run(client, config.cluster_cidr, stop.receiver()));
    let workers = config.workers;
    tasks.spawn(replicaset::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(deployment::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(daemonset::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(job::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(cronjob::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(disruption::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(endpoint::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(endpointslice::run(
        Arc::clone(&cluster),
        workers,
        stop.clone(),
    ));
    tasks.spawn(endpointslicemirroring::run(
        Arc::clone(&cluster),
        workers,
        stop.clone(),
    ));
    tasks.spawn(servicelb::run(Arc::clone(&cluster), workers, stop.clone()));
    tasks.spawn(tainteviction::run(
        Arc::clone(&cluster),
        workers,
        stop.clone(),
    ));
    tasks.spawn(nodelifecycle::run(
        Arc::clone(&cluster),
        nodelifecycle::core::LifecycleConfig {
            grace_period: config.node_monitor_grace_period,
            eviction_rate: config.node_eviction_rate,
        },
        stop.clone(),
    ));
    tasks.spawn(podgc::run(
        Arc::clone(&cluster),
        config.pod_gc_quarantine,
        stop.clone(),
    ));
}
