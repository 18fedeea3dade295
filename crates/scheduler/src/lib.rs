//! shoal's scheduler, in kube-scheduler's role: it watches pods that no node
//! has yet and binds each to a node through `pods/binding`.
//!
//! `core` decides (a sans-IO cluster model with kube-scheduler's filters and
//! scores); `driver` does the I/O (watches, the queue of pods to place,
//! bindings, events) while `leader` holds the `kube-system/kube-scheduler`
//! Lease, so any server may run the scheduler and only one binds.

pub mod core;
mod driver;
mod events;
pub mod leader;

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

pub use crate::core::{Cluster, Placement, Unschedulable};
pub use crate::leader::LeaseTiming;

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
    if config.identity.is_empty() {
        return Err(SchedulerError::Config("the identity is empty".to_string()));
    }
    if config.lease.renew_deadline >= config.lease.lease_duration {
        return Err(SchedulerError::Config(
            "the renew deadline must be shorter than the lease duration".to_string(),
        ));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let mut elector =
        leader::Elector::new(leases, LEASE_NAME, &config.identity, config.lease.clone());
    loop {
        // Follow until this instance takes the Lease.
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(leader::Attempt::Leader) => break,
                Ok(leader::Attempt::Follower(holder)) => {
                    tracing::debug!(%holder, "the scheduler's lease is held elsewhere")
                }
                Err(error) => tracing::warn!(%error, "cannot read the scheduler's lease"),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(config.lease.retry_period) => {}
            }
        }
        tracing::info!(identity = %config.identity, "leading: scheduling pods");
        let driver = driver::Driver::new(client.clone(), config.clone());
        let (lost_sender, lost_receiver) = tokio::sync::oneshot::channel::<()>();
        let leading = tokio::spawn(Arc::clone(&driver).run(async move {
            let _ = lost_receiver.await;
        }));
        let outcome = keep_lease(&mut elector, &mut shutdown).await;
        let _ = lost_sender.send(());
        let _ = leading.await;
        match outcome {
            LeaseOutcome::Shutdown => {
                if let Err(error) = elector.release().await {
                    tracing::warn!(%error, "cannot release the scheduler's lease");
                }
                return Ok(());
            }
            LeaseOutcome::Lost => {
                tracing::warn!(identity = %config.identity, "lost the scheduler's lease; stopped scheduling");
            }
        }
    }
}

enum LeaseOutcome {
    Shutdown,
    Lost,
}

/// Renews the Lease every retry period until shutdown, or until no renewal
/// has succeeded for the renew deadline.
async fn keep_lease(
    elector: &mut leader::Elector,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> LeaseOutcome {
    let timing = elector.timing().clone();
    let mut last_renewal = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return LeaseOutcome::Shutdown,
            _ = tokio::time::sleep(timing.retry_period) => {}
        }
        let attempt =
            tokio::time::timeout(timing.renew_deadline, elector.try_acquire_or_renew()).await;
        match attempt {
            Ok(Ok(leader::Attempt::Leader)) => last_renewal = std::time::Instant::now(),
            Ok(Ok(leader::Attempt::Follower(holder))) => {
                tracing::warn!(%holder, "another scheduler holds the lease");
                return LeaseOutcome::Lost;
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot renew the scheduler's lease"),
            Err(_) => tracing::warn!("renewing the scheduler's lease timed out"),
        }
        if last_renewal.elapsed() >= timing.renew_deadline {
            return LeaseOutcome::Lost;
        }
    }
}
