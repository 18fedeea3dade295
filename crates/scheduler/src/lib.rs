//! shoal's scheduler, in kube-scheduler's role: it watches pods that no node
//! has yet and binds each to a node through `pods/binding`.
//!
//! `core` decides (a sans-IO cluster model with kube-scheduler's filters and
//! scores); `driver` does the I/O (watches, the queue of pods to place,
//! bindings, events) while it holds the `kube-system/kube-scheduler`
//! Lease, so any server may run the scheduler and only one binds.

pub mod core;
mod driver;
mod events;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;

pub use crate::core::{Cluster, Placement, Unschedulable};
pub use leaderelection::LeaseTiming;

/// The Lease the scheduler's instances compete for, as kube-scheduler's.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "kube-scheduler";

/// How a scheduler instance runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this are ours.
    pub scheduler_name: String,
    /// This instance's name in the Lease (`holderIdentity`).
    pub identity: String,
    pub lease: LeaseTiming,
    /// Bindings written at once.
    pub max_in_flight_bindings: usize,
    /// `percentageOfNodesToScore` (0: kube-scheduler's adaptive rule).
    pub percentage_of_nodes_to_score: usize,
    /// Record a `Scheduled` event for each bound pod: at most
    /// `scheduled_events_per_second` (the rest skipped and counted, so that
    /// at high binding rates events do not double the API's writes), and
    /// none while the event writer is `event_backlog` events behind.
    pub scheduled_events: bool,
    pub scheduled_events_per_second: usize,
    pub event_backlog: usize,
    /// Attempts, their latency and the queues (`/metrics`), shared by every
    /// term this instance leads.
    pub metrics: std::sync::Arc<metrics::SchedulerMetrics>,
}

impl SchedulerConfig {
    /// kube-scheduler's defaults, under `identity`.
    pub fn new(identity: &str) -> SchedulerConfig {
        SchedulerConfig {
            scheduler_name: "default-scheduler".to_string(),
            identity: identity.to_string(),
            lease: LeaseTiming::default(),
            max_in_flight_bindings: 64,
            percentage_of_nodes_to_score: 0,
            scheduled_events: true,
            scheduled_events_per_second: 50,
            event_backlog: 256,
            metrics: std::sync::Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
}

/// Runs a scheduler instance until `shutdown` resolves: it competes for the
/// `kube-system/kube-scheduler` Lease and, while it holds it, places pods.
/// Losing the Lease (no renewal within the renew deadline) stops placing at
/// once; the instance then competes again with a fresh model. On shutdown a
/// leader gives the Lease up. API errors are retried, never returned.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let candidate = leaderelection::Candidate {
        namespace: LEASE_NAMESPACE.to_string(),
        name: LEASE_NAME.to_string(),
        identity: config.identity.clone(),
        timing: config.lease.clone(),
    };
    leaderelection::lead(client.clone(), candidate, shutdown, move |deposed| {
        let driver = driver::Driver::new(client.clone(), config.clone());
        Arc::clone(&driver).run(deposed)
    })
    .await
    .map_err(|error| SchedulerError::Config(error.to_string()))
}
